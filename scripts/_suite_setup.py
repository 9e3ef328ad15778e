"""Set-up shared by the calibration scripts that work on a built-in suite's first teacher:
the suite, its scale, the teacher group, a CPU runtime and a local executor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from undistill.config import RunConfig, Runtime
from undistill.executor import LocalExecutor
from undistill.suites.plan import scale_of, teacher_group
from undistill.suites.spec import load_suite


@dataclass
class SuiteSetup:
    suite: Any
    scale: Any
    group: Any
    runtime: Runtime
    executor: LocalExecutor

    def acc(self, cfg: RunConfig) -> float:
        """Last-epoch accuracy on the run's evaluation split (trained if missing)."""
        return self.executor.run([cfg], self.runtime)[cfg.run_id].last_acc


def suite_setup(name: str, data_root: str | None, runs_dir: str) -> SuiteSetup:
    suite = load_suite(name)
    _, sc = scale_of(suite, None)
    g = teacher_group(suite, suite.teachers[0], sc)
    rt = Runtime(runs_dir=Path(runs_dir), data_root=data_root, progress=False, device="cpu")
    return SuiteSetup(suite, sc, g, rt, LocalExecutor())
