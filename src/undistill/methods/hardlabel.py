"""Hard-label attack: the student learns the teacher's top-1 answer by cross-entropy.

Uses nothing but the teacher's arg-max, so it works unchanged against a teacher that answers
labels only (and ignores whatever top-k, rounded or nasty probabilities carry beyond the top-1).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from undistill.methods.base import METHODS, Method, Params


@METHODS.register("hard-label")
class HardLabel(Method):
    description = "cross-entropy on the teacher's top-1 labels (label-only black box)"
    title = "Hard-label"
    Params = Params
    min_teachers, max_teachers = 1, None

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(images)
        target = self.teacher_logits(images).argmax(1)
        return logits, {"hard_label": F.cross_entropy(logits, target)}
