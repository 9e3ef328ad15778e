"""The one training loop. It knows nothing about methods: it sums the named losses they return.

Exact resumption: everything random in an epoch is drawn from generators seeded by
(seed, epoch) (the data order and augmentation in :class:`DeviceLoader`, and the global torch
generator reseeded at each epoch start), and the checkpoint written after each epoch holds the
method's weights and buffers and the optimizer state. A run killed at any moment restarts from the
last completed epoch and reaches the same weights and metrics as an uninterrupted run.

A method may own parameters trained by optimizers of its own (:meth:`Method.extra_optimizers`,
e.g. the DAFL generator's Adam): the run's optimizer then gets the remaining trainable
parameters, every step zeroes all optimizers, backpropagates the summed losses once and steps
them all, and each extra optimizer's state is checkpointed next to the main one's (tensors
``optim.<name>.*``, JSON under ``optim_extra``). Methods without extra optimizers write exactly
the checkpoints they always did.

Several processes (``torchrun --nproc_per_node N -m undistill train ...``) train one run together
with DistributedDataParallel; how the work is shared is :mod:`undistill.distributed`'s, the loop
here is the same for one process or many.

No host-device synchronisation happens inside the step loop except for the live progress line
(every 20 steps, only when a live progress bar is shown); the epoch's sums are read once at its end.

The loop's parts live next to it: one step and one evaluation pass in :mod:`undistill.steps`, the
run's optimizers in :mod:`undistill.extra_optimizers`, the last checkpoint and resuming from it in
:mod:`undistill.resume`, the device in :mod:`undistill.devices` and the result in
:mod:`undistill.run_result`; their names are importable from here as before.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from undistill.checkpoint import atomic_write_json, prefixed, save_checkpoint
from undistill.config import RunConfig, Runtime
from undistill.data import DeviceLoader
from undistill.data.loader import epoch_seed
from undistill.devices import DEVICES, device_problem, select_device
from undistill.distributed import DistContext, check_shardable, distributed_context, step_function
from undistill.exceptions import UndistillError
from undistill.extra_optimizers import ExtraOptimizer, make_optimizers
from undistill.methods import METHODS, Method
from undistill.optim import learning_rate
from undistill.precision import ComputePath
from undistill.progress import Reporter
from undistill.resume import Progress as _Progress
from undistill.resume import last_checkpoint, restore
from undistill.resume import read_metrics as _read_metrics  # noqa: F401 (kept for callers)
from undistill.run_result import RunResult
from undistill.runs import (
    BEST,
    CONFIG,
    LAST,
    METRICS,
    RESULT,
    bind_data,
    build_student,
    data_views,
    load_teacher,
    read_result,
    run_dir,
    transfer_limit,
)
from undistill.steps import EVAL_BATCH, evaluate, runtime_formats, train_step
from undistill.steps import eval_sums as _eval_sums
from undistill.stopped_twin import from_twin
from undistill.thief import out_of_patience, thief_key

TIMING_KEYS = ("time_s", "images_per_s")

__all__ = [  # the loop's own names and, for callers that import them from here, its parts'
    "DEVICES", "EVAL_BATCH", "TIMING_KEYS", "ExtraOptimizer", "RunResult", "TrainingDiverged",
    "build_method", "device_problem", "evaluate", "learning_rate", "make_optimizers",
    "runtime_formats", "select_device", "train_run", "train_step",
]


class TrainingDiverged(UndistillError, RuntimeError):
    """A non-finite loss; the run's last good checkpoint is kept."""


