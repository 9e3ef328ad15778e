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

Several processes (``torchrun --nproc_per_node N -m undistill train ...``, i.e. ``WORLD_SIZE > 1``
in the environment) train one run together with DistributedDataParallel: every rank holds the
whole training set on its device and draws the same global batches (the loader is a function of
(seed, epoch)); rank ``r`` trains on the ``r``-th contiguous shard of each global batch, whose
size stays ``optim.batch_size``. Gradients are averaged across ranks (each rank's loss is scaled
by its share of the batch, so uneven shards still give the global batch-mean gradient).
BatchNorm normalises with per-rank batch statistics, as plain DDP does; the running statistics
are rank 0's. Evaluation is sharded and its counts summed; rank 0 alone writes checkpoints,
metrics and the result, and every rank resumes from the same checkpoint. See
``docs/performance.md``.

No host-device synchronisation happens inside the step loop except for the live progress line
(every 20 steps, only when a live progress bar is shown); the epoch's sums are read once at its end.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

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
from undistill.config import RunConfig, Runtime
from undistill.data import DeviceLoader
from undistill.data.loader import epoch_seed
from undistill.methods import METHODS, Method
from undistill.optim import OptimConfig, learning_rate, make_optimizer
from undistill.precision import ComputePath
from undistill.precision import resolve as resolve_compute_path
from undistill.progress import Reporter
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
    compute: str = ""  # the numeric path that trained it (undistill.precision); "" in older results


def select_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class ExtraOptimizer:
    """A method's own optimizer (see :meth:`Method.extra_optimizers`) and how its LR is set."""

    optimizer: torch.optim.Optimizer
    follows_schedule: bool
    base_lrs: list[float]  # each param group's learning rate as built

    def set_lr(self, factor: float) -> None:
        """Scale the initial learning rates by the schedule's factor (when it follows it)."""
        if self.follows_schedule:
            for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
                group["lr"] = base * factor


def make_optimizers(cfg: OptimConfig, method: Method
                    ) -> tuple[torch.optim.Optimizer, dict[str, ExtraOptimizer]]:
    """The run's optimizer over the method's trainable parameters that no extra optimizer claims,
    and the method's extra optimizers (each parameter in at most one optimizer)."""
    owned = {id(p) for p in method.parameters()}
    claimed: set[int] = set()
    extras: dict[str, ExtraOptimizer] = {}
    for name, (opt, follows) in method.extra_optimizers(cfg).items():
        if not name.isidentifier():
            raise ValueError(f"{type(method).__name__}: extra optimizer name {name!r} must be an "
                             f"identifier (it names checkpoint entries optim.<name>.*)")
        for group in opt.param_groups:
            for p in group["params"]:
                if id(p) not in owned:
                    raise ValueError(f"{type(method).__name__}: extra optimizer {name!r} holds a "
                                     f"parameter that is not the method's (it would not be saved)")
                if id(p) in claimed:
                    raise ValueError(f"{type(method).__name__}: a parameter is in two extra "
                                     f"optimizers")
                claimed.add(id(p))
        extras[name] = ExtraOptimizer(opt, bool(follows), [g["lr"] for g in opt.param_groups])
    main = [p for p in method.parameters() if p.requires_grad and id(p) not in claimed]
    if not main:
        raise ValueError(f"{type(method).__name__}: no trainable parameter is left for the run's "
                         f"optimizer")
    return make_optimizer(cfg, main), extras


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def runtime_formats(runtime: Runtime, device: torch.device) -> tuple[bool, bool]:
    """(bf16 autocast, channels_last) for this runtime on this device (see :mod:`undistill.precision`)."""
    path = resolve_compute_path(runtime, device)
    return path.bf16, path.channels_last


