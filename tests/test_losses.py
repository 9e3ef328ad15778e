"""Tests of undistill.losses against straightforward float64 formulas (values and gradients)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from undistill import losses as L

DT = torch.float64
N, C = 4, 5


# --------------------------------------------------------------------------------------------
# fixed small inputs and independent reference formulas
# --------------------------------------------------------------------------------------------

def _logits(seed: int, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, C, generator=g, dtype=DT) * scale).requires_grad_(True)


LABELS = torch.tensor([0, 3, 1, 4])


def ref_softmax(z: torch.Tensor, t: float = 1.0) -> torch.Tensor:
    e = torch.exp(z / t - (z / t).max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def ref_ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = ref_softmax(z)
    total = z.new_zeros(())
    for n in range(z.shape[0]):
        total = total - torch.log(p[n, y[n]])
    return total / z.shape[0]


def ref_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) summed over classes, averaged over rows."""
    total = p.new_zeros(())
    for n in range(p.shape[0]):
        for c in range(p.shape[1]):
            total = total + p[n, c] * (torch.log(p[n, c]) - torch.log(q[n, c]))
    return total / p.shape[0]


def ref_soft_ce(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(ref_softmax(z))).sum() / z.shape[0]


def grad_of(value: torch.Tensor, wrt: torch.Tensor) -> torch.Tensor:
    """d value / d wrt; zeros where ``wrt`` does not enter ``value``."""
    (g,) = torch.autograd.grad(value, wrt, retain_graph=True, allow_unused=True)
    return torch.zeros_like(wrt) if g is None else g


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------

def test_cross_entropy_matches_reference_value_and_gradient() -> None:
    z = _logits(0)
    got, want = L.cross_entropy(z, LABELS), ref_ce(z, LABELS)
    assert_close(got, want)
    assert_close(grad_of(got, z), grad_of(want, z))


def test_cross_entropy_without_labels_is_zero() -> None:
    z = _logits(0)
    out = L.cross_entropy(z, None)
    assert out.item() == 0.0 and out.dtype == DT and out.dim() == 0


def test_kl_divergence_matches_reference_and_order() -> None:
    zt, zi = _logits(1), _logits(2)
    for t in (1.0, 4.0):
        got = L.kl_divergence(zt, zi, t)
        want = ref_kl(ref_softmax(zt, t), ref_softmax(zi, t))
        assert_close(got, want)
        assert_close(grad_of(got, zt), grad_of(want, zt))
        assert_close(grad_of(got, zi), grad_of(want, zi))
        # same as the reference code's nn.KLDivLoss(input=log q, target=p)
        code = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(zi / t, 1), F.softmax(zt / t, 1))
        assert_close(got, code)
    assert L.kl_divergence(zt, zt, 3.0).abs().item() < 1e-12
    assert L.kl_divergence(zt, zi).item() > 0.0
    assert not torch.isclose(L.kl_divergence(zt, zi), L.kl_divergence(zi, zt))


def test_soft_cross_entropy_matches_reference() -> None:
    z, p = _logits(3), ref_softmax(_logits(4).detach(), 7.0)
    got, want = L.soft_cross_entropy(z, p), ref_soft_ce(p, z)
    assert_close(got, want)
    assert_close(grad_of(got, z), grad_of(want, z))


# --------------------------------------------------------------------------------------------
# Eq. 2: KD
# --------------------------------------------------------------------------------------------

def ref_kd(zs, zt, y, a, t):
    val = a * t * t * ref_kl(ref_softmax(zt.detach(), t), ref_softmax(zs, t))
    return val if y is None else val + (1 - a) * ref_ce(zs, y)


