"""Stealing from any teacher: open it, check it once, train a student against it.

:func:`steal_external` is what ``undistill.steal`` (:func:`undistill.api.steal`) does with a
teacher that is not a run of this toolkit: ``undistill steal --teacher``. A teacher is
a :class:`~undistill.teachers.Teacher`, a path (model file or run directory) or a URL. Teachers
whose answers cost queries (a remote kind: a URL) answer through the answer cache
``runs_dir/answers.sqlite`` within ``budget`` images. One :class:`~undistill.teachers.Opener`
covers the call: the run learns from the teacher opened and probed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from undistill.config import ExternalTeacherConfig, InputSpec, RunConfig, Runtime
from undistill.teachers import Opener, Teacher, TeacherError, open_source
from undistill.teachers.kinds.run import RunTeacher


def opener_for(runs_dir: Path = Path("runs"), budget: int | None = None,
               data_root: Path | None = None, trust_factory: bool = False,
               **client: Any) -> Opener:
    """The opener of one call: remote teachers through ``runs_dir/answers.sqlite`` within
    ``budget`` images, with ``client``'s options."""
    from undistill.runs import ANSWERS

    return Opener(cache=Path(runs_dir) / ANSWERS, budget=budget, client=client, data_root=data_root,
                  trust_factory=trust_factory)


def open_teacher(source: Teacher | str | Path, dataset: str, data_root: Path | None = None,
                 runs_dir: Path = Path("runs"), spec: InputSpec | dict[str, Any] | None = None,
                 arch: str | None = None, width: float = 1.0, budget: int | None = None, *,
                 opener: Opener | None = None, trust_factory: bool = False,
                 **client: Any) -> Teacher:
    """Open ``source`` (through ``opener``, by default one for ``runs_dir``, ``budget`` and
    ``client``), bind it to ``dataset``'s conventions and probe it once (a remote kind: through the
    answer cache and within the budget, the probe included); ``opener`` then holds it. Raises
    TeacherError on any misfit."""
    from undistill.runs import get_dataset

    if budget is not None and budget < 2:
        raise TeacherError(f"budget: {budget} images leave none to train on (one goes to the probe)"
                           f"; give at least 2")
    ds = get_dataset(dataset, data_root)
    if opener is None:
        opener = opener_for(runs_dir, budget, data_root, trust_factory, **client)
    if isinstance(source, Teacher):
        teacher = source
    else:
        teacher = open_source(str(source), spec, arch=arch, width=width,
                              **opener.options(source, arch))
    if teacher.find(RunTeacher) is not None:
        return teacher
    teacher.bind_dataset(ds)
    teacher.probe()
    return opener.remember(teacher)


def teacher_entries(teacher: Teacher) -> list[RunConfig | ExternalTeacherConfig]:
    """How a run config holds ``teacher``: a run stays a nested RunConfig."""
    run = teacher.find(RunTeacher)
    return [run.run_config] if run is not None else [teacher.config()]


def student_config(teacher: Teacher, dataset: str, arch: str = "cnn", method: str = "kd",
                   budget: int | None = None, width: float = 1.0, labels: bool = True,
                   epochs: int | None = None, params: dict[str, Any] | None = None,
                   seed: int = 0, sets: list[str] | None = None, name: str = "",
                   client: dict[str, Any] | None = None,
                   thief: dict[str, Any] | None = None) -> RunConfig:
    from undistill.presets import optim_preset
    from undistill.recipes import student, with_overrides

    entries = teacher_entries(teacher)
    runs = [e for e in entries if isinstance(e, RunConfig)]
    external = [e for e in entries if isinstance(e, ExternalTeacherConfig)]
    if client and external:
        external = [e.model_copy(update={"client": e.client.model_copy(update=client)})
                    for e in external]
    optim = None
    if epochs is not None:
        o = optim_preset(dataset, arch)
        optim = {"epochs": epochs, "milestones": [m for m in o["milestones"] if m < epochs]}
    cfg = student(runs, arch, method, params, width=width, dataset=dataset, optim=optim,
                  data={"labels": labels}, seed=seed, name=name, external=external, budget=budget,
                  thief=thief)
    cfg = with_overrides(cfg, sets)
    if cfg.thief is not None:  # its steps at the batch size the overrides left
        from undistill.thief import thief_optim

        optim = thief_optim(cfg.optim.model_dump(), cfg.thief.model_dump(), cfg.budget or 2)
        cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update=optim)})
    return cfg


def steal_external(teacher: Teacher | str | Path, dataset: str, arch: str = "cnn",
                   method: str = "kd", *, budget: int | None = None, data_root: Path | None = None,
                   runs_dir: Path = Path("runs"), width: float = 1.0, labels: bool = True,
                   epochs: int | None = None, params: dict[str, Any] | None = None, seed: int = 0,
                   sets: list[str] | None = None, device: str = "auto", progress: bool = False,
                   spec: InputSpec | dict[str, Any] | None = None, teacher_arch: str | None = None,
                   teacher_width: float = 1.0, trust_factory: bool = False, **client: Any) -> Any:
    """Train a ``method`` student of architecture ``arch`` against ``teacher``; returns the
    run's :class:`~undistill.engine.RunResult` (``run_dir`` holds it). ``client``: options of a URL
    teacher; ``trust_factory``: a YAML beside a state_dict may name a factory (code that runs)."""
    from undistill.executor import ensure_trained

    opener = opener_for(runs_dir, budget, data_root, trust_factory, **client)
    t = open_teacher(teacher, dataset, data_root, runs_dir, spec, teacher_arch, teacher_width,
                     budget=budget, opener=opener)
    cfg = student_config(t, dataset, arch, method, budget, width, labels, epochs, params, seed, sets)
    runtime = Runtime(runs_dir=runs_dir, data_root=data_root, device=device, progress=progress,
                      opener=opener)
    return ensure_trained(cfg, runtime)

