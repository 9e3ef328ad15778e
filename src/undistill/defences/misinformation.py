"""Adaptive Misinformation (Kariyappa and Qureshi, CVPR 2020).

Queries the model is unsure about are likely out of distribution, i.e. an attacker's: their
answer is mixed towards a misinformation distribution. OOD score = the maximum softmax
probability ``s = max_k p_k``; ``a = sigmoid(nu (tau - s))`` (so ``a -> 1`` for ``s`` well below
``tau``); ``y' = (1 - a) y + a y_mis``. ``tau`` sets the trade-off (higher: more queries
misinformed, more utility lost), ``nu`` the sharpness of the switch.

The paper's misinformation model is a network trained to put little probability on the correct
class. Here the misinformation distribution is computed from the posterior itself (a deviation,
no second model to train; ``docs/defences.md``): ``"reverse"`` (default) ``y_mis =
softmax(-log y) = normalise(1 / max(y, 1e-6))``, most mass on the classes the model thinks least
likely; ``"complement"`` ``y_mis = normalise(1 - y)``, near uniform over the other classes.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from undistill.defences.base import DEFENCES, Defence, DefenceParams, renormalise


class MisinformationParams(DefenceParams):
    tau: float = Field(0.5, ge=0.0, le=1.0, description="threshold on the max softmax probability")
    nu: float = Field(50.0, gt=0.0, description="sharpness of the smooth switch")
    misinformation: Literal["reverse", "complement"] = "reverse"


def misinformation_mix(probs: torch.Tensor, misinformation: torch.Tensor, tau: float,
                       nu: float) -> torch.Tensor:
    """``(1 - a) y + a y_mis`` with ``a = sigmoid(nu (tau - max_k y_k))`` per row."""
    a = torch.sigmoid(nu * (tau - probs.max(1, keepdim=True).values))
    return (1.0 - a) * probs + a * misinformation


@DEFENCES.register("misinformation")
class AdaptiveMisinformation(Defence):
    """Adaptive Misinformation: low-confidence queries are answered with misinformation."""

    description = "adaptive misinformation (Kariyappa and Qureshi 2020), OOD score = max prob"
    Params = MisinformationParams

    def release(self, probs: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        p: MisinformationParams = self.params
        if p.misinformation == "reverse":
            mis = renormalise(1.0 / probs.clamp_min(1e-6))
        else:
            mis = renormalise(1.0 - probs)
        return misinformation_mix(probs, mis, p.tau, p.nu)
