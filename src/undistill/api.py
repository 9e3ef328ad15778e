"""The Python API: everything the command line does, as plain functions.

Each function takes run directories (or run configs), builds the runs with
:mod:`undistill.recipes`, trains what is missing and returns the results; the command line
(:mod:`undistill.cli`) only parses arguments, calls one of these and prints. Errors are raised
as the package's exceptions (:data:`USER_ERRORS`), each with a one-line message.

Teachers are given as run directories (``Path``) or :class:`~undistill.config.RunConfig`; without
a ``runtime``, runs are stored next to the first teacher given as a directory (or in ``runs/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from undistill.checkpoint import CheckpointError
from undistill.config import ConfigError, RunConfig, Runtime, load_config
from undistill.data import DatasetError
from undistill.engine import RunResult, TrainingDiverged

if TYPE_CHECKING:
    from undistill.executor import Executor
    from undistill.suites import DryRun, Plan, SuiteSpec

#: The errors a caller made (bad config, missing data or run, diverged training, a search or a
#: report that cannot run as asked: ``SearchError`` and ``ReportError`` are ``ValueError``s), as
#: opposed to bugs; each message names what to change.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DatasetError, CheckpointError,
                                             TrainingDiverged, ValueError)

TeacherRef = Path | str | RunConfig


# --------------------------------------------------------------------------------------------
# runs and teachers
# --------------------------------------------------------------------------------------------

def run_config(run: TeacherRef) -> RunConfig:
    """The config of a finished (or started) run, from its directory; a config is returned as is."""
    from undistill.runs import read_run_config

    return run if isinstance(run, RunConfig) else read_run_config(Path(run))


def _runtime(runtime: Runtime | None, near: Sequence[TeacherRef] = ()) -> Runtime:
    if runtime is not None:
        return runtime
    for ref in near:
        if not isinstance(ref, RunConfig):
            return Runtime(runs_dir=Path(ref).parent)
    return Runtime()


def _train(cfgs: list[RunConfig], runtime: Runtime) -> dict[str, RunResult]:
    from undistill.executor import LocalExecutor

    return LocalExecutor().run(cfgs, runtime)


def teacher_config(dataset: str, arch: str, width: float = 1.0, seed: int = 0,
                   epochs: int | None = None, sets: list[str] | None = None) -> RunConfig:
    """A normal teacher with the protocol's preset for its dataset and architecture."""
    from undistill.presets import teacher_config as preset

    return load_config(None, sets, base=preset(dataset, arch, width, seed, epochs))


def train(config: RunConfig | Path | str | None = None, *, dataset: str | None = None,
          arch: str | None = None, width: float = 1.0, epochs: int | None = None, seed: int = 0,
          sets: list[str] | None = None, runtime: Runtime | None = None) -> RunResult:
    """Train a run: a config (or YAML file), or a normal teacher from ``dataset`` and ``arch``."""
    from undistill.executor import ensure_trained

    if isinstance(config, RunConfig):
        cfg = config
    elif config is not None:
        cfg = load_config(Path(config), sets)
    elif dataset is None or arch is None:
        raise ConfigError("give a CONFIG file, or --dataset and --arch for a normal teacher")
    else:
        cfg = teacher_config(dataset, arch, width, seed, epochs, sets)
    return ensure_trained(cfg, runtime or Runtime())


def evaluate(run: Path | str, which: str = "auto", runs_dir: Path | None = None,
             data_root: Path | None = None, device: str = "auto") -> dict[str, Any]:
    """Accuracy (correct / total) and mean cross-entropy of a run's checkpoint (``auto``: best on
    a validation split, else last) on its evaluation split: ``{run_id, checkpoint, split,
    accuracy, loss, samples}``."""
    from undistill.data import DeviceLoader
    from undistill.engine import EVAL_BATCH, select_device
    from undistill.engine import evaluate as evaluate_loader
    from undistill.runs import data_views, load_run_model

    if which not in ("auto", "best", "last"):
        raise ValueError("--which must be auto, best or last")
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


# --------------------------------------------------------------------------------------------
# nasty teachers, SCM sequences, stealing students, defences
# --------------------------------------------------------------------------------------------

