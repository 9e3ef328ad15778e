"""Loss functions of the paper and of the methods it compares with, one pure function each.

Every function takes raw logits of shape ``[N, C]`` and returns a scalar tensor averaged over the
batch ("batch-mean": sums over classes, mean over samples, like ``nn.KLDivLoss(reduction=
'batchmean')`` and ``nn.CrossEntropyLoss()`` in the reference code). No function keeps state.

Conventions used throughout (see ``docs/losses.md`` for the reasons):

* ``KL(p || q) = sum_c p_c (log p_c - log q_c)``; ``p`` is the *target* distribution. All
  divergences are computed from ``log_softmax`` on both sides (no ``log(0)``, finite for any
  finite logits). Note the argument order of :func:`kl_divergence` is (target, input), the
  opposite of ``torch.nn.functional.kl_div``.
* Frozen models (teachers, adversaries, ensembles) are detached inside the loss: no gradient ever
  reaches them through these functions. The exception is the DAFL generator's loss, whose
  gradient must flow through the (frozen-weight) teacher's outputs into the generated images.
* ``labels=None`` is the no-label setting: every cross-entropy-on-labels term drops out and the
  remaining terms keep their weights (nothing is renormalised). :func:`nasty_loss` is the only
  exception: a nasty teacher needs labels, so it raises ``ValueError``.
* Arguments are validated cheaply (no device synchronisation); a bad one raises ``ValueError``
  naming it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "cross_entropy",
    "soft_cross_entropy",
    "kl_from_log_probs",
    "kl_divergence",
    "kd_terms",
    "kd_loss",
    "nasty_loss",
    "htc_targets",
    "htc_loss",
    "ensemble_logits",
    "scm_loss",
    "skeptical_kd_active",
    "skeptical_self_distillation_loss",
    "skeptical_loss",
    "SKEPTICAL_SD_WEIGHT",
    "SKEPTICAL_L3_CE_WEIGHT",
    "dafl_one_hot_loss",
    "dafl_activation_loss",
    "dafl_information_entropy_loss",
    "dafl_generator_loss",
]

#: Weight of KL(final head || layer-3 head) in the Skeptical student's self-distillation
#: (``0.3*nn.KLDivLoss(...)`` in ``train_kd_to_SD.py`` of ksouvik52/Skeptical2021).
SKEPTICAL_SD_WEIGHT = 0.3
#: Weight of the layer-3 head's cross-entropy in the same loss (``0.7*nn.CrossEntropyLoss()``).
SKEPTICAL_L3_CE_WEIGHT = 0.7


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------

def _check_logits(name: str, logits: Tensor) -> None:
    if not isinstance(logits, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"{name} must have shape [N, C], got {tuple(logits.shape)}")
    if logits.shape[1] < 1:
        raise ValueError(f"{name} must have at least one class, got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {logits.dtype}")


def _check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    _check_logits(name_a, a)
    _check_logits(name_b, b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} must have the same shape as {name_a}: {tuple(b.shape)} != {tuple(a.shape)}"
        )


def _check_labels(labels: Tensor | None, logits: Tensor) -> None:
    if labels is None:
        return
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor or None, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must have shape [N] = [{logits.shape[0]}], got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got {labels.dtype}")


def _check_alpha(alpha: float) -> None:
    if not (0.0 <= float(alpha) <= 1.0):  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


def _check_temperature(temperature: float, name: str = "temperature") -> None:
    t = float(temperature)
    if not (t > 0.0 and math.isfinite(t)):
        raise ValueError(f"{name} must be a finite number > 0, got {temperature}")


def _check_nonnegative(value: float, name: str) -> None:
    v = float(value)
    if not (v >= 0.0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------

def cross_entropy(logits: Tensor, labels: Tensor | None) -> Tensor:
    """Cross-entropy with hard labels, mean over the batch (the L_CE of every equation).

    ``CE(z, y) = -(1/N) sum_n log softmax(z_n)[y_n]`` (temperature 1).

    ``labels=None`` (no-label setting): the term drops out and a constant zero (no gradient) of
    the logits' dtype and device is returned, so that adding it to other terms changes nothing.
    """
    _check_logits("logits", logits)
    _check_labels(labels, logits)
    if labels is None:
        return logits.new_zeros(())
    return F.cross_entropy(logits, labels)


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Cross-entropy against a soft target, mean over the batch (Eq. 8's form of L_HTC).

    ``H(p, softmax(z)) = -(1/N) sum_n sum_c p_{n,c} log softmax(z_n)_c``. The target rows need
    not sum to one (e.g. HTC targets without labels sum to alpha). The target is detached.
    """
    _check_same_shape("logits", logits, "target_probs", target_probs)
    return -(target_probs.detach() * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def kl_from_log_probs(target_log_probs: Tensor, input_log_probs: Tensor) -> Tensor:
    """Batch-mean ``KL(p || q)`` from log-probabilities: ``(1/N) sum_n sum_c p (log p - log q)``.

    ``p = exp(target_log_probs)`` is the target distribution, ``q = exp(input_log_probs)``.
    Gradients flow through both arguments; callers detach whatever is frozen. Entries where
    ``p`` underflows to 0 contribute exactly 0 (``log p`` from ``log_softmax`` stays finite).
    """
    _check_same_shape("target_log_probs", target_log_probs, "input_log_probs", input_log_probs)
    p = target_log_probs.exp()
    return (p * (target_log_probs - input_log_probs)).sum(dim=1).mean()


def kl_divergence(target_logits: Tensor, input_logits: Tensor, temperature: float = 1.0
                  ) -> Tensor:
    """Batch-mean ``KL(softmax(z_target/T) || softmax(z_input/T))`` computed from logits.

    Equivalent to ``nn.KLDivLoss(reduction='batchmean')(log_softmax(z_input/T),
    softmax(z_target/T))`` in the reference code, i.e. the *second* argument of ``KLDivLoss``
    is our *first* argument. No ``T^2`` factor and no detaching here: both are the caller's.
    """
    _check_same_shape("target_logits", target_logits, "input_logits", input_logits)
    _check_temperature(temperature)
    return kl_from_log_probs(
        F.log_softmax(target_logits / temperature, dim=1),
        F.log_softmax(input_logits / temperature, dim=1),
    )


# --------------------------------------------------------------------------------------------
# the paper's equations
# --------------------------------------------------------------------------------------------

def kd_terms(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None,
             alpha: float, temperature: float) -> dict[str, Tensor]:
    """Knowledge distillation, Eq. 2 (Hinton et al.; ``loss_fn_kd`` of the Nasty-Teacher code),
    term by term: ``{"kd": alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T)),
    "ce": (1 - alpha) * CE(z_s, y)}``; their sum is :func:`kd_loss`.

    batch-mean, with lambda = T^2 as in the paper's text. The teacher is the target distribution
    and is treated as a constant (detached); gradient reaches the student only.

    ``labels=None``: no ``"ce"`` term; the KL term keeps its weight ``alpha * T^2`` (so
    ``alpha=0`` without labels gives a zero loss).
    """
    _check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
    _check_labels(labels, student_logits)
    _check_alpha(alpha)
    _check_temperature(temperature)
    kl = kl_divergence(teacher_logits.detach(), student_logits, temperature)
    terms = {"kd": alpha * temperature * temperature * kl}
    if labels is not None:
        terms["ce"] = (1.0 - alpha) * cross_entropy(student_logits, labels)
    return terms


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None,
            alpha: float, temperature: float) -> Tensor:
    """Knowledge distillation, Eq. 2: ``L = alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T))
    + (1 - alpha) * CE(z_s, y)``, the sum of :func:`kd_terms` (which documents it)."""
    terms = kd_terms(student_logits, teacher_logits, labels, alpha, temperature)
    loss = terms["kd"]
    if "ce" in terms:
        loss = loss + terms["ce"]
    return loss


