"""The teachers of one call (``steal``, ``audit``, the runs an executor trains), by identity.

An :class:`Opener` is made by the caller and passed down to where a run's teachers are built
(``Runtime.opener`` -> :func:`undistill.runs.load_teacher`), so a teacher the caller opened is the
one the run learns from: a URL teacher is probed once per call, and one query budget and one
answer cache cover the call. A run built without one gets a fresh opener (its own probe and
budget). Nothing is held by the process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from undistill.config import ExternalTeacherConfig, InputSpec
from undistill.teachers.base import Teacher, TeacherError
from undistill.teachers.kind import detect_kind, get_kind
from undistill.teachers.sources import open_source


class Opener:
    """Opens teachers (``open``, ``open_config``) and holds those opened, by identity.

    ``cache`` and ``budget``: the answer cache and query budget of remote kinds (a URL) opened by
    :meth:`open`; ``client``: their transport's options. ``runs_dir``, ``data_root`` and
    ``trust_factory``: how a run directory or a state_dict is opened."""

    def __init__(self, *, cache: Path | str | None = None, budget: int | None = None,
                 client: dict[str, Any] | None = None, runs_dir: Path | None = None,
                 data_root: Path | None = None, trust_factory: bool = False) -> None:
        self.cache, self.budget, self.client = cache, budget, dict(client or {})
        self.runs_dir, self.data_root, self.trust_factory = runs_dir, data_root, trust_factory
        self.opened: dict[str, Teacher] = {}

    def open(self, source: str | Path, spec: InputSpec | dict[str, Any] | None = None, *,
             arch: str | None = None, width: float = 1.0, **client: Any) -> Teacher:
        """Open ``source`` (not yet bound or probed); a remote kind through this opener's cache,
        within its budget."""
        return open_source(source, spec, arch=arch, width=width,
                           **self.options(source, arch, **client))

    def options(self, source: str | Path, arch: str | None = None, **client: Any) -> dict[str, Any]:
        """The keyword arguments of :func:`~undistill.teachers.open_source` (besides ``spec``,
        ``arch``, ``width``) that open ``source`` the way this opener does: its kind, where runs
        and data are, ``trust_factory``, and for a remote kind the cache, budget and client's
        options (other kinds ignore client options, as the command line passes them)."""
        kind = get_kind(detect_kind(str(source), arch))
        remote = {"cache": self.cache, "budget": self.budget, **self.client, **client}
        return {"kind": kind.name, "runs_dir": self.runs_dir, "data_root": self.data_root,
                "trust_factory": self.trust_factory, **(remote if kind.remote else {})}

    def remember(self, teacher: Teacher) -> Teacher:
        """Hold ``teacher`` (probed) for the runs of this call."""
        self.opened[teacher.identity] = teacher
        return teacher

    def get(self, identity: str, source: str | None = None) -> Teacher | None:
        t = self.opened.get(identity)
        return t if t is not None and (source is None or t.source == source) else None

    def open_config(self, cfg: ExternalTeacherConfig, ds: Any, *, cache: Path | str | None = None,
                    budget: int | None = None, **client: Any) -> Teacher:
        """A run config's external teacher, bound to the run's dataset ``ds``, probed once and
        checked to be the model the run was configured with (its identity); one this opener holds
        is reused as it is. A remote kind is asked through ``cache`` within ``budget`` with the
        config's client options (over ``client``)."""
        if (known := self.get(cfg.identity, cfg.source)) is not None:
            return known
        kind = get_kind(cfg.kind)
        client = {"cache": cache, "budget": budget, **client, **cfg.client.options()} if kind.remote else {}
        teacher = open_source(cfg.source, cfg.spec, kind=cfg.kind, arch=cfg.arch, width=cfg.width,
                              **client)
        teacher.bind_dataset(ds)
        teacher.probe()
        if teacher.identity != cfg.identity:
            raise TeacherError(f"{cfg.source}: the model changed since this run was configured "
                               f"(identity {teacher.identity} != {cfg.identity}); configure the run "
                               f"again (a new run id)")
        return self.remember(teacher)


def open_config(cfg: ExternalTeacherConfig, ds: Any, **client: Any) -> Teacher:
    """A run config's external teacher opened by a fresh :class:`Opener` (its own probe and budget;
    ``client``: a remote kind's ``cache``, ``budget`` and transport options)."""
    return Opener().open_config(cfg, ds, **client)
