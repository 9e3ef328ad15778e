"""The one training loop. It knows nothing about methods: it sums the named losses they return.

Exact resumption: everything random in an epoch is drawn from generators seeded by
(seed, epoch) (the data order and augmentation in :class:`DeviceLoader`, and the global torch
generator reseeded at each epoch start), and the checkpoint written after each epoch holds the
method's weights and buffers and the optimizer state. A run killed at any moment restarts from the
last completed epoch and reaches the same weights and metrics as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from undistill.checkpoint import (
    CheckpointError,
    atomic_write_json,
    load_checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    prefixed,
    save_checkpoint,
    unprefixed,
)
from undistill.config import OptimConfig, RunConfig, Runtime
from undistill.data import DeviceLoader
from undistill.data.loader import epoch_seed
from undistill.methods import METHODS, Method
from undistill.progress import Reporter
from undistill.runs import (
    BEST,
    CONFIG,
    LAST,
    METRICS,
    RESULT,
    build_student,
    data_views,
    load_teacher,
    read_result,
    run_dir,
)

EVAL_BATCH = 512
TIMING_KEYS = ("time_s", "images_per_s")


class TrainingDiverged(RuntimeError):
    """A non-finite loss; the run's last good checkpoint is kept."""


@dataclass
class RunResult:
    run_id: str
    run_dir: str
    best_acc: float
    best_epoch: int
    last_acc: float
    epochs_run: int
    status: str  # "complete" or "stopped_at_acc"
    eval_split: str
    wall_time_s: float
    cached: bool = False