@pytest.mark.parametrize("labels", [LABELS, None])
@pytest.mark.parametrize(("alpha", "t"), [(0.9, 4.0), (0.9, 20.0), (0.3, 1.0)])
def test_kd_loss_matches_reference(labels, alpha, t) -> None:
    zs, zt = _logits(5), _logits(6)
    got, want = L.kd_loss(zs, zt, labels, alpha, t), ref_kd(zs, zt, labels, alpha, t)
    assert_close(got, want)
    assert_close(grad_of(got, zs), grad_of(want, zs))


def test_kd_loss_matches_nasty_teacher_code_formula() -> None:
    zs, zt = _logits(5), _logits(6).detach()
    a, t = 0.9, 20.0
    code = (nn.KLDivLoss(reduction="batchmean")(F.log_softmax(zs / t, 1), F.softmax(zt / t, 1))
            * (a * t * t) + nn.CrossEntropyLoss()(zs, LABELS) * (1.0 - a))
    assert_close(L.kd_loss(zs, zt, LABELS, a, t), code)


def test_kd_alpha_zero_is_cross_entropy() -> None:
    zs, zt = _logits(5), _logits(6)
    assert_close(L.kd_loss(zs, zt, LABELS, 0.0, 4.0), L.cross_entropy(zs, LABELS))


def test_kd_teacher_gets_no_gradient() -> None:
    zs, zt = _logits(5), _logits(6)
    L.kd_loss(zs, zt, LABELS, 0.9, 4.0).backward()
    assert zt.grad is None and zs.grad is not None


def test_kd_without_labels_drops_ce_exactly() -> None:
    zs, zt = _logits(5), _logits(6)
    a, t = 0.7, 4.0
    with_labels = L.kd_loss(zs, zt, LABELS, a, t)
    without = L.kd_loss(zs, zt, None, a, t)
    assert_close(without, a * t * t * L.kl_divergence(zt, zs, t))
    assert_close(with_labels - without, (1 - a) * L.cross_entropy(zs, LABELS))


# --------------------------------------------------------------------------------------------
# Eq. 5: nasty teacher
# --------------------------------------------------------------------------------------------

def ref_nasty(zn, zadv, y, w, t):
    return ref_ce(zn, y) - w * t * t * ref_kl(ref_softmax(zn, t), ref_softmax(zadv.detach(), t))


@pytest.mark.parametrize(("omega", "t"), [(0.04, 4.0), (0.005, 20.0), (0.5, 1.0)])
def test_nasty_loss_matches_reference(omega, t) -> None:
    zn, zadv = _logits(7), _logits(8)
    got, want = L.nasty_loss(zn, zadv, LABELS, omega, t), ref_nasty(zn, zadv, LABELS, omega, t)
    assert_close(got, want)
    assert_close(grad_of(got, zn), grad_of(want, zn))


def test_nasty_loss_matches_train_nasty_code_formula() -> None:
    zn, zadv = _logits(7), _logits(8).detach()
    w, t = 0.04, 4.0
    adv = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(zadv / t, 1),
                                              F.softmax(zn / t, 1)) * (t * t)
    code = nn.CrossEntropyLoss()(zn, LABELS) - w * adv + 100.0
    got = L.nasty_loss(zn, zadv, LABELS, w, t)
    assert_close(got + 100.0, code)
    assert_close(grad_of(got, zn), grad_of(code, zn))


def test_nasty_adversary_gets_no_gradient() -> None:
    zn, zadv = _logits(7), _logits(8)
    L.nasty_loss(zn, zadv, LABELS, 0.04, 4.0).backward()
    assert zadv.grad is None and zn.grad is not None


def test_nasty_kl_part_descent_step_increases_kl() -> None:
    zn, zadv = _logits(7), _logits(8).detach()
    w, t = 0.04, 4.0
    kl_part = L.nasty_loss(zn, zadv, LABELS, w, t) - L.cross_entropy(zn, LABELS)
    assert_close(kl_part, -w * t * t * L.kl_divergence(zn, zadv, t))
    g = grad_of(kl_part, zn)
    before = L.kl_divergence(zn, zadv, t).item()
    after = L.kl_divergence(zn.detach() - 0.5 * g, zadv, t).item()
    assert after > before


