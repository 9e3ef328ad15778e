"""Soft targets only: the student matches the teacher's softened distribution and nothing else.

``L = T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``: KD's distillation term (Eq. 2 with
alpha = 1) without its cross-entropy on labels, whatever the data offers. The labels are never
read, so the method also runs in the no-label setting; the temperature defaults to KD's for the
student (4 for the plain CNN, 20 otherwise).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from undistill.losses import kd_terms
from undistill.methods import kd
from undistill.methods.base import METHODS, Method, Params


class SoftTargetParams(Params):
    temperature: float = Field(kd.CNN_TEMPERATURE, gt=0.0, description="T of the softened "
                               "distributions")


@METHODS.register("soft-target")
class SoftTarget(Method):
    description = "KD's soft-target term only (Eq. 2 with alpha = 1); labels never read"
    title = "Soft targets"
    Params = SoftTargetParams
    min_teachers, max_teachers = 1, None

    @classmethod
    def defaults_for(cls, dataset: str, arch: str) -> dict[str, Any]:
        return {"temperature": kd.protocol_temperature(arch)}

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: SoftTargetParams = self.params
        logits = self.student(images)
        return logits, kd_terms(logits, self.teacher_logits(images), None, 1.0, p.temperature)
