"""Hard-label attack: the student learns the teacher's top-1 answer by cross-entropy.

Uses nothing but the teacher's arg-max, so it works unchanged against a teacher that answers
labels only (and ignores whatever top-k, rounded or nasty probabilities carry beyond the top-1).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from undistill.methods.base import METHODS, Params
from undistill.methods.objective import OBJECTIVES, Objective, Plain


@OBJECTIVES.register("hard-label")
class HardLabel(Objective):
    """``hard_label`` = CE(z_s, argmax z_t); the labels are not read."""

    @classmethod
    def terms(cls, p: Params, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"hard_label": F.cross_entropy(student_logits, teacher_logits.argmax(1))}


METHODS.register("hard-label")(Plain.using(
    HardLabel, title="Hard-label", audit_order=4,
    description="cross-entropy on the teacher's top-1 labels (label-only black box)"))
