"""Nasty Teacher (Eq. 5): keep accuracy, maximise KL to a frozen adversary.

Also the step G of SCM (Eq. 10): S^i is this method trained against S^(i-1). The trained model
takes the student's place of the plain scheme, the adversary the teacher's.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from undistill.losses import nasty_loss
from undistill.methods.base import METHODS, Params
from undistill.methods.objective import OBJECTIVES, Objective, Plain

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


@OBJECTIVES.register("nasty")
class Nasty(Objective):
    """``nasty`` = Eq. 5 (:func:`~undistill.losses.nasty_loss`), the teacher's logits being the
    adversary's; needs labels."""

    Params = NastyParams
    needs_labels = True

    @classmethod
    def defaults_for(cls, dataset: str, arch: str) -> dict[str, Any]:
        omega, tau = DATASET_DEFAULTS.get(dataset, DATASET_DEFAULTS["cifar10"])
        return {"omega": omega, "temperature": tau}

    @classmethod
    def terms(cls, p: NastyParams, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"nasty": nasty_loss(student_logits, teacher_logits, labels, p.omega,
                                    p.temperature)}


METHODS.register("nasty")(Plain.using(
    Nasty, title="Nasty", max_teachers=1, makes_teacher=True,
    description="nasty teacher (Eq. 5) against one frozen adversary; SCM's step G (Eq. 10)"))
