"""The API's suites (tables of the paper), leaderboards, searches, analyses and reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from undistill.api.runs import TeacherRef, run_config, runtime_near
from undistill.config import ConfigError, Runtime

if TYPE_CHECKING:
    from undistill.executor import Executor
    from undistill.progress import Reporter
    from undistill.suites import DryRun, Plan, SuiteSpec


def make_executor(name: str = "local", address: str | None = None,
                  reporter: Reporter | None = None) -> Executor:
    """How runs are trained: ``local`` (one after another in this process) or ``ray`` (Ray tasks;
    ``address`` joins an existing cluster, none starts Ray here; needs ``undistill[ray]``)."""
    from undistill.executor import EXECUTORS, LocalExecutor

    if name not in EXECUTORS:
        raise ConfigError(f"executor: unknown {name!r}; known: {', '.join(EXECUTORS)}")
    if name == "local":
        if address is not None:
            raise ConfigError("address: only the ray executor joins a cluster (--executor ray)")
        return LocalExecutor(reporter)
    from undistill.ray_executor import RayExecutor

    return RayExecutor(address, reporter=reporter)


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
                runtime: Runtime | None = None, log: Any = print,
                executor: Executor | None = None) -> dict[str, Any]:
    """Every attack against every defence (docs/defences.md): trains what is missing, writes
    leaderboard.md, leaderboard.json and pareto.png to ``out_dir`` (default results/NAME) after
    each defence, and returns the leaderboard document. ``spec``: a built-in name
    (``defences-demo``, ``defences-cifar10-cpu``) or a YAML path. ``executor``: how runs are
    trained (default: one after another in this process; :func:`make_executor`)."""
    from undistill.suites import load_leaderboard, run_leaderboard

    s = load_leaderboard(spec)
    return run_leaderboard(s, runtime or Runtime(), out_dir or Path("results") / s.name, log=log,
                           executor=executor)


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
    return run_search(tcfgs, arch, method, runtime_near(runtime, teachers), grid=grid,
                      sampler=sampler, trials=trials, val_fraction=val_fraction,
                      val_seed=val_seed, width=width, seed=seed, study_seed=study_seed,
                      fixed=fixed, optim=optim, final=final,
                      out_dir=out_dir or search_dir(method, arch), executor=executor)


def search_dir(method: str, arch: str) -> Path:
    """Where a search's ``search.json`` goes by default: ``results/search-METHOD-ARCH``."""
    return Path("results") / f"search-{method}-{arch}"


def analyze(runs: Sequence[Path], reference: Path, *, out_dir: Path = Path("analysis"),
            runs_dir: Path | None = None, data_root: Path | None = None, device: str = "auto",
            samples: int = 1000, examples: int = 4, seed: int = 0, ensemble: bool = True,
            tsne: bool = True) -> dict[str, Any]:
    """KL to the normal teacher, output statistics and Fig. 1, 2 and 5 for trained runs;
    writes analysis.json and the PNGs to ``out_dir`` and returns the JSON document."""
    from undistill.devices import select_device
    from undistill.figures import write_analysis

    _check_samples(samples, examples)
    return write_analysis(list(runs), reference, out_dir, runs_dir, data_root,
                          select_device(device), samples, examples, seed, ensemble, tsne)


def report(results: Path, *, runs_dir: Path = Path("runs"), suite: str | None = None,
           html: bool = False, figures: bool = True, samples: int = 1000, examples: int = 4,
           seed: int = 0, data_root: Path | None = None, device: str = "auto") -> Path:
    """Write report.md (and report.html) of a finished suite's results directory; returns its path."""
    from undistill.devices import select_device
    from undistill.report import write_report

    _check_samples(samples, examples)
    return write_report(results, runs_dir, data_root, suite, html, select_device(device),
                        samples, examples, seed, figures)


def _check_samples(samples: int, examples: int) -> None:
    if samples < 2 or examples < 1:
        raise ConfigError("--samples must be >= 2 and --examples >= 1")
