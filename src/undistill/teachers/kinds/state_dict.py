"""Weights and an architecture: ``.safetensors``, or ``.pt``/``.pth`` read with
``weights_only=True`` when an architecture is given (a zoo name or a factory
``package.module:function``; one named by the YAML beside the model needs ``trust_factory``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from undistill.config import InputSpec
from undistill.teachers.base import Teacher, TeacherError
from undistill.teachers.kind import Kind, Source, register_kind
from undistill.teachers.spec import read_spec, read_spec_yaml, require_file, spec_file


class StateDictTeacher(Teacher):
    """The model is built once the spec is complete (``bind``)."""

    kind = "state_dict"

    def __init__(self, source: str, spec: InputSpec | None = None, arch: str = "",
                 width: float = 1.0) -> None:
        super().__init__(source, spec)
        if not arch:
            raise TeacherError(f"{source}: a state_dict needs an architecture (arch: a zoo name or "
                               f"package.module:function)")
        self.arch, self.width = arch, width
        self.tensors = self._read(require_file(source))
        self.model: torch.nn.Module | None = None
        if None not in (self.spec.num_classes, self.spec.channels, self.spec.image_size):
            self._bound()

    @staticmethod
    def _read(path: Path) -> dict[str, torch.Tensor]:
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state: Any = load_file(str(path))
            else:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise TeacherError(f"{path}: not a state_dict ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise TeacherError(f"{path}: not a state_dict (a mapping of names to tensors)")
        prefixes = ("module.", "method.student.")
        for pre in prefixes:
            if state and all(k.startswith(pre) for k in state):
                state = {k[len(pre):]: v for k, v in state.items()}
        return state

    def _bound(self) -> None:
        from undistill.models import build_model

        s = self.spec
        if s.num_classes is None or s.channels is None or s.image_size is None:
            return
        try:
            model = build_model(self.arch, num_classes=s.num_classes, in_channels=s.channels,
                                width=self.width, image_size=s.image_size)
            model.load_state_dict(self.tensors)
        except (KeyError, ValueError, RuntimeError) as e:
            raise TeacherError(f"{self.source}: does not fit {self.arch} (width {self.width}, "
                               f"{s.num_classes} classes): {str(e).splitlines()[0][:300]}") from None
        self.model = model.eval().requires_grad_(False)

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise TeacherError(f"{self.source}: give num_classes, channels and image_size (or bind "
                               f"to a dataset) before asking a state_dict teacher")
        dev = next(iter(self.model.parameters()), torch.empty(0)).device
        return self.model(x.to(dev)).float()

    @property
    def identity(self) -> str:
        if self._digest is None:
            super().identity  # noqa: B018  (fills the file digest)
            self._digest = f"{self._digest}:{self.arch}:{self.width:g}"
        return self._digest

    def _config_extra(self) -> dict[str, Any]:
        return {"arch": self.arch, "width": self.width}


def detect(source: str, arch: str | None) -> bool:
    p = Path(source)
    suffix = p.suffix.lower()
    return p.is_file() and (suffix == ".safetensors" or (suffix in (".pt", ".pth") and bool(arch)))


def open_source(req: Source) -> Teacher:
    """The caller's ``arch``, else the ``arch`` (and ``width``) of the YAML beside the model; a
    factory named there is refused unless ``trust_factory``."""
    arch, width = req.arch, req.width
    if not arch:
        f = spec_file(req.source)
        extra = read_spec_yaml(f) if f else {}
        arch, width = extra.get("arch"), extra.get("width", width)
        if not isinstance(arch, str | None) or not isinstance(width, int | float):
            raise TeacherError(f"{f}: arch must be a name and width a number")
        if arch and ":" in arch and not req.trust_factory:
            raise TeacherError(f"{f}: the YAML beside the model names a factory {arch!r} as its "
                               f"architecture, which runs code; if you trust it pass "
                               f"--trust-factory (CLI) / trust_factory=True (Python), or give the "
                               f"architecture with --teacher-arch")
    return StateDictTeacher(req.source, read_spec(req.source, req.spec), arch=arch or "",
                            width=float(width))


KIND = register_kind(Kind(
    "state_dict", detect, open_source, describe=".safetensors / .pt with an architecture",
    identity="SHA-256 of the file, the architecture and width", needs_arch=True, order=30))
