"""KD (Eq. 2): the student matches the softened teacher; "Normal KD" / "Nasty KD" by teacher."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from undistill.losses import kd_terms
from undistill.methods.base import METHODS, Method, Params

#: The protocol's KD (alpha, T): alpha 0.9; T 4 for the plain CNN student, 20 for the others.
ALPHA = 0.9
CNN_TEMPERATURE = 4.0
OTHER_TEMPERATURE = 20.0


def protocol_temperature(arch: str) -> float:
    """The protocol's KD temperature for a student architecture."""
    return CNN_TEMPERATURE if arch == "cnn" else OTHER_TEMPERATURE


class KDParams(Params):
    alpha: float = Field(ALPHA, ge=0.0, le=1.0)
    temperature: float = Field(CNN_TEMPERATURE, gt=0.0)


@METHODS.register("kd")
class KD(Method):
    description = "knowledge distillation (Eq. 2); several teachers are ensembled"
    title = "KD"
    Params = KDParams
    min_teachers, max_teachers = 1, None

    @classmethod
    def defaults_for(cls, dataset: str, arch: str) -> dict[str, Any]:
        return {"alpha": ALPHA, "temperature": protocol_temperature(arch)}

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: KDParams = self.params
        logits = self.student(images)
        return logits, kd_terms(logits, self.teacher_logits(images), labels, p.alpha, p.temperature)
