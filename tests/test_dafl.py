"""The data-free setting (Table 4): DAFL generator losses, the methods, the engine's extra optimizers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from undistill import engine as engine_mod
from undistill.checkpoint import load_checkpoint
from undistill.config import Runtime
from undistill.engine import TIMING_KEYS, ExtraOptimizer, make_optimizers, train_run
from undistill.losses import (
    dafl_activation_loss,
    dafl_generator_loss,
    dafl_information_entropy_loss,
    dafl_one_hot_loss,
)
from undistill.methods import METHODS, Ensemble
from undistill.models import build_model
from undistill.models.generator import Generator
from undistill.recipes import data_free_student, normal_teacher, student
from undistill.runs import run_dir

# --------------------------------------------------------------------------------------------
# the generator-loss terms, by hand
# --------------------------------------------------------------------------------------------


def test_one_hot_loss_is_cross_entropy_against_the_teachers_own_argmax() -> None:
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    # row 0: argmax 0, row 1: argmax 1
    ce0 = -(2.0 - math.log(math.exp(2) + math.exp(1) + 1))
    ce1 = -(3.0 - math.log(1 + math.exp(3) + math.exp(1)))
    assert dafl_one_hot_loss(z).item() == pytest.approx((ce0 + ce1) / 2, rel=1e-6)


def test_activation_loss_is_minus_the_mean_absolute_feature() -> None:
    f = torch.tensor([[1.0, -2.0], [3.0, -4.0]])
    assert dafl_activation_loss(f).item() == pytest.approx(-(1 + 2 + 3 + 4) / 4)
    with pytest.raises(ValueError):
        dafl_activation_loss(torch.ones(3))


def test_information_entropy_loss_by_hand() -> None:
    # one row with softmax (1/4, 3/4): sum p log p
    z = torch.tensor([[0.0, math.log(3.0)]])
    ln = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    assert dafl_information_entropy_loss(z, "ln").item() == pytest.approx(ln, rel=1e-6)
    assert dafl_information_entropy_loss(z).item() == pytest.approx(ln / math.log(10), rel=1e-6)
    # p_bar is the batch mean of the softmax (not the softmax of the mean logits):
    # rows (1/4, 3/4) and (3/4, 1/4) average to the uniform distribution
    z2 = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    assert dafl_information_entropy_loss(z2, "ln").item() == pytest.approx(-math.log(2), rel=1e-6)


@pytest.mark.parametrize("c", [3, 10])
def test_information_entropy_loss_at_a_uniform_batch_mean_is_minus_log_c(c: int) -> None:
    # every row confident in another class: p_bar uniform although no row is
    z = 8.0 * torch.eye(c)
    assert dafl_information_entropy_loss(z, "ln").item() == pytest.approx(-math.log(c), rel=1e-6)
    assert dafl_information_entropy_loss(z, "log10").item() == pytest.approx(-math.log10(c), rel=1e-6)
    # and it is the minimum: any non-uniform batch mean has a larger value
    assert dafl_information_entropy_loss(torch.randn(7, c) * 3, "ln").item() > -math.log(c)


def test_information_entropy_loss_is_finite_when_a_class_underflows() -> None:
    z = torch.tensor([[1000.0, 0.0, 0.0], [1000.0, 0.0, 0.0]], requires_grad=True)
    loss = dafl_information_entropy_loss(z)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(z.grad).all()


def test_generator_loss_combines_the_terms_and_reaches_logits_and_features() -> None:
    torch.manual_seed(0)
    z = torch.randn(6, 5, requires_grad=True)
    f = torch.randn(6, 8, requires_grad=True)
    total = dafl_generator_loss(z, f, oh=0.5, a=0.1, ie=20.0, log="ln")
    want = (0.5 * dafl_one_hot_loss(z) + 0.1 * dafl_activation_loss(f)
            + 20.0 * dafl_information_entropy_loss(z, "ln"))
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    total.backward()
    assert z.grad.abs().sum() > 0 and f.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        dafl_generator_loss(z, f, oh=-1.0, a=0.1, ie=1.0)
    with pytest.raises(ValueError):
        dafl_information_entropy_loss(z, "log2")


# --------------------------------------------------------------------------------------------
# the generator and the methods
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "channels"), [(8, 1), (32, 3)])
def test_generator_shape_and_normalisation(size: int, channels: int) -> None:
    torch.manual_seed(0)
    g = Generator(16, size, channels, width=0.25).train()
    out = g(torch.randn(64, 16))
    assert out.shape == (64, channels, size, size)
    # the final BatchNorm(affine=False) normalises each channel over the batch
    mean = out.mean(dim=(0, 2, 3))
    std = out.permute(1, 0, 2, 3).reshape(channels, -1).std(dim=1, unbiased=False)
    assert torch.allclose(mean, torch.zeros(channels), atol=1e-5)
    # std sqrt(v / (v + eps)) with BatchNorm's eps 1e-5 and the Tanh output's variance v: just under 1
    assert torch.allclose(std, torch.ones(channels), atol=1e-2) and (std <= 1).all()


def _method(name: str, **params):
    torch.manual_seed(0)
    st = build_model("cnn", 10, in_channels=1, width=0.25, image_size=8)
    teacher = Ensemble([build_model("cnn", 10, in_channels=1, width=0.25, image_size=8)])
    cls = METHODS.get(name)
    return cls(st, teacher, cls.Params(image_size=8, channels=1, latent_dim=16, **params)).train()


@pytest.mark.parametrize("name", ["dafl-kd", "dafl-htc"])
def test_forward_train_never_reads_the_images_or_labels(name: str) -> None:
    m = _method(name)
    torch.manual_seed(1)
    logits, losses = m.forward_train(torch.full((16, 1, 8, 8), float("nan")), None)
    assert logits.shape == (16, 10) and set(losses) == {"generator", "student"}
    assert all(torch.isfinite(v) for v in losses.values())
    images, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    torch.manual_seed(1)  # other images and labels, same latents: the same losses
    _, again = m.forward_train(images, labels)
    assert all(torch.equal(losses[k], again[k]) for k in losses)
    with pytest.raises(ValueError, match="image_size/channels"):
        m.forward_train(torch.zeros(16, 3, 8, 8), None)


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: None if p.grad is None else p.grad.clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("name", ["dafl-kd", "dafl-htc"])
def test_one_backward_gives_each_part_the_gradient_of_its_own_loss(name: str) -> None:
    m = _method(name)
    images = torch.zeros(16, 1, 8, 8)

    def backward(which: str | None) -> tuple[dict, dict]:
        m.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        _, losses = m.forward_train(images, None)
        (sum(losses.values()) if which is None else losses[which]).backward()
        return _grads(m.student), _grads(m.generator)

    s_sum, g_sum = backward(None)
    s_only, g_none = backward("student")
    s_none, g_only = backward("generator")
    assert all(v is None for v in g_none.values()), "the student loss reached the generator"
    assert all(v is None for v in s_none.values()), "the generator loss reached the student"
    for k in s_sum:
        assert s_sum[k] is not None and torch.allclose(s_sum[k], s_only[k], rtol=0, atol=1e-7), k
    for k in g_sum:
        assert g_sum[k] is not None and torch.allclose(g_sum[k], g_only[k], rtol=0, atol=1e-7), k
    assert all(p.grad is None for p in m.teacher.models[0].parameters())


def test_params_validate_the_image_shape() -> None:
    cls = METHODS.get("dafl-kd").Params
    with pytest.raises(ValueError):
        cls(image_size=10, channels=1)
    with pytest.raises(ValueError):
        cls(image_size=8, channels=0)
    with pytest.raises(ValueError):
        cls()  # image_size and channels have no default: the recipe fills them


def test_engine_splits_parameters_between_the_optimizers() -> None:
    m = _method("dafl-kd", lr_g=0.02)
    cfg = student(None, "cnn", "vanilla", dataset="digits").optim
    main, extras = make_optimizers(cfg, m)
    main_ids = {id(p) for g in main.param_groups for p in g["params"]}
    assert main_ids == {id(p) for p in m.student.parameters()}
    (name,) = extras
    gen = extras[name]
    assert name == "generator" and not gen.follows_schedule
    assert {id(p) for g in gen.optimizer.param_groups for p in g["params"]} == {
        id(p) for p in m.generator.parameters()}
    assert isinstance(gen.optimizer, torch.optim.Adam) and gen.base_lrs == [0.02]
    gen.set_lr(0.1)  # a constant-LR optimizer ignores the schedule
    assert gen.optimizer.param_groups[0]["lr"] == 0.02
    follows = ExtraOptimizer(torch.optim.SGD(m.generator.parameters(), lr=0.5), True, [0.5])
    follows.set_lr(0.1)
    assert follows.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_ordinary_methods_keep_a_single_optimizer() -> None:
    st = build_model("cnn", 10, in_channels=1, width=0.25, image_size=8)
    m = METHODS.get("vanilla")(st, None, METHODS.get("vanilla").Params())
    main, extras = make_optimizers(student(None, "cnn", "vanilla", dataset="digits").optim, m)
    assert extras == {}
    assert len(main.param_groups[0]["params"]) == len(list(st.parameters()))


# --------------------------------------------------------------------------------------------
# end to end through the engine
# --------------------------------------------------------------------------------------------


def _configs(method: str = "dafl-kd", epochs: int = 2):
    teacher = normal_teacher("digits", "cnn", 0.25, optim={"epochs": 1})
    cfg = data_free_student(teacher, "cnn", method, {"latent_dim": 16, "generator_width": 0.25},
                            width=0.25, optim={"epochs": epochs})
    return teacher, cfg


def test_recipe_fills_the_shape_and_turns_data_off() -> None:
    teacher, cfg = _configs()
    p = cfg.method.params
    assert (p["image_size"], p["channels"], p["latent_dim"]) == (8, 1, 16)
    assert (p["oh"], p["a"], p["ie"], p["lr_g"]) == (0.05, 0.01, 5.0, 0.02)
    assert cfg.data.labels is False and cfg.data.augment is False
    assert cfg.teachers == [teacher]
    # recipes.student routes the data-free methods to the same recipe
    assert student(teacher, "cnn", "dafl-kd", {"latent_dim": 16, "generator_width": 0.25},
                   width=0.25, optim={"epochs": 2}).run_id == cfg.run_id
    with pytest.raises(ValueError):
        data_free_student(teacher, "cnn", "kd")


def test_data_free_run_trains_and_checkpoints_the_generator(runtime: Runtime) -> None:
    teacher, cfg = _configs("dafl-htc")
    train_run(teacher, runtime)
    res = train_run(cfg, runtime)
    assert res.status == "complete" and res.epochs_run == 2
    out = Path(res.run_dir)
    tensors, meta = load_checkpoint(out / "last.safetensors")
    assert any(k.startswith("method.generator.") for k in tensors)
    assert any(k.startswith("method.student.") for k in tensors)
    assert "optim.generator.0.exp_avg" in tensors and "optim.generator.0.exp_avg_sq" in tensors
    assert any(k.split(".")[1].isdigit() for k in tensors if k.startswith("optim."))  # the student's
    gen_groups = meta["optim_extra"]["generator"]["param_groups"]
    assert [g["lr"] for g in gen_groups] == [0.02]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"train/generator", "train/student", "train/loss"} <= set(rows[-1])
    assert all(math.isfinite(r["train/generator"]) and math.isfinite(r["train/student"]) for r in rows)


def _same_run(a: Path, b: Path) -> None:
    for name in ("last.safetensors", "best.safetensors"):
        wa, wb = load_checkpoint(a / name)[0], load_checkpoint(b / name)[0]
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{name}:{k} differs"
    ma, mb = ([{k: v for k, v in json.loads(x).items() if k not in TIMING_KEYS}
               for x in (p / "metrics.jsonl").read_text().splitlines()] for p in (a, b))
    assert ma == mb
    ra, rb = (json.loads((p / "result.json").read_text())["result"] for p in (a, b))
    for k in ("best_acc", "best_epoch", "last_acc", "epochs_run", "status"):
        assert ra[k] == rb[k]


def test_data_free_run_killed_and_resumed_is_identical(tmp_path: Path, monkeypatch) -> None:
    teacher, cfg = _configs("dafl-kd", epochs=3)
    ref = Runtime(runs_dir=tmp_path / "ref", device="cpu", progress=False)
    train_run(teacher, ref)
    train_run(cfg, ref)
    rt = Runtime(runs_dir=tmp_path / "crash", device="cpu", progress=False)
    train_run(teacher, rt)
    real = engine_mod.save_checkpoint

    def flaky(path, tensors, meta):
        if path.name == "last.safetensors" and meta["epoch"] == 1:
            raise KeyboardInterrupt("killed after best, before last")
        return real(path, tensors, meta)

    monkeypatch.setattr(engine_mod, "save_checkpoint", flaky)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, rt)
    monkeypatch.setattr(engine_mod, "save_checkpoint", real)
    assert json.loads((run_dir(cfg, rt.runs_dir) / "last.json").read_text())["epoch"] == 0
    train_run(cfg, rt)
    _same_run(run_dir(cfg, ref.runs_dir), run_dir(cfg, rt.runs_dir))


def test_kd_student_loss_is_the_plain_kl_at_t1() -> None:
    m = _method("dafl-kd")
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    want = (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(s, 1))).sum(1).mean()
    assert m.student_loss(s, t).item() == pytest.approx(want.item(), rel=1e-6)
