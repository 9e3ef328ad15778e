"""Logit matching: the student regresses the teacher's centred logits (Ba and Caruana, 2014).

An extraction attack that reads the whole answer without a temperature: the mean squared error
between the student's and the teacher's logits, each centred per row (logits are defined up to a
constant, and a teacher answering probabilities is read as ``log p``). No labels are read.
"""

from __future__ import annotations

import torch
from pydantic import Field

from undistill.methods.base import METHODS, Params
from undistill.methods.objective import OBJECTIVES, Objective, Plain


def logit_match_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch and classes of ``(z_s - mean(z_s) - (z_t - mean(z_t)))^2``."""
    s = student_logits - student_logits.mean(1, keepdim=True)
    t = teacher_logits - teacher_logits.mean(1, keepdim=True)
    return (s - t).pow(2).mean()


class LogitMatchParams(Params):
    clip: float = Field(20.0, gt=0.0, description="teacher logits clipped to [-clip, clip] after "
                        "centring (a floored log 0 of a top-k or label-only answer would dominate)")


@OBJECTIVES.register("logit-match")
class LogitMatch(Objective):
    """``logit_match`` = MSE of the centred logits (:func:`logit_match_loss`)."""

    Params = LogitMatchParams

    @classmethod
    def terms(cls, p: LogitMatchParams, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        t = teacher_logits - teacher_logits.mean(1, keepdim=True)
        return {"logit_match": logit_match_loss(student_logits, t.clamp(-p.clip, p.clip))}


METHODS.register("logit-match")(Plain.using(
    LogitMatch, title="Logit match",
    description="MSE on the teacher's centred logits (Ba and Caruana 2014); the labels are not read"))