def nasty_loss(logits: Tensor, adversary_logits: Tensor, labels: Tensor | None, omega: float,
               temperature: float) -> Tensor:
    """Nasty-teacher training objective (self-undermining KD), Eq. 5, minimised by the nasty model.

    ``L_n = CE(z_n, y) - omega * tau_A^2 * KL(softmax(z_n/tau_A) || softmax(z_adv/tau_A))``

    batch-mean. The direction follows ``train_nasty.py`` of VITA-Group/Nasty-Teacher, which calls
    ``nn.KLDivLoss(reduction='batchmean')(log_softmax(z_adv/T), softmax(z_n/T)) * T * T``: the
    *nasty* model's softened distribution is the target ``p`` (the teacher slot of a KD loss) and
    the frozen adversary (normal teacher) is in the student slot. Gradient flows through the nasty
    model's distribution only (the adversary is detached), including through ``p`` itself. The
    reference's ``+ 100.0`` (to keep the logged loss positive) is omitted: it has no gradient.

    ``labels=None`` raises ``ValueError``: a nasty teacher is trained with labels (without the CE
    term the objective only pushes away from the adversary and accuracy is lost).
    """
    _check_same_shape("logits", logits, "adversary_logits", adversary_logits)
    if labels is None:
        raise ValueError("labels must not be None for nasty_loss: a nasty teacher needs labels")
    _check_labels(labels, logits)
    _check_nonnegative(omega, "omega")
    _check_temperature(temperature)
    kl = kl_divergence(logits, adversary_logits.detach(), temperature)
    return cross_entropy(logits, labels) - omega * temperature * temperature * kl


