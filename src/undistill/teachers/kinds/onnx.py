"""An ONNX model (``.onnx``) run with onnxruntime on the CPU; the optional extra ``undistill[onnx]``."""

from __future__ import annotations

from pathlib import Path

import torch

from undistill.config import InputSpec
from undistill.teachers.base import Teacher, TeacherError
from undistill.teachers.kind import Kind, register_kind
from undistill.teachers.spec import read_spec, require_file


class OnnxTeacher(Teacher):
    kind = "onnx"

    def __init__(self, source: str, spec: InputSpec | None = None) -> None:
        super().__init__(source, spec)
        try:
            import onnxruntime as ort
        except ImportError:
            raise TeacherError(f"{source}: ONNX teachers need onnxruntime "
                               f"(pip install 'undistill[onnx]')") from None
        path = require_file(source)
        try:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime also refuses external data outside the model's folder
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise TeacherError(f"{source}: not an ONNX model ({type(e).__name__}: {first})") from None
        self.__dict__["_session"] = sess
        self._input_name = sess.get_inputs()[0].name

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        (out, *_) = self._session.run(None, {self._input_name: x.detach().cpu().numpy()})
        return torch.from_numpy(out).float()


KIND = register_kind(Kind(
    "onnx", lambda source, arch: Path(source).suffix.lower() == ".onnx" and Path(source).is_file(),
    lambda req: OnnxTeacher(req.source, read_spec(req.source, req.spec)),
    describe=".onnx", identity="SHA-256 of the file", order=20))
