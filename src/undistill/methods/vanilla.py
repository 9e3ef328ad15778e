"""Vanilla: cross-entropy on labels only. Trains normal teachers and the no-stealing baseline."""

from __future__ import annotations

import torch

from undistill.losses import cross_entropy
from undistill.methods.base import METHODS, Method


@METHODS.register("vanilla")
class Vanilla(Method):
    description = "cross-entropy only (normal teacher, Vanilla student)"
    title = "Vanilla"
    needs_labels = True

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(images)
        return logits, {"ce": cross_entropy(logits, labels)}