def nasty(teacher: TeacherRef, *, omega: float | None = None, tau: float | None = None,
          stop_at_acc: float | None = None, sets: list[str] | None = None,
          runtime: Runtime | None = None) -> RunResult:
    """Train a Nasty Teacher (Eq. 5) against a trained normal teacher (the adversary)."""
    from undistill.recipes import nasty_teacher, with_overrides

    cfg = with_overrides(nasty_teacher(run_config(teacher), omega, tau, stop_at_acc=stop_at_acc),
                         sets)
    return _train([cfg], _runtime(runtime, [teacher]))[cfg.run_id]


def scm_sequence(nasty_run: TeacherRef, *, k: int = 3, arch: str | None = None,
                 width: float | None = None, sets: list[str] | None = None,
                 runtime: Runtime | None = None) -> list[RunResult]:
    """Train the SCM sequence (Eq. 10) S^1..S^k from a nasty teacher S^1; results in order."""
    from undistill.recipes import scm_sequence as sequence
    from undistill.recipes import with_overrides

    first = _nasty_run(nasty_run)
    seq = [first] + [with_overrides(s, sets) for s in sequence(first, k, arch, width)[1:]]
    res = _train(seq, _runtime(runtime, [nasty_run]))
    return [res[s.run_id] for s in seq]


def _nasty_run(ref: TeacherRef) -> RunConfig:
    cfg = run_config(ref)
    if cfg.method.name != "nasty":
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


def steal(teachers: Sequence[TeacherRef], *, arch: str = "cnn", method: str = "kd",
          width: float = 1.0, fraction: float = 1.0, labels: bool = True, seed: int = 0,
          sets: list[str] | None = None, runtime: Runtime | None = None) -> RunResult:
    """Train a stealing student from one teacher or an ensemble (e.g. an SCM sequence)."""
    rt = _runtime(runtime, teachers)
    cfg = student_config(teachers, arch=arch, method=method, width=width, fraction=fraction,
                         labels=labels, seed=seed, sets=sets, data_root=rt.data_root)
    return _train([cfg], rt)[cfg.run_id]


def defend(nasty_run: TeacherRef, *, release: int = 2, compare_es: bool = True,
           runtime: Runtime | None = None) -> dict[str, RunResult]:
    """The SCM defence (release S^release of the sequence) and, with ``compare_es``, Nasty-ES
    stopped at the released model's accuracy. Returns ``{"scm-defence": ..., "nasty-es": ...}``."""
    from undistill.recipes import nasty_es
    from undistill.recipes import scm_sequence as sequence

    first = _nasty_run(nasty_run)
    if release < 2:
        raise ConfigError(f"release must be >= 2 (S^1 is the nasty teacher itself), got {release}")
    rt = _runtime(runtime, [nasty_run])
    seq = sequence(first, release)
    out = {"scm-defence": _train(seq, rt)[seq[-1].run_id]}
    if compare_es:
        es = nasty_es(first, out["scm-defence"].best_acc)
        out["nasty-es"] = _train([es], rt)[es.run_id]
    return out


# --------------------------------------------------------------------------------------------
# suites, search, analysis, reports
# --------------------------------------------------------------------------------------------

def load_suite(suite: str | Path | SuiteSpec) -> SuiteSpec:
    """A suite's validated spec: a built-in name or a YAML path (a spec is returned as is)."""
    from undistill.suites import SuiteSpec
    from undistill.suites import load_suite as load

    return suite if isinstance(suite, SuiteSpec) else load(suite)


def plan(suite: str | Path | SuiteSpec, scale: str | None = None) -> Plan:
    """The runs and table cells of a suite (built-in name, YAML path or spec) at a scale (a
    scale may name another suite: the plan is then that suite's)."""
    from undistill.suites import build_plan

    return build_plan(load_suite(suite), scale)


def results_dir(suite_name: str, scale: str) -> Path:
    """Where a suite's results go by default: ``results/SUITE-SCALE``."""
    return Path("results") / f"{suite_name}-{scale}"


def dry_run(suite: str | Path | SuiteSpec | Plan, scale: str | None = None,
            runtime: Runtime | None = None) -> DryRun:
    """What a suite would train (done / to do) and a rough time estimate; trains nothing."""
    from undistill.suites import Plan
    from undistill.suites import dry_run as plan_dry_run

    p = suite if isinstance(suite, Plan) else plan(suite, scale)
    return plan_dry_run(p, runtime or Runtime())


