"""Teachers from files and run directories, the input-spec YAML beside a model, and kind detection.

Kinds (by source): ``http(s)://`` URL -> an Open Inference Protocol model (``remote.py``);
``.onnx`` -> onnxruntime; ``.pt2`` -> a ``torch.export`` program; ``.ts`` -> TorchScript;
``.safetensors`` -> a state_dict (needs ``arch``); ``.pt``/``.pth`` -> TorchScript, or a state_dict
read with ``weights_only=True`` when ``arch`` is given; a directory -> a run of this toolkit.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import ValidationError

from undistill.config import ExternalTeacherConfig, InputSpec, _format
from undistill.teachers.base import Teacher, TeacherError

SPEC_FIELDS = set(InputSpec.model_fields)


def spec_file(path: str | Path) -> Path | None:
    """The YAML beside a model: ``model.onnx.yaml`` or ``model.yaml``."""
    p = Path(path)
    for cand in (p.with_name(p.name + ".yaml"), p.with_suffix(".yaml")):
        if cand.is_file() and cand != p:
            return cand
    return None


def read_spec_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise TeacherError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict):
        raise TeacherError(f"{path}: must hold a mapping of input conventions")
    return doc


def read_spec(path: str | Path | None, spec: InputSpec | dict[str, Any] | None = None
              ) -> InputSpec:
    """The YAML beside the model (if any), overridden by ``spec`` (flags)."""
    fields: dict[str, Any] = {}
    if path is not None and (f := spec_file(path)) is not None:
        fields.update({k: v for k, v in read_spec_yaml(f).items() if k in SPEC_FIELDS})
    if isinstance(spec, InputSpec):
        fields.update(spec.model_dump(exclude_unset=True))
    elif spec:
        fields.update({k: v for k, v in spec.items() if v is not None})
    try:
        return InputSpec(**fields)
    except ValidationError as e:
        raise TeacherError(f"input spec of {path or 'the teacher'}: {_format(e)}") from None


def _require_file(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise TeacherError(f"{path}: no such model file")
    return p


class TorchScriptTeacher(Teacher):
    kind = "torchscript"

    def __init__(self, source: str, spec: InputSpec | None = None) -> None:
        super().__init__(source, spec)
        try:
            self.model = torch.jit.load(str(_require_file(source)), map_location="cpu").eval()
        except TeacherError:
            raise
        except Exception as e:  # torch raises RuntimeError/ValueError variants for bad files
            raise TeacherError(f"{source}: not a TorchScript model ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''})") from None

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        dev = next(iter(self.model.parameters()), torch.empty(0)).device
        return self.model(x.to(dev)).float()


class ExportTeacher(Teacher):
    """A ``torch.export`` program (``torch.export.save``), run on the CPU; loaded without running
    any code of the archive (:mod:`undistill.teachers.archive_check`)."""

    kind = "export"

    def __init__(self, source: str, spec: InputSpec | None = None) -> None:
        from undistill.teachers.archive_check import load_export, quiet

        super().__init__(source, spec)
        data = _require_file(source).read_bytes()
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


class OnnxTeacher(Teacher):
    """An ONNX model run with onnxruntime (CPU); the optional extra ``undistill[onnx]``."""

    kind = "onnx"

    def __init__(self, source: str, spec: InputSpec | None = None) -> None:
        super().__init__(source, spec)
        try:
            import onnxruntime as ort
        except ImportError:
            raise TeacherError(f"{source}: ONNX teachers need onnxruntime "
                               f"(pip install 'undistill[onnx]')") from None
        path = _require_file(source)
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


class StateDictTeacher(Teacher):
    """Weights (safetensors, or ``.pt`` read with ``weights_only=True``) in a zoo architecture or a
    factory ``package.module:function``; the model is built once the spec is complete (``bind``)."""

    kind = "state_dict"

    def __init__(self, source: str, spec: InputSpec | None = None, arch: str = "",
                 width: float = 1.0) -> None:
        super().__init__(source, spec)
        if not arch:
            raise TeacherError(f"{source}: a state_dict needs an architecture (arch: a zoo name or "
                               f"package.module:function)")
        self.arch, self.width = arch, width
        self.tensors = self._read(_require_file(source))
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


class RunTeacher(Teacher):
    """A finished run of this toolkit (its best checkpoint), for serving and auditing; in a run
    config such a teacher stays a nested :class:`~undistill.config.RunConfig`."""

    kind = "run"

    def __init__(self, path: Path, runs_dir: Path | None = None, data_root: Path | None = None,
                 trust_factory: bool = False) -> None:
        from undistill.checkpoint import CheckpointError
        from undistill.runs import get_dataset, load_run_model, read_run_config

        super().__init__(str(path))
        try:
            self.run_config = read_run_config(path, allow_factories=trust_factory)
            self.model = load_run_model(self.run_config, runs_dir or path.parent, data_root)
        except CheckpointError as e:
            raise TeacherError(str(e)) from None
        ds = get_dataset(self.run_config.data.name, data_root, self.run_config.data.resize)
        self.bind_dataset(ds)
        self.spec = self.spec.model_copy(update={"outputs": "logits"})
        self._digest = f"run:{self.run_config.run_id}"

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        dev = next(iter(self.model.parameters())).device
        return self.model(x.to(dev)).float()


def detect_kind(source: str, arch: str | None = None) -> str:
    if source.startswith(("http://", "https://")):
        return "url"
    p = Path(source)
    if p.is_dir():
        return "run"
    if not p.exists():
        raise TeacherError(f"{source}: no such model file, run directory or http(s) URL")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".pt2":
        return "export"
    if suffix == ".safetensors":
        return "state_dict"
    if suffix == ".ts":
        return "torchscript"
    if suffix in (".pt", ".pth"):
        if arch:
            return "state_dict"
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            raise TeacherError(f"{source}: not a model file (not a TorchScript or torch archive)"
                               ) from None
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return "torchscript"
        raise TeacherError(f"{source}: a state_dict, not a whole model; give its architecture "
                           f"(--teacher-arch, or arch= in Python: a zoo name or "
                           f"package.module:function)")
    raise TeacherError(f"{source}: unknown model file type {suffix or '(no suffix)'!r}; known: .pt, "
                       f".ts (TorchScript), .pt2 (torch.export), .onnx, .safetensors / .pt with an "
                       f"architecture, a run directory, or an http(s) URL")


def open_source(source: str, spec: InputSpec | dict[str, Any] | None = None, *,
                arch: str | None = None, width: float = 1.0, runs_dir: Path | None = None,
                data_root: Path | None = None, trust_factory: bool = False, **client: Any
                ) -> Teacher:
    """Open a teacher from a path or URL (``client``: options of :class:`RemoteTeacher`).

    A state_dict's architecture is ``arch`` (the caller's), else the ``arch`` of the YAML beside
    the model; a factory (``package.module:function``, code that runs) named there is refused
    unless ``trust_factory``."""
    if not isinstance(source, str | Path):
        from undistill.teachers.base import _not_a_source

        raise _not_a_source(source)
    source = str(source)
    kind = detect_kind(source, arch)
    if kind == "run":
        return RunTeacher(Path(source), runs_dir=runs_dir, data_root=data_root,
                          trust_factory=trust_factory)
    if kind == "url":
        from undistill.teachers.remote import RemoteTeacher

        return RemoteTeacher(source, read_spec(None, spec), **client)
    file_spec = read_spec(source, spec)
    if kind == "state_dict" and not arch:
        f = spec_file(source)
        extra = read_spec_yaml(f) if f else {}
        arch, width = extra.get("arch"), extra.get("width", width)
        if not isinstance(arch, str | None) or not isinstance(width, int | float):
            raise TeacherError(f"{f}: arch must be a name and width a number")
        if arch and ":" in arch and not trust_factory:
            raise TeacherError(f"{f}: the YAML beside the model names a factory {arch!r} as its "
                               f"architecture, which runs code; if you trust it pass "
                               f"--trust-factory (CLI) / trust_factory=True (Python), or give the "
                               f"architecture with --teacher-arch")
    return {
        "torchscript": lambda: TorchScriptTeacher(source, file_spec),
        "export": lambda: ExportTeacher(source, file_spec),
        "onnx": lambda: OnnxTeacher(source, file_spec),
        "state_dict": lambda: StateDictTeacher(source, file_spec, arch=arch or "", width=float(width)),
    }[kind]()


#: Teachers opened (and probed) in this process, by identity: a run reuses the one its caller
#: opened, so a URL teacher is probed once per process and one query budget covers the process.
OPENED: dict[str, Teacher] = {}


def remember(teacher: Teacher) -> Teacher:
    OPENED[teacher.identity] = teacher
    return teacher


def open_config(cfg: ExternalTeacherConfig, ds: Any, **client: Any) -> Teacher:
    """Open a run config's external teacher, bind it to the run's dataset, probe it once, and
    check it is still the model the run was configured with (its identity). A teacher this
    process opened already (:func:`remember`) is reused as it is."""
    if (known := OPENED.get(cfg.identity)) is not None and known.source == cfg.source:
        return known
    if cfg.kind == "url":
        from undistill.teachers.remote import RemoteTeacher

        teacher: Teacher = RemoteTeacher(cfg.source, cfg.spec, **client)
    else:
        teacher = open_source(cfg.source, cfg.spec, arch=cfg.arch, width=cfg.width)
    teacher.bind_dataset(ds)
    teacher.probe()
    if teacher.identity != cfg.identity:
        raise TeacherError(f"{cfg.source}: the model changed since this run was configured "
                           f"(identity {teacher.identity} != {cfg.identity}); configure the run "
                           f"again (a new run id)")
    return teacher
