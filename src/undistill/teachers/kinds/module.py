"""An ``nn.Module`` in memory (``Teacher.from_module``, Python only): never detected from a
source, never in a run config (nothing could open it again)."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from undistill.config import ExternalTeacherConfig, InputSpec
from undistill.teachers.base import Teacher, TeacherError
from undistill.teachers.kind import Kind, Source, register_kind
from undistill.teachers.spec import read_spec


class ModuleTeacher(Teacher):
    """Identity ``module:`` + SHA-256 of the module's class's qualified name and its state_dict
    (names, dtypes, shapes, bytes), taken when first asked: the module must not change afterwards."""

    kind = "module"

    def __init__(self, model: nn.Module, spec: InputSpec | None = None, name: str | None = None
                 ) -> None:
        cls = type(model)
        super().__init__(name or f"module:{cls.__qualname__}", spec)
        self.model = model.eval().requires_grad_(False)
        self._class = f"{cls.__module__}.{cls.__qualname__}"

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        dev = next(iter(self.model.parameters()), next(iter(self.model.buffers()), x)).device
        with torch.no_grad():
            return self.model(x.to(dev)).float()

    @property
    def identity(self) -> str:
        if self._digest is None:
            h = hashlib.sha256(self._class.encode())
            for key, t in self.model.state_dict().items():
                t = t.detach().cpu().contiguous()
                h.update(f"\0{key}\0{t.dtype}\0{list(t.shape)}\0".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._digest = f"module:{h.hexdigest()[:24]}"
        return self._digest

    def config(self) -> ExternalTeacherConfig:
        raise TeacherError(f"{self.source}: an in-memory module cannot go into a run config (it "
                           f"cannot be opened again); save it (torch.export.save, torch.jit.save) "
                           f"and give the file")


def _open(req: Source) -> Teacher:
    if not isinstance(req.model, nn.Module):
        raise TeacherError(f"{req.source}: an in-memory module is opened with "
                           f"Teacher.from_module(model)")
    return ModuleTeacher(req.model, read_spec(None, req.spec), name=req.source)


KIND = register_kind(Kind(
    "module", lambda source, arch: False, _open, describe="",
    identity="SHA-256 of the class name and the state_dict", in_config=False, order=90))