def htc_targets(teacher_logits: Tensor, labels: Tensor | None, alpha: float, temperature: float,
                num_classes: int) -> Tensor:
    """HTC teacher targets ``y_net``, Eq. 6-7 (for plots and for the Eq. 8 form of the loss).

    ``y_nasty = softmax(z_t / tau)`` (Eq. 6);  ``y_net = (1 - alpha) * onehot(y) + alpha * y_nasty``
    (Eq. 7). Returns ``[N, C]`` probabilities (detached from the teacher).

    ``labels=None``: the one-hot term drops out and ``alpha * y_nasty`` is returned (rows sum to
    ``alpha``, not renormalised), matching :func:`htc_loss` without labels.
    """
    _check_logits("teacher_logits", teacher_logits)
    _check_labels(labels, teacher_logits)
    _check_alpha(alpha)
    _check_temperature(temperature)
    if int(num_classes) != num_classes or teacher_logits.shape[1] != num_classes:
        raise ValueError(
            f"num_classes must equal teacher_logits.shape[1] = {teacher_logits.shape[1]}, "
            f"got {num_classes}"
        )
    y_nasty = torch.softmax(teacher_logits.detach() / temperature, dim=1)
    targets = alpha * y_nasty
    if labels is not None:
        one_hot = F.one_hot(labels, int(num_classes)).to(y_nasty.dtype)
        targets = targets + (1.0 - alpha) * one_hot
    return targets


def _composition(student_logits: Tensor, teacher_name: str, teacher_logits: Tensor,
                 labels: Tensor | None, alpha: float, temperature: float, multiplier: float, *,
                 student_temperature: float) -> Tensor:
    """The form HTC (Eq. 9) and SCM (Eq. 11) share: ``(1 - alpha) * CE(z_s, y) + alpha * m *
    KL(softmax(z_t/tau) || softmax(z_s/T_s))``, with ``T_s`` 1 (HTC) or ``tau`` (SCM).

    Batch-mean; the teacher is detached; ``labels=None`` drops the CE term. ``teacher_name``
    names the teacher's argument in errors.
    """
    _check_same_shape("student_logits", student_logits, teacher_name, teacher_logits)
    _check_labels(labels, student_logits)
    _check_alpha(alpha)
    _check_temperature(temperature)
    _check_nonnegative(multiplier, "multiplier")
    student = student_logits if student_temperature == 1.0 else student_logits / student_temperature
    kl = kl_from_log_probs(F.log_softmax(teacher_logits.detach() / temperature, dim=1),
                           F.log_softmax(student, dim=1))
    loss = alpha * multiplier * kl
    if labels is not None:
        loss = loss + (1.0 - alpha) * cross_entropy(student_logits, labels)
    return loss


