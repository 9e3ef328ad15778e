"""Skeptical student (Kundu et al., NeurIPS 2021): a scheme that takes an objective (KD, HTC, SCM).

The student gets auxiliary classifiers on its intermediate stages; the teacher is distilled
into one shallow auxiliary head (``loc``) only, while the final head learns from the labels and
teaches the deepest auxiliary head (self-distillation). See ``docs/skeptical.md`` for the head
design, where the heads attach per architecture, the defaults and the deviations from the
authors' code (ksouvik52/Skeptical2021), and ``docs/losses.md`` for the loss.

The zoo model stays plain: the heads are a submodule of the method (``heads.*`` in the
checkpoint, next to ``student.*``), so a Skeptical run loads as an ordinary zoo model whose
output is the final head, the only one the run is evaluated on.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from undistill.losses import cross_entropy, skeptical_kd_active, skeptical_self_distillation_loss
from undistill.methods import htc, kd, scm
from undistill.methods.base import METHODS, Ensemble, Params
from undistill.methods.objective import Scheme
from undistill.models import ZooModel
from undistill.models.cnn import PlainCNN


def plain_skeptical_temperature(student: nn.Module) -> float:
    """The protocol's KD temperature of a plain Skeptical run with this student (KD's: 4 for the
    plain CNN, 20 otherwise). Skeptical+HTC/+SCM use it for the self-distillation by default."""
    return kd.CNN_TEMPERATURE if isinstance(student, PlainCNN) else kd.OTHER_TEMPERATURE


class SepConv(nn.Sequential):
    """Kundu et al.'s separable block: (depthwise 3x3 -> pointwise 1x1 -> BN -> ReLU) twice.

    The first depthwise conv carries the stride; the last pointwise conv maps to ``c_out``. No
    biases. Padding 1 everywhere, so a stride-2 block maps ``H`` to ``ceil(H / 2)``: never below
    1x1 (a 1x1 map stays 1x1).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(),
            nn.Conv2d(c_in, c_in, 3, stride=1, padding=1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        )


def chain_channels(c_in: int, c_out: int) -> list[int]:
    """Channels along an auxiliary head's SepConv chain, from ``c_in`` to ``c_out``.

    ``n = max(1, round(log2(c_out / c_in)))`` stride-2 blocks; each doubles the channels except
    the last, which goes to ``c_out``. Exact powers of two give Kundu's ResNet chains (64 -> 128
    -> 256 -> 512); other ratios avoid a tiny last step (116 -> 232 -> 464 -> 1024, not ... ->
    928 -> 1024).
    """
    if c_in < 1 or c_out < 1:
        raise ValueError(f"channel counts must be positive, got {c_in} -> {c_out}")
    n = max(1, round(math.log2(c_out / c_in))) if c_out > c_in else 1
    return [c_in * 2**i for i in range(n)] + [c_out]


