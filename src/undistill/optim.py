"""Optimisation: the optimiser's typed config, the learning-rate schedule and the optimiser itself.

Below both :mod:`undistill.config` (a run's config holds an :class:`OptimConfig`) and
:mod:`undistill.methods` (a method may build optimizers of its own from it), so neither imports
the other through it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    nesterov: bool = False
    schedule: Literal["multistep", "constant", "onecycle", "cosine"] = "multistep"
    milestones: list[int] = Field(default_factory=lambda: [80, 120])
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    epochs: int = Field(160, ge=1)
    batch_size: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _milestones(self) -> OptimConfig:
        ms = self.milestones
        if ms != sorted(ms) or len(set(ms)) != len(ms):
            raise ValueError(f"milestones must be strictly increasing, got {ms}")
        if any(m < 1 or m >= self.epochs for m in ms):
            raise ValueError(f"milestones must lie in [1, epochs={self.epochs}), got {ms}")
        return self


def scaled_milestones(milestones: list[int], epochs: int, new_epochs: int) -> list[int]:
    """Milestones of a schedule of ``epochs`` moved to one of ``new_epochs``, keeping its shape.

    Each milestone keeps its position as a share of training (rounded, at least epoch 1); those
    that would fall at or after the new end are dropped. The one rule for every shortened (or
    lengthened) schedule: presets, suites and the command line.
    """
    return sorted({max(1, round(m * new_epochs / epochs)) for m in milestones
                   if round(m * new_epochs / epochs) < new_epochs})


def learning_rate(cfg: OptimConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The schedule as a pure function of position (so resuming needs no scheduler state)."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "multistep":
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    t = (epoch * steps_per_epoch + step) / max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    # onecycle: linear warm-up over the first 25 %, then linear decay to zero
    return cfg.lr * (t / 0.25 if t < 0.25 else (1 - t) / 0.75)


def make_optimizer(cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
