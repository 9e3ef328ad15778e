"""The nasty teacher's two calibration levers: the start from the adversary's weights and omega's
warm-up; both invisible (same numerics, same stored parameters, same run ids) at their defaults."""

from __future__ import annotations

import copy

import pytest
import torch

from undistill import recipes
from undistill.config import parse_config
from undistill.losses import nasty_loss
from undistill.methods import METHODS, Ensemble
from undistill.methods.nasty import NastyParams, warmed_omega
from undistill.models import build_model

C, S = 10, 8


def cnn(width: float = 0.25, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", num_classes=C, in_channels=1, width=width, image_size=S)


def nasty(student: torch.nn.Module, adversary: torch.nn.Module, **params: object):
    cls = METHODS.get("nasty")
    return cls(student, Ensemble([adversary]), cls.Params(**params))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(6, 1, S, S, generator=g), torch.randint(0, C, (6,), generator=g)


# --------------------------------------------------------------------------------------------
# init_from_teacher
# --------------------------------------------------------------------------------------------

def test_init_from_teacher_copies_weights_into_a_trainable_student() -> None:
    student, adversary = cnn(seed=0), cnn(seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(student.state_dict().values(),
                                                      adversary.state_dict().values(), strict=True))
    m = nasty(student, adversary, init_from_teacher=True)
    want, got = adversary.state_dict(), m.student.state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)  # weights and BatchNorm buffers
    adv_params = {id(p) for p in adversary.parameters()} | {p.data_ptr() for p in adversary.parameters()}
    for p in m.student.parameters():
        assert p.requires_grad
        assert id(p) not in adv_params and p.data_ptr() not in adv_params
    assert not any(p.requires_grad for p in adversary.parameters())  # the adversary stays frozen
    # the copies are the student's own: training it leaves the adversary as it was
    before = copy.deepcopy(adversary.state_dict())
    x, y = batch()
    m.train()
    _, terms = m.forward_train(x, y)
    sum(terms.values()).backward()
    with torch.no_grad():
        for p in m.student.parameters():
            p -= 0.1 * p.grad
    assert all(torch.equal(adversary.state_dict()[k], before[k]) for k in before)
    assert not all(torch.equal(m.student.state_dict()[k], before[k]) for k in before)


def test_init_from_teacher_off_keeps_the_seeded_init() -> None:
    student, adversary = cnn(seed=0), cnn(seed=1)
    before = copy.deepcopy(student.state_dict())
    m = nasty(student, adversary)
    assert all(torch.equal(m.student.state_dict()[k], v) for k, v in before.items())


@pytest.mark.parametrize("adversary", [
    lambda: cnn(width=0.5),
    lambda: build_model("resnet18", num_classes=C, in_channels=1, width=0.125, image_size=S)],
    ids=["width", "arch"])
def test_init_from_teacher_rejects_another_architecture(adversary) -> None:
    adv = adversary()
    with pytest.raises(ValueError, match="init_from_teacher") as e:
        nasty(cnn(), adv, init_from_teacher=True)
    assert "PlainCNN" in str(e.value) and type(adv).__name__ in str(e.value)
    nasty(cnn(), adv)  # without the lever any adversary does


# --------------------------------------------------------------------------------------------
# omega_warmup
# --------------------------------------------------------------------------------------------

def test_warmed_omega() -> None:
    assert warmed_omega(0.2, 0, 0) == 0.2 and warmed_omega(0.2, 7, 0) == 0.2
    assert [warmed_omega(0.2, e, 4) for e in range(6)] == pytest.approx(
        [0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    assert warmed_omega(0.2, 0, 1) == 0.2


def _terms(omega: float, epoch: int, **params: object) -> torch.Tensor:
    m = nasty(cnn(seed=0), cnn(seed=1), omega=omega, temperature=4.0, **params)
    m.train()
    m.start_epoch(epoch)
    x, y = batch()
    _, terms = m.forward_train(x, y)
    assert list(terms) == ["nasty"]
    return terms["nasty"]


def test_warmup_scales_omega_by_epoch() -> None:
    assert torch.equal(_terms(0.2, 0, omega_warmup=4), _terms(0.05, 0))
    assert torch.equal(_terms(0.2, 1, omega_warmup=4), _terms(0.1, 1))
    for epoch in (3, 9):
        assert torch.equal(_terms(0.2, epoch, omega_warmup=4), _terms(0.2, epoch))
    assert not torch.equal(_terms(0.2, 0, omega_warmup=4), _terms(0.2, 0))
    m = nasty(cnn(), cnn(seed=1), omega=0.2, omega_warmup=4)
    m.start_epoch(1)
    assert m.epoch_params().omega == pytest.approx(0.1) and m.params.omega == 0.2  # not mutated


# --------------------------------------------------------------------------------------------
# defaults: the method and the runs of before
# --------------------------------------------------------------------------------------------

def test_defaults_leave_forward_train_unchanged() -> None:
    p = NastyParams(omega=0.1, temperature=4.0)
    assert (p.init_from_teacher, p.omega_warmup) == (False, 0)
    student, adversary = cnn(seed=0), cnn(seed=1)
    ref_student = copy.deepcopy(student).train()
    m = nasty(student, adversary, omega=0.1, temperature=4.0)
    m.train()
    m.start_epoch(5)
    x, y = batch()
    logits, terms = m.forward_train(x, y)
    ref_logits = ref_student(x)
    want = nasty_loss(ref_logits, adversary(x), y, 0.1, 4.0)
    assert torch.equal(logits, ref_logits)
    assert list(terms) == ["nasty"] and torch.equal(terms["nasty"], want)


def test_new_fields_are_left_out_of_the_stored_params_at_their_defaults() -> None:
    assert NastyParams().model_dump() == {"omega": 0.04, "temperature": 4.0}
    assert NastyParams(init_from_teacher=False, omega_warmup=0).model_dump(mode="json") == {
        "omega": 0.04, "temperature": 4.0}
    assert NastyParams(init_from_teacher=True, omega_warmup=3).model_dump() == {
        "omega": 0.04, "temperature": 4.0, "init_from_teacher": True, "omega_warmup": 3}
    assert NastyParams(omega_warmup=2).model_dump() == {
        "omega": 0.04, "temperature": 4.0, "omega_warmup": 2}
    with pytest.raises(ValueError):
        NastyParams(omega_warmup=-1)


def test_run_ids_of_nasty_runs_are_unchanged() -> None:
    normal = recipes.normal_teacher("digits", "cnn", 0.25, optim={"epochs": 1})
    plain = recipes.nasty_teacher(normal, omega=0.1, temperature=4.0)
    assert plain.method.params == {"omega": 0.1, "temperature": 4.0}
    assert plain.identity()["method"]["params"] == {"omega": 0.1, "temperature": 4.0}

    def with_params(**extra: object):
        d = plain.model_dump()
        d["method"]["params"].update(extra)
        return parse_config(d)

    explicit = with_params(init_from_teacher=False, omega_warmup=0)
    assert explicit.method.params == plain.method.params and explicit.run_id == plain.run_id
    for extra in ({"init_from_teacher": True}, {"omega_warmup": 3}):
        cfg = with_params(**extra)
        assert cfg.run_id != plain.run_id and cfg.method.params == {**plain.method.params, **extra}
        assert parse_config(cfg.model_dump()).run_id == cfg.run_id  # survives a round trip
