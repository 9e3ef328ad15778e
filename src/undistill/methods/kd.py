"""KD (Eq. 2): the student matches the softened teacher; "Normal KD" / "Nasty KD" by teacher."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from undistill.losses import kd_terms
from undistill.methods.base import METHODS, Params
from undistill.methods.objective import OBJECTIVES, Objective, Plain

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


@OBJECTIVES.register("kd")
class KD(Objective):
    """Eq. 2 term by term (:func:`~undistill.losses.kd_terms`): ``kd`` = alpha T^2 KL, ``ce`` =
    (1 - alpha) CE; no ``ce`` without labels."""

    Params = KDParams

    @classmethod
    def defaults_for(cls, dataset: str, arch: str) -> dict[str, Any]:
        return {"alpha": ALPHA, "temperature": protocol_temperature(arch)}

    @classmethod
    def terms(cls, p: KDParams, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return kd_terms(student_logits, teacher_logits, labels, p.alpha, p.temperature)


METHODS.register("kd")(Plain.using(
    KD, title="KD", audit_order=1,
    description="knowledge distillation (Eq. 2); several teachers are ensembled"))
