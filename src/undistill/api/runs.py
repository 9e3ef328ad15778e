"""The API's runs: configs, training, evaluation, nasty teachers, SCM sequences, students, defences.

Teachers are given as run directories (``Path``) or :class:`~undistill.config.RunConfig`; without
a ``runtime``, runs are stored next to the first teacher given as a directory (or in ``runs/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from undistill.config import ConfigError, RunConfig, Runtime, load_config
from undistill.run_result import RunResult

TeacherRef = Path | str | RunConfig


def run_config(run: TeacherRef) -> RunConfig:
    """The config of a finished (or started) run, from its directory; a config is returned as is."""
    from undistill.runs import read_run_config

    return run if isinstance(run, RunConfig) else read_run_config(Path(run))


def runtime_near(runtime: Runtime | None, near: Sequence[TeacherRef] = ()) -> Runtime:
    """``runtime``, or by default one storing runs beside the first teacher given as a directory."""
    if runtime is not None:
        return runtime
    for ref in near:
        if not isinstance(ref, RunConfig):
            return Runtime(runs_dir=Path(ref).parent)
    return Runtime()


def train_all(cfgs: list[RunConfig], runtime: Runtime) -> dict[str, RunResult]:
    from undistill.executor import LocalExecutor

    return LocalExecutor().run(cfgs, runtime)


def teacher_config(dataset: str, arch: str, width: float = 1.0, seed: int = 0,
                   epochs: int | None = None, sets: list[str] | None = None) -> RunConfig:
    """A normal teacher with the protocol's preset for its dataset and architecture."""
    from undistill.presets import teacher_config as preset

    return load_config(None, sets, base=preset(dataset, arch, width, seed, epochs))


def make_config(config: RunConfig | Path | str | None = None, *, dataset: str | None = None,
                arch: str | None = None, width: float = 1.0, epochs: int | None = None,
                seed: int = 0, sets: list[str] | None = None) -> RunConfig:
    """A run's config: ``config`` (or its YAML file), or a normal teacher from ``dataset`` and
    ``arch`` (:func:`teacher_config`)."""
    if isinstance(config, RunConfig):
        return config
    if config is not None:
        return load_config(Path(config), sets)
    if dataset is None or arch is None:
        raise ConfigError("give a CONFIG file, or --dataset and --arch for a normal teacher")
    return teacher_config(dataset, arch, width, seed, epochs, sets)


def bound_config(config: RunConfig | Path | str | None = None, *, dataset: str | None = None,
                 arch: str | None = None, sets: list[str] | None = None,
                 data_root: Path | None = None) -> tuple[RunConfig, bool]:
    """:func:`make_config` bound to the data it would read (its run id holds the data's
    fingerprint), and whether that data was found; without ``data_root`` and without data at the
    default location, the config unbound and False (a DatasetError when ``data_root`` is given)."""
    from undistill.data import DatasetError
    from undistill.runs import bind_data

    cfg = make_config(config, dataset=dataset, arch=arch, sets=sets)
    try:
        return bind_data(cfg, data_root), True
    except DatasetError:
        if data_root is not None:
            raise
        return cfg, False


def train(config: RunConfig | Path | str | None = None, *, dataset: str | None = None,
          arch: str | None = None, width: float = 1.0, epochs: int | None = None, seed: int = 0,
          sets: list[str] | None = None, runtime: Runtime | None = None) -> RunResult:
    """Train a run: a config (or YAML file), or a normal teacher from ``dataset`` and ``arch``."""
    from undistill.executor import ensure_trained

    cfg = make_config(config, dataset=dataset, arch=arch, width=width, epochs=epochs, seed=seed,
                      sets=sets)
    return ensure_trained(cfg, runtime or Runtime())


def evaluate(run: Path | str, which: str = "auto", runs_dir: Path | None = None,
             data_root: Path | None = None, device: str = "auto") -> dict[str, Any]:
    """Accuracy (correct / total) and mean cross-entropy of a run's checkpoint (``auto``: best on
    a validation split, else last) on its evaluation split: ``{run_id, checkpoint, split,
    accuracy, loss, samples}``."""
    from undistill.data import DeviceLoader
    from undistill.devices import select_device
    from undistill.runs import data_views, load_run_model
    from undistill.steps import EVAL_BATCH
    from undistill.steps import evaluate as evaluate_loader

    if which not in ("auto", "best", "last"):
        raise ConfigError("--which must be auto, best or last")
    run = Path(run)
    cfg = run_config(run)
    dev = select_device(device)
    model = load_run_model(cfg, runs_dir or run.parent, data_root, which, dev)
    views = data_views(cfg.data, data_root)
    ds = views.dataset
    loader = DeviceLoader(views.eval_images.to(dev), views.eval_labels.to(dev),
                          batch_size=EVAL_BATCH, mean=ds.mean, std=ds.std, augment=None,
                          shuffle=False, drop_last=False, seed=0)
    acc, loss = evaluate_loader(model, loader, dev)
    return {"run_id": cfg.run_id, "checkpoint": which, "split": views.eval_split,
            "accuracy": acc, "loss": loss, "samples": int(views.eval_labels.numel())}


def nasty(teacher: TeacherRef, *, omega: float | None = None, tau: float | None = None,
          stop_at_acc: float | None = None, sets: list[str] | None = None,
          runtime: Runtime | None = None) -> RunResult:
    """Train a Nasty Teacher (Eq. 5) against a trained normal teacher (the adversary)."""
    from undistill.recipes import nasty_teacher, with_overrides

    cfg = with_overrides(nasty_teacher(run_config(teacher), omega, tau, stop_at_acc=stop_at_acc),
                         sets)
    return train_all([cfg], runtime_near(runtime, [teacher]))[cfg.run_id]