def test_nasty_loss_requires_labels() -> None:
    with pytest.raises(ValueError, match="labels"):
        L.nasty_loss(_logits(7), _logits(8), None, 0.04, 4.0)


# --------------------------------------------------------------------------------------------
# Eq. 6-9: HTC
# --------------------------------------------------------------------------------------------

def ref_htc(zs, zt, y, a, t, m):
    val = a * m * ref_kl(ref_softmax(zt.detach(), t), ref_softmax(zs))
    return val if y is None else val + (1 - a) * ref_ce(zs, y)


@pytest.mark.parametrize("labels", [LABELS, None])
@pytest.mark.parametrize(("alpha", "t", "m"), [(0.9, 50.0, 50.0), (0.5, 4.0, 1.0),
                                                (0.1, 100.0, 5.0)])
def test_htc_loss_matches_reference(labels, alpha, t, m) -> None:
    zs, zt = _logits(9), _logits(10, scale=10.0)
    got, want = L.htc_loss(zs, zt, labels, alpha, t, m), ref_htc(zs, zt, labels, alpha, t, m)
    assert_close(got, want)
    assert_close(grad_of(got, zs), grad_of(want, zs))


def test_htc_targets_match_eq7() -> None:
    zt = _logits(10, scale=10.0)
    a, t = 0.9, 50.0
    y_net = L.htc_targets(zt, LABELS, a, t, C)
    want = (1 - a) * F.one_hot(LABELS, C).to(DT) + a * ref_softmax(zt.detach(), t)
    assert_close(y_net, want)
    assert_close(y_net.sum(1), torch.ones(N, dtype=DT))
    assert not y_net.requires_grad
    assert_close(L.htc_targets(zt, None, a, t, C), a * ref_softmax(zt.detach(), t))


@pytest.mark.parametrize("labels", [LABELS, None])
def test_htc_eq8_and_eq9_differ_by_a_constant(labels) -> None:
    zs, zt = _logits(9), _logits(10, scale=10.0)
    a, t = 0.9, 50.0
    eq8 = L.soft_cross_entropy(zs, L.htc_targets(zt, labels, a, t, C))
    eq9 = L.htc_loss(zs, zt, labels, a, t, 1.0)
    assert_close(grad_of(eq8, zs), grad_of(eq9, zs))
    y_nasty = ref_softmax(zt.detach(), t)
    entropy = -(y_nasty * torch.log(y_nasty)).sum(1).mean()
    assert_close(eq8 - eq9, a * entropy)


def test_htc_alpha_zero_is_cross_entropy() -> None:
    zs, zt = _logits(9), _logits(10)
    assert_close(L.htc_loss(zs, zt, LABELS, 0.0, 50.0, 50.0), L.cross_entropy(zs, LABELS))


def test_htc_teacher_gets_no_gradient_and_labels_none_drops_ce() -> None:
    zs, zt = _logits(9), _logits(10)
    a = 0.6
    full = L.htc_loss(zs, zt, LABELS, a, 20.0, 10.0)
    nolab = L.htc_loss(zs, zt, None, a, 20.0, 10.0)
    assert_close(full - nolab, (1 - a) * L.cross_entropy(zs, LABELS))
    full.backward()
    assert zt.grad is None


# --------------------------------------------------------------------------------------------
# Eq. 10-11: SCM
# --------------------------------------------------------------------------------------------

def test_ensemble_logits_mean_of_list_and_stack() -> None:
    zs = [_logits(11).detach(), _logits(12).detach(), _logits(13).detach()]
    want = (zs[0] + zs[1] + zs[2]) / 3
    assert_close(L.ensemble_logits(zs), want)
    assert_close(L.ensemble_logits(torch.stack(zs)), want)
    assert_close(L.ensemble_logits([zs[0]]), zs[0])


