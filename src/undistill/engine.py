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
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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
from undistill.config import ConfigError, RunConfig, Runtime
from undistill.data import DeviceLoader
from undistill.data.loader import epoch_seed
from undistill.distributed import DistContext, check_shardable, distributed_context, step_function
from undistill.exceptions import UndistillError
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


class TrainingDiverged(UndistillError, RuntimeError):
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


DEVICES = "auto, cpu, cuda, cuda:N or mps"


def device_problem(name: str) -> str | None:
    """Why ``name`` cannot be used as a device on this machine (None: it can)."""
    if name == "auto":
        return None
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        return f"{name!r} is not a device; give {DEVICES}"
    if dev.type == "cpu":
        return None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            return f"{name} is not available on this machine (no CUDA device); give auto or cpu"
        if dev.index is not None and dev.index >= n:
            return f"{name} is not available on this machine (CUDA devices: cuda:0..cuda:{n - 1})"
        return None
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return None if mps is not None and mps.is_available() else (
            f"{name} is not available on this machine; give auto or cpu")
    return f"{name!r}: devices of type {dev.type} are not supported; give {DEVICES}"


def select_device(name: str = "auto") -> torch.device:
    """The torch device called ``name`` (``auto``: CUDA, else MPS, else the CPU); a name that is
    not a device, or not one of this machine's, is a ConfigError."""
    name = str(name)
    if name != "auto":
        if (problem := device_problem(name)) is not None:
            raise ConfigError(f"device: {problem}")
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
    opener = runtime.opener
    if opener is None:
        from undistill.teachers.opener import Opener

        opener = Opener()
    teacher = load_teacher(cfg, runtime.runs_dir, runtime.data_root, device, opener=opener)
    cls = METHODS.get(cfg.method.name)
    method = cls(student, teacher, cls.Params(**cfg.method.params))
    return method.to(device), views


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


@dataclass
class _Progress:
    """Where a run stands: the first epoch to train, the best so far and the metrics history."""

    start: int = 0
    best_acc: float = -1.0
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)


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
    s = _start(cfg, runtime, reporter or Reporter(enabled=runtime.progress), out)
    progress = _resume(s)
    epochs, steps = cfg.optim.epochs, len(s.train_loader)
    status = "complete"
    if _reached_target(cfg, progress.history):  # killed between its last checkpoint and result
        progress.start, status = epochs, "stopped_at_acc"
    s.reporter.start_run(cfg.name or cfg.run_id, epochs * steps, progress.start * steps)
    try:
        for epoch in range(progress.start, epochs):
            trained = _train_epoch(s, epoch, progress.start)
            record = {**{k: v for k, v in trained.items() if k not in TIMING_KEYS},
                      **_evaluate_epoch(s), **{k: trained[k] for k in TIMING_KEYS},
                      "compute": ComputePath(s.bf16, s.channels_last).name}
            improved = record["eval/acc"] > progress.best_acc
            if improved:
                progress.best_acc, progress.best_epoch = record["eval/acc"], epoch
            progress.history.append(record)
            _save_epoch(s, progress, record, improved)
            s.reporter.epoch(record, epochs)
            if _reached_target(cfg, progress.history):
                status = "stopped_at_acc"
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
    if ddp.enabled:
        check_shardable(int(views.train_labels.numel()), cfg.optim.batch_size, ddp.world)
    ds = views.dataset
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
    step_fn, predict = step_function(method, ddp, device), method.predict
    if runtime.compile:
        step_fn, predict = torch.compile(step_fn), torch.compile(predict)
    return _Session(cfg, out, device, ddp, bf16, channels_last, method, views, optimizer, extras,
                    train_loader, eval_loader, step_fn, predict, reporter,
                    live=reporter.enabled and bool(getattr(reporter, "live", True)))


def _resume(s: _Session) -> _Progress:
    """Load the last checkpoint if there is one (weights, every optimizer, best so far, metrics)."""
    progress = _Progress()
    cfg, out = s.cfg, s.out
    if (out / LAST).exists():
        tensors, meta = load_checkpoint(out / LAST, device="cpu")
        if meta.get("run_id") != cfg.run_id:
            raise CheckpointError(f"{out / LAST} belongs to run {meta.get('run_id')}, "
                                  f"not {cfg.run_id}")
        s.method.load_state_dict(unprefixed(tensors, "method."))
        on_device = {k: v.to(s.device) for k, v in tensors.items()}
        optimizer_from_flat(s.optimizer, on_device, meta["optim"])
        for name, extra in s.extras.items():
            if name not in meta.get("optim_extra", {}):
                raise CheckpointError(f"{out / LAST} has no state for the method's optimizer {name!r}")
            optimizer_from_flat(extra.optimizer, on_device, meta["optim_extra"][name], f"optim.{name}.")
        progress = _Progress(meta["epoch"] + 1, meta["best_acc"], meta["best_epoch"],
                             _read_metrics(out / METRICS, meta["epoch"]))
        s.reporter.message(f"resuming {cfg.run_id} after epoch {meta['epoch'] + 1}")
    s.ddp.barrier(s.device)  # every rank has read the checkpoint and metrics before rank 0 rewrites them
    if s.ddp.main:
        (out / METRICS).write_text("".join(json.dumps(r) + "\n" for r in progress.history))
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
    opt_tensors, opt_rest = optimizer_to_flat(s.optimizer)
    last_meta = {"run_id": cfg.run_id, "epoch": record["epoch"], "best_acc": progress.best_acc,
                 "best_epoch": progress.best_epoch, "optim": opt_rest, "metrics": record}
    if s.extras:
        last_meta["optim_extra"] = {}
        for name, extra in s.extras.items():
            t, rest = optimizer_to_flat(extra.optimizer, f"optim.{name}.")
            opt_tensors.update(t)
            last_meta["optim_extra"][name] = rest
    save_checkpoint(out / LAST, {**state, **opt_tensors}, last_meta)


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
