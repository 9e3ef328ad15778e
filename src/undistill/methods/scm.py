"""SCM (Eq. 10-11): learn from the logit-averaged ensemble of a sequence of contrastive models.

The teachers of an SCM run are the sequence S^1 (the nasty teacher) .. S^k, each S^i a ``nasty``
run against S^(i-1); :class:`~undistill.methods.base.Teacher` averages their logits (z_ens).
"""

from __future__ import annotations

import torch
from pydantic import Field

from undistill.losses import scm_loss
from undistill.methods.base import METHODS, Method, Params


class SCMParams(Params):
    alpha: float = Field(0.9, ge=0.0, le=1.0)
    temperature: float = Field(4.0, gt=0.0, description="tau")
    multiplier: float = Field(16.0, ge=0.0, description="m (m = tau^2 is KD's scale)")


@METHODS.register("scm")
class SCM(Method):
    description = "sequence of contrastive models (Eq. 11) over an ensemble of teachers"
    Params = SCMParams
    min_teachers, max_teachers = 1, None

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: SCMParams = self.params
        logits = self.student(images)
        return logits, {"scm": scm_loss(logits, self.teacher_logits(images), labels, p.alpha,
                                        p.temperature, p.multiplier)}