def select_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def learning_rate(cfg: OptimConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The schedule as a pure function of position (so resuming needs no scheduler state)."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "multistep":
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    t = (epoch * steps_per_epoch + step) / max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    # onecycle: linear warm-up over the first 25 %, then linear decay to zero
    return cfg.lr * (t / 0.25 if t < 0.25 else (1 - t) / 0.75)


def make_optimizer(cfg: OptimConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(predict: Any, loader: DeviceLoader, device: torch.device, bf16: bool = False
             ) -> tuple[float, float]:
    """Accuracy (%) = correct / total over the whole split, and the mean cross-entropy."""
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    total = 0
    for x, y in loader.epoch(0):
        with _autocast(device, bf16):
            logits = predict(x).float()
        correct += (logits.argmax(1) == y).sum()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").double()
        total += y.numel()
    return 100.0 * correct.item() / max(total, 1), loss_sum.item() / max(total, 1)


def _read_metrics(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["epoch"] <= upto_epoch]


def build_method(cfg: RunConfig, runtime: Runtime, device: torch.device) -> tuple[Method, Any]:
    """Student (seeded init), teacher and method for a run, on ``device``."""
    views = data_views(cfg.data, runtime.data_root)
    torch.manual_seed(cfg.seed)
    student = build_student(cfg, views.dataset)
    teacher = load_teacher(cfg, runtime.runs_dir, runtime.data_root, device)
    cls = METHODS.get(cfg.method.name)
    method = cls(student, teacher, cls.Params(**cfg.method.params))
    return method.to(device), views


def train_run(cfg: RunConfig, runtime: Runtime | None = None,
              reporter: Reporter | None = None) -> RunResult:
    """Train one run to completion (or resume it); a finished run is returned from disk."""
    runtime = runtime or Runtime()
    reporter = reporter or Reporter(enabled=runtime.progress)
    out = run_dir(cfg, runtime.runs_dir)
    if (out / RESULT).exists():
        return RunResult(**{**read_result(out)["result"], "cached": True})

    if runtime.num_threads:
        torch.set_num_threads(runtime.num_threads)
    device = select_device(runtime.device)
    on_gpu = device.type == "cuda"
    bf16 = runtime.precision == "bf16" or (runtime.precision == "auto" and on_gpu)
    channels_last = on_gpu if runtime.channels_last is None else runtime.channels_last
    fmt = torch.channels_last if channels_last else None

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG, {"run_id": cfg.run_id, "config": cfg.model_dump(mode="json")})

    method, views = build_method(cfg, runtime, device)
    if fmt is not None:
        method.to(memory_format=fmt)
        if method.teacher is not None:
            method.teacher.to(device, memory_format=fmt)
    ds = views.dataset
    optimizer = make_optimizer(cfg.optim, [p for p in method.parameters() if p.requires_grad])
    train_loader = DeviceLoader(
        views.train_images.to(device), views.train_labels.to(device),
        batch_size=cfg.optim.batch_size, mean=ds.mean, std=ds.std,
        augment=ds.augment if cfg.data.augment else None, shuffle=True, drop_last=False,
        seed=cfg.seed, channels_last=channels_last)
    eval_loader = DeviceLoader(
        views.eval_images.to(device), views.eval_labels.to(device), batch_size=EVAL_BATCH,
        mean=ds.mean, std=ds.std, augment=None, shuffle=False, drop_last=False, seed=0,
        channels_last=channels_last)
    forward_train, predict = method.forward_train, method.predict
    if runtime.compile:
        forward_train, predict = torch.compile(forward_train), torch.compile(predict)

    start, best_acc, best_epoch, history = 0, -1.0, -1, []
    if (out / LAST).exists():
        tensors, meta = load_checkpoint(out / LAST, device="cpu")
        if meta.get("run_id") != cfg.run_id:
            raise CheckpointError(f"{out / LAST} belongs to run {meta.get('run_id')}, "
                                  f"not {cfg.run_id}")
        method.load_state_dict(unprefixed(tensors, "method."))
        optimizer_from_flat(optimizer, {k: v.to(device) for k, v in tensors.items()}, meta["optim"])
        start, best_acc, best_epoch = meta["epoch"] + 1, meta["best_acc"], meta["best_epoch"]
        history = _read_metrics(out / METRICS, meta["epoch"])
        reporter.message(f"resuming {cfg.run_id} after epoch {meta['epoch'] + 1}")
    (out / METRICS).write_text("".join(json.dumps(r) + "\n" for r in history))

    epochs, steps = cfg.optim.epochs, len(train_loader)
    status = "complete"
    if history and cfg.stop_at_acc is not None and history[-1]["eval/acc"] >= cfg.stop_at_acc:
        start, status = epochs, "stopped_at_acc"  # killed between its last checkpoint and result
    reporter.start_run(cfg.name or cfg.run_id, epochs * steps, start * steps)
    try:
        for epoch in range(start, epochs):
            torch.manual_seed(epoch_seed(cfg.seed + 1, epoch))
            method.train()
            method.start_epoch(epoch)
            t0 = time.perf_counter()
            sums: dict[str, torch.Tensor] = {}
            correct = torch.zeros((), dtype=torch.long, device=device)
            seen = 0
            for step, (x, y) in enumerate(train_loader.epoch(epoch)):
                lr = learning_rate(cfg.optim, epoch, step, steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with _autocast(device, bf16):
                    logits, losses = forward_train(x, y if cfg.data.labels else None)
                    loss = torch.stack([v.float() for v in losses.values()]).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n = y.numel()
                seen += n
                for k, v in (("loss", loss), *losses.items()):
                    sums[k] = sums.get(k, 0) + v.detach().float() * n
                correct += (logits.detach().argmax(1) == y).sum()
                if (step + 1) % 20 == 0 or step + 1 == steps:
                    reporter.step(min(20, step % 20 + 1),
                                  f"loss {sums['loss'].item() / seen:.3f} lr {lr:.3g}")
            means = {k: v.item() / seen for k, v in sums.items()}
            if not all(math.isfinite(v) for v in means.values()):
                bad = ", ".join(f"{k}={v}" for k, v in means.items())
                raise TrainingDiverged(
                    f"run {cfg.run_id}: non-finite loss in epoch {epoch + 1} ({bad}); training "
                    f"stopped, the last good checkpoint (after epoch {start if epoch == start else epoch}"
                    f") is kept in {out}. Lower the learning rate or the method's weights "
                    f"(for a nasty teacher: omega).")
            train_time = time.perf_counter() - t0
            method.eval()
            acc, eval_loss = evaluate(predict, eval_loader, device, bf16)
            record = {"epoch": epoch, "lr": lr, **{f"train/{k}": v for k, v in means.items()},
                      "train/acc": 100.0 * correct.item() / seen, "eval/acc": acc,
                      "eval/loss": eval_loss, "eval/split": views.eval_split,
                      "time_s": train_time, "images_per_s": seen / max(train_time, 1e-9)}
            history.append(record)
            state = prefixed(method.state_dict(), "method.")
            if acc > best_acc:
                best_acc, best_epoch = acc, epoch
                save_checkpoint(out / BEST, state, {"run_id": cfg.run_id, "epoch": epoch,
                                                    "metrics": record})
            with open(out / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
            opt_tensors, opt_rest = optimizer_to_flat(optimizer)
            save_checkpoint(out / LAST, {**state, **opt_tensors},
                            {"run_id": cfg.run_id, "epoch": epoch, "best_acc": best_acc,
                             "best_epoch": best_epoch, "optim": opt_rest, "metrics": record})
            reporter.epoch(record, epochs)
            if cfg.stop_at_acc is not None and acc >= cfg.stop_at_acc:
                status = "stopped_at_acc"
                break
    finally:
        reporter.end_run()

    result = RunResult(
        run_id=cfg.run_id, run_dir=str(out), best_acc=best_acc, best_epoch=best_epoch,
        last_acc=history[-1]["eval/acc"], epochs_run=len(history), status=status,
        eval_split=views.eval_split, wall_time_s=sum(r["time_s"] for r in history))
    atomic_write_json(out / RESULT, {"result": asdict(result), "config": cfg.model_dump(mode="json")})
    return result
