"""Prediction Poisoning, MAD (Orekondy et al., ICLR 2020), greedy and linearised on a surrogate.

MAD releases ``y~`` in the simplex within ``||y~ - y||_1 <= epsilon`` that maximises the angular
deviation between the gradient an attacker's model would take from ``y~`` and from the true
posterior ``y``: ``max 2 (1 - cos(G^T y~, G^T y))``, ``G = d log F(x; w) / dw`` of a surrogate
``F`` for the attacker's model.

Linearised here to the surrogate's last (linear) layer: for logits ``z = W h + b`` and
surrogate probabilities ``s``, ``d log s_k / d[W, b] = (e_k - s) [h; 1]^T``, so ``G^T v = (v - s)
[h; 1]^T`` for any distribution ``v``, and the angle between ``G^T y~`` and ``G^T y`` is the angle
between ``y~ - s`` and ``y - s`` in class space (``h`` cancels). The objective is convex in
``y~``, so its maximum over the simplex is at a vertex (the paper's heuristic): the vertex
``e_k`` with the largest deviation is chosen, and ``y~ = (1 - a) y + a e_k`` with the largest
``a <= 1`` the budget allows (``a = epsilon / ||e_k - y||_1``). ``keep_top1`` (MAD-argmax)
shrinks ``a`` further so each row keeps the teacher's top-1 class.

The surrogate is a freshly initialised model (``arch``, ``width``, seeded by ``seed``), built on
first use from the shape of the inputs: the defender does not know the attacker's model. That a
random surrogate stands in is this implementation's choice (cheap, no training); the paper's
surrogate choice and its full-network gradient are not reproduced (``docs/defences.md``).
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch import nn

from undistill.defences.base import DEFENCES, Defence, DefenceParams


class MADParams(DefenceParams):
    epsilon: float = Field(0.5, ge=0.0, le=2.0, description="L1 budget ||y~ - y||_1")
    keep_top1: bool = Field(False, description="MAD-argmax: keep each row's top-1 class")
    arch: str = Field("cnn", description="surrogate architecture")
    width: float = Field(0.5, gt=0.0, le=4.0, description="surrogate width")
    seed: int = Field(0, description="seed of the surrogate's initialisation")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        from undistill.models import check_arch

        return check_arch(v)


def mad_targets(probs: torch.Tensor, surrogate_probs: torch.Tensor, epsilon: float,
                keep_top1: bool = False) -> torch.Tensor:
    """The MAD release for posteriors ``probs`` given the surrogate's ``surrogate_probs`` (both [N, C])."""
    n, c = probs.shape
    eye = torch.eye(c, dtype=probs.dtype, device=probs.device)
    u_true = _unit(probs - surrogate_probs)  # [N, C]
    u_vert = _unit(eye.unsqueeze(0) - surrogate_probs.unsqueeze(1))  # [N, C(vertex), C]
    cos = (u_vert * u_true.unsqueeze(1)).sum(-1)  # [N, C]
    k = cos.argmin(1)  # the vertex of largest angular deviation
    rows = torch.arange(n, device=probs.device)
    p_k = probs[rows, k]
    dist = 2.0 * (1.0 - p_k)  # ||e_k - y||_1
    a = torch.where(dist > 0, epsilon / dist.clamp_min(1e-12), torch.zeros_like(dist)).clamp(max=1.0)
    if keep_top1:
        p_top = probs.max(1).values
        gap = p_top - p_k  # e_k overtakes the top class when (1 - a) gap < a
        limit = torch.where(k == probs.argmax(1), torch.ones_like(a), gap / (1.0 + gap) * (1 - 1e-6))
        a = torch.minimum(a, limit)
    target = torch.nn.functional.one_hot(k, c).to(probs.dtype)
    return (1.0 - a).unsqueeze(1) * probs + a.unsqueeze(1) * target


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@DEFENCES.register("mad")
class MAD(Defence):
    """Prediction Poisoning (MAD), greedy over the simplex's vertices, linearised (module doc)."""

    description = "prediction poisoning / MAD (Orekondy et al. 2020) on a surrogate"
    Params = MADParams
    needs_inputs = True

    def __init__(self, params: MADParams) -> None:
        super().__init__(params)
        self.surrogate: nn.Module | None = None

    def _surrogate(self, inputs: torch.Tensor, num_classes: int) -> nn.Module:
        if self.surrogate is None:
            from undistill.models import build_model

            p: MADParams = self.params
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(p.seed)
                model = build_model(p.arch, num_classes=num_classes, in_channels=inputs.shape[1],
                                    width=p.width, image_size=inputs.shape[-1])
            self.surrogate = model.to(inputs.device).eval().requires_grad_(False)
        return self.surrogate

    def release(self, probs: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        assert inputs is not None
        model = self._surrogate(inputs, probs.shape[1])
        with torch.no_grad():
            s = torch.softmax(model(inputs.to(next(model.parameters()).dtype)).float(), 1)
        p: MADParams = self.params
        return mad_targets(probs, s.to(probs.dtype), p.epsilon, p.keep_top1)

    def to(self, device: torch.device | str) -> MAD:
        if self.surrogate is not None:
            self.surrogate.to(device)
        return self
