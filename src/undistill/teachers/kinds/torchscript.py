"""TorchScript (``torch.jit.save``): ``.ts``, or a ``.pt``/``.pth`` TorchScript archive."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from undistill.config import InputSpec
from undistill.teachers.base import Teacher, TeacherError
from undistill.teachers.kind import Kind, Source, register_kind
from undistill.teachers.spec import read_spec, require_file


class TorchScriptTeacher(Teacher):
    kind = "torchscript"

    def __init__(self, source: str, spec: InputSpec | None = None) -> None:
        super().__init__(source, spec)
        try:
            self.model = torch.jit.load(str(require_file(source)), map_location="cpu").eval()
        except TeacherError:
            raise
        except Exception as e:  # torch raises RuntimeError/ValueError variants for bad files
            raise TeacherError(f"{source}: not a TorchScript model ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''})") from None

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        dev = next(iter(self.model.parameters()), torch.empty(0)).device
        return self.model(x.to(dev)).float()


def detect(source: str, arch: str | None) -> bool:
    p = Path(source)
    suffix = p.suffix.lower()
    if suffix == ".ts":
        return p.is_file()
    if suffix not in (".pt", ".pth") or arch or not p.is_file():
        return False
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        raise TeacherError(f"{source}: not a model file (not a TorchScript or torch archive)"
                           ) from None
    if any("/code/" in n or n.endswith("constants.pkl") for n in names):
        return True
    raise TeacherError(f"{source}: a state_dict, not a whole model; give its architecture "
                       f"(--teacher-arch, or arch= in Python: a zoo name or "
                       f"package.module:function)")


def open_source(req: Source) -> Teacher:
    return TorchScriptTeacher(req.source, read_spec(req.source, req.spec))


KIND = register_kind(Kind(
    "torchscript", detect, open_source, describe=".pt, .ts (TorchScript)",
    identity="SHA-256 of the file", order=40))
