"""Nasty Teacher (Eq. 5): keep accuracy, maximise KL to a frozen adversary.

Also the step G of SCM (Eq. 10): S^i is this method trained against S^(i-1). The trained model
takes the student's place of the plain scheme, the adversary the teacher's.

Two levers beyond the paper's recipe, for calibrating the nasty teacher at small scale (both off
by default, where the method is exactly Eq. 5 trained from scratch as the paper does):

* ``init_from_teacher``: the nasty model starts from a copy of the adversary's weights (a
  fine-tuning of the normal teacher) instead of its seeded initialisation. The adversary must be a
  zoo model of the nasty model's architecture and shapes (``ValueError`` otherwise); its weights
  and buffers are copied (``load_state_dict``), never shared, so the nasty model stays trainable
  and the adversary frozen.
* ``omega_warmup``: omega ramps linearly over the first ``omega_warmup`` epochs: epoch ``e``
  (from 0) trains with ``omega * min(1, (e + 1) / omega_warmup)``; 0 keeps omega constant.

Both are left out of the stored parameters while at their defaults (:class:`NastyParams`'s
serializer), so the run ids of nasty runs made before they existed are unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from undistill.losses import nasty_loss
from undistill.methods.base import METHODS, Ensemble, Params
from undistill.methods.objective import OBJECTIVES, Objective, Plain
from undistill.models import ZooModel

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

#: fields added after nasty runs existed: dumped only when set away from their default, so a
#: run's stored parameters (and its run id) are what they were without them
_HIDDEN_AT_DEFAULT = ("init_from_teacher", "omega_warmup")


class NastyParams(Params):
    omega: float = Field(0.04, ge=0.0, description="weight of the KL to the adversary")
    temperature: float = Field(4.0, gt=0.0, description="tau_A")
    init_from_teacher: bool = Field(
        False, description="start from a copy of the adversary's weights (fine-tune the normal "
        "teacher; same architecture and shapes) instead of training from scratch")
    omega_warmup: int = Field(
        0, ge=0, description="epochs over which omega ramps linearly from 0: epoch e (from 0) "
        "uses omega * min(1, (e+1)/omega_warmup); 0: constant omega")

    @model_serializer(mode="wrap")
    def _hide_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        d = handler(self)
        for name in _HIDDEN_AT_DEFAULT:
            if name in d and getattr(self, name) == type(self).model_fields[name].default:
                del d[name]
        return d


def warmed_omega(omega: float, epoch: int, warmup: int) -> float:
    """omega at ``epoch`` (from 0) of a linear warm-up over ``warmup`` epochs (0: constant)."""
    if warmup <= 0:
        return omega
    return omega * min(1.0, (epoch + 1) / warmup)


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


def _describe(model: torch.nn.Module) -> str:
    n = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__} ({n:,} parameters)"


def copy_adversary(model: ZooModel, adversary: torch.nn.Module) -> None:
    """Load ``adversary``'s weights and buffers into ``model`` (copies: ``model``'s parameters
    stay its own, trainable). ``ValueError`` naming both unless they are zoo models of one
    architecture with the same shapes."""
    mismatch = ""
    if type(adversary) is not type(model):
        mismatch = "not the same architecture"
    else:
        want, got = model.state_dict(), adversary.state_dict()
        if set(want) != set(got):
            mismatch = "different layers"
        else:
            bad = next((k for k in want if want[k].shape != got[k].shape), None)
            if bad is not None:
                mismatch = (f"{bad}: {tuple(got[bad].shape)} in the adversary, "
                            f"{tuple(want[bad].shape)} in the nasty model")
    if mismatch:
        raise ValueError(f"init_from_teacher needs the adversary and the nasty model to be one "
                         f"architecture with the same shapes; adversary {_describe(adversary)}, "
                         f"nasty model {_describe(model)}: {mismatch}")
    with torch.no_grad():
        model.load_state_dict(adversary.state_dict())


class NastyTraining(Plain):
    """The plain scheme with the nasty teacher's levers: the start from the adversary's weights
    (``init_from_teacher``) and omega's warm-up (``omega_warmup``)."""

    params: NastyParams

    def __init__(self, student: ZooModel, teacher: Ensemble | None, params: Params) -> None:
        super().__init__(student, teacher, params)
        if getattr(params, "init_from_teacher", False):
            if teacher is None or len(teacher.models) != 1:
                raise ValueError("init_from_teacher needs exactly one adversary")
            copy_adversary(student, teacher.models[0])

    def epoch_params(self) -> NastyParams:
        """The parameters of the current epoch (omega warmed up)."""
        p = self.params
        if p.omega_warmup <= 0:
            return p
        return p.model_copy(update={"omega": warmed_omega(p.omega, self.epoch, p.omega_warmup)})

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(images)
        return logits, self.objective.terms(self.epoch_params(), logits,
                                            self.teacher_logits(images), labels)


METHODS.register("nasty")(NastyTraining.using(
    Nasty, title="Nasty", max_teachers=1, makes_teacher=True,
    description="nasty teacher (Eq. 5) against one frozen adversary; SCM's step G (Eq. 10)"))
