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

    @property
    def released_epoch(self) -> int:
        """The epoch of the checkpoint the run releases as a teacher: its best on a validation
        split, else its last (:func:`undistill.runs.resolve_checkpoint`)."""
        return self.best_epoch if self.eval_split == "val" else self.epochs_run - 1

    @property
    def released_acc(self) -> float:
        """That checkpoint's accuracy on the evaluation split."""
        return self.best_acc if self.eval_split == "val" else self.last_acc
