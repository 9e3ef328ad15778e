"""SCM (Eq. 10-11): learn from the logit-averaged ensemble of a sequence of contrastive models.

The teachers of an SCM run are the sequence S^1 (the nasty teacher) .. S^k, each S^i a ``nasty``
run against S^(i-1); :class:`~undistill.methods.base.Teacher` averages their logits (z_ens).
"""

from __future__ import annotations

import torch
from pydantic import Field

from undistill.losses import scm_loss
from undistill.methods.base import METHODS, Method, Params
from undistill.methods.htc import PAPER_SEARCH_SPACE

#: SCM's defaults wherever its loss is used (plain and Skeptical+SCM): m = tau^2, KD's scale.
ALPHA, TEMPERATURE, MULTIPLIER = 0.9, 4.0, 16.0


class SCMParams(Params):
    alpha: float = Field(ALPHA, ge=0.0, le=1.0)
    temperature: float = Field(TEMPERATURE, gt=0.0, description="tau")
    multiplier: float = Field(MULTIPLIER, ge=0.0, description="m (m = tau^2 is KD's scale)")


@METHODS.register("scm")
class SCM(Method):
    description = "sequence of contrastive models (Eq. 11) over an ensemble of teachers"
    title = "SCM"
    Params = SCMParams
    min_teachers, max_teachers = 1, None
    uses_sequence = True
    search_space = PAPER_SEARCH_SPACE

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: SCMParams = self.params
        logits = self.student(images)
        return logits, {"scm": scm_loss(logits, self.teacher_logits(images), labels, p.alpha,
                                        p.temperature, p.multiplier)}
