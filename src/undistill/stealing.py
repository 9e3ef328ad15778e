"""Stealing from any teacher: open it, check it once, train a student against it.

``steal(teacher, dataset=...)`` is the Python twin of ``undistill steal --teacher``. A teacher is
a :class:`~undistill.teachers.Teacher`, a path (model file or run directory) or a URL. URL
teachers answer through the answer cache ``runs_dir/answers.sqlite`` within ``budget`` images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from undistill.config import ExternalTeacherConfig, InputSpec, RunConfig, Runtime
from undistill.teachers import Teacher, TeacherError
from undistill.teachers.remote import RemoteTeacher
from undistill.teachers.sources import RunTeacher, detect_kind, open_source, remember


def open_teacher(source: Teacher | str | Path, dataset: str, data_root: Path | None = None,
                 runs_dir: Path = Path("runs"), spec: InputSpec | dict[str, Any] | None = None,
                 arch: str | None = None, width: float = 1.0, budget: int | None = None,
                 **client: Any) -> Teacher:
    """Open ``source``, bind it to ``dataset``'s conventions and probe it once (for a URL: with the
    answer cache and ``budget``, the probe included). Raises TeacherError on any misfit."""
    from undistill.runs import ANSWERS, get_dataset

    if budget is not None and budget < 2:
        raise TeacherError(f"budget: {budget} images leave none to train on (one goes to the probe)"
                           f"; give at least 2")
    ds = get_dataset(dataset, data_root)
    if isinstance(source, Teacher):
        teacher = source
    else:
        src = str(source)
        if detect_kind(src, arch) == "url":
            client = {"cache": Path(runs_dir) / ANSWERS, "budget": budget, **client}
        teacher = open_source(src, spec, arch=arch, width=width, runs_dir=None, data_root=data_root,
                              **client)
    if not isinstance(teacher, RunTeacher):
        teacher.bind_dataset(ds)
        teacher.probe()
    return remember(teacher) if not isinstance(teacher, RunTeacher) else teacher


def teacher_entries(teacher: Teacher) -> tuple[list[RunConfig], list[ExternalTeacherConfig]]:
    """How a run config holds ``teacher``: a run stays a nested RunConfig."""
    if isinstance(teacher, RunTeacher):
        return [teacher.run_config], []
    return [], [teacher.config()]


def student_config(teacher: Teacher, dataset: str, arch: str = "cnn", method: str = "kd",
                   budget: int | None = None, width: float = 1.0, labels: bool = True,
                   epochs: int | None = None, params: dict[str, Any] | None = None,
                   seed: int = 0, sets: list[str] | None = None, name: str = "",
                   client: dict[str, Any] | None = None) -> RunConfig:
    from undistill.presets import optim_preset
    from undistill.recipes import student, with_overrides

    runs, external = teacher_entries(teacher)
    if client and external:
        external = [e.model_copy(update={"client": e.client.model_copy(update=client)})
                    for e in external]
    optim = None
    if epochs is not None:
        o = optim_preset(dataset, arch)
        optim = {"epochs": epochs, "milestones": [m for m in o["milestones"] if m < epochs]}
    cfg = student(runs, arch, method, params, width=width, dataset=dataset, optim=optim,
                  data={"labels": labels}, seed=seed, name=name, external=external, budget=budget)
    return with_overrides(cfg, sets)


def steal(teacher: Teacher | str | Path, dataset: str, arch: str = "cnn", method: str = "kd", *,
          budget: int | None = None, data_root: Path | None = None, runs_dir: Path = Path("runs"),
          width: float = 1.0, labels: bool = True, epochs: int | None = None,
          params: dict[str, Any] | None = None, seed: int = 0, sets: list[str] | None = None,
          device: str = "auto", progress: bool = False, spec: InputSpec | dict[str, Any] | None = None,
          teacher_arch: str | None = None, teacher_width: float = 1.0, **client: Any) -> Any:
    """Train a ``method`` student of architecture ``arch`` against ``teacher``; returns the
    run's :class:`~undistill.engine.RunResult` (``run_dir`` holds it)."""
    from undistill.executor import ensure_trained

    t = open_teacher(teacher, dataset, data_root, runs_dir, spec, teacher_arch, teacher_width,
                     budget=budget, **client)
    cfg = student_config(t, dataset, arch, method, budget, width, labels, epochs, params, seed, sets)
    runtime = Runtime(runs_dir=runs_dir, data_root=data_root, device=device, progress=progress)
    return ensure_trained(cfg, runtime)


def queries_sent(teacher: Teacher) -> int | None:
    """Images a URL teacher sent in this process (probe included); None for other teachers."""
    return teacher.sent if isinstance(teacher, RemoteTeacher) else None
