"""A run's last checkpoint: what it holds, and picking a run up from it.

The last checkpoint, written after each epoch, holds the method's weights and buffers and every
optimizer's state: the run's (tensors ``optim.*``, JSON under ``optim``) and each of a method's
extra optimizers' (tensors ``optim.<name>.*``, JSON under ``optim_extra``; absent for methods
without any), next to the epoch, the best accuracy so far and the epoch it was reached in. With the
metrics file (one JSON line per epoch) that is everything an exact resume needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from undistill.checkpoint import (
    CheckpointError,
    load_checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    unprefixed,
)
from undistill.extra_optimizers import ExtraOptimizer
from undistill.methods import Method
from undistill.runs import LAST, METRICS


@dataclass
class Progress:
    """Where a run stands: the first epoch to train, the best so far and the metrics history."""

    start: int = 0
    best_acc: float = -1.0
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)


def read_metrics(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    """The metrics rows up to ``upto_epoch``; a torn last line (a kill mid-append) is dropped."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break  # rewritten without it before training goes on
            raise CheckpointError(f"{path}:{number} is not a JSON line; delete the run folder "
                                  f"{path.parent} to train it afresh") from None
    return [r for r in rows if r["epoch"] <= upto_epoch]


def restore(out: Path, run_id: str, method: Method, optimizer: torch.optim.Optimizer,
            extras: dict[str, ExtraOptimizer], device: torch.device) -> Progress:
    """Load the last checkpoint in ``out`` into the method and every optimizer; where the run stands
    after it (with the metrics rows up to its epoch)."""
    tensors, meta = load_checkpoint(out / LAST, device="cpu")
    if meta.get("run_id") != run_id:
        raise CheckpointError(f"{out / LAST} belongs to run {meta.get('run_id')}, "
                              f"not {run_id}")
    method.load_state_dict(unprefixed(tensors, "method."))
    on_device = {k: v.to(device) for k, v in tensors.items()}
    optimizer_from_flat(optimizer, on_device, meta["optim"])
    for name, extra in extras.items():
        if name not in meta.get("optim_extra", {}):
            raise CheckpointError(f"{out / LAST} has no state for the method's optimizer {name!r}")
        optimizer_from_flat(extra.optimizer, on_device, meta["optim_extra"][name], f"optim.{name}.")
    return Progress(meta["epoch"] + 1, meta["best_acc"], meta["best_epoch"],
                    read_metrics(out / METRICS, meta["epoch"]))


def last_checkpoint(run_id: str, state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                    extras: dict[str, ExtraOptimizer], progress: Progress, record: dict[str, Any]
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The last checkpoint's tensors (the method's ``state`` and every optimizer's) and JSON after
    the epoch ``record`` describes, for an exact resume."""
    opt_tensors, opt_rest = optimizer_to_flat(optimizer)
    last_meta = {"run_id": run_id, "epoch": record["epoch"], "best_acc": progress.best_acc,
                 "best_epoch": progress.best_epoch, "optim": opt_rest, "metrics": record}
    if extras:
        last_meta["optim_extra"] = {}
        for name, extra in extras.items():
            t, rest = optimizer_to_flat(extra.optimizer, f"optim.{name}.")
            opt_tensors.update(t)
            last_meta["optim_extra"][name] = rest
    return {**state, **opt_tensors}, last_meta
