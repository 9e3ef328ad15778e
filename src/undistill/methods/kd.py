"""KD (Eq. 2): the student matches the softened teacher; "Normal KD" / "Nasty KD" by teacher."""

from __future__ import annotations

import torch
from pydantic import Field

from undistill.losses import kd_loss
from undistill.methods.base import METHODS, Method, Params


class KDParams(Params):
    alpha: float = Field(0.9, ge=0.0, le=1.0)
    temperature: float = Field(4.0, gt=0.0)


@METHODS.register("kd")
class KD(Method):
    description = "knowledge distillation (Eq. 2); several teachers are ensembled"
    Params = KDParams
    min_teachers, max_teachers = 1, None

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: KDParams = self.params
        logits = self.student(images)
        return logits, {"kd": kd_loss(logits, self.teacher_logits(images), labels, p.alpha,
                                      p.temperature)}
