"""Executors run a graph of runs (teachers before the students that learn from them).

The local executor trains one run after another in this process. Another executor (a cluster
queue, say) only has to honour the same order; methods and the engine do not change.

Before a run is looked up or trained its config is bound to the data under ``runtime.data_root``
(:func:`undistill.runs.bind_data`): results are keyed by the run ids of the configs passed in,
while each ``RunResult.run_id`` is the id of the folder it was trained in. A run that is not
finished is trained while owning its lock (:func:`undistill.runlock.own_run`), so two processes
launching the same run train it once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from undistill.config import RunConfig, Runtime
from undistill.engine import RunResult, train_run
from undistill.progress import Reporter
from undistill.runlock import own_run
from undistill.runs import bind_data, is_done, run_dir


def plan(targets: Iterable[RunConfig]) -> list[RunConfig]:
    """Every run the targets need, teachers first, each once (by run id)."""
    order: list[RunConfig] = []
    seen: set[str] = set()

    def visit(cfg: RunConfig) -> None:
        if cfg.run_id in seen:
            return
        for t in cfg.run_teachers:
            visit(t)
        seen.add(cfg.run_id)
        order.append(cfg)

    for cfg in targets:
        visit(cfg)
    return order


class Executor(Protocol):
    def run(self, runs: list[RunConfig], runtime: Runtime) -> dict[str, RunResult]: ...


class LocalExecutor:
    """Runs the plan in order, in this process; finished runs are read back, not retrained."""

    def __init__(self, reporter: Reporter | None = None) -> None:
        self.reporter = reporter

    def run(self, runs: list[RunConfig], runtime: Runtime) -> dict[str, RunResult]:
        results: dict[str, RunResult] = {}
        ordered = plan(runs)
        if runtime.opener is None:  # one opener for the call: a teacher is opened once for all
            from undistill.teachers.opener import Opener

            runtime = runtime.model_copy(update={"opener": Opener()})
        for i, cfg in enumerate(ordered, 1):
            reporter = self.reporter or Reporter(enabled=runtime.progress)
            bound = bind_data(cfg, runtime.data_root)
            if is_done(bound, runtime.runs_dir):
                results[cfg.run_id] = train_run(bound, runtime, reporter)
                continue
            if runtime.progress:
                reporter.message(f"[{i}/{len(ordered)}] {cfg.name or bound.run_id}")
            with own_run(run_dir(bound, runtime.runs_dir), runtime.runs_dir, bound.run_id):
                results[cfg.run_id] = train_run(bound, runtime, reporter)
        return results


def ensure_trained(cfg: RunConfig, runtime: Runtime, reporter: Reporter | None = None) -> RunResult:
    """Train a run and, first, any of its teachers not trained yet."""
    return LocalExecutor(reporter).run([cfg], runtime)[cfg.run_id]


EXECUTORS = ("local", "ray")