def train_step(step_fn: Any, optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
               x: torch.Tensor, y: torch.Tensor, *, device: torch.device, bf16: bool,
               labels: bool = True, loss_scale: float = 1.0
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """One optimisation step: forward (under bf16 autocast if asked), summed losses, backward, step.

    ``step_fn(images, labels_or_None)`` returns ``(logits, {name: loss})`` (a method's
    ``forward_train``, or a DDP adapter around it). ``loss_scale`` multiplies the loss before
    backward only (a rank's share of a global batch); the returned loss is unscaled. Returns
    ``(logits, losses, loss)``; nothing here waits for the device. ``optimizer`` may be several
    (the run's and a method's extra ones): all are zeroed, one backward, all are stepped.
    """
    optimizers = [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else list(optimizer)
    with _autocast(device, bf16):
        logits, losses = step_fn(x, y if labels else None)
        loss = torch.stack([v.float() for v in losses.values()]).sum()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    (loss if loss_scale == 1.0 else loss * loss_scale).backward()
    for opt in optimizers:
        opt.step()
    return logits, losses, loss


def _eval_sums(predict: Any, loader: DeviceLoader, device: torch.device, bf16: bool
               ) -> tuple[torch.Tensor, torch.Tensor, int]:
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    total = 0
    with torch.no_grad():
        for x, y in loader.epoch(0):
            with _autocast(device, bf16):
                logits = predict(x).float()
            correct += (logits.argmax(1) == y).sum()
            loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").double()
            total += y.numel()
    return correct, loss_sum, total


def evaluate(predict: Any, loader: DeviceLoader, device: torch.device, bf16: bool = False
             ) -> tuple[float, float]:
    """Accuracy (%) = correct / total over the whole split, and the mean cross-entropy."""
    correct, loss_sum, total = _eval_sums(predict, loader, device, bf16)
    return 100.0 * correct.item() / max(total, 1), loss_sum.item() / max(total, 1)


# --------------------------------------------------------------------------------------------
# several processes, one run
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DistContext:
    """This process's place in a multi-process run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous slice ``[lo, hi)`` of ``n`` rows (sizes differ by at most 1)."""
        return n * self.rank // self.world, n * (self.rank + 1) // self.world

    def barrier(self, device: torch.device) -> None:
        if self.enabled:
            if device.type == "cuda":
                dist.barrier(device_ids=[device.index])
            else:
                dist.barrier()

    def sum(self, values: list[torch.Tensor | float | int], device: torch.device) -> list[float]:
        """Sum scalars over ranks (float64); one collective; plain floats back on every rank."""
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(())
                         for v in values])
        if self.enabled:
            dist.all_reduce(t)
        return t.tolist()


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def distributed_context(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group when launched with ``WORLD_SIZE > 1`` (torchrun sets it).

    Backend nccl on CUDA (each rank on ``cuda:LOCAL_RANK``), gloo otherwise. A group the caller
    initialised already is used as it is. Returns the context and the device this rank trains on.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistContext(), device
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
        atexit.register(_destroy_process_group)
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank)
    return ctx, device


