"""Open a teacher from any source (a path or URL): its kind is detected by the kind registry
(:mod:`undistill.teachers.kind`; one file per kind under ``kinds/``) unless named.

Built-in kinds (by source): ``http(s)://`` URL -> an Open Inference Protocol model (``kinds/url.py``);
``.onnx`` -> onnxruntime; ``.pt2`` -> a ``torch.export`` program; ``.ts`` -> TorchScript;
``.safetensors`` -> a state_dict (needs ``arch``); ``.pt``/``.pth`` -> TorchScript, or a state_dict
read with ``weights_only=True`` when ``arch`` is given; a directory -> a run of this toolkit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from undistill.config import InputSpec
from undistill.teachers.base import Teacher, _not_a_source
from undistill.teachers.kind import Source, detect_kind, open_kind
from undistill.teachers.kinds.export import ExportTeacher
from undistill.teachers.kinds.onnx import OnnxTeacher
from undistill.teachers.kinds.run import RunTeacher
from undistill.teachers.kinds.state_dict import StateDictTeacher
from undistill.teachers.kinds.torchscript import TorchScriptTeacher
from undistill.teachers.spec import SPEC_FIELDS, read_spec, read_spec_yaml, spec_file

__all__ = ["SPEC_FIELDS", "ExportTeacher", "OnnxTeacher", "RunTeacher", "StateDictTeacher",
           "TorchScriptTeacher", "detect_kind", "open_source", "read_spec",
           "read_spec_yaml", "spec_file"]


def open_source(source: str | Path, spec: InputSpec | dict[str, Any] | None = None, *,
                kind: str | None = None, arch: str | None = None, width: float = 1.0,
                runs_dir: Path | None = None, data_root: Path | None = None,
                trust_factory: bool = False, **client: Any) -> Teacher:
    """Open a teacher from a path or URL, of ``kind`` (default: detected). ``client``: options of
    a remote kind (a URL: :class:`~undistill.teachers.remote.RemoteTeacher`'s, plus ``cache`` and
    ``budget``, which wrap it).

    A state_dict's architecture is ``arch`` (the caller's), else the ``arch`` of the YAML beside
    the model; a factory (``package.module:function``, code that runs) named there is refused
    unless ``trust_factory``."""
    if not isinstance(source, str | Path):
        raise _not_a_source(source)
    source = str(source)
    name = kind or detect_kind(source, arch)
    return open_kind(name, Source(source, spec, arch=arch, width=width, runs_dir=runs_dir,
                                  data_root=data_root, trust_factory=trust_factory, client=client))