def htc_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None,
             alpha: float, temperature: float, multiplier: float) -> Tensor:
    """High-Temperature Composition loss, Eq. 9.

    ``L_HTC = (1 - alpha) * CE(s, y) + alpha * m * KL(y_nasty || s)``

    with ``y_nasty = softmax(z_t / tau)`` (Eq. 6, the teacher softened at the high temperature
    tau) and ``s = softmax(z_s)`` at temperature 1 (the paper's ``s = softmax(z_student)``); no
    ``T^2`` factor (the multiplier ``m`` plays that role). Batch-mean; teacher detached.
    With ``m = 1`` this differs from Eq. 8 (``CE(s, y_net)``, see :func:`htc_targets`) by
    ``alpha * H(y_nasty)``, a constant for the student: same gradient.

    ``labels=None``: the ``(1 - alpha) * CE`` term drops out; the KL term keeps ``alpha * m``.
    """
    return _composition(student_logits, "teacher_logits", teacher_logits, labels, alpha,
                        temperature, multiplier, student_temperature=1.0)


def ensemble_logits(logits: Sequence[Tensor] | Tensor) -> Tensor:
    """The SCM ensemble's logits ``z_ens`` (Eq. 10-11): the mean of the sequence models' logits.

    Accepts a non-empty list of ``[N, C]`` tensors or one stacked ``[k, N, C]`` tensor and
    returns ``[N, C]``. Averages logits (not probabilities). Does not detach.
    """
    if isinstance(logits, Tensor):
        if logits.dim() != 3 or logits.shape[0] < 1:
            raise ValueError(f"logits must be stacked as [k, N, C] with k >= 1, got "
                             f"{tuple(logits.shape)}")
        _check_logits("logits[0]", logits[0])
        return logits.mean(dim=0)
    items = list(logits)
    if not items:
        raise ValueError("logits must hold at least one model's logits")
    for i, item in enumerate(items):
        _check_same_shape("logits[0]", items[0], f"logits[{i}]", item)
    return torch.stack(items).mean(dim=0)


def scm_loss(student_logits: Tensor, ensemble_logits: Tensor, labels: Tensor | None,
             alpha: float, temperature: float, multiplier: float) -> Tensor:
    """Sequence-of-Contrastive-Models student loss, Eq. 11.

    ``L_SCM = (1 - alpha) * CE(z_s, y) + alpha * m * KL(softmax(z_ens/tau) || softmax(z_s/tau))``

    where ``z_ens`` is the ensemble's logits (:func:`ensemble_logits`). The paper writes
    ``L_KL(softmax(z_s/tau), softmax(z_ens/tau))`` with the same argument order as its Eq. 2,
    where the teacher is the target distribution; so here too the ensemble (teacher) is the
    target ``p`` and the student the input, as in KD. No ``T^2`` factor (Eq. 11 has none; ``m``
    sets the scale, so ``m = tau^2`` gives exactly :func:`kd_loss`). Batch-mean; the ensemble is
    detached. The CE term uses the student at temperature 1.

    ``labels=None``: the ``(1 - alpha) * CE`` term drops out; the KL term keeps ``alpha * m``.
    """
    return _composition(student_logits, "ensemble_logits", ensemble_logits, labels, alpha,
                        temperature, multiplier, student_temperature=temperature)


# --------------------------------------------------------------------------------------------
# Skeptical student (Kundu et al., NeurIPS 2021), as ksouvik52/Skeptical2021 computes it
# --------------------------------------------------------------------------------------------