class _ForwardTrain(nn.Module):
    """Adapter for DDP: its ``forward`` is the method's ``forward_train``."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.method.forward_train(images, labels)


def _uses_every_parameter(method: Method) -> bool:
    """Whether every step sends gradient to every trainable parameter (DDP's fast path).

    Assumed when all trainable parameters belong to the student (zoo models use all of theirs);
    methods with extra parts (e.g. Skeptical's auxiliary heads, idle in some epochs) take DDP's
    ``find_unused_parameters`` path.
    """
    student = {id(p) for p in method.student.parameters()}
    return all(id(p) in student for p in method.parameters() if p.requires_grad)


def _check_shardable(n: int, batch_size: int, world: int) -> None:
    """Every rank's shard of every batch needs 2 rows (BatchNorm in training needs two values)."""
    last = n % batch_size or min(batch_size, n)
    smallest = min(batch_size, n, last)
    if smallest < 2 * world:
        raise ValueError(f"{world} processes need at least {2 * world} rows in every batch (two per "
                         f"process, for BatchNorm): batch size {batch_size} with {n} training "
                         f"samples leaves a last batch of {last}; change optim.batch_size or the "
                         f"number of processes")


def _read_metrics(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    """The metrics rows up to ``upto_epoch``; a torn last line (a kill mid-append) is dropped."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break  # rewritten without it before training goes on
            raise CheckpointError(f"{path}:{number} is not a JSON line; delete the run folder "
                                  f"{path.parent} to train it afresh") from None
    return [r for r in rows if r["epoch"] <= upto_epoch]


def build_method(cfg: RunConfig, runtime: Runtime, device: torch.device) -> tuple[Method, Any]:
    """Student (seeded init), teacher and method for a run, on ``device``."""
    views = data_views(cfg.data, runtime.data_root, limit=transfer_limit(cfg))
    torch.manual_seed(cfg.seed)
    student = build_student(cfg, views.dataset)
    teacher = load_teacher(cfg, runtime.runs_dir, runtime.data_root, device)
    cls = METHODS.get(cfg.method.name)
    method = cls(student, teacher, cls.Params(**cfg.method.params))
    return method.to(device), views


def train_run(cfg: RunConfig, runtime: Runtime | None = None,
              reporter: Reporter | None = None) -> RunResult:
    """Train one run to completion (or resume it); a finished run is returned from disk.

    Under torchrun (``WORLD_SIZE > 1``) every rank calls this with the same arguments; see the
    module docstring for how the work is shared.
    """
    runtime = runtime or Runtime()
    reporter = reporter or Reporter(enabled=runtime.progress)
    cfg = bind_data(cfg, runtime.data_root)  # the data's fingerprint is part of the run id
    out = run_dir(cfg, runtime.runs_dir)
    if (out / RESULT).exists():
        return RunResult(**{**read_result(out)["result"], "cached": True})

    if runtime.num_threads:
        torch.set_num_threads(runtime.num_threads)
    ddp, device = distributed_context(select_device(runtime.device))
    if not ddp.main:
        reporter = Reporter(enabled=False)
    bf16, channels_last = runtime_formats(runtime, device)
    if ddp.enabled:  # rank 0's path on every rank (a per-machine probe could differ between ranks)
        bf16, channels_last = (v > 0 for v in ddp.sum([bf16 and ddp.main, channels_last and ddp.main],
                                                       device))
    fmt = torch.channels_last if channels_last else None
    if device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels

    if ddp.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / CONFIG, {"run_id": cfg.run_id, "config": cfg.model_dump(mode="json")})

    method, views = build_method(cfg, runtime, device)
    if fmt is not None:
        method.to(memory_format=fmt)
        if method.teacher is not None:
            method.teacher.to(device, memory_format=fmt)
    ds = views.dataset
    optimizer, extras = make_optimizers(cfg.optim, method)
    optimizers = [optimizer, *(e.optimizer for e in extras.values())]
    if ddp.enabled:
        _check_shardable(int(views.train_labels.numel()), cfg.optim.batch_size, ddp.world)
    train_loader = DeviceLoader(
        views.train_images.to(device), views.train_labels.to(device),
        batch_size=cfg.optim.batch_size, mean=ds.mean, std=ds.std,
        augment=ds.augment if cfg.data.augment else None, shuffle=True, drop_last=False,
        seed=cfg.seed, channels_last=channels_last)
    lo, hi = ddp.shard(int(views.eval_labels.numel()))  # the whole split when not distributed
    eval_loader = DeviceLoader(
        views.eval_images[lo:hi].to(device), views.eval_labels[lo:hi].to(device),
        batch_size=EVAL_BATCH, mean=ds.mean, std=ds.std, augment=None, shuffle=False,
        drop_last=False, seed=0, channels_last=channels_last)

    start, best_acc, best_epoch, history = 0, -1.0, -1, []
    if (out / LAST).exists():
        tensors, meta = load_checkpoint(out / LAST, device="cpu")
        if meta.get("run_id") != cfg.run_id:
            raise CheckpointError(f"{out / LAST} belongs to run {meta.get('run_id')}, "
                                  f"not {cfg.run_id}")
        method.load_state_dict(unprefixed(tensors, "method."))
        on_device = {k: v.to(device) for k, v in tensors.items()}
        optimizer_from_flat(optimizer, on_device, meta["optim"])
        for name, extra in extras.items():
            if name not in meta.get("optim_extra", {}):
                raise CheckpointError(f"{out / LAST} has no state for the method's optimizer {name!r}")
            optimizer_from_flat(extra.optimizer, on_device, meta["optim_extra"][name], f"optim.{name}.")
        start, best_acc, best_epoch = meta["epoch"] + 1, meta["best_acc"], meta["best_epoch"]
        history = _read_metrics(out / METRICS, meta["epoch"])
        reporter.message(f"resuming {cfg.run_id} after epoch {meta['epoch'] + 1}")
    ddp.barrier(device)  # every rank has read the checkpoint and metrics before rank 0 rewrites them
    if ddp.main:
        (out / METRICS).write_text("".join(json.dumps(r) + "\n" for r in history))

    step_fn: Any = method.forward_train
    if ddp.enabled:
        step_fn = nn.parallel.DistributedDataParallel(
            _ForwardTrain(method), device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not _uses_every_parameter(method))
    predict = method.predict
    if runtime.compile:
        step_fn, predict = torch.compile(step_fn), torch.compile(predict)
    live = reporter.enabled and bool(getattr(reporter, "live", True))

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
            for step, (xb, yb) in enumerate(train_loader.epoch(epoch)):
                lr = learning_rate(cfg.optim, epoch, step, steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                for extra in extras.values():
                    extra.set_lr(lr / cfg.optim.lr)
                x, y, scale = xb, yb, 1.0
                if ddp.enabled:  # this rank's contiguous shard of the global batch
                    b_lo, b_hi = ddp.shard(yb.shape[0])
                    x, y = xb[b_lo:b_hi], yb[b_lo:b_hi]
                    scale = (b_hi - b_lo) * ddp.world / yb.shape[0]
                logits, losses, loss = train_step(step_fn, optimizers, x, y, device=device, bf16=bf16,
                                                  labels=cfg.data.labels, loss_scale=scale)
                n = y.numel()
                seen += n
                for k, v in (("loss", loss), *losses.items()):
                    sums[k] = sums.get(k, 0) + v.detach().float() * n
                correct += (logits.detach().argmax(1) == y).sum()
                if (step + 1) % 20 == 0 or step + 1 == steps:
                    # reading the loss waits for the device: only for a progress line someone sees
                    info = f"loss {sums['loss'].item() / seen:.3f} lr {lr:.3g}" if live else ""
                    reporter.step(min(20, step % 20 + 1), info)
            if ddp.enabled:
                keys = list(sums)
                *totals, n_correct, seen_all = ddp.sum([*(sums[k] for k in keys), correct, seen], device)
                means = {k: v / seen_all for k, v in zip(keys, totals, strict=True)}
                train_acc = 100.0 * n_correct / seen_all
            else:
                means = {k: v.item() / seen for k, v in sums.items()}
                train_acc = 100.0 * correct.item() / seen
                seen_all = seen
            if not all(math.isfinite(v) for v in means.values()):
                bad = ", ".join(f"{k}={v}" for k, v in means.items())
                kept = (f"the last good checkpoint (after epoch {epoch}) is kept in {out}" if epoch
                        else "no checkpoint was written")
                raise TrainingDiverged(
                    f"run {cfg.run_id}: non-finite loss in epoch {epoch + 1} ({bad}); training "
                    f"stopped, {kept}. Lower the learning rate or the method's weights "
                    f"(for a nasty teacher: omega).")
            train_time = time.perf_counter() - t0
            method.eval()
            if ddp.enabled:
                for buf in method.buffers():  # BatchNorm running stats: rank 0's, on every rank
                    dist.broadcast(buf, 0)
                c, ls, tot = _eval_sums(predict, eval_loader, device, bf16)
                c_all, ls_all, tot_all = ddp.sum([c, ls, tot], device)
                acc, eval_loss = 100.0 * c_all / max(tot_all, 1), ls_all / max(tot_all, 1)
            else:
                acc, eval_loss = evaluate(predict, eval_loader, device, bf16)
            record = {"epoch": epoch, "lr": lr, **{f"train/{k}": v for k, v in means.items()},
                      "train/acc": train_acc, "eval/acc": acc,
                      "eval/loss": eval_loss, "eval/split": views.eval_split,
                      "time_s": train_time, "images_per_s": seen_all / max(train_time, 1e-9),
                      "compute": ComputePath(bf16, channels_last).name}
            history.append(record)
            improved = acc > best_acc
            if improved:
                best_acc, best_epoch = acc, epoch
            if ddp.main:  # one writer; the other ranks hold the same weights
                state = prefixed(method.state_dict(), "method.")
                if improved:
                    save_checkpoint(out / BEST, state, {"run_id": cfg.run_id, "epoch": epoch,
                                                        "metrics": record})
                with open(out / METRICS, "a") as f:
                    f.write(json.dumps(record) + "\n")
                opt_tensors, opt_rest = optimizer_to_flat(optimizer)
                last_meta = {"run_id": cfg.run_id, "epoch": epoch, "best_acc": best_acc,
                             "best_epoch": best_epoch, "optim": opt_rest, "metrics": record}
                if extras:
                    last_meta["optim_extra"] = {}
                    for name, extra in extras.items():
                        t, rest = optimizer_to_flat(extra.optimizer, f"optim.{name}.")
                        opt_tensors.update(t)
                        last_meta["optim_extra"][name] = rest
                save_checkpoint(out / LAST, {**state, **opt_tensors}, last_meta)
            reporter.epoch(record, epochs)
            if cfg.stop_at_acc is not None and acc >= cfg.stop_at_acc:
                status = "stopped_at_acc"
                break
    finally:
        reporter.end_run()

    result = RunResult(
        run_id=cfg.run_id, run_dir=str(out), best_acc=best_acc, best_epoch=best_epoch,
        last_acc=history[-1]["eval/acc"], epochs_run=len(history), status=status,
        eval_split=views.eval_split, wall_time_s=sum(r["time_s"] for r in history),
        compute=",".join(dict.fromkeys(str(r.get("compute", "unrecorded")) for r in history)))
    if ddp.main:
        atomic_write_json(out / RESULT, {"result": asdict(result), "config": cfg.model_dump(mode="json")})
    ddp.barrier(device)  # the result exists for every rank before any goes on (e.g. to a student)
    return result