def build_method(cfg: RunConfig, runtime: Runtime, device: torch.device) -> tuple[Method, Any]:
    """Student (seeded init), teacher and method for a run, on ``device``."""
    views = data_views(cfg.data, runtime.data_root, limit=transfer_limit(cfg))
    torch.manual_seed(cfg.seed)
    student = build_student(cfg, views.dataset)
    opener = runtime.opener
    if opener is None:
        from undistill.teachers.opener import Opener

        opener = Opener()
    teacher: Any = load_teacher(cfg, runtime.runs_dir, runtime.data_root, device, opener=opener)
    if cfg.thief is not None:  # pay for the transfer set once; the method reads stored answers
        from undistill.thief import prepare

        views, teacher = prepare(cfg, runtime, teacher, device,
                                 train=lambda selector: train_run(selector, runtime))
    cls = METHODS.get(cfg.method.name)
    method = cls(student, teacher, cls.Params(**cfg.method.params))
    method = method.to(device)
    if views.unpaid is not None:
        from undistill.data.unpaid import UnpaidPool

        ds = views.dataset
        method.attach_unpaid(UnpaidPool(views.unpaid.to(device), ds.mean, ds.std, ds.augment))
    return method, views


@dataclass
class _Session:
    """Everything one training run works with, built once by :func:`_start`."""

    cfg: RunConfig
    out: Path
    device: torch.device
    ddp: DistContext
    bf16: bool
    channels_last: bool
    method: Method
    views: Any
    optimizer: torch.optim.Optimizer
    extras: dict[str, ExtraOptimizer]
    train_loader: DeviceLoader
    eval_loader: DeviceLoader
    step_fn: Any
    predict: Any
    reporter: Reporter
    live: bool

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer, *(e.optimizer for e in self.extras.values())]


def train_run(cfg: RunConfig, runtime: Runtime | None = None,
              reporter: Reporter | None = None) -> RunResult:
    """Train one run to completion (or resume it); a finished run is returned from disk.

    Under torchrun (``WORLD_SIZE > 1``) every rank calls this with the same arguments; see
    :mod:`undistill.distributed` for how the work is shared.
    """
    runtime = runtime or Runtime()
    cfg = bind_data(cfg, runtime.data_root)  # the data's fingerprint is part of the run id
    out = run_dir(cfg, runtime.runs_dir)
    if (out / RESULT).exists():
        return RunResult(**{**read_result(out)["result"], "cached": True})
    if (derived := from_twin(cfg, runtime.runs_dir)) is not None:  # Nasty-ES off its nasty run
        return derived
    s = _start(cfg, runtime, reporter or Reporter(enabled=runtime.progress), out)
    progress = _resume(s)
    epochs, steps = cfg.optim.epochs, len(s.train_loader)
    status = "complete"
    if _reached_target(cfg, progress.history):  # killed between its last checkpoint and result
        progress.start, status = epochs, "stopped_at_acc"
    elif out_of_patience(cfg, progress.history):
        progress.start, status = epochs, "early_stopped"
    s.reporter.start_run(cfg.name or cfg.run_id, epochs * steps, progress.start * steps)
    try:
        for epoch in range(progress.start, epochs):
            trained = _train_epoch(s, epoch, progress.start)
            record = {**{k: v for k, v in trained.items() if k not in TIMING_KEYS},
                      **_evaluate_epoch(s), **{k: trained[k] for k in TIMING_KEYS},
                      "compute": ComputePath(s.bf16, s.channels_last).name}
            improved = (record["eval/acc"] > progress.best_acc if cfg.thief is None else
                        thief_key(record) > thief_key(progress.history[progress.best_epoch])
                        if progress.best_epoch >= 0 else True)
            if improved:
                progress.best_acc, progress.best_epoch = record["eval/acc"], epoch
            progress.history.append(record)
            _save_epoch(s, progress, record, improved)
            s.reporter.epoch(record, epochs)
            if _reached_target(cfg, progress.history):
                status = "stopped_at_acc"
                break
            if out_of_patience(cfg, progress.history):
                status = "early_stopped"
                break
    finally:
        s.reporter.end_run()
    return _finish(s, progress, status)


