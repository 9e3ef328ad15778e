"""Training-step throughput of the toolkit's path against a reference-style loop, in one run.

Both paths train the same model (same architecture, width, batch size, seed, optimizer and loss
functions) on the same synthetic CIFAR-shaped uint8 data, generated here (nothing is downloaded):

* toolkit: :class:`undistill.data.DeviceLoader` (data resident on the device, batch-wise crop and
  flip, normalisation on the device), the method's ``forward_train`` and
  :func:`undistill.engine.train_step` with the engine's per-step bookkeeping, in the compute path
  the engine picks on this machine (:mod:`undistill.precision`: bf16 autocast + channels_last on
  CUDA and on CPUs with native bf16), no host-device synchronisation per step;
* reference: ``torch.utils.data.DataLoader`` over a ``Dataset`` whose ``__getitem__`` augments one
  PIL image at a time in Python (4-pixel zero-padded random crop, horizontal flip, ToTensor,
  Normalize), NCHW fp32 on the device, teachers evaluated one after another under ``no_grad`` and
  the running loss read every step (``loss.item()``, the tqdm postfix of the Nasty-Teacher code).

Steps: ``vanilla`` (a normal teacher: cross-entropy), ``kd`` (a student learning from a
ResNet-18 teacher of ``--width``), ``nasty`` (Eq. 5 against a ResNet-18 adversary) and ``scm``
(a student learning from a k=4 ensemble of ResNet-18 teachers). For each it reports images/s,
the FLOPs of one training step (``FlopCounterMode``), model FLOPs utilisation against the
machine's measured matmul peak, and peak memory. Usage and flags: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from undistill.config import Runtime
from undistill.data import DeviceLoader
from undistill.data.base import AugmentSpec
from undistill.engine import runtime_formats, select_device, train_step
from undistill.losses import cross_entropy, kd_loss, nasty_loss, scm_loss
from undistill.methods import METHODS, Ensemble, Method
from undistill.models import build_model
from undistill.optim import OptimConfig, learning_rate
from undistill.precision import ComputePath
from undistill.precision import cache_file as cpu_cache_file

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
PAD = 4
KINDS = ("vanilla", "kd", "nasty", "scm")
METHOD_PARAMS = {"vanilla": {}, "kd": {"alpha": 0.9, "temperature": 4.0},
                 "nasty": {"omega": 0.04, "temperature": 4.0},
                 "scm": {"alpha": 0.9, "temperature": 4.0, "multiplier": 16.0}}


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

def synthetic(n: int, size: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-shaped uint8 images [n, 3, size, size] and int64 labels, from a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return images, torch.randint(0, classes, (n,), generator=g)


class ReferenceDataset(Dataset):
    """One image at a time, as torchvision's CIFAR10 + transforms do (written out, no torchvision).

    ``RandomCrop(size, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``,
    ``Normalize(mean, std)`` on a PIL image made from the HWC uint8 array.
    """

    def __init__(self, images_nchw: torch.Tensor, labels: torch.Tensor) -> None:
        self.data = images_nchw.permute(0, 2, 3, 1).contiguous().numpy()  # HWC, as CIFAR stores it
        self.targets = labels.tolist()
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.data[i])
        w, h = img.size
        img = ImageOps.expand(img, border=PAD, fill=0)
        top, left = random.randint(0, 2 * PAD), random.randint(0, 2 * PAD)
        img = img.crop((left, top, left + w, top + h))
        if random.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()
        x = x.float().div(255)
        return x.sub_(self.mean).div_(self.std), self.targets[i]


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_reset() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _vm_hwm() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@contextlib.contextmanager
def peak_memory(device: torch.device, into: dict[str, Any]) -> Iterator[None]:
    """CUDA: ``max_memory_allocated`` of this block. CPU: peak RSS, process-wide (see README)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    reset = device.type != "cuda" and _rss_reset()
    yield
    if device.type == "cuda":
        into["peak_mem_bytes"] = int(torch.cuda.max_memory_allocated(device))
        into["peak_mem_kind"] = "cuda max_memory_allocated"
    else:
        hwm = _vm_hwm() if reset else None
        ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        into["peak_mem_bytes"] = hwm if hwm is not None else ru
        into["peak_mem_kind"] = ("process peak RSS during this measurement (VmHWM after reset; "
                                 "process-wide: includes everything the process holds)"
                                 if hwm is not None else "process peak RSS since start (ru_maxrss)")
        into["ru_maxrss_bytes"] = ru


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 2.0, tf32: bool = False
                ) -> float:
    """FLOP/s of a large square matmul on this device (the MFU denominator).

    The best of several short windows, so that a busy machine's slow moments do not lower the
    peak. ``tf32``: allow TensorFloat-32 for this fp32 matmul (CUDA; cuDNN convolutions allow it
    by default, so fp32 convnets are measured against it).
    """
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        for _ in range(2):
            a @ b
        sync(device)
        best, start = 0.0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            reps, t0 = 0, time.perf_counter()
            while reps < 2 or time.perf_counter() - t0 < seconds / 8:
                a @ b
                reps += 1
                sync(device)
            best = max(best, 2.0 * n**3 * reps / (time.perf_counter() - t0))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return best