def skeptical_kd_active(epoch: int, kd_delay: int) -> bool:
    """Whether the Skeptical student's full loss is on at ``epoch`` (epochs count from 0).

    ``train_kd_to_SD.py`` switches on ``if (epoch > params.kd_delay)`` with a 0-based epoch, so
    epochs ``0 .. kd_delay`` train the final head with CE only; ``kd_delay = -1`` means no delay.
    """
    if int(epoch) != epoch or epoch < 0:
        raise ValueError(f"epoch must be an integer >= 0, got {epoch}")
    if int(kd_delay) != kd_delay or kd_delay < -1:
        raise ValueError(f"kd_delay must be an integer >= -1, got {kd_delay}")
    return epoch > kd_delay


def skeptical_self_distillation_loss(
    final_logits: Tensor,
    l3_logits: Tensor,
    labels: Tensor | None,
    temperature: float,
    *,
    sd_weight: float = SKEPTICAL_SD_WEIGHT,
    l3_ce_weight: float = SKEPTICAL_L3_CE_WEIGHT,
    detach_final: bool = False,
) -> Tensor:
    """Skeptical student's self-distillation and label terms (everything but the teacher's KD).

    ``L_SD = 0.3 * KL(softmax(z_final/T) || softmax(z_l3/T)) + 0.7 * CE(z_l3, y) + CE(z_final, y)``

    batch-mean, where ``z_final`` is the last (deepest) head and ``z_l3`` the auxiliary head on
    the third stage. From their code (``loss_fn_kd`` in ``train_kd_to_SD.py``): the weights 0.3
    and 0.7, the KL direction (final head is the target, ``outputs[0]``; layer-3 head the input,
    ``outputs[1]``), the temperature (the *same* ``T`` as the teacher's KD), no ``T^2`` factor on
    this KL, and no detaching: the final head's distribution is *not* detached, so this KL also
    sends gradient into the final head and the shared trunk (``detach_final=True`` is our option
    to stop that; off by default, to match the code).

    ``labels=None``: both CE terms drop out; the KL term keeps its weight 0.3.
    """
    _check_same_shape("final_logits", final_logits, "l3_logits", l3_logits)
    _check_labels(labels, final_logits)
    _check_temperature(temperature)
    _check_nonnegative(sd_weight, "sd_weight")
    _check_nonnegative(l3_ce_weight, "l3_ce_weight")
    target = final_logits.detach() if detach_final else final_logits
    loss = sd_weight * kl_divergence(target, l3_logits, temperature)
    if labels is not None:
        loss = (loss + l3_ce_weight * cross_entropy(l3_logits, labels)
                + cross_entropy(final_logits, labels))
    return loss