def ref_scm(zs, zens, y, a, t, m):
    val = a * m * ref_kl(ref_softmax(zens.detach(), t), ref_softmax(zs, t))
    return val if y is None else val + (1 - a) * ref_ce(zs, y)


@pytest.mark.parametrize("labels", [LABELS, None])
def test_scm_loss_matches_reference(labels) -> None:
    zs = _logits(14)
    members = [_logits(15), _logits(16), _logits(17)]
    zens = L.ensemble_logits(members)
    a, t, m = 0.9, 20.0, 10.0
    got, want = L.scm_loss(zs, zens, labels, a, t, m), ref_scm(zs, zens, labels, a, t, m)
    assert_close(got, want)
    assert_close(grad_of(got, zs), grad_of(want, zs))
    got.backward()
    assert all(z.grad is None for z in members)


def test_scm_with_one_model_is_the_kd_style_term() -> None:
    zs, zt = _logits(14), _logits(15)
    a, t, m = 0.8, 4.0, 5.0
    got = L.scm_loss(zs, L.ensemble_logits([zt]), LABELS, a, t, m)
    assert_close(got, (1 - a) * L.cross_entropy(zs, LABELS) + a * m * L.kl_divergence(zt, zs, t))
    assert_close(L.scm_loss(zs, L.ensemble_logits([zt]), LABELS, a, t, t * t),
                 L.kd_loss(zs, zt, LABELS, a, t))


def test_scm_labels_none_drops_ce_exactly() -> None:
    zs, zt = _logits(14), _logits(15)
    a = 0.4
    diff = L.scm_loss(zs, zt, LABELS, a, 4.0, 50.0) - L.scm_loss(zs, zt, None, a, 4.0, 50.0)
    assert_close(diff, (1 - a) * L.cross_entropy(zs, LABELS))


# --------------------------------------------------------------------------------------------
# Skeptical student
# --------------------------------------------------------------------------------------------

def ref_sd(zf, z3, y, t):
    val = 0.3 * ref_kl(ref_softmax(zf, t), ref_softmax(z3, t))
    return val if y is None else val + 0.7 * ref_ce(z3, y) + ref_ce(zf, y)


@pytest.mark.parametrize("labels", [LABELS, None])
def test_skeptical_self_distillation_matches_reference(labels) -> None:
    zf, z3 = _logits(18), _logits(19)
    t = 4.0
    got, want = L.skeptical_self_distillation_loss(zf, z3, labels, t), ref_sd(zf, z3, labels, t)
    assert_close(got, want)
    assert_close(grad_of(got, z3), grad_of(want, z3))
    # the final head is not detached: the KL term also reaches it (as in their code)
    assert_close(grad_of(got, zf), grad_of(want, zf))


def test_skeptical_detach_final_option() -> None:
    zf, z3 = _logits(18), _logits(19)
    t = 4.0
    got = L.skeptical_self_distillation_loss(zf, z3, LABELS, t, detach_final=True)
    assert_close(got, ref_sd(zf, z3, LABELS, t))
    assert_close(grad_of(got, zf), grad_of(ref_ce(zf, LABELS), zf))


def _code_loss_fn_kd(outputs, labels, teacher_outputs, epoch, alpha, t, loc, kd_delay):
    """Transcription of loss_fn_kd in ksouvik52/Skeptical2021/train_kd_to_SD.py."""
    kl = nn.KLDivLoss(reduction="batchmean")
    ce = nn.CrossEntropyLoss()
    if epoch > kd_delay:
        return (kl(F.log_softmax(outputs[loc] / t, 1), F.softmax(teacher_outputs / t, 1))
                * (alpha * t * t) + ce(outputs[loc], labels) * (1.0 - alpha)
                + (0.3 * kl(F.log_softmax(outputs[1] / t, 1), F.softmax(outputs[0] / t, 1))
                   + 0.7 * ce(outputs[1], labels))
                + ce(outputs[0], labels))
    return ce(outputs[0], labels)