class AuxHead(nn.Module):
    """A Kundu-style auxiliary classifier on a stage output with ``c_in`` channels.

    ``x * sigmoid(ReLU(BN(SepConv(c_in, c_in)(x))))`` (attention gate, stride 1, as in their
    MobileNetV2 heads; the gate lies in [0.5, 1]) -> a chain of stride-2 SepConvs
    (:func:`chain_channels`, up to ``c_out``) -> global average pool -> ``Linear(c_out,
    num_classes)``. Works on any map of at least 1x1.
    """

    def __init__(self, c_in: int, c_out: int, num_classes: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(SepConv(c_in, c_in), nn.BatchNorm2d(c_in), nn.ReLU(),
                                       nn.Sigmoid())
        ch = chain_channels(c_in, c_out)
        self.chain = nn.Sequential(*(SepConv(a, b, stride=2) for a, b in zip(ch[:-1], ch[1:], strict=True)))
        self.classifier = nn.Linear(c_out, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.chain(x * self.attention(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build_heads(student: ZooModel) -> nn.ModuleList:
    """One :class:`AuxHead` per stage but the last, shallow to deep (``heads[i]`` on stage i).

    The chains end at the deepest stage's channel count (``stage_channels[-1]``).
    """
    chans = list(student.stage_channels)
    if len(chans) < 2:
        raise ValueError(f"a Skeptical student needs at least two stages, {type(student).__name__} "
                         f"has {len(chans)}")
    return nn.ModuleList(AuxHead(c, chans[-1], student.num_classes) for c in chans[:-1])


class SkepticalParams(Params):
    """The Skeptical student's own hyperparameters, next to its objective's."""

    loc: int = Field(2, ge=1, description="head that learns from the teacher, in [final, l3, l2, "
                     "l1] order: 1 = deepest auxiliary head, 2 = the one before it")
    kd_delay: int = Field(4, ge=-1, description="epochs 0..kd_delay train the final head with CE "
                          "only (-1: no warm-up; required without labels)")
    sd_temperature: float | None = Field(None, gt=0.0, description="T of the self-distillation "
                                         "KL(final || l3); None: see the method")
    detach_final: bool = Field(False, description="stop the self-distillation's gradient into "
                               "the final head (off in the authors' code)")


class SkepticalKDParams(kd.KDParams, SkepticalParams):
    """KD's (alpha, T) on the loc head; T defaults to KD's for any student but the plain CNN."""

    alpha: float = Field(kd.ALPHA, ge=0.0, le=1.0, description="KD weight on the loc head (Eq. 2)")
    temperature: float = Field(kd.OTHER_TEMPERATURE, gt=0.0, description="T of the teacher's KD "
                               "(4 for the CNN)")


class Skeptical(Scheme):
    """Skeptical student with its objective (KD, HTC or SCM) on the ``loc`` head.

    Losses after the warm-up (``epoch > kd_delay``): ``teacher`` = the objective's loss on the
    loc head (with its own CE term), ``self`` = ``0.3 KL_T'(final || l3) + 0.7 CE(l3) +
    CE(final)``; their sum is :func:`undistill.losses.skeptical_loss`. During the warm-up:
    ``ce`` = ``CE(final)`` only, and neither the teacher nor the auxiliary heads are run.
    Without labels the warm-up has no loss, so ``kd_delay`` must be -1 there (ValueError at the
    first warm-up step otherwise), and the ``self`` term's cross-entropies take the teacher's
    top-1 answer as the label (the objective on the loc head drops its CE term): otherwise the
    final head, the one read, would learn only from the l3 head and stay at chance.

    ``T'`` is ``sd_temperature`` if given, else the objective's temperature where it is KD's T
    (``shares_temperature``: one T for both, as in Kundu's code), else the temperature of a plain
    Skeptical run with this student (:func:`plain_skeptical_temperature`).
    """

    SchemeParams = SkepticalParams
    #: the self-distillation takes the objective's ``temperature`` by default
    shares_temperature: ClassVar[bool] = False
    #: without labels there is no warm-up loss: distil from the first epoch
    label_free_params: ClassVar[dict[str, Any]] = {"kd_delay": -1}

    def __init__(self, student: ZooModel, teacher: Ensemble | None, params: Params) -> None:
        super().__init__(student, teacher, params)
        p: Any = params
        self.heads = build_heads(student)
        n = len(self.heads)
        if p.loc > n:
            raise ValueError(f"loc={p.loc} is out of range: {type(student).__name__} has {n} "
                             f"auxiliary heads, so loc must be in 1..{n} (1 = the deepest)")
        if p.sd_temperature is not None:
            self.sd_temperature = p.sd_temperature
        elif self.shares_temperature:
            self.sd_temperature = p.temperature
        else:
            self.sd_temperature = plain_skeptical_temperature(student)

    def _aux(self, stages: list[torch.Tensor], k: int) -> torch.Tensor:
        """Logits of the auxiliary head at index ``k`` >= 1 of the [final, l3, l2, ...] list."""
        i = len(self.heads) - k
        return self.heads[i](stages[i])

    def head_logits(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every head's logits in Kundu's order ``[final, l3, l2, l1]`` (``loc`` indexes this)."""
        out = self.student.forward_features(images)
        return [out.logits] + [self._aux(out.stages, k) for k in range(1, len(self.heads) + 1)]

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: Any = self.params
        if not skeptical_kd_active(self.epoch, p.kd_delay):
            if labels is None:
                raise ValueError("labels=None during the Skeptical warm-up (epoch <= kd_delay) "
                                 "leaves no loss term; use kd_delay=-1 in the no-label setting")
            logits = self.student(images)
            return logits, {"ce": cross_entropy(logits, labels)}
        out = self.student.forward_features(images)
        l3 = self._aux(out.stages, 1)
        z_loc = l3 if p.loc == 1 else self._aux(out.stages, p.loc)  # other heads: no loss, not run
        z_t = self.teacher_logits(images)
        teach = self.objective.loss(p, z_loc, z_t, labels)
        # without labels the final and l3 heads would learn only from each other (chance
        # accuracy on the head that is read): the teacher's top-1 answer stands in for the label
        own = labels if labels is not None else z_t.detach().argmax(1)
        sd = skeptical_self_distillation_loss(out.logits, l3, own, self.sd_temperature,
                                              detach_final=p.detach_final)
        return out.logits, {"teacher": teach, "self": sd}

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The final head (the zoo model's own classifier)."""
        return self.student(images)


METHODS.register("skeptical")(Skeptical.using(
    kd.KD, title="Skep.", Params=SkepticalKDParams, shares_temperature=True, audit_order=3,
    description="Skeptical student (Kundu et al. 2021): KD on a shallow auxiliary head + self-KD"))
METHODS.register("skeptical+htc")(Skeptical.using(
    htc.HTC, title="Skep.+HTC", description="Skeptical student with HTC (Eq. 9) on its KD head"))
METHODS.register("skeptical+scm")(Skeptical.using(
    scm.SCM, title="Skep.+SCM",
    description="Skeptical student with SCM (Eq. 11) on its KD head; teachers are ensembled"))