def skeptical_loss(
    head_logits: Sequence[Tensor],
    teacher_logits: Tensor,
    labels: Tensor | None,
    *,
    alpha: float,
    temperature: float,
    loc: int,
    epoch: int,
    kd_delay: int,
    teacher_loss: str = "kd",
    multiplier: float = 1.0,
    sd_temperature: float | None = None,
    detach_final: bool = False,
) -> Tensor:
    """The full Skeptical-student loss, optionally with HTC or SCM on the KD head.

    ``head_logits`` are ordered as the reference models return them: ``[final, layer-3 head,
    layer-2 head, layer-1 head]`` (``[out4, out3, out2, out1]``); ``loc`` indexes that list and
    picks the head that learns from the teacher. Once :func:`skeptical_kd_active` (epoch >
    kd_delay):

    ``L = L_teacher(z_loc, z_t, y) + 0.3*KL_T'(final || l3) + 0.7*CE(l3, y) + CE(final, y)``

    where ``L_teacher`` is :func:`kd_loss` (``teacher_loss="kd"``, the Skeptical baseline: Eq. 2
    with ``alpha``, ``T``), :func:`htc_loss` (``"htc"``, Skeptical+HTC: ``alpha``, ``tau =
    temperature``, ``m = multiplier``) or :func:`scm_loss` (``"scm"``, Skeptical+SCM;
    ``teacher_logits`` is then the ensemble's logits) and the self-distillation part is
    :func:`skeptical_self_distillation_loss` at ``T' = sd_temperature`` (default: ``temperature``,
    as in their code, where one ``T`` serves both). Before that (warm-up), ``L = CE(final, y)``.
    The ``kd`` form with ``sd_temperature=None`` reproduces ``loss_fn_kd`` of
    ``train_kd_to_SD.py`` term for term; ``htc``/``scm`` swaps are the paper's combinations
    (Table 1, "Skep.+HTC/SCM") with the rest unchanged (our reading, the paper gives no detail).

    ``labels=None``: every CE term drops out, the rest keep their weights. During the warm-up the
    only term is a label term, so ``labels=None`` with ``epoch <= kd_delay`` raises ValueError
    (use ``kd_delay=-1`` in the no-label setting).
    """
    heads = list(head_logits)
    if len(heads) < 2:
        raise ValueError(
            f"head_logits needs at least the final and layer-3 heads, got {len(heads)}"
        )
    for i, h in enumerate(heads):
        _check_same_shape("head_logits[0]", heads[0], f"head_logits[{i}]", h)
    if int(loc) != loc or not (0 <= loc < len(heads)):
        raise ValueError(f"loc must be an index into head_logits (0..{len(heads) - 1}), got {loc}")
    _check_same_shape("head_logits[0]", heads[0], "teacher_logits", teacher_logits)
    _check_labels(labels, heads[0])
    _check_alpha(alpha)
    _check_temperature(temperature)
    _check_nonnegative(multiplier, "multiplier")
    if sd_temperature is not None:
        _check_temperature(sd_temperature, "sd_temperature")
    if teacher_loss not in ("kd", "htc", "scm"):
        raise ValueError(f"teacher_loss must be 'kd', 'htc' or 'scm', got {teacher_loss!r}")

    if not skeptical_kd_active(epoch, kd_delay):
        if labels is None:
            raise ValueError(
                "labels=None during the Skeptical warm-up (epoch <= kd_delay) leaves no loss "
                "term; use kd_delay=-1 in the no-label setting"
            )
        return cross_entropy(heads[0], labels)

    z_loc = heads[loc]
    if teacher_loss == "kd":
        teach = kd_loss(z_loc, teacher_logits, labels, alpha, temperature)
    elif teacher_loss == "htc":
        teach = htc_loss(z_loc, teacher_logits, labels, alpha, temperature, multiplier)
    else:
        teach = scm_loss(z_loc, teacher_logits, labels, alpha, temperature, multiplier)
    t_sd = temperature if sd_temperature is None else sd_temperature
    return teach + skeptical_self_distillation_loss(
        heads[0], heads[1], labels, t_sd, detach_final=detach_final
    )


# --------------------------------------------------------------------------------------------
# DAFL generator (Chen et al., ICCV 2019), the data-free setting of Table 4
# --------------------------------------------------------------------------------------------

#: Logarithms the information-entropy term can use: ``DAFL_train.py`` of huawei-noah/DAFL calls
#: ``torch.log10`` (as protocol.md writes it); ``"ln"`` is the natural log of the DAFL paper's
#: entropy. The two differ by the constant factor ``ln 10``: ``ie`` with log10 equals ``ie / ln 10``
#: with ln.
DAFL_ENTROPY_LOGS = {"log10": math.log(10.0), "ln": 1.0}


def dafl_one_hot_loss(teacher_logits: Tensor) -> Tensor:
    """DAFL's one-hot loss ``L_oh = CE(z_T, argmax z_T)``, mean over the batch.

    ``z_T = T(G(z))`` are the teacher's logits on generated images; the pseudo-labels are the
    teacher's own predictions (no gradient through the argmax). The gradient flows through the
    logits to the generator: minimising it makes the teacher confident on generated images.
    """
    _check_logits("teacher_logits", teacher_logits)
    return F.cross_entropy(teacher_logits, teacher_logits.detach().argmax(dim=1))


