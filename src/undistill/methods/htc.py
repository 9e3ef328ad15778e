"""HTC (Eq. 6-9): learn from the teacher softened at a high temperature, composed with labels."""

from __future__ import annotations

import torch
from pydantic import Field

from undistill.losses import htc_loss
from undistill.methods.base import METHODS, Method, Params

#: HTC's defaults wherever its loss is used (plain, Skeptical+HTC, data-free): the paper's
#: ablation values.
ALPHA, TEMPERATURE, MULTIPLIER = 0.9, 50.0, 50.0

#: The paper's search space for HTC and SCM (Sec. 4.1): m, tau and alpha.
PAPER_SEARCH_SPACE: dict[str, list[float]] = {
    "multiplier": [1.0, 5.0, 10.0, 50.0],
    "temperature": [4.0, 20.0, 50.0, 100.0],
    "alpha": [round(0.1 * i, 1) for i in range(1, 10)],
}


class HTCParams(Params):
    alpha: float = Field(ALPHA, ge=0.0, le=1.0)
    temperature: float = Field(TEMPERATURE, gt=0.0, description="tau, high (the paper's "
                               "ablations: 50)")
    multiplier: float = Field(MULTIPLIER, ge=0.0, description="m")


@METHODS.register("htc")
class HTC(Method):
    description = "high-temperature composition (Eq. 9)"
    title = "HTC"
    Params = HTCParams
    min_teachers, max_teachers = 1, None
    search_space = PAPER_SEARCH_SPACE

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: HTCParams = self.params
        logits = self.student(images)
        return logits, {"htc": htc_loss(logits, self.teacher_logits(images), labels, p.alpha,
                                        p.temperature, p.multiplier)}
