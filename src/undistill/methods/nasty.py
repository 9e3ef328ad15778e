"""Nasty Teacher (Eq. 5): keep accuracy, maximise KL to a frozen adversary.

Also the step G of SCM (Eq. 10): S^i is this method trained against S^(i-1).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from undistill.losses import nasty_loss
from undistill.methods.base import METHODS, Method, Params

#: (omega, tau_A) of Eq. 5 per dataset. Paper datasets: the reference protocol. Small sets:
#: calibrated at the small scale (see docs/calibration.md for the evidence). Any other dataset
#: takes CIFAR-10's.
DATASET_DEFAULTS: dict[str, tuple[float, float]] = {
    "cifar10": (0.04, 4.0),
    "cifar100": (0.005, 20.0),
    "tinyimagenet": (0.01, 20.0),
    "fashion-mnist": (0.04, 4.0),
    "mnist": (0.04, 4.0),
    "digits": (0.04, 4.0),
    "folder": (0.04, 4.0),
}


class NastyParams(Params):
    omega: float = Field(0.04, ge=0.0, description="weight of the KL to the adversary")
    temperature: float = Field(4.0, gt=0.0, description="tau_A")


@METHODS.register("nasty")
class Nasty(Method):
    description = "nasty teacher (Eq. 5) against one frozen adversary; SCM's step G (Eq. 10)"
    title = "Nasty"
    Params = NastyParams
    min_teachers, max_teachers = 1, 1
    needs_labels = True
    makes_teacher = True

    @classmethod
    def defaults_for(cls, dataset: str, arch: str) -> dict[str, Any]:
        omega, tau = DATASET_DEFAULTS.get(dataset, DATASET_DEFAULTS["cifar10"])
        return {"omega": omega, "temperature": tau}

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: NastyParams = self.params
        logits = self.student(images)
        return logits, {"nasty": nasty_loss(logits, self.teacher_logits(images), labels, p.omega,
                                            p.temperature)}
