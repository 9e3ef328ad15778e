"""Executors run a graph of runs (teachers before the students that learn from them).

The local executor trains one run after another in this process. Another executor (a cluster
queue, say) only has to honour the same order; methods and the engine do not change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from undistill.config import RunConfig, Runtime
from undistill.engine import RunResult, train_run
from undistill.progress import Reporter
from undistill.runs import is_done


def plan(targets: Iterable[RunConfig]) -> list[RunConfig]:
    """Every run the targets need, teachers first, each once (by run id)."""
    order: list[RunConfig] = []
    seen: set[str] = set()

    def visit(cfg: RunConfig) -> None:
        if cfg.run_id in seen:
            return
        for t in cfg.teachers:
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
        for i, cfg in enumerate(ordered, 1):
            reporter = self.reporter or Reporter(enabled=runtime.progress)
            if runtime.progress and not is_done(cfg, runtime.runs_dir):
                reporter.message(f"[{i}/{len(ordered)}] {cfg.name or cfg.run_id}")
            results[cfg.run_id] = train_run(cfg, runtime, reporter)
        return results


def ensure_trained(cfg: RunConfig, runtime: Runtime, reporter: Reporter | None = None) -> RunResult:
    """Train a run and, first, any of its teachers not trained yet."""
    return LocalExecutor(reporter).run([cfg], runtime)[cfg.run_id]
