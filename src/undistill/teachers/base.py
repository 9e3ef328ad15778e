"""One teacher abstraction: a frozen classifier from anywhere, answering logits for a batch.

A :class:`Teacher` takes images normalised the way this toolkit's data pipeline normalises them
(``bind`` tells it the dataset's mean/std, channels and size), converts them to the conventions
the model expects (:class:`~undistill.config.InputSpec`: size, channel order, mean/std), asks the
model, and returns logits (answers that are probabilities become ``log p``). Every kind of source
-- TorchScript, ``torch.export``, ONNX, a state_dict, a run directory, a URL, a module -- is one
file under ``kinds/`` (:mod:`undistill.teachers.kind`: its detection, opening and identity) whose
subclass implements :meth:`Teacher._answer` on inputs already in the model's own conventions.
Query budgets, answer caches and output defences are wrappers around any teacher
(:mod:`undistill.teachers.wrappers`): an answer travels down the chain as :meth:`Teacher.answer`
with an :class:`Ask` (the meter that counts images, the sink that takes answers as they arrive).

One probe call (:meth:`Teacher.probe`) checks the conventions before any training: the answer
must be ``[1, num_classes]`` and finite.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from torch import nn

from undistill.config import ExternalTeacherConfig, InputSpec
from undistill.teachers.errors import BudgetExhausted, TeacherError
from undistill.teachers.spec import to_model_conventions

__all__ = ["PROB_FLOOR", "Ask", "BudgetExhausted", "Meter", "Teacher", "TeacherError",
           "file_digest"]

PROB_FLOOR = 1e-8  # log of a zero probability (top-k, rounded or label-only answers)
T = TypeVar("T")


class Meter(Protocol):
    """Counts the images that may reach a model (:class:`~undistill.teachers.QueryBudget`)."""

    def reserve(self, n: int, retry: bool = False) -> None: ...

    def release(self, n: int) -> None: ...


@dataclass(frozen=True)
class Ask:
    """How one request for answers travels down a chain of wrappers: ``meter`` pays for every
    image (every attempt, for a transport that retries) that may reach the model; ``on_rows(rows,
    answers)`` takes checked answers as they arrive (row indices into the request)."""

    meter: Meter | None = None
    on_rows: Callable[[list[int], torch.Tensor], None] | None = None


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Teacher(nn.Module):
    """A frozen model from outside this toolkit's runs (or a run, for serving and auditing).

    Construct with :meth:`open` (detects the kind from the source), or ``from_torchscript``,
    ``from_export``, ``from_onnx``, ``from_state_dict``, ``from_url``, ``from_run``, and an
    ``nn.Module`` in memory with ``from_module``.
    """

    kind: ClassVar[str] = ""

    def __init__(self, source: str, spec: InputSpec | None = None) -> None:
        if not isinstance(source, str | Path):
            raise _not_a_source(source)
        super().__init__()
        self.source = str(source)
        self.spec = spec or InputSpec()
        self._digest: str | None = None
        self._data: tuple[tuple[float, ...], tuple[float, ...], int, int] | None = None
        self.requires_grad_(False)

    # ---------------------------------------------------------------- identity and conventions
    @property
    def identity(self) -> str:
        """Content hash (files), run id (runs), or URL + probe answer hash (URLs)."""
        if self._digest is None:
            self._digest = f"{self.kind}:{file_digest(Path(self.source))[:24]}"
        return self._digest

    @property
    def num_classes(self) -> int:
        if self.spec.num_classes is None:
            raise TeacherError(f"{self.source}: number of classes unknown; probe it first or set "
                               f"num_classes")
        return self.spec.num_classes

    @property
    def input_spec(self) -> InputSpec:
        return self.spec

    def bind(self, mean: tuple[float, ...] | list[float], std: tuple[float, ...] | list[float],
             channels: int, image_size: int, num_classes: int | None = None) -> Teacher:
        """Declare the conventions of the tensors callers pass (a dataset's); unset spec fields
        take these values. ``num_classes`` (the dataset's) is what :meth:`probe` checks."""
        if (num_classes is not None and self.spec.num_classes is not None
                and self.spec.num_classes != num_classes):
            raise TeacherError(f"{self.source}: num_classes is {self.spec.num_classes} but the "
                               f"data has {num_classes} classes")
        self._data = (tuple(mean), tuple(std), int(channels), int(image_size))
        fill: dict[str, Any] = {}
        if self.spec.channels is None:
            fill["channels"] = int(channels)
        if self.spec.image_size is None:
            fill["image_size"] = int(image_size)
        if self.spec.mean is None:
            fill["mean"], fill["std"] = list(mean), list(std)
        if self.spec.num_classes is None and num_classes is not None:
            fill["num_classes"] = int(num_classes)
        self.spec = self.spec.model_copy(update=fill)
        self._bound()
        return self

    def bind_dataset(self, ds: Any) -> Teacher:
        """:meth:`bind` to an :class:`~undistill.data.ImageDataset`."""
        return self.bind(ds.mean, ds.std, ds.channels, ds.image_size, ds.num_classes)

    def _bound(self) -> None:
        """Hook: the spec is complete (a state_dict builds its model here)."""

    def _model_input(self, x: torch.Tensor) -> torch.Tensor:
        """Images in the data pipeline's conventions -> the model's conventions."""
        return to_model_conventions(x, self._data, self.spec, self.source)

    # ---------------------------------------------------------------- answers
    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        """The model's raw answer ``[N, C]`` to inputs in its own conventions."""
        raise NotImplementedError

    def answer(self, x: torch.Tensor, ask: Ask | None = None) -> torch.Tensor:
        """:meth:`_answer`, metered and streamed as ``ask`` says (a model asked at once: its
        images are paid for first, its answer handed on whole)."""
        ask = ask or Ask()
        if ask.meter is not None:
            ask.meter.reserve(int(x.shape[0]))
        out = self._answer(x)
        if ask.on_rows is not None:
            ask.on_rows(list(range(int(x.shape[0]))), out)
        return out

    @property
    def needs_probe(self) -> bool:
        """Whether the identity is known only after :meth:`probe` (a URL)."""
        return False

    def layers(self) -> Iterator[Teacher]:
        """This teacher, then what it wraps (:mod:`undistill.teachers.wrappers`), outermost first."""
        yield self

    def find(self, cls: type[T]) -> T | None:
        """The outermost layer that is a ``cls`` (e.g. the transport of a wrapped URL teacher)."""
        return next((t for t in self.layers() if isinstance(t, cls)), None)

    def unbudgeted(self) -> Teacher:
        """The same teacher with no query budget on its answers (the owner's own evaluation)."""
        return self

    def raw_answer(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own answer ``[N, C]`` (logits or probabilities: ``spec.outputs``) to inputs
        already in its conventions, float32 on ``x``'s device: what ``undistill serve`` releases."""
        with torch.no_grad():
            return self._answer(x.float().contiguous()).to(x.device).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.raw_answer(self._model_input(x))
        return out.clamp_min(PROB_FLOOR).log() if self.spec.outputs == "probs" else out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images in the bound dataset's conventions (``log p`` for probabilities)."""
        return self(x)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).softmax(1)

    def forward_features(self, x: torch.Tensor) -> Any:
        raise TeacherError(f"{self.source}: a {self.kind} teacher gives no features; the data-free "
                           f"methods need a zoo teacher (a run directory)")

    def probe_input(self) -> torch.Tensor:
        """The fixed probe, in the model's own conventions: ``[1, C, H, W]`` seeded noise."""
        s = self.spec
        if s.channels is None or s.image_size is None:
            raise TeacherError(f"{self.source}: input channels and size unknown; give them "
                               f"(channels, image_size) or bind the teacher to a dataset")
        g = torch.Generator().manual_seed(0)
        px = torch.rand(1, s.channels, s.image_size, s.image_size, generator=g)
        mean = torch.tensor(s.mean if s.mean is not None else [0.0]).view(1, -1, 1, 1)
        std = torch.tensor(s.std if s.std is not None else [1.0]).view(1, -1, 1, 1)
        return ((px - mean) / std).float()

    def probe(self, meter: Meter | None = None) -> torch.Tensor:
        """The one call that checks the conventions before any training; returns the answer
        (paid for on ``meter``).

        Raises TeacherError for an answer that is not ``[1, C]``, holds NaN/inf, or has a class
        count other than ``num_classes`` (the spec's, else the bound dataset's).
        """
        x = self.probe_input()
        if meter is not None:
            meter.reserve(1)
        try:
            with torch.no_grad():
                out = self._answer(x)
        except TeacherError:
            raise
        except Exception as e:  # the model's own error on inputs it does not accept
            first = str(e).strip().splitlines()[-1][:200] if str(e).strip() else ""
            raise TeacherError(f"{self.source}: the model fails on the probe of shape "
                               f"{list(x.shape)} (wrong image_size/channels?): "
                               f"{type(e).__name__}: {first}") from None
        self.check_answer(out, 1)
        return out

    def check_answer(self, out: torch.Tensor, n: int) -> None:
        if out.dim() != 2 or out.shape[0] != n:
            raise TeacherError(f"{self.source}: answered shape {list(out.shape)} to {n} image(s); "
                               f"expected [{n}, num_classes] (check image_size/channels)")
        want = self.spec.num_classes
        if want is not None and out.shape[1] != want:
            raise TeacherError(f"{self.source}: answers {out.shape[1]} classes but {want} are "
                               f"expected (num_classes, or the dataset's class count)")
        if not torch.isfinite(out).all():
            raise TeacherError(f"{self.source}: answered NaN or infinite values to the probe "
                               f"(wrong input conventions? mean/std, channel order, size)")
        if self.spec.num_classes is None:
            self.spec = self.spec.model_copy(update={"num_classes": int(out.shape[1])})
        if self.spec.outputs == "auto":
            probs = bool((out >= 0).all() and torch.allclose(out.sum(1), torch.ones(n), atol=1e-3))
            self.spec = self.spec.model_copy(update={"outputs": "probs" if probs else "logits"})

    def config(self) -> ExternalTeacherConfig:
        """The typed entry a run config holds for this teacher (its identity included)."""
        return ExternalTeacherConfig(source=self.source, kind=self.kind,  # type: ignore[arg-type]
                                     identity=self.identity, spec=self.spec, **self._config_extra())

    def _config_extra(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "identity": self.identity,
                "spec": self.spec.model_dump(mode="json")}

    # ---------------------------------------------------------------- constructors
    @classmethod
    def open(cls, source: str | Path, spec: InputSpec | dict[str, Any] | None = None,
             arch: str | None = None, width: float = 1.0, *, trust_factory: bool = False,
             **client: Any) -> Teacher:
        """Open any source, its kind detected (:func:`undistill.teachers.open_source`)."""
        if not isinstance(source, str | Path):
            raise _not_a_source(source)
        return _open_kind(None, source, spec, arch=arch, width=width, trust_factory=trust_factory,
                          client=client)

    @classmethod
    def from_torchscript(cls, path: str | Path, spec: InputSpec | dict[str, Any] | None = None
                         ) -> Teacher:
        return _open_kind("torchscript", path, spec)

    @classmethod
    def from_export(cls, path: str | Path, spec: InputSpec | dict[str, Any] | None = None) -> Teacher:
        return _open_kind("export", path, spec)

    @classmethod
    def from_onnx(cls, path: str | Path, spec: InputSpec | dict[str, Any] | None = None) -> Teacher:
        return _open_kind("onnx", path, spec)

    @classmethod
    def from_state_dict(cls, path: str | Path, arch: str, width: float = 1.0,
                        spec: InputSpec | dict[str, Any] | None = None) -> Teacher:
        return _open_kind("state_dict", path, spec, arch=arch, width=width)

    @classmethod
    def from_url(cls, url: str, spec: InputSpec | dict[str, Any] | None = None, **client: Any
                 ) -> Teacher:
        """A URL teacher; ``cache`` and ``budget`` wrap it (:class:`~undistill.teachers.Cached`,
        :class:`~undistill.teachers.Budgeted`), the other options go to its transport."""
        return _open_kind("url", url, spec, client=client)

    @classmethod
    def from_module(cls, model: nn.Module, spec: InputSpec | dict[str, Any] | None = None, *,
                    name: str | None = None) -> Teacher:
        """An ``nn.Module`` in memory (put in eval mode and frozen), asked on its own device; its
        ``source`` is ``name`` (default ``module:ClassName``). It cannot go into a run config."""
        if not isinstance(model, nn.Module):
            raise TeacherError(f"Teacher.from_module: got {type(model).__name__}, not an nn.Module "
                               f"(open files and URLs with Teacher.open)")
        return _open_kind("module", name or f"module:{type(model).__qualname__}", spec, model=model)

    @classmethod
    def from_run(cls, path: str | Path, runs_dir: Path | None = None,
                 data_root: Path | None = None) -> Teacher:
        return _open_kind("run", path, None, runs_dir=runs_dir, data_root=data_root)


def _open_kind(kind: str | None, source: str | Path, spec: InputSpec | dict[str, Any] | None,
               **options: Any) -> Teacher:
    """Open ``source`` as ``kind`` (None: detected) through the kind registry."""
    from undistill.teachers.kind import Source, detect_kind, open_kind

    name = kind or detect_kind(str(source), options.get("arch"))
    return open_kind(name, Source(str(source), spec, **options))


def _not_a_source(source: object) -> TeacherError:
    return TeacherError(f"a teacher's source is a path or URL, not a {type(source).__name__}; for "
                        f"an nn.Module in memory use Teacher.from_module(model, spec)")

