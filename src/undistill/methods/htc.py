"""HTC (Eq. 6-9): learn from the teacher softened at a high temperature, composed with labels."""

from __future__ import annotations

import torch
from pydantic import Field

from undistill.losses import htc_loss
from undistill.methods.base import METHODS, Method, Params


class HTCParams(Params):
    alpha: float = Field(0.9, ge=0.0, le=1.0)
    temperature: float = Field(50.0, gt=0.0, description="tau, high (the paper's ablations: 50)")
    multiplier: float = Field(50.0, ge=0.0, description="m")


@METHODS.register("htc")
class HTC(Method):
    description = "high-temperature composition (Eq. 9)"
    Params = HTCParams
    min_teachers, max_teachers = 1, None

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: HTCParams = self.params
        logits = self.student(images)
        return logits, {"htc": htc_loss(logits, self.teacher_logits(images), labels, p.alpha,
                                        p.temperature, p.multiplier)}
