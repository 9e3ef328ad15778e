"""Soft targets only: the student matches the teacher's softened distribution and nothing else.

``L = T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``: KD's distillation term (Eq. 2 with
alpha = 1) without its cross-entropy on labels, whatever the data offers. The labels are never
read, so the method also runs in the no-label setting; the temperature defaults to KD's for the
student (4 for the plain CNN, 20 otherwise). The data-free ``dafl-kd`` learns by this objective
too (DAFL's student loss at T = 1).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from undistill.losses import kd_terms
from undistill.methods import kd
from undistill.methods.base import METHODS, Params
from undistill.methods.objective import OBJECTIVES, Objective, Plain


class SoftTargetParams(Params):
    temperature: float = Field(kd.CNN_TEMPERATURE, gt=0.0, description="T of the softened "
                               "distributions")


@OBJECTIVES.register("soft-target")
class SoftTarget(Objective):
    """``kd`` = T^2 KL(softmax(z_t/T) || softmax(z_s/T)): :func:`~undistill.losses.kd_terms` with
    alpha 1 and without labels."""

    Params = SoftTargetParams

    @classmethod
    def defaults_for(cls, dataset: str, arch: str) -> dict[str, Any]:
        return {"temperature": kd.protocol_temperature(arch)}

    @classmethod
    def terms(cls, p: SoftTargetParams, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return kd_terms(student_logits, teacher_logits, None, 1.0, p.temperature)


METHODS.register("soft-target")(Plain.using(
    SoftTarget, title="Soft targets",
    description="KD's soft-target term only (Eq. 2 with alpha = 1); labels never read"))