def count_flops(fn: Callable[[], Any]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------------------------
# the two paths
# --------------------------------------------------------------------------------------------

@dataclass
class Setup:
    args: argparse.Namespace
    device: torch.device
    bf16: bool
    channels_last: bool
    images: torch.Tensor
    labels: torch.Tensor
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="constant", milestones=[], epochs=1))


def build_models(s: Setup, kind: str) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
    a = s.args
    torch.manual_seed(0)
    student = build_model(a.arch, a.num_classes, 3, a.width, a.image_size)
    k = {"vanilla": 0, "kd": 1, "nasty": 1, "scm": a.ensemble}[kind]
    teachers = []
    for i in range(k):
        torch.manual_seed(1000 + i)
        teachers.append(build_model("resnet18", a.num_classes, 3, a.width, a.image_size))
    return student.to(s.device), [t.to(s.device).eval().requires_grad_(False) for t in teachers]


def optimizer_for(model: torch.nn.Module, s: Setup) -> torch.optim.Optimizer:
    o = s.optim
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=o.lr,
                           momentum=o.momentum, weight_decay=o.weight_decay)


def toolkit_run(s: Setup, kind: str, *, inference_mode: bool | None = None, vmap: bool | None = None,
                compile_: bool = False, n_images: int | None = None, bf16: bool | None = None,
                channels_last: bool | None = None) -> tuple[Callable[[], None], Iterator[None]]:
    """The engine's per-step path: (one extra step, for counting FLOPs; the steps, one per next()).

    Every keyword left ``None`` keeps the toolkit's default for the device.
    """
    bf16 = s.bf16 if bf16 is None else bf16
    channels_last = s.channels_last if channels_last is None else channels_last
    student, teachers = build_models(s, kind)
    teacher = None
    if teachers:
        teacher = Ensemble(teachers, vmap=vmap)
        if inference_mode is not None:
            teacher.inference_mode = inference_mode
    cls = METHODS.get(kind)
    method: Method = cls(student, teacher, cls.Params(**METHOD_PARAMS[kind])).to(s.device)
    fmt = torch.channels_last if channels_last else None
    if fmt is not None:
        method.to(memory_format=fmt)
        if teacher is not None:
            teacher.to(s.device, memory_format=fmt)
    method.train()
    optimizer = optimizer_for(method, s)
    images, labels = s.images, s.labels
    if n_images is not None:
        reps = math.ceil(n_images / images.shape[0])
        images, labels = images.repeat(reps, 1, 1, 1)[:n_images], labels.repeat(reps)[:n_images]
    loader = DeviceLoader(images.to(s.device), labels.to(s.device), batch_size=s.args.batch_size,
                          mean=MEAN, std=STD, augment=AugmentSpec(crop_padding=PAD, flip=True),
                          shuffle=True, drop_last=True, seed=0, channels_last=channels_last)
    step_fn = torch.compile(method.forward_train) if compile_ else method.forward_train
    steps = len(loader)
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), dtype=torch.long, device=s.device)

    def one(x: torch.Tensor, y: torch.Tensor, step: int) -> None:
        nonlocal correct
        lr = learning_rate(s.optim, 0, step, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits, losses, loss = train_step(step_fn, optimizer, x, y, device=s.device, bf16=bf16)
        n = y.numel()
        for k, v in (("loss", loss), *losses.items()):
            sums[k] = sums.get(k, 0) + v.detach().float() * n
        correct += (logits.detach().argmax(1) == y).sum()

    def iterate() -> Iterator[None]:
        epoch = 0
        while True:
            for step, (x, y) in enumerate(loader.epoch(epoch)):
                one(x, y, step)
                yield
            epoch += 1

    def flops_step() -> None:
        x, y = next(iter(loader.epoch(99)))
        one(x, y, 0)

    return flops_step, iterate()


def reference_run(s: Setup, kind: str, workers: int) -> tuple[Callable[[], None], Iterator[None]]:
    """The reference-style loop: per-image Python augmentation, fp32 NCHW, a sync every step."""
    student, teachers = build_models(s, kind)
    student.train()
    optimizer = optimizer_for(student, s)
    p = METHOD_PARAMS[kind]
    dataset = ReferenceDataset(s.images, s.labels)
    loader = DataLoader(dataset, batch_size=s.args.batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, pin_memory=s.device.type == "cuda",
                        generator=torch.Generator().manual_seed(0))
    running = {"sum": 0.0, "n": 0}

    def one(x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.to(s.device, non_blocking=True)
        y = y.to(s.device, non_blocking=True)
        out = student(x)
        if kind == "vanilla":
            loss = cross_entropy(out, y)
        else:
            with torch.no_grad():
                t = torch.stack([m(x) for m in teachers]).mean(0) if len(teachers) > 1 else teachers[0](x)
            if kind == "kd":
                loss = kd_loss(out, t, y, p["alpha"], p["temperature"])
            elif kind == "nasty":
                loss = nasty_loss(out, t, y, p["omega"], p["temperature"])
            else:
                loss = scm_loss(out, t, y, p["alpha"], p["temperature"], p["multiplier"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running["sum"] += loss.item()  # the reference's running average for its progress bar
        running["n"] += 1

    def iterate() -> Iterator[None]:
        while True:
            for x, y in loader:
                one(x, y)
                yield

    def flops_step() -> None:
        x, y = next(iter(DataLoader(dataset, batch_size=s.args.batch_size)))
        one(x, y)

    return flops_step, iterate()


def measure(s: Setup, label: str, build: Callable[[], tuple[Callable[[], None], Iterator[None]]],
            peaks: dict[str, float], dtype: str, steps: int | None = None) -> dict[str, Any]:
    """Warm up (untimed), time ``steps`` steps (synchronised around the timed region only)."""
    a = s.args
    steps = steps or a.steps
    rec: dict[str, Any] = {"path": label, "batch_size": a.batch_size, "steps": steps}
    with peak_memory(s.device, rec):
        flops_step, it = build()  # models, optimizer, data: inside the memory measurement
        for _ in range(a.warmup):
            next(it)
        sync(s.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            next(it)
        sync(s.device)
        elapsed = time.perf_counter() - t0
    rec["step_time_s"] = elapsed / steps
    rec["images_per_s"] = a.batch_size * steps / elapsed
    flops = count_flops(flops_step)
    rec["flops_per_step"] = flops
    rec["precision"] = dtype
    rec["mfu"] = flops / rec["step_time_s"] / peaks[dtype]
    del it
    return rec


def data_path(s: Setup, label: str, batches: Callable[[], Iterator[Any]], n: int) -> dict[str, Any]:
    it = batches()
    next(it)
    sync(s.device)
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    sync(s.device)
    return {"path": label, "images_per_s": s.args.batch_size * n / (time.perf_counter() - t0)}


def data_paths(s: Setup) -> list[dict[str, Any]]:
    """The input pipelines alone (augmented, normalised batches on the device, no model)."""
    a = s.args
    n = max(1, min(a.steps, s.images.shape[0] // a.batch_size - 1))

    def device_batches() -> Iterator[Any]:
        loader = DeviceLoader(s.images.to(s.device), s.labels.to(s.device), batch_size=a.batch_size,
                              mean=MEAN, std=STD, augment=AugmentSpec(crop_padding=PAD, flip=True),
                              shuffle=True, drop_last=True, seed=0, channels_last=s.channels_last)
        epoch = 0
        while True:
            yield from loader.epoch(epoch)
            epoch += 1

    def reference_batches(workers: int) -> Callable[[], Iterator[Any]]:
        def gen() -> Iterator[Any]:
            loader = DataLoader(ReferenceDataset(s.images, s.labels), batch_size=a.batch_size,
                                shuffle=True, drop_last=True, num_workers=workers,
                                pin_memory=s.device.type == "cuda")
            while True:
                for x, y in loader:
                    yield x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True)
        return gen

    out = [data_path(s, "toolkit", device_batches, n)]
    out += [data_path(s, f"reference-w{w}", reference_batches(w), n) for w in a.workers]
    return out


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="resnet18", help="the trained model (teachers: resnet18)")
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier of every model")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--ensemble", type=int, default=4, help="SCM ensemble size k")
    ap.add_argument("--kinds", default="vanilla,kd,scm", help=f"steps to measure, of {','.join(KINDS)}")
    ap.add_argument("--workers", default="0,2", help="DataLoader num_workers of the reference runs")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repetitions (median kept)")
    ap.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the toolkit with one default flipped: teacher inference_mode, "
                    "SCM ensemble vmap/loop, and on a CPU channels_last and bf16")
    ap.add_argument("--compile", action="store_true", help="also time the toolkit with torch.compile")
    ap.add_argument("--epoch-images", type=int, default=0,
                    help="also time one toolkit epoch of this many images per kind (e.g. 50000)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--out", type=Path, default=Path("results.json"))
    a = ap.parse_args(argv)
    a.kinds = [k for k in a.kinds.split(",") if k]
    unknown = set(a.kinds) - set(KINDS)
    if unknown:
        ap.error(f"unknown --kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    a.workers = [int(w) for w in str(a.workers).split(",") if w != ""]
    return a


def _fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = select_device(a.device)
    bf16, channels_last = runtime_formats(Runtime(device=str(device)), device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the engine does on CUDA
    n = a.batch_size * (a.warmup + a.steps + 1)
    images, labels = synthetic(n, a.image_size, a.num_classes)
    s = Setup(a, device, bf16, channels_last, images, labels)

    peaks = {"fp32": matmul_peak(device, torch.float32)}
    if device.type == "cuda" or a.ablations or bf16:
        peaks["bf16"] = matmul_peak(device, torch.bfloat16)
    fp32 = "fp32"
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:  # fp32 convs run as TF32
        peaks["tf32"] = matmul_peak(device, torch.float32, tf32=True)
        fp32 = "tf32"
    tk_dtype = "bf16" if bf16 else fp32

    # what to measure: (kind, label, build, precision). Ablations flip one toolkit default each.
    vmap_default = device.type == "cuda"  # Teacher(vmap=None)
    plan: list[tuple[str, str, Callable[[], Any], str]] = []
    for kind in a.kinds:
        plan.append((kind, "toolkit", lambda k=kind: toolkit_run(s, k), tk_dtype))
        for w in a.workers:
            plan.append((kind, f"reference-w{w}", lambda k=kind, w=w: reference_run(s, k, w), fp32))
        if not a.ablations:
            continue
        if kind in ("kd", "nasty", "scm"):
            plan.append((kind, "toolkit/teacher-inference_mode",
                         lambda k=kind: toolkit_run(s, k, inference_mode=True), tk_dtype))
        if kind == "scm":
            other = "loop" if vmap_default else "vmap"
            plan.append((kind, f"toolkit/ensemble-{other}",
                         lambda: toolkit_run(s, "scm", vmap=not vmap_default), tk_dtype))
        if bf16 or channels_last:  # the old CPU default, fp32 NCHW
            plan.append((kind, "toolkit/fp32",
                         lambda k=kind: toolkit_run(s, k, bf16=False, channels_last=False), fp32))
        if not channels_last or bf16:
            plan.append((kind, "toolkit/fp32+channels_last",
                         lambda k=kind: toolkit_run(s, k, bf16=False, channels_last=True), fp32))
        if not bf16:
            plan.append((kind, "toolkit/bf16+channels_last",
                         lambda k=kind: toolkit_run(s, k, bf16=True, channels_last=True), "bf16"))
    if a.compile:
        for kind in a.kinds:
            plan.append((kind, "toolkit/compile", lambda k=kind: toolkit_run(s, k, compile_=True),
                         tk_dtype))

    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in range(a.repeats):
        for kind, label, build, dtype in plan:
            rec = measure(s, label, build, peaks, dtype)
            rec.update(kind=kind, repeat=r)
            runs.setdefault((kind, label), []).append(rec)
            print(f"  {kind:8s} {label:32s} {rec['images_per_s']:9.1f} img/s  "
                  f"MFU {100 * rec['mfu']:5.2f}%  peak {_fmt_bytes(rec['peak_mem_bytes'])}",
                  file=sys.stderr, flush=True)

    results = []
    for recs in runs.values():
        best = dict(recs[0])
        best["images_per_s"] = statistics.median(r["images_per_s"] for r in recs)
        best["step_time_s"] = statistics.median(r["step_time_s"] for r in recs)
        best["mfu"] = statistics.median(r["mfu"] for r in recs)
        best["peak_mem_bytes"] = max(r["peak_mem_bytes"] for r in recs)
        best["all_images_per_s"] = [r["images_per_s"] for r in recs]
        best.pop("repeat", None)
        results.append(best)
    by = {(r["kind"], r["path"]): r for r in results}

    ratios: dict[str, dict[str, float]] = {}
    for kind in a.kinds:
        tk = by[(kind, "toolkit")]
        row = {}
        for w in a.workers:
            ref = by[(kind, f"reference-w{w}")]
            row[f"throughput toolkit/reference-w{w}"] = tk["images_per_s"] / ref["images_per_s"]
            row[f"memory toolkit/reference-w{w}"] = tk["peak_mem_bytes"] / ref["peak_mem_bytes"]
        best_ref = max((by[(kind, f"reference-w{w}")] for w in a.workers),
                       key=lambda r: r["images_per_s"], default=None)
        for (k2, label), r in by.items():  # each ablation against the toolkit's default
            if k2 == kind and label.startswith("toolkit/"):
                name = label.removeprefix("toolkit/")
                row[f"throughput {name}/default"] = r["images_per_s"] / tk["images_per_s"]
                if best_ref is not None:
                    row[f"throughput {name}/best-reference"] = (r["images_per_s"]
                                                                / best_ref["images_per_s"])
        ratios[kind] = row

    pipes = data_paths(s)
    epochs = []
    for kind in (("vanilla", "nasty", "scm") if a.epoch_images else ()):
        _, it = toolkit_run(s, kind, n_images=a.epoch_images)
        for _ in range(a.warmup):
            next(it)
        steps = a.epoch_images // a.batch_size
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            next(it)
        sync(device)
        epochs.append({"kind": kind, "images": steps * a.batch_size, "epoch_s": time.perf_counter() - t0})

    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "device": str(device),
                    "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                    else platform.processor() or platform.machine()),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_avg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "toolkit_formats": {"bf16_autocast": bf16, "channels_last": channels_last,
                            "compute_path": ComputePath(bf16, channels_last).name,
                            "chosen_by": "undistill.precision (cached per machine in "
                                         f"{cpu_cache_file()})" if device.type == "cpu"
                            else "device default"},
        "peak_flops": peaks,
        "results": results,
        "ratios": ratios,
        "data_path": pipes,
        "epoch": epochs,
    }
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    return report


def print_table(report: dict[str, Any]) -> None:
    peaks = ", ".join(f"{k} {v / 1e9:,.1f} GFLOP/s" for k, v in report["peak_flops"].items())
    print(f"device {report['machine']['device']} ({report['machine']['device_name']}), "
          f"{report['machine']['torch_threads']} threads; matmul peak: {peaks}")
    print(f"{'step':8s} {'path':32s} {'img/s':>9s} {'GFLOP/step':>10s} {'MFU':>7s} {'peak mem':>10s}")
    for r in report["results"]:
        print(f"{r['kind']:8s} {r['path']:32s} {r['images_per_s']:9.1f} "
              f"{r['flops_per_step'] / 1e9:10.2f} {100 * r['mfu']:6.2f}% "
              f"{_fmt_bytes(r['peak_mem_bytes']):>10s}")
    print("\nratios (toolkit / reference):")
    for kind, row in report["ratios"].items():
        print(f"  {kind:8s} " + "  ".join(f"{k} {v:.2f}x" for k, v in row.items()))
    print("\ninput pipeline alone (img/s): "
          + ", ".join(f"{p['path']} {p['images_per_s']:,.0f}" for p in report["data_path"]))
    for e in report["epoch"]:
        print(f"one epoch, {e['kind']}: {e['epoch_s']:.1f} s for {e['images']} images")


if __name__ == "__main__":
    main()