@pytest.mark.parametrize(("loc", "epoch", "kd_delay"), [(2, 6, 5), (1, 0, -1), (3, 5, 5),
                                                        (0, 10, 0)])
def test_skeptical_loss_matches_their_code(loc, epoch, kd_delay) -> None:
    heads = [_logits(20 + i) for i in range(4)]
    zt = _logits(30).detach()
    a, t = 0.9, 20.0
    got = L.skeptical_loss(heads, zt, LABELS, alpha=a, temperature=t, loc=loc, epoch=epoch,
                           kd_delay=kd_delay)
    want = _code_loss_fn_kd(heads, LABELS, zt, epoch, a, t, loc, kd_delay)
    assert_close(got, want)
    for h in heads:
        assert_close(grad_of(got, h), grad_of(want, h))


def test_skeptical_warmup_boundary_and_labels_none() -> None:
    heads = [_logits(20 + i) for i in range(4)]
    zt = _logits(30)
    kw = {"alpha": 0.9, "temperature": 4.0, "loc": 2, "kd_delay": 3}
    assert not L.skeptical_kd_active(3, 3) and L.skeptical_kd_active(4, 3)
    assert_close(L.skeptical_loss(heads, zt, LABELS, epoch=3, **kw),
                 L.cross_entropy(heads[0], LABELS))
    with pytest.raises(ValueError, match="kd_delay"):
        L.skeptical_loss(heads, zt, None, epoch=3, **kw)
    nolab = L.skeptical_loss(heads, zt, None, epoch=4, **kw)
    assert_close(nolab, 0.9 * 16.0 * L.kl_divergence(zt, heads[2], 4.0)
                 + 0.3 * L.kl_divergence(heads[0], heads[1], 4.0))
    nolab.backward()
    assert zt.grad is None


@pytest.mark.parametrize("kind", ["htc", "scm"])
def test_skeptical_loss_with_htc_or_scm_on_the_loc_head(kind) -> None:
    heads = [_logits(20 + i) for i in range(4)]
    zt = _logits(30)
    a, tau, m, t_sd = 0.9, 50.0, 10.0, 4.0
    got = L.skeptical_loss(heads, zt, LABELS, alpha=a, temperature=tau, loc=2, epoch=1,
                           kd_delay=0, teacher_loss=kind, multiplier=m, sd_temperature=t_sd)
    fn = L.htc_loss if kind == "htc" else L.scm_loss
    want = (fn(heads[2], zt, LABELS, a, tau, m)
            + L.skeptical_self_distillation_loss(heads[0], heads[1], LABELS, t_sd))
    assert_close(got, want)


# --------------------------------------------------------------------------------------------
# argument validation and numerical stability
# --------------------------------------------------------------------------------------------