def reproduce(suite: str | Path | SuiteSpec | Plan, scale: str | None = None, *,
              out_dir: Path | None = None, runtime: Runtime | None = None,
              executor: Executor | None = None) -> dict[str, Any]:
    """Run (or finish) a suite; writes results.json, results.csv and tables.md to ``out_dir``
    (default :func:`results_dir` of the suite and scale) and returns the results document.
    ``executor``: how runs are trained (default: one after another in this process)."""
    from undistill.suites import Plan
    from undistill.suites import reproduce as run_suite

    if isinstance(suite, Plan):
        p, name = suite, suite.suite.name
    else:
        spec = load_suite(suite)
        p, name = plan(spec, scale), spec.name
    return run_suite(p.suite, runtime or Runtime(), out_dir or results_dir(name, p.scale), p.scale,
                     executor=executor, plan=p)


def leaderboard(spec: str | Path = "defences-demo", *, out_dir: Path | None = None,
                runtime: Runtime | None = None, log: Any = print) -> dict[str, Any]:
    """Every attack against every defence (docs/defences.md): trains what is missing, writes
    leaderboard.md, leaderboard.json and pareto.png to ``out_dir`` (default results/NAME) after
    each defence, and returns the leaderboard document. ``spec``: a built-in name
    (``defences-demo``, ``defences-cifar10-cpu``) or a YAML path."""
    from undistill.defences.leaderboard import load_leaderboard, run_leaderboard

    s = load_leaderboard(spec)
    return run_leaderboard(s, runtime or Runtime(), out_dir or Path("results") / s.name, log=log)


def search(teachers: Sequence[TeacherRef], *, arch: str = "cnn", method: str = "htc",
           grid: str = "paper", sampler: str = "grid", trials: int | None = None,
           val_fraction: float = 0.1, val_seed: int = 0, width: float = 1.0,
           epochs: int | None = None, fixed: dict[str, Any] | None = None, final: bool = True,
           out_dir: Path | None = None, seed: int = 0, study_seed: int = 0,
           runtime: Runtime | None = None, executor: Executor | None = None) -> dict[str, Any]:
    """Search a method's parameters on a validation split carved from the training set (never
    the test set); writes ``search.json`` to ``out_dir`` (default results/search-METHOD-ARCH)."""
    from undistill.presets import optim_preset
    from undistill.search import SearchError, run_search

    if not teachers:
        raise SearchError("give at least one teacher run")
    tcfgs = [run_config(t) for t in teachers]
    optim = None
    if epochs is not None:
        o = optim_preset(tcfgs[0].data.name, arch, epochs)
        optim = {"epochs": o["epochs"], "milestones": o["milestones"]}
    return run_search(tcfgs, arch, method, _runtime(runtime, teachers), grid=grid,
                      sampler=sampler, trials=trials, val_fraction=val_fraction,
                      val_seed=val_seed, width=width, seed=seed, study_seed=study_seed,
                      fixed=fixed, optim=optim, final=final,
                      out_dir=out_dir or Path("results") / f"search-{method}-{arch}",
                      executor=executor)


def analyze(runs: Sequence[Path], reference: Path, *, out_dir: Path = Path("analysis"),
            runs_dir: Path | None = None, data_root: Path | None = None, device: str = "auto",
            samples: int = 1000, examples: int = 4, seed: int = 0, ensemble: bool = True,
            tsne: bool = True) -> dict[str, Any]:
    """KL to the normal teacher, output statistics and Fig. 1, 2 and 5 for trained runs;
    writes analysis.json and the PNGs to ``out_dir`` and returns the JSON document."""
    from undistill.engine import select_device
    from undistill.figures import write_analysis

    _check_samples(samples, examples)
    return write_analysis(list(runs), reference, out_dir, runs_dir, data_root,
                          select_device(device), samples, examples, seed, ensemble, tsne)


def report(results: Path, *, runs_dir: Path = Path("runs"), suite: str | None = None,
           html: bool = False, figures: bool = True, samples: int = 1000, examples: int = 4,
           seed: int = 0, data_root: Path | None = None, device: str = "auto") -> Path:
    """Write report.md (and report.html) of a finished suite's results directory; returns its path."""
    from undistill.engine import select_device
    from undistill.report import write_report

    _check_samples(samples, examples)
    return write_report(results, runs_dir, data_root, suite, html, select_device(device),
                        samples, examples, seed, figures)


def _check_samples(samples: int, examples: int) -> None:
    if samples < 2 or examples < 1:
        raise ValueError("--samples must be >= 2 and --examples >= 1")