def scm_sequence(nasty_run: TeacherRef, *, k: int = 3, arch: str | None = None,
                 width: float | None = None, sets: list[str] | None = None,
                 runtime: Runtime | None = None) -> list[RunResult]:
    """Train the SCM sequence (Eq. 10) S^1..S^k from a nasty teacher S^1; results in order."""
    from undistill.recipes import scm_sequence as sequence
    from undistill.recipes import with_overrides

    first = _nasty_run(nasty_run)
    seq = [first] + [with_overrides(s, sets) for s in sequence(first, k, arch, width)[1:]]
    res = train_all(seq, runtime_near(runtime, [nasty_run]))
    return [res[s.run_id] for s in seq]


def _nasty_run(ref: TeacherRef) -> RunConfig:
    cfg = run_config(ref)
    from undistill.methods import METHODS

    if not METHODS.get(cfg.method.name).makes_teacher:
        raise ConfigError(f"{ref if not isinstance(ref, RunConfig) else cfg.run_id} is a "
                          f"{cfg.method.name!r} run; S^1 must be a nasty teacher")
    return cfg


def student_config(teachers: Sequence[TeacherRef], *, arch: str = "cnn", method: str = "kd",
                   width: float = 1.0, fraction: float = 1.0, labels: bool = True, seed: int = 0,
                   sets: list[str] | None = None, data_root: Path | None = None) -> RunConfig:
    """A stealing student's run config (every method of Table 1, and the data-free ones, which
    ignore ``fraction`` and ``labels``: they never read the dataset)."""
    from undistill.methods import METHODS
    from undistill.recipes import data_free_student, is_data_free, student, with_overrides

    if method not in METHODS:
        raise ConfigError(f"method: unknown method {method!r}; known: {', '.join(METHODS.names())}")
    if not teachers:
        raise ConfigError("give at least one teacher run")
    tcfgs = [run_config(t) for t in teachers]
    if is_data_free(method):
        cfg = data_free_student(tcfgs, arch, method, width=width, seed=seed, data_root=data_root)
    else:
        cfg = student(tcfgs if METHODS.get(method).needs_teacher() else [], arch, method,
                      width=width, dataset=tcfgs[0].data.name,
                      data={"fraction": fraction, "labels": labels}, seed=seed)
    return with_overrides(cfg, sets)


def is_run(ref: object) -> bool:
    """A run of this toolkit: its config, or a run directory (a folder; not a URL)."""
    return isinstance(ref, RunConfig) or (isinstance(ref, str | Path) and "://" not in str(ref)
                                          and Path(ref).is_dir())


def steal(teacher: Any, dataset: str | None = None, *, arch: str = "cnn", method: str = "kd",
          width: float = 1.0, fraction: float = 1.0, labels: bool = True, seed: int = 0,
          sets: list[str] | None = None, runtime: Runtime | None = None, **external: Any
          ) -> RunResult:
    """Train a ``method`` student of architecture ``arch`` from any teacher; returns its result.

    ``teacher``: runs of this toolkit (a run directory, a :class:`RunConfig`, or a list of them:
    an ensemble, e.g. an SCM sequence; their dataset is the runs'), or one teacher from anywhere
    (an :class:`undistill.Teacher`, a model file or an http(s) URL) stolen with images of
    ``dataset``; ``external`` then takes the options of :func:`undistill.api.steal_from`
    (``budget``, ``epochs``, ``params``, ``spec``, ``teacher_arch``, ``teacher_width``,
    ``trust_factory`` and the URL client's options)."""
    teachers = list(teacher) if isinstance(teacher, list | tuple) else [teacher]
    if not all(is_run(t) for t in teachers):
        if len(teachers) != 1:
            raise ConfigError("an ensemble is made of runs; a model file, URL or Teacher is stolen "
                              "alone")
        from undistill.api.teachers import steal_from

        if fraction != 1.0:
            raise ConfigError("fraction: not available against a teacher from a file or URL (give "
                              "a budget)")
        return steal_from(teachers[0], dataset, arch=arch, method=method, width=width,
                          labels=labels, seed=seed, sets=sets, runtime=runtime, **external)
    if external:
        raise ConfigError(f"{', '.join(sorted(external))}: options of a teacher from a file or URL, "
                          f"not of runs")
    rt = runtime_near(runtime, teachers)
    cfg = student_config(teachers, arch=arch, method=method, width=width, fraction=fraction,
                         labels=labels, seed=seed, sets=sets, data_root=rt.data_root)
    return train_all([cfg], rt)[cfg.run_id]


def defend(nasty_run: TeacherRef, *, release: int = 2, compare_es: bool = True,
           runtime: Runtime | None = None) -> dict[str, RunResult]:
    """The SCM defence (release S^release of the sequence) and, with ``compare_es``, Nasty-ES
    stopped at the released model's accuracy. Returns ``{"scm-defence": ..., "nasty-es": ...}``."""
    from undistill.recipes import nasty_es
    from undistill.recipes import scm_sequence as sequence

    first = _nasty_run(nasty_run)
    if release < 2:
        raise ConfigError(f"release must be >= 2 (S^1 is the nasty teacher itself), got {release}")
    rt = runtime_near(runtime, [nasty_run])
    seq = sequence(first, release)
    results = train_all(seq, rt)
    out = {"scm-defence": results[seq[-1].run_id]}
    if compare_es:  # the nasty run itself when it never reaches the release's accuracy
        es = nasty_es(first, out["scm-defence"].best_acc, nasty_best=results[first.run_id].best_acc)
        out["nasty-es"] = train_all([es], rt)[es.run_id]
    return out
