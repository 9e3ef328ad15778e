"""What a finished run reports: :class:`RunResult`, written to the run folder's result file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunResult:
    run_id: str
    run_dir: str
    best_acc: float
    best_epoch: int
    last_acc: float
    epochs_run: int
    status: str  # "complete" or "stopped_at_acc"
    eval_split: str
    wall_time_s: float
    cached: bool = False
    compute: str = ""  # the numeric path that trained it (undistill.precision); "" in older results
