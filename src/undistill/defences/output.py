"""Output-perturbation defences that need nothing but the probabilities, and their composition."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from undistill.defences.base import (
    DEFENCES,
    Defence,
    DefenceConfig,
    DefenceParams,
    build_defence,
    one_hot_argmax,
    renormalise,
)


class TopKParams(DefenceParams):
    k: int = Field(1, ge=1, description="how many of the largest probabilities are released")


@DEFENCES.register("topk")
class TopK(Defence):
    """Keep the ``k`` largest probabilities of each row, zero the rest, renormalise (Stingy-Teacher
    style truncation; ``k = 1`` releases the same information as ``labels``)."""

    description = "top-k truncation, renormalised"
    Params = TopKParams

    @classmethod
    def check_classes(cls, params: TopKParams, num_classes: int) -> None:  # type: ignore[override]
        if params.k > num_classes:
            raise ValueError(f"params.k: {params.k} is larger than the {num_classes} classes")

    def release(self, probs: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        k = self.params.k
        if k > probs.shape[1]:
            raise ValueError(f"params.k: {k} is larger than the {probs.shape[1]} classes")
        top = probs.topk(k, dim=1)
        return renormalise(torch.zeros_like(probs).scatter_(1, top.indices, top.values))


class RoundParams(DefenceParams):
    decimals: int = Field(2, ge=0, le=8, description="d: probabilities are rounded to d decimals")


@DEFENCES.register("round")
class Round(Defence):
    """Round every probability to ``decimals`` places, as an API printing fixed-point numbers
    would (Tramer et al. 2016). Rows are not renormalised: they are the numbers a client sees
    (their sum may differ from one; the attacks' log-softmax renormalises)."""

    description = "rounding to d decimals"
    Params = RoundParams

    def release(self, probs: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        return torch.round(probs, decimals=self.params.decimals).clamp(0.0, 1.0)


class NoiseParams(DefenceParams):
    kind: Literal["gaussian", "laplace"] = "gaussian"
    scale: float = Field(0.1, ge=0.0, description="Gaussian sigma or Laplace b, on probabilities")
    keep_top1: bool = Field(True, description="swap entries back so each row's top-1 class is kept")


@DEFENCES.register("noise")
class Noise(Defence):
    """Additive Gaussian or Laplace noise on the probabilities, clipped at zero and renormalised.

    With ``keep_top1``, a row whose largest entry moved to another class gets the two entries
    swapped, so the released top-1 class is the teacher's (the values are a permutation of the
    noisy ones). A row with no mass left after clipping releases the teacher's one-hot.
    """

    description = "additive Gaussian/Laplace noise on probabilities, renormalised"
    Params = NoiseParams

    def release(self, probs: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        p: NoiseParams = self.params
        if p.kind == "gaussian":
            noise = torch.randn_like(probs) * p.scale
        else:  # Laplace(0, b) by inverse CDF of a uniform draw on (-1/2, 1/2)
            u = torch.rand_like(probs).clamp(1e-7, 1 - 1e-7) - 0.5
            noise = -p.scale * u.sign() * torch.log1p(-2 * u.abs())
        noisy = (probs + noise).clamp_min(0.0)
        empty = noisy.sum(1, keepdim=True) <= 0
        noisy = torch.where(empty, one_hot_argmax(probs), noisy)
        out = noisy / noisy.sum(1, keepdim=True)
        if p.keep_top1:
            out = _swap_top1(out, probs.argmax(1))
        return out


def _swap_top1(p: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """Per row, swap the largest entry with the entry of class ``want`` (a no-op where equal)."""
    got = p.argmax(1)
    rows = torch.arange(p.shape[0], device=p.device)
    top, at_want = p[rows, got], p[rows, want]
    out = p.clone()
    out[rows, want] = top
    out[rows, got] = at_want
    return torch.where((got == want).unsqueeze(1), p, out)


class ReverseSigmoidParams(DefenceParams):
    beta: float = Field(1.0, gt=0.0, description="magnitude of the perturbation")
    gamma: float = Field(0.1, gt=0.0, description="convergence: how far probabilities are pulled "
                         "towards 1/2 in logit space")


@DEFENCES.register("reverse-sigmoid")
class ReverseSigmoid(Defence):
    """Reverse sigmoid (Lee et al. 2019), the formula of ART's ``ReverseSigmoid`` post-processor.

    ``r = beta * (sigmoid(gamma * logit(p)) - 1/2)``, ``p' = clip(p - r, 0, 1)``, rows renormalised;
    ``p`` is first clipped to ``[1e-6, 1 - 1e-6]`` so the logit is finite. Large probabilities
    shrink, small ones grow; a model trained to match ``p'`` is pushed away from ``p``.
    """

    description = "reverse sigmoid (Lee et al. 2019), as ART's post-processor"
    Params = ReverseSigmoidParams

    def release(self, probs: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        p: ReverseSigmoidParams = self.params
        clipped = probs.clamp(1e-6, 1 - 1e-6)
        r = p.beta * (torch.sigmoid(p.gamma * torch.logit(clipped)) - 0.5)
        return renormalise((clipped - r).clamp(0.0, 1.0))


@DEFENCES.register("labels")
class LabelsOnly(Defence):
    """Hard labels: per row, a one-hot of that row's own top-1 class."""

    description = "labels only (one-hot of each row's top-1 class)"

    def release(self, probs: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        return one_hot_argmax(probs)


class ChainParams(DefenceParams):
    steps: list[DefenceConfig] = Field(min_length=1, description="defences applied in order")


@DEFENCES.register("chain")
class Chain(Defence):
    """Several output defences in order (e.g. noise then top-k); each step sees the previous
    step's release and the same inputs. A model-level defence (the Nasty Teacher, an SCM release)
    composes with any of these by being the teacher they wrap."""

    description = "output defences applied in order"
    Params = ChainParams

    def __init__(self, params: ChainParams) -> None:
        super().__init__(params)
        self.steps = [build_defence(s) for s in params.steps]

    @classmethod
    def check_classes(cls, params: ChainParams, num_classes: int) -> None:  # type: ignore[override]
        for i, step in enumerate(params.steps):
            try:
                step.check_classes(num_classes)
            except ValueError as e:
                raise ValueError(f"params.steps.{i}.{e}") from None

    @classmethod
    def label(cls, params: ChainParams) -> str:
        return "+".join(s.label() for s in params.steps)

    def uses_inputs(self) -> bool:
        return any(s.uses_inputs() for s in self.steps)

    def release(self, probs: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        for step in self.steps:
            probs = step(probs, inputs)
        return probs

    def to(self, device: torch.device | str) -> Chain:
        for s in self.steps:
            s.to(device)
        return self
