"""A run's optimizers: the run's own over the method's parameters, and a method's extra ones.

A method may own parameters trained by optimizers of its own (:meth:`Method.extra_optimizers`,
e.g. the DAFL generator's Adam): the run's optimizer then gets the remaining trainable parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from undistill.methods import Method
from undistill.optim import OptimConfig, make_optimizer


@dataclass
class ExtraOptimizer:
    """A method's own optimizer (see :meth:`Method.extra_optimizers`) and how its LR is set."""

    optimizer: torch.optim.Optimizer
    follows_schedule: bool
    base_lrs: list[float]  # each param group's learning rate as built

    def set_lr(self, factor: float) -> None:
        """Scale the initial learning rates by the schedule's factor (when it follows it)."""
        if self.follows_schedule:
            for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
                group["lr"] = base * factor


def make_optimizers(cfg: OptimConfig, method: Method
                    ) -> tuple[torch.optim.Optimizer, dict[str, ExtraOptimizer]]:
    """The run's optimizer over the method's trainable parameters that no extra optimizer claims,
    and the method's extra optimizers (each parameter in at most one optimizer)."""
    owned = {id(p) for p in method.parameters()}
    claimed: set[int] = set()
    extras: dict[str, ExtraOptimizer] = {}
    for name, (opt, follows) in method.extra_optimizers(cfg).items():
        if not name.isidentifier():
            raise ValueError(f"{type(method).__name__}: extra optimizer name {name!r} must be an "
                             f"identifier (it names checkpoint entries optim.<name>.*)")
        for group in opt.param_groups:
            for p in group["params"]:
                if id(p) not in owned:
                    raise ValueError(f"{type(method).__name__}: extra optimizer {name!r} holds a "
                                     f"parameter that is not the method's (it would not be saved)")
                if id(p) in claimed:
                    raise ValueError(f"{type(method).__name__}: a parameter is in two extra "
                                     f"optimizers")
                claimed.add(id(p))
        extras[name] = ExtraOptimizer(opt, bool(follows), [g["lr"] for g in opt.param_groups])
    main = [p for p in method.parameters() if p.requires_grad and id(p) not in claimed]
    if not main:
        raise ValueError(f"{type(method).__name__}: no trainable parameter is left for the run's "
                         f"optimizer")
    return make_optimizer(cfg, main), extras
