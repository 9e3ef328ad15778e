"""Skeptical student: heads on every architecture, warm-up, the loss it trains on, the engine."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from undistill import losses, recipes
from undistill.checkpoint import load_checkpoint
from undistill.config import Runtime
from undistill.executor import ensure_trained
from undistill.methods import METHODS, OBJECTIVES, Ensemble
from undistill.methods.skeptical import AuxHead, SepConv, Skeptical, chain_channels
from undistill.models import MODELS, ZooModel, build_model
from undistill.runs import load_run_model, run_dir

C = 5
#: the teacher term of ``losses.skeptical_loss`` each Skeptical method learns by
TEACHER_LOSS = {"skeptical": "kd", "skeptical+htc": "htc", "skeptical+scm": "scm"}


class CountingModel(nn.Module):
    """A teacher model that counts its calls, or fails if ``fail``."""

    def __init__(self, model: nn.Module, fail: bool = False) -> None:
        super().__init__()
        self.model, self.fail, self.calls = model, fail, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail:
            raise AssertionError("the teacher must not run during the warm-up")
        return self.model(x)


def side(arch: str) -> int:
    return 8 if arch == "cnn" else 16


def make(arch: str = "cnn", name: str = "skeptical", width: float = 0.25, fail: bool = False,
         **params) -> tuple[Skeptical, CountingModel, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    s = side(arch)
    student = build_model(arch, C, in_channels=1, width=width, image_size=s)
    teacher = CountingModel(build_model("cnn", C, in_channels=1, width=0.125, image_size=s), fail)
    cls = METHODS.get(name)
    method = cls(student, Ensemble([teacher]), cls.Params(**params))
    x, y = torch.randn(4, 1, s, s), torch.randint(0, C, (4,))
    return method, teacher, x, y


def grad_norm(module: nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("arch", MODELS.names())
def test_heads_on_every_architecture(arch: str) -> None:
    method, _, x, y = make(arch, width=0.125, kd_delay=-1, loc=1)
    n_stages = 3 if arch == "cnn" else 4
    assert len(method.heads) == n_stages - 1
    heads = method.head_logits(x)
    assert len(heads) == n_stages
    assert all(h.shape == (4, C) for h in heads)
    method.train()
    logits, terms = method.forward_train(x, y)
    assert set(terms) == {"teacher", "self"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in terms.values())
    torch.testing.assert_close(logits, method.student(x))
    method.eval()
    torch.testing.assert_close(method.predict(x), method.student(x))


def test_chains_and_tiny_maps() -> None:
    assert chain_channels(64, 512) == [64, 128, 256, 512]
    assert chain_channels(116, 1024) == [116, 232, 464, 1024]
    assert chain_channels(24, 320) == [24, 48, 96, 192, 320]
    assert chain_channels(8, 8) == [8, 8]  # at least one block
    # padding 1: a stride-2 block halves (rounding up) and keeps a 1x1 map at 1x1
    assert SepConv(3, 6, stride=2)(torch.randn(2, 3, 1, 1)).shape == (2, 6, 1, 1)
    assert SepConv(3, 6, stride=2)(torch.randn(2, 3, 5, 3)).shape == (2, 6, 3, 2)
    head = AuxHead(2, 16, C)  # 3 stride-2 blocks on a 1x1 and on a 2x3 map
    assert head(torch.randn(2, 2, 1, 1)).shape == (2, C)
    assert head(torch.randn(2, 2, 2, 3)).shape == (2, C)


def test_warm_up_is_ce_of_the_final_head_without_teacher_or_heads() -> None:
    method, teacher, x, y = make(fail=True, kd_delay=2)
    method.train()
    for epoch in (0, 2):
        method.start_epoch(epoch)
        method.zero_grad(set_to_none=True)
        logits, terms = method.forward_train(x, y)
        assert set(terms) == {"ce"}
        torch.testing.assert_close(terms["ce"], losses.cross_entropy(method.student(x), y))
        terms["ce"].backward()
        assert grad_norm(method.heads) == 0.0
        assert grad_norm(method.student) > 0.0
    assert teacher.calls == 0
    with pytest.raises(ValueError, match="kd_delay"):
        method.forward_train(x, None)


@pytest.mark.parametrize(("name", "loc"), [("skeptical", 2), ("skeptical", 1),
                                           ("skeptical+htc", 2), ("skeptical+scm", 1)])
def test_after_warm_up_equals_skeptical_loss(name: str, loc: int) -> None:
    method, teacher, x, y = make(name=name, loc=loc, kd_delay=0)
    p = method.params
    method.train()
    method.start_epoch(1)
    logits, terms = method.forward_train(x, y)
    assert teacher.calls == 1
    total = sum(terms.values())
    assert type(method).objective is OBJECTIVES.get(TEACHER_LOSS[name])
    expected = losses.skeptical_loss(
        method.head_logits(x), teacher(x), y, alpha=p.alpha, temperature=p.temperature, loc=loc,
        epoch=1, kd_delay=0, teacher_loss=TEACHER_LOSS[name],
        multiplier=getattr(p, "multiplier", 1.0), sd_temperature=method.sd_temperature)
    torch.testing.assert_close(total, expected)
    total.backward()
    l2, l3 = method.heads  # the CNN's heads, shallow to deep; l2 is in the loss only at loc 2
    assert grad_norm(l3) > 0.0
    assert (grad_norm(l2) > 0.0) == (loc == 2)
    assert all(q.grad is None for q in teacher.parameters())
    # no labels: the objective's CE drops out, and the self term's CEs take the teacher's top-1
    _, free = method.forward_train(x, None)
    assert all(torch.isfinite(v) for v in free.values())
    top1 = teacher(x).argmax(1)
    torch.testing.assert_close(free["self"], losses.skeptical_self_distillation_loss(
        method.student.forward_features(x).logits, method.head_logits(x)[1], top1,
        method.sd_temperature))


def test_only_the_heads_in_the_loss_learn() -> None:
    method, _, x, y = make("mobilenetv2", width=0.125, kd_delay=-1, loc=2)
    sum(method.forward_train(x, y)[1].values()).backward()
    l1, l2, l3 = method.heads  # shallow to deep
    assert grad_norm(l1) == 0.0 and grad_norm(l2) > 0.0 and grad_norm(l3) > 0.0


def test_defaults_and_self_distillation_temperature() -> None:
    plain, _, _, _ = make()
    assert plain.params.model_dump() == {"alpha": 0.9, "temperature": 20.0, "loc": 2, "kd_delay": 4,
                                         "sd_temperature": None, "detach_final": False}
    assert plain.sd_temperature == 20.0
    htc, _, _, _ = make(name="skeptical+htc")
    assert (htc.params.temperature, htc.params.multiplier, htc.sd_temperature) == (50.0, 50.0, 4.0)
    scm, _, _, _ = make("mobilenetv2", name="skeptical+scm", width=0.125)
    assert (scm.params.temperature, scm.params.multiplier, scm.sd_temperature) == (4.0, 16.0, 20.0)
    explicit, _, _, _ = make(name="skeptical+htc", sd_temperature=7.0)
    assert explicit.sd_temperature == 7.0
    with pytest.raises(ValidationError):
        METHODS.get("skeptical").Params(multiplier=2.0)  # KD has no multiplier (T^2 is built in)


def test_loc_is_validated() -> None:
    with pytest.raises(ValueError, match="loc"):
        make("cnn", loc=3)  # the CNN has 2 auxiliary heads
    make("shufflenetv2", width=0.125, loc=3)
    with pytest.raises(ValidationError, match="loc"):
        METHODS.get("skeptical").Params(loc=0)


def test_trains_through_the_engine(tmp_path) -> None:
    teacher = recipes.normal_teacher("digits", "cnn", 0.25, optim={"epochs": 1})
    cfg = recipes.student(teacher, "cnn", "skeptical", {"kd_delay": 0, "temperature": 4.0},
                          width=0.25, optim={"epochs": 2})
    res = ensure_trained(cfg, Runtime(runs_dir=tmp_path, device="cpu", progress=False))
    assert res.epochs_run == 2
    keys = load_checkpoint(run_dir(cfg, tmp_path) / "last.safetensors")[0].keys()
    assert any(k.startswith("method.heads.") for k in keys)
    assert any(k.startswith("method.student.") for k in keys)
    model = load_run_model(cfg, tmp_path)
    assert isinstance(model, ZooModel)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
