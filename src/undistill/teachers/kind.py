"""The registry of teacher kinds: how a source is recognised, opened, described and identified.

A kind is one file under ``undistill/teachers/kinds/`` that calls :func:`register_kind` with a
:class:`Kind`; nothing else lists kinds. :func:`detect_kind` asks each registered kind (in
``order``) whether a source is its own, :func:`open_kind` opens one, a run config's external
teacher names one (``ExternalTeacherConfig.kind``: the kinds with ``in_config``), and every
question about what kind a teacher is goes to a trait (``remote``: its answers cost queries, so
it is asked with the client's options, through the answer cache and within the query budget).
A new source is one file, its test and a row in ``docs/teachers.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from undistill.teachers.errors import TeacherError

if TYPE_CHECKING:  # the registry imports nothing of the teachers it lists (a leaf module)
    from undistill.config import InputSpec
    from undistill.teachers.base import Teacher


@dataclass
class Source:
    """What a kind's ``open`` gets: the source, the caller's spec and options.

    ``client``: options of a remote kind (its transport's, plus ``cache`` and ``budget``);
    ``model``: an object in memory, for a kind that takes one (``module``)."""

    source: str
    spec: InputSpec | dict[str, Any] | None = None
    arch: str | None = None
    width: float = 1.0
    runs_dir: Path | None = None
    data_root: Path | None = None
    trust_factory: bool = False
    client: dict[str, Any] = field(default_factory=dict)
    model: Any = None


@dataclass(frozen=True)
class Kind:
    """One kind of teacher source.

    ``detect(source, arch)``: whether ``source`` is of this kind (it may raise a TeacherError for
    a source that is its own but unusable); ``open(Source)``: the teacher; ``describe``: how a
    source of this kind is recognised (error messages, docs); ``identity``: what its identity
    hashes. Traits: ``remote`` (answers cost queries: client options, answer cache, query
    budget), ``in_config`` (can be an external teacher of a run config), ``needs_arch`` (its config
    entry needs ``arch``); ``order``: detection order, lowest first."""

    name: str
    detect: Callable[[str, str | None], bool]
    open: Callable[[Source], Teacher]
    describe: str
    identity: str
    remote: bool = False
    in_config: bool = True
    needs_arch: bool = False
    order: int = 50


KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind) -> Kind:
    if kind.name in KINDS:
        raise ValueError(f"teacher kind {kind.name!r} is registered already")
    KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    KINDS.pop(name, None)


def get_kind(name: str) -> Kind:
    if name not in KINDS:
        raise TeacherError(f"unknown teacher kind {name!r}; known: {', '.join(sorted(KINDS))}")
    return KINDS[name]


def config_kinds() -> list[str]:
    """The kinds a run config's external teacher may name."""
    return sorted(k.name for k in KINDS.values() if k.in_config)


def is_remote(name: str) -> bool:
    return name in KINDS and KINDS[name].remote


def detect_kind(source: str, arch: str | None = None) -> str:
    """The name of the first kind (in ``order``) whose ``detect`` takes ``source``."""
    for kind in sorted(KINDS.values(), key=lambda k: (k.order, k.name)):
        if kind.detect(source, arch):
            return kind.name
    p = Path(source)
    if not p.exists():
        raise TeacherError(f"{source}: no such model file, run directory or http(s) URL")
    known = "; ".join(k.describe for k in sorted(KINDS.values(), key=lambda k: (k.order, k.name))
                      if k.describe)
    suffix = p.suffix.lower()
    raise TeacherError(f"{source}: unknown model file type {suffix or '(no suffix)'!r}; known: "
                       f"{known}")


def open_kind(name: str, request: Source) -> Teacher:
    return get_kind(name).open(request)