def test_bad_arguments_raise_value_error() -> None:
    zs, zt = _logits(0), _logits(1)
    bad_calls = {
        "alpha": [lambda: L.kd_loss(zs, zt, LABELS, -0.1, 4.0),
                  lambda: L.htc_loss(zs, zt, LABELS, 1.5, 4.0, 1.0),
                  lambda: L.scm_loss(zs, zt, LABELS, math.nan, 4.0, 1.0),
                  lambda: L.htc_targets(zt, LABELS, 2.0, 4.0, C)],
        "temperature": [lambda: L.kd_loss(zs, zt, LABELS, 0.5, 0.0),
                        lambda: L.nasty_loss(zs, zt, LABELS, 0.04, -1.0),
                        lambda: L.htc_loss(zs, zt, LABELS, 0.5, math.inf, 1.0),
                        lambda: L.kl_divergence(zs, zt, 0.0),
                        lambda: L.skeptical_self_distillation_loss(zs, zt, LABELS, 0.0)],
        "multiplier": [lambda: L.htc_loss(zs, zt, LABELS, 0.5, 4.0, -1.0),
                       lambda: L.scm_loss(zs, zt, LABELS, 0.5, 4.0, -0.5)],
        "omega": [lambda: L.nasty_loss(zs, zt, LABELS, -0.04, 4.0)],
        "teacher_logits": [lambda: L.kd_loss(zs, zt[:, :3], LABELS, 0.5, 4.0),
                           lambda: L.kd_loss(zs, zt[:2], LABELS, 0.5, 4.0)],
        "ensemble_logits": [lambda: L.scm_loss(zs, zt[:, :3], LABELS, 0.5, 4.0, 1.0)],
        "adversary_logits": [lambda: L.nasty_loss(zs, zt[:, :2], LABELS, 0.04, 4.0)],
        "labels": [lambda: L.kd_loss(zs, zt, LABELS[:2], 0.5, 4.0),
                   lambda: L.cross_entropy(zs, LABELS.to(DT))],
        "logits": [lambda: L.cross_entropy(zs[0], LABELS), lambda: L.ensemble_logits([]),
                   lambda: L.ensemble_logits(zs)],
        "num_classes": [lambda: L.htc_targets(zt, LABELS, 0.5, 4.0, C + 1)],
        "loc": [lambda: L.skeptical_loss([zs, zt], zt, LABELS, alpha=0.5, temperature=4.0,
                                         loc=2, epoch=3, kd_delay=0)],
        "teacher_loss": [lambda: L.skeptical_loss([zs, zt], zt, LABELS, alpha=0.5,
                                                  temperature=4.0, loc=1, epoch=3, kd_delay=0,
                                                  teacher_loss="dkd")],
        "kd_delay": [lambda: L.skeptical_kd_active(3, -2)],
        "epoch": [lambda: L.skeptical_kd_active(-1, 0)],
    }
    for name, calls in bad_calls.items():
        for call in calls:
            with pytest.raises(ValueError, match=name):
                call()


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_large_logits_stay_finite(t) -> None:
    g = torch.Generator().manual_seed(42)
    zs = (torch.randn(N, C, generator=g) * 1e4).requires_grad_(True)
    zt = torch.randn(N, C, generator=g) * 1e4
    heads = [zs, zs * 0.5, zs * 0.25, zs * 0.1]
    values = [
        L.cross_entropy(zs, LABELS),
        L.kl_divergence(zt, zs, t),
        L.kd_loss(zs, zt, LABELS, 0.9, t),
        L.nasty_loss(zs, zt, LABELS, 0.04, t),
        L.htc_loss(zs, zt, LABELS, 0.9, t, 50.0),
        L.scm_loss(zs, L.ensemble_logits([zt, -zt]), LABELS, 0.9, t, 50.0),
        L.soft_cross_entropy(zs, L.htc_targets(zt, LABELS, 0.9, t, C)),
        L.skeptical_loss(heads, zt, LABELS, alpha=0.9, temperature=t, loc=2, epoch=1,
                         kd_delay=0),
    ]
    for v in values:
        assert torch.isfinite(v), v
        assert torch.isfinite(grad_of(v, zs)).all()


def test_kd_terms_sum_to_kd_loss_exactly() -> None:
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    terms = L.kd_terms(s, t, y, 0.7, 4.0)
    assert set(terms) == {"kd", "ce"}
    assert torch.equal(terms["kd"] + terms["ce"], L.kd_loss(s, t, y, 0.7, 4.0))
    assert torch.equal(torch.stack([terms["kd"], terms["ce"]]).sum(), L.kd_loss(s, t, y, 0.7, 4.0))
    assert set(L.kd_terms(s, t, None, 0.7, 4.0)) == {"kd"}
    assert torch.equal(L.kd_terms(s, t, None, 0.7, 4.0)["kd"], L.kd_loss(s, t, None, 0.7, 4.0))
