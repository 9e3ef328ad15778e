"""A ``torch.export`` program (``torch.export.save``): ``.pt2``, loaded without running any code
of the archive (:mod:`undistill.teachers.archive_check`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from undistill.config import InputSpec
from undistill.teachers.base import Teacher, TeacherError
from undistill.teachers.kind import Kind, register_kind
from undistill.teachers.spec import read_spec, require_file


class ExportTeacher(Teacher):
    """A ``torch.export`` program, run on the CPU."""

    kind = "export"

    def __init__(self, source: str, spec: InputSpec | None = None) -> None:
        from undistill.teachers.archive_check import load_export, quiet

        super().__init__(source, spec)
        data = require_file(source).read_bytes()
        program = load_export(data, source)
        self._digest = f"{self.kind}:{hashlib.sha256(data).hexdigest()[:24]}"  # the bytes loaded
        try:
            with quiet():
                module = program.module()
        except Exception as e:
            raise TeacherError(f"{source}: not a torch.export program ({type(e).__name__})") from None
        self.__dict__["_program"] = module  # not a submodule: exported modules refuse eval()

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        return self._program(x.cpu()).float()


KIND = register_kind(Kind(
    "export", lambda source, arch: Path(source).suffix.lower() == ".pt2" and Path(source).is_file(),
    lambda req: ExportTeacher(req.source, read_spec(req.source, req.spec)),
    describe=".pt2 (torch.export)", identity="SHA-256 of the bytes loaded", order=20))