def _start(cfg: RunConfig, runtime: Runtime, reporter: Reporter, out: Path) -> _Session:
    """Device, process group, the run's config on disk, method, optimizers and loaders."""
    if runtime.num_threads:
        torch.set_num_threads(runtime.num_threads)
    ddp, device = distributed_context(select_device(runtime.device))
    if not ddp.main:
        reporter = Reporter(enabled=False)
    bf16, channels_last = runtime_formats(runtime, device)
    if ddp.enabled:  # rank 0's path on every rank (a per-machine probe could differ between ranks)
        bf16, channels_last = (v > 0 for v in ddp.sum([bf16 and ddp.main, channels_last and ddp.main],
                                                       device))
    if device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    if ddp.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / CONFIG, {"run_id": cfg.run_id, "config": cfg.model_dump(mode="json")})

    method, views = build_method(cfg, runtime, device)
    if channels_last:
        method.to(memory_format=torch.channels_last)
        if method.teacher is not None:
            method.teacher.to(device, memory_format=torch.channels_last)
    optimizer, extras = make_optimizers(cfg.optim, method)
    if ddp.enabled and cfg.thief is not None:
        raise UndistillError("a thief's run (thief:) trains in one process; run it without "
                             "torchrun")
    if ddp.enabled:
        check_shardable(int(views.train_labels.numel()), cfg.optim.batch_size, ddp.world)
    ds = views.dataset
    augment = cfg.data.augment or (cfg.thief is not None and cfg.thief.augment)
    train_loader = DeviceLoader(
        views.train_images.to(device), views.train_labels.to(device),
        batch_size=cfg.optim.batch_size, mean=ds.mean, std=ds.std,
        augment=ds.augment if augment else None, shuffle=True,
        drop_last=views.repeat > 1,  # a thief's repeated passes: full batches only (BatchNorm)
        seed=cfg.seed, channels_last=channels_last, repeat=views.repeat)
    if (follow := getattr(method.teacher, "follow", None)) is not None:
        follow(train_loader)  # a thief's stored answers, looked up by the loader's batch
    lo, hi = ddp.shard(int(views.eval_labels.numel()))  # the whole split when not distributed
    eval_loader = DeviceLoader(
        views.eval_images[lo:hi].to(device), views.eval_labels[lo:hi].to(device),
        batch_size=EVAL_BATCH, mean=ds.mean, std=ds.std, augment=None, shuffle=False,
        drop_last=False, seed=0, channels_last=channels_last)
    step_fn, predict = step_function(method, ddp, device), method.predict
    if runtime.compile:
        step_fn, predict = torch.compile(step_fn), torch.compile(predict)
    return _Session(cfg, out, device, ddp, bf16, channels_last, method, views, optimizer, extras,
                    train_loader, eval_loader, step_fn, predict, reporter,
                    live=reporter.enabled and bool(getattr(reporter, "live", True)))


def _resume(s: _Session) -> _Progress:
    """Load the last checkpoint if there is one (weights, every optimizer, best so far, metrics)."""
    progress = _Progress()
    if (s.out / LAST).exists():
        progress = restore(s.out, s.cfg.run_id, s.method, s.optimizer, s.extras, s.device)
        s.reporter.message(f"resuming {s.cfg.run_id} after epoch {progress.start}")
    s.ddp.barrier(s.device)  # every rank has read the checkpoint and metrics before rank 0 rewrites them
    if s.ddp.main:
        (s.out / METRICS).write_text("".join(json.dumps(r) + "\n" for r in progress.history))
    return progress


def _reached_target(cfg: RunConfig, history: list[dict[str, Any]]) -> bool:
    """Nasty-ES: whether the last epoch's evaluation accuracy reached ``stop_at_acc``."""
    return bool(history) and cfg.stop_at_acc is not None and history[-1]["eval/acc"] >= cfg.stop_at_acc