def dafl_activation_loss(teacher_features: Tensor) -> Tensor:
    """DAFL's activation loss ``L_a = -mean(|f_T|)``: the mean over every entry (batch and feature).

    ``f_T`` are the teacher's penultimate features on generated images (the classifier's input,
    ``ModelOutput.features``), ``[N, D]`` or any shape with the batch first. Minimising it makes
    the features large in absolute value (``loss_activation = -features_T.abs().mean()`` in
    ``DAFL_train.py``). Gradient flows through the features.
    """
    if not isinstance(teacher_features, Tensor) or not teacher_features.is_floating_point():
        raise ValueError("teacher_features must be a floating-point torch.Tensor")
    if teacher_features.dim() < 2 or teacher_features.numel() == 0:
        raise ValueError(f"teacher_features must have shape [N, D, ...] with N, D >= 1, got "
                         f"{tuple(teacher_features.shape)}")
    return -teacher_features.abs().mean()


def dafl_information_entropy_loss(teacher_logits: Tensor, log: str = "log10") -> Tensor:
    """DAFL's information-entropy loss ``L_ie = sum_c p_bar_c log p_bar_c = -H(p_bar)``.

    ``p_bar = (1/N) sum_n softmax(z_T,n)`` is the batch-mean of the teacher's class distribution
    on generated images; minimising ``L_ie`` (maximising the entropy of ``p_bar``) balances the
    classes the generator produces. Its minimum, at a uniform ``p_bar``, is ``-log C``.

    ``log``: ``"log10"`` (default), as ``DAFL_train.py`` computes it (``torch.log10``) and as
    protocol.md writes it; ``"ln"``: the natural log (equivalently, ``ie`` scaled by ``ln 10``).
    ``log p_bar`` is computed as ``logsumexp_n log_softmax(z_T,n) - log N`` (finite for any finite
    logits; a class whose ``p_bar`` underflows to 0 contributes exactly 0).
    """
    _check_logits("teacher_logits", teacher_logits)
    if log not in DAFL_ENTROPY_LOGS:
        raise ValueError(f"log must be one of {sorted(DAFL_ENTROPY_LOGS)}, got {log!r}")
    n = teacher_logits.shape[0]
    log_p_bar = torch.logsumexp(F.log_softmax(teacher_logits, dim=1), dim=0) - math.log(n)
    return (log_p_bar.exp() * log_p_bar).sum() / DAFL_ENTROPY_LOGS[log]


def dafl_generator_loss(teacher_logits: Tensor, teacher_features: Tensor, oh: float, a: float,
                        ie: float, log: str = "log10") -> Tensor:
    """The DAFL generator's objective: ``L_G = oh * L_oh + a * L_a + ie * L_ie``.

    i.e. ``oh * CE(z_T, argmax z_T) - a * mean|f_T| + ie * sum_c p_bar_c log p_bar_c`` with the
    terms of :func:`dafl_one_hot_loss`, :func:`dafl_activation_loss` and
    :func:`dafl_information_entropy_loss` (``log`` as there). DAFL's CIFAR-10 weights: oh 0.05,
    a 0.01, ie 5; CIFAR-100: oh 0.5, a 0.1, ie 20. The teacher is frozen but *not* detached here:
    the gradient flows through the teacher's logits and features into the generated images.
    """
    _check_logits("teacher_logits", teacher_logits)
    if teacher_features.shape[0] != teacher_logits.shape[0]:
        raise ValueError(f"teacher_features must have {teacher_logits.shape[0]} rows (one per "
                         f"logit row), got {tuple(teacher_features.shape)}")
    for value, name in ((oh, "oh"), (a, "a"), (ie, "ie")):
        _check_nonnegative(value, name)
    return (oh * dafl_one_hot_loss(teacher_logits) + a * dafl_activation_loss(teacher_features)
            + ie * dafl_information_entropy_loss(teacher_logits, log))
