"""Data-free stealing (Table 4): a DAFL generator trained against the teacher, the student
learning by KD (``dafl-kd``, DAFL itself) or HTC (``dafl-htc``, "adding our method to it") on the
generated images only: a scheme that takes the student's objective (``soft-target`` at T 1 for
``dafl-kd``, ``htc`` for ``dafl-htc``).

Each step (as ``DAFL_train.py`` of huawei-noah/DAFL does it): ``z ~ N(0, I)`` of the batch size,
``g = G(z)``; the frozen teacher on ``g`` *with* autograd gives logits and penultimate features;
the generator loss is :func:`~undistill.losses.dafl_generator_loss` (its gradient reaches only
the generator: the teacher's weights are frozen); the student loss is computed on ``g.detach()``
against the teacher's detached logits (its gradient reaches only the student). One backward of
the sum therefore gives each part exactly the gradient of its own loss, and the engine steps the
student's optimizer (the run's ``optim``) and the generator's Adam (:meth:`extra_optimizers`).

The real batch the engine draws is never read: only its size (the number of images to
generate) and its shape (checked against the generator's, to catch a wrong ``image_size`` or
``channels``). Labels do not exist here: KD is the pure KL term and HTC loses its label term.
``z`` comes from the global torch generator, which the engine reseeds at each epoch, so a
resumed run draws the same latents. The training accuracy the engine logs compares the student's
predictions on generated images with the labels of the unread real batch: meaningless (chance).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist
from pydantic import Field, field_validator

from undistill.losses import dafl_generator_loss
from undistill.methods import htc, soft_target
from undistill.methods.base import METHODS, Ensemble, Params
from undistill.methods.objective import Scheme
from undistill.models import ZooModel
from undistill.models.generator import Generator

if TYPE_CHECKING:
    from undistill.optim import OptimConfig


#: DAFL generator-loss weights (oh, a, ie) per dataset (protocol.md / the DAFL code's README):
#: CIFAR-10 0.05/0.01/5, CIFAR-100 0.5/0.1/20. Other datasets take CIFAR-10's.
DATASET_WEIGHTS: dict[str, dict[str, float]] = {
    "cifar10": {"oh": 0.05, "a": 0.01, "ie": 5.0},
    "cifar100": {"oh": 0.5, "a": 0.1, "ie": 20.0},
}


class DAFLParams(Params):
    """The generator's hyperparameters (DAFL's CIFAR-10 values by default)."""

    image_size: int = Field(gt=0, description="side of the generated (= the dataset's) images; "
                            "a multiple of 4 (recipes.data_free_student fills it)")
    channels: int = Field(gt=0, description="channels of the generated images (the dataset's)")
    latent_dim: int = Field(1000, ge=1, description="length of z (DAFL on CIFAR: 1000)")
    generator_width: float = Field(1.0, gt=0.0, le=4.0, description="scales the generator's "
                                   "128/64 hidden channels")
    lr_g: float = Field(0.02, gt=0.0, description="Adam learning rate of the generator (constant)")
    oh: float = Field(0.05, ge=0.0, description="weight of the one-hot loss")
    a: float = Field(0.01, ge=0.0, description="weight of the activation loss")
    ie: float = Field(5.0, ge=0.0, description="weight of the information-entropy loss")
    ie_log: Literal["log10", "ln"] = Field("log10", description="log of the entropy term: log10 "
                                           "as DAFL's code, or the natural log")

    @field_validator("image_size")
    @classmethod
    def _multiple_of_4(cls, v: int) -> int:
        if v % 4:
            raise ValueError(f"the DAFL generator makes images whose side is a multiple of 4, "
                             f"got {v}")
        return v


class DAFLKDParams(DAFLParams):
    temperature: float = Field(1.0, gt=0.0, description="T of the KL (DAFL: 1); the loss is "
                               "T^2 * KL(softmax(z_t/T) || softmax(z_s/T))")


class DAFL(Scheme):
    """The data-free scheme: the generator, its loss and its optimizer; the student learns its
    objective, without labels, from the teacher on the generated images."""

    SchemeParams = DAFLParams
    searched = False

    @classmethod
    def defaults_for(cls, dataset: str, arch: str) -> dict[str, Any]:
        """DAFL's loss weights for the dataset; ``image_size`` and ``channels`` are the dataset's
        (:func:`undistill.recipes.data_free_student` reads them)."""
        return dict(DATASET_WEIGHTS.get(dataset, DATASET_WEIGHTS["cifar10"]))

    def __init__(self, student: ZooModel, teacher: Ensemble | None, params: Params) -> None:
        super().__init__(student, teacher, params)
        p: DAFLParams = params  # type: ignore[assignment]
        self.generator = Generator(p.latent_dim, p.image_size, p.channels, p.generator_width)

    def extra_optimizers(self, optim: OptimConfig
                         ) -> dict[str, tuple[torch.optim.Optimizer, bool]]:
        p: DAFLParams = self.params  # type: ignore[assignment]
        return {"generator": (torch.optim.Adam(self.generator.parameters(), lr=p.lr_g), False)}

    def student_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor
                     ) -> torch.Tensor:
        """The objective's loss without labels (none exist here)."""
        return self.objective.loss(self.params, student_logits, teacher_logits, None)

    def latents(self, n: int) -> torch.Tensor:
        """``n`` standard-normal latent vectors from the global torch generator.

        Under torchrun every rank's generator has the same seed: each rank draws one block per
        rank and keeps its own, so the ranks do not generate the same images.
        """
        p: DAFLParams = self.params  # type: ignore[assignment]
        device = self.generator.fc.weight.device
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return torch.randn(dist.get_world_size(), n, p.latent_dim, device=device)[dist.get_rank()]
        return torch.randn(n, p.latent_dim, device=device)

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.teacher is None:
            raise RuntimeError(f"{type(self).__name__} needs a teacher")
        p: DAFLParams = self.params  # type: ignore[assignment]
        want = (p.channels, p.image_size, p.image_size)
        if tuple(images.shape[1:]) != want:  # the shape only: the images themselves are unread
            raise ValueError(f"{type(self).__name__}: params image_size/channels make images of "
                             f"shape {want}, the dataset's are {tuple(images.shape[1:])}")
        z = self.latents(images.shape[0])
        g = self.generator(z)
        t_logits, t_features = self.teacher.forward_features_grad(g)
        gen_loss = dafl_generator_loss(t_logits, t_features, p.oh, p.a, p.ie, p.ie_log)
        s_logits = self.student(g.detach())
        return s_logits, {"generator": gen_loss,
                          "student": self.student_loss(s_logits, t_logits.detach())}


METHODS.register("dafl-kd")(DAFL.using(
    soft_target.SoftTarget, title="DAFL", Params=DAFLKDParams, data_free_of="kd",
    description="data-free: DAFL generator, student by KD at temperature T (Table 4)"))
METHODS.register("dafl-htc")(DAFL.using(
    htc.HTC, title="DAFL+HTC", data_free_of="htc",
    description="data-free: DAFL generator, student by HTC without its label term (Table 4)"))