def _train_epoch(s: _Session, epoch: int, start: int) -> dict[str, Any]:
    """One epoch of steps; the epoch's mean of every loss term, training accuracy and speed."""
    cfg, steps = s.cfg, len(s.train_loader)
    torch.manual_seed(epoch_seed(cfg.seed + 1, epoch))
    s.method.train()
    s.method.start_epoch(epoch)
    t0 = time.perf_counter()
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), dtype=torch.long, device=s.device)
    seen, lr = 0, cfg.optim.lr
    for step, (xb, yb) in enumerate(s.train_loader.epoch(epoch)):
        lr = learning_rate(cfg.optim, epoch, step, steps)
        for group in s.optimizer.param_groups:
            group["lr"] = lr
        for extra in s.extras.values():
            extra.set_lr(lr / cfg.optim.lr)
        x, y, scale = s.ddp.shard_batch(xb, yb)
        logits, losses, loss = train_step(s.step_fn, s.optimizers, x, y, device=s.device,
                                          bf16=s.bf16, labels=cfg.data.labels, loss_scale=scale)
        n = y.numel()
        seen += n
        for k, v in (("loss", loss), *losses.items()):
            sums[k] = sums.get(k, 0) + v.detach().float() * n
        correct += (logits.detach().argmax(1) == y).sum()
        if (step + 1) % 20 == 0 or step + 1 == steps:
            # reading the loss waits for the device: only for a progress line someone sees
            info = f"loss {sums['loss'].item() / seen:.3f} lr {lr:.3g}" if s.live else ""
            s.reporter.step(min(20, step % 20 + 1), info)
    keys = list(sums)
    *totals, n_correct, seen_all = s.ddp.sum([*(sums[k] for k in keys), correct, seen], s.device)
    means = {k: v / seen_all for k, v in zip(keys, totals, strict=True)}
    if not all(math.isfinite(v) for v in means.values()):
        bad = ", ".join(f"{k}={v}" for k, v in means.items())
        kept = (f"the last good checkpoint (after epoch {epoch}) is kept in {s.out}" if epoch
                else "no checkpoint was written")
        raise TrainingDiverged(
            f"run {cfg.run_id}: non-finite loss in epoch {epoch + 1} ({bad}); training "
            f"stopped, {kept}. Lower the learning rate or the method's weights "
            f"(for a nasty teacher: omega).")
    train_time = time.perf_counter() - t0
    return {"epoch": epoch, "lr": lr, **{f"train/{k}": v for k, v in means.items()},
            "train/acc": 100.0 * n_correct / seen_all, "time_s": train_time,
            "images_per_s": seen_all / max(train_time, 1e-9)}


def _evaluate_epoch(s: _Session) -> dict[str, Any]:
    """Accuracy and loss on the evaluation split (each rank's shard, summed)."""
    s.method.eval()
    s.ddp.broadcast_buffers(s.method)  # BatchNorm running stats: rank 0's, on every rank
    c, ls, tot = _eval_sums(s.predict, s.eval_loader, s.device, s.bf16)
    c_all, ls_all, tot_all = s.ddp.sum([c, ls, tot], s.device)
    return {"eval/acc": 100.0 * c_all / max(tot_all, 1), "eval/loss": ls_all / max(tot_all, 1),
            "eval/split": s.views.eval_split}


def _save_epoch(s: _Session, progress: _Progress, record: dict[str, Any], improved: bool) -> None:
    """Rank 0 writes the metrics line, the best checkpoint (if improved) and the last one (with
    every optimizer's state, for an exact resume)."""
    if not s.ddp.main:  # one writer; the other ranks hold the same weights
        return
    cfg, out = s.cfg, s.out
    state = prefixed(s.method.state_dict(), "method.")
    if improved:
        save_checkpoint(out / BEST, state, {"run_id": cfg.run_id, "epoch": record["epoch"],
                                            "metrics": record})
    with open(out / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")
    save_checkpoint(out / LAST, *last_checkpoint(cfg.run_id, state, s.optimizer, s.extras, progress,
                                                  record))


def _finish(s: _Session, progress: _Progress, status: str) -> RunResult:
    """The run's result, written by rank 0; every rank waits until it exists."""
    history = progress.history
    result = RunResult(
        run_id=s.cfg.run_id, run_dir=str(s.out), best_acc=progress.best_acc,
        best_epoch=progress.best_epoch, last_acc=history[-1]["eval/acc"], epochs_run=len(history),
        status=status, eval_split=s.views.eval_split, wall_time_s=sum(r["time_s"] for r in history),
        compute=",".join(dict.fromkeys(str(r.get("compute", "unrecorded")) for r in history)))
    if s.ddp.main:
        atomic_write_json(s.out / RESULT, {"result": asdict(result),
                                           "config": s.cfg.model_dump(mode="json")})
    s.ddp.barrier(s.device)  # the result exists for every rank before any goes on (e.g. to a student)
    return result
