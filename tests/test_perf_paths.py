"""Fast paths: the vmapped teacher ensemble, no-autograd teacher outputs, and DDP training.

Nothing here times anything; ``benchmarks/bench_train.py`` measures (see docs/performance.md).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from conftest import tiny_teacher
from torch import nn

from undistill import engine as engine_mod
from undistill.checkpoint import load_checkpoint
from undistill.config import Runtime
from undistill.distributed import DistContext, check_shardable
from undistill.engine import train_run
from undistill.losses import kd_loss, nasty_loss, scm_loss
from undistill.methods import Ensemble
from undistill.models import MODELS, ModelOutput, ZooModel, build_model
from undistill.runs import run_dir

# --------------------------------------------------------------------------------------------
# the teacher ensemble
# --------------------------------------------------------------------------------------------


def members(k: int, arch: str = "resnet18", width: float = 0.125, channels: int = 3,
            image_size: int = 16) -> list[ZooModel]:
    out = []
    for i in range(k):
        torch.manual_seed(100 + i)
        m = build_model(arch, 10, in_channels=channels, width=width, image_size=image_size)
        for mod in m.modules():  # non-trivial running statistics, so eval-mode BN matters
            if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
        out.append(m)
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_vmapped_ensemble_equals_the_loop(k: int) -> None:
    models = members(k)
    x = torch.randn(6, 3, 16, 16)
    loop = Ensemble(models, vmap=False)
    fast = Ensemble(models, vmap=True)
    assert fast.uses_vmap(x.device) == (k > 1)  # one model needs no stacking
    assert not loop.uses_vmap(x.device)
    torch.testing.assert_close(fast.all_logits(x), loop.all_logits(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.logits(x), loop.logits(x), rtol=1e-5, atol=1e-5)
    assert fast.all_logits(x).shape == (k, 6, 10)
    # the loop is the plain per-model evaluation
    with torch.no_grad():
        expected = torch.stack([m(x) for m in models]).mean(0)
    torch.testing.assert_close(loop.logits(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("arch", MODELS.names())
def test_vmapped_ensemble_equals_the_loop_on_every_zoo_architecture(arch: str) -> None:
    models = members(2, arch=arch, width=0.25)
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(Ensemble(models, vmap=True).logits(x),
                               Ensemble(models, vmap=False).logits(x), rtol=1e-5, atol=1e-5)


def test_vmapped_ensemble_with_inference_mode_and_channels_last() -> None:
    models = members(3, arch="cnn", width=0.25)
    x = torch.randn(5, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    ref = Ensemble(models, vmap=False).logits(x)
    fast = Ensemble(models, vmap=True, inference_mode=True).to("cpu", torch.channels_last)
    torch.testing.assert_close(fast.logits(x), ref, rtol=1e-5, atol=1e-5)


def test_mixed_ensemble_falls_back_to_the_loop() -> None:
    mixed = members(1, "resnet18") + members(1, "cnn", width=0.25)
    widths = members(1, "resnet18", width=0.125) + members(1, "resnet18", width=0.25)
    x = torch.randn(4, 3, 16, 16)
    for models in (mixed, widths):
        t = Ensemble(models, vmap=True)
        assert not t.stackable and not t.uses_vmap(x.device)
        with torch.no_grad():
            expected = torch.stack([m(x) for m in models]).mean(0)
        torch.testing.assert_close(t.logits(x), expected, rtol=0, atol=0)


def test_vmap_is_on_for_cuda_only_by_default() -> None:
    t = Ensemble(members(2))
    assert t.vmap is None and t.stackable
    assert not t.uses_vmap("cpu") and t.uses_vmap("cuda") and t.uses_vmap(torch.device("cuda", 1))
    assert not Ensemble(members(2), vmap=False).uses_vmap("cuda")
    assert not Ensemble(members(1)).uses_vmap("cuda")


@pytest.mark.parametrize("inference", [False, True])
@pytest.mark.parametrize("vmap", [False, True])
def test_teacher_outputs_carry_no_autograd_state_and_work_in_every_loss(inference: bool,
                                                                        vmap: bool) -> None:
    teacher = Ensemble(members(2), vmap=vmap, inference_mode=inference)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)  # even an input that requires grad
    t = teacher.logits(x)
    assert not t.requires_grad and t.grad_fn is None and not t.is_inference()
    assert all(not p.requires_grad for m in teacher.models for p in m.parameters())
    student = nn.Linear(3 * 16 * 16, 10)
    y = torch.randint(0, 10, (4,))
    for loss in (kd_loss(student(x.flatten(1)), t, y, 0.9, 4.0),
                 nasty_loss(student(x.flatten(1)), t, y, 0.04, 4.0),
                 scm_loss(student(x.flatten(1)), t, y, 0.9, 4.0, 16.0),
                 (student(x.flatten(1)) * t).sum()):  # saves the teacher's logits for backward
        student.zero_grad()
        loss.backward()
        assert student.weight.grad is not None and torch.isfinite(student.weight.grad).all()
    assert all(p.grad is None for m in teacher.models for p in m.parameters())


# --------------------------------------------------------------------------------------------
# several processes, one run (gloo on the CPU)
# --------------------------------------------------------------------------------------------


class TinyMLP(ZooModel):
    """No BatchNorm: each rank's shard gives exactly its part of the global batch-mean gradient."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: float = 1.0,
                 image_size: int = 8) -> None:
        super().__init__()
        self.num_classes, self.feature_dim = num_classes, max(8, int(32 * width))
        self.stage_channels = []
        self.fc1 = nn.Linear(in_channels * image_size * image_size, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        h = F.relu(self.fc1(torch.flatten(x, 1)))
        return ModelOutput(self.fc2(h), h, [])


@contextlib.contextmanager
def mlp_registered() -> Iterator[None]:
    """The BN-free test architecture, registered only while a test needs it (other tests list the
    zoo's names)."""
    MODELS.register("test-mlp")(TinyMLP)
    try:
        yield
    finally:
        MODELS._items.pop("test-mlp", None)


def ddp_configs():
    optim = {"name": "sgd", "lr": 0.05, "schedule": "cosine", "milestones": [], "epochs": 2,
             "batch_size": 256}
    no_bn = tiny_teacher(epochs=2, arch="test-mlp", optim=optim)
    with_bn = tiny_teacher(epochs=2, arch="cnn", optim=optim)
    return no_bn, with_bn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Interrupt(Exception):
    pass


def _ddp_worker(rank: int, world: int, port: int, runs_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with mlp_registered():
        _ddp_runs(runs_dir)
    dist.barrier()
    dist.destroy_process_group()  # before exit, or gloo's threads may abort the process


def _ddp_runs(runs_dir: str) -> None:
    no_bn, with_bn = ddp_configs()
    runtime = Runtime(runs_dir=Path(runs_dir), device="cpu", progress=False)
    # the BN-free run is interrupted on every rank after its first epoch's training, then resumed
    real, calls = engine_mod._eval_sums, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise _Interrupt
        return real(*args, **kwargs)

    engine_mod._eval_sums = interrupted
    try:
        train_run(no_bn, runtime)
    except _Interrupt:
        pass
    finally:
        engine_mod._eval_sums = real
    assert not (run_dir(no_bn, runtime.runs_dir) / "result.json").exists()
    train_run(no_bn, runtime)  # every rank resumes from the checkpoint of epoch 1
    train_run(with_bn, runtime)


def _weights(cfg, runs: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir(cfg, runs) / "last.safetensors")[0]


def _metrics(cfg, runs: Path) -> list[dict]:
    import json

    lines = (run_dir(cfg, runs) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def test_distributed_data_parallel_two_processes_match_one(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    with mlp_registered():
        no_bn, with_bn = ddp_configs()
        single = Runtime(runs_dir=tmp_path / "single", device="cpu", progress=False)
        for cfg in (no_bn, with_bn):
            train_run(cfg, single)
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    ddp_runs = tmp_path / "ddp"

    # without BatchNorm: the same weights up to float summation order (the all-reduce), after an
    # interruption and a resume on both ranks
    a, b = _weights(no_bn, single.runs_dir), _weights(no_bn, ddp_runs)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)  # measured: 3e-8
    ma, mb = _metrics(no_bn, single.runs_dir), _metrics(no_bn, ddp_runs)
    assert [r["epoch"] for r in mb] == [0, 1]
    for ra, rb in zip(ma, mb, strict=True):
        assert rb["eval/acc"] == pytest.approx(ra["eval/acc"], abs=0.3)  # one of 360 images
        assert rb["train/loss"] == pytest.approx(ra["train/loss"], rel=1e-5)
        assert rb["eval/loss"] == pytest.approx(ra["eval/loss"], rel=1e-5)

    # with BatchNorm: each rank normalises with its half batch's statistics, so the runs differ
    # by more than rounding. Measured on this setting: 1.7 % relative difference of all trainable
    # weights together after 2 epochs (12 steps), eval accuracy 1.8 points apart; the bounds
    # below leave about 3x room
    a, b = _weights(with_bn, single.runs_dir), _weights(with_bn, ddp_runs)
    keys = [k for k in a if k.startswith("method.") and "running" not in k and "num_batches" not in k]
    wa, wb = torch.cat([a[k].flatten() for k in keys]), torch.cat([b[k].flatten() for k in keys])
    assert (wb - wa).norm() / wa.norm() < 0.05
    ma, mb = _metrics(with_bn, single.runs_dir), _metrics(with_bn, ddp_runs)
    assert abs(ma[-1]["eval/acc"] - mb[-1]["eval/acc"]) < 6.0


def test_dist_context_shards_cover_every_row_once() -> None:
    for world in (1, 2, 3, 4):
        for n in (4, 5, 7, 128, 157):
            parts = [DistContext(r, world).shard(n) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(p[1] == q[0] for p, q in zip(parts, parts[1:], strict=False))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1


def test_too_small_batches_for_the_process_count_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 4 rows"):
        check_shardable(1347, 64, 2)  # digits at batch 64: a last batch of 3
    with pytest.raises(ValueError, match="at least 6 rows"):
        check_shardable(100, 4, 3)
    for n in (1347, 256, 132):
        check_shardable(n, 128, 2)
