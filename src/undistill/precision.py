"""The numeric path of a run's training steps: fp32 or bf16 autocast, NCHW or channels_last.

On CUDA the path is bf16 autocast with channels_last. On a CPU it is chosen once per machine:

* with native bf16 instructions (``avx512_bf16`` or ``amx_bf16`` among the CPU's flags) it is
  bf16 autocast with channels_last (measured 1.9x to 2.1x the fp32 step on such a CPU,
  ``docs/performance.md``). The flags decide, not a probe: on a busy machine a probe of a few
  steps was seen to rank bf16 last on the very CPU where the benchmark measures it 2x faster;
* without them PyTorch emulates bf16 and a bf16 step is much slower than fp32 (seen on an
  AVX2-only EPYC of this pool), so bf16 is never taken; a short probe (a few training steps of a
  small convolutional net in fp32 NCHW and fp32 channels_last, interleaved, best of three, about
  two seconds) decides between the two, and channels_last is taken only when it is at least
  :data:`MIN_GAIN` faster, so a noisy probe falls back to fp32.

The choice is cached in ``$XDG_CACHE_HOME/undistill/compute-path.json`` (``~/.cache`` by
default), keyed by the CPU model, its flags and the torch version, so the probe runs once per
machine. ``UNDISTILL_COMPUTE_PATH`` (one of :data:`PATHS`) forces a path without probing; an
explicit ``Runtime.precision`` or ``Runtime.channels_last`` overrides its part of the choice.

The path is a runtime choice, outside a run's identity: a run found finished in a runs directory
may have been trained on another path (each run's ``metrics.jsonl`` and ``result.json`` record
which one ran, as ``compute``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from undistill.config import Runtime
from undistill.exceptions import UndistillError

#: The CPU candidates, simplest first.
PATHS = ("fp32", "fp32+channels_last", "bf16+channels_last")
#: A path other than fp32 must be at least this much faster in the probe (1.10 = 10 %).
MIN_GAIN = 1.10
ENV = "UNDISTILL_COMPUTE_PATH"
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


class PrecisionError(UndistillError, ValueError):
    """An unknown compute path (e.g. in ``UNDISTILL_COMPUTE_PATH``)."""


@dataclass(frozen=True)
class ComputePath:
    bf16: bool
    channels_last: bool

    @property
    def name(self) -> str:
        return ("bf16" if self.bf16 else "fp32") + ("+channels_last" if self.channels_last else "")

    @classmethod
    def parse(cls, name: str) -> ComputePath:
        known = {"fp32", "fp32+channels_last", "bf16", "bf16+channels_last"}
        if name not in known:
            raise PrecisionError(f"{ENV}: unknown compute path {name!r}; known: {', '.join(sorted(known))}")
        return cls(bf16=name.startswith("bf16"), channels_last=name.endswith("+channels_last"))


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_native_bf16(flags: set[str]) -> bool:
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def candidates(flags: set[str]) -> list[str]:
    """The CPU paths worth probing on a CPU with these flags."""
    return [p for p in PATHS if not p.startswith("bf16") or has_native_bf16(flags)]


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "undistill" / "compute-path.json"


def machine_key(flags: set[str]) -> str:
    blob = json.dumps([cpu_model(), sorted(flags), torch.__version__, torch.get_num_threads()])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _ProbeNet(nn.Module):
    """A small ResNet-like stack: the convolutions, BatchNorm and ReLU a zoo model spends its time in."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))


def probe(paths: list[str], steps: int = 2, repeats: int = 3, batch: int = 16) -> dict[str, float]:
    """Seconds per training step of :class:`_ProbeNet` in each path (best of ``repeats``, interleaved)."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    best = {p: float("inf") for p in paths}
    nets = {}
    for p in paths:
        cp = ComputePath.parse(p)
        net = _ProbeNet()
        fmt = torch.channels_last if cp.channels_last else torch.contiguous_format
        net = net.to(memory_format=fmt)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        nets[p] = (cp, net, opt, x.contiguous(memory_format=fmt))
    for r in range(repeats + 1):  # the first round warms up (oneDNN primitive creation)
        for p in paths:
            cp, net, opt, xp = nets[p]
            t0 = time.perf_counter()
            for _ in range(steps):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cp.bf16):
                    loss = nn.functional.cross_entropy(net(xp).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if r:
                best[p] = min(best[p], (time.perf_counter() - t0) / steps)
    return best


def pick(times: dict[str, float]) -> str:
    """The fastest path, but fp32 unless another beats it by :data:`MIN_GAIN`."""
    fastest = min(times, key=lambda p: times[p])
    if "fp32" in times and times["fp32"] < MIN_GAIN * times[fastest]:
        return "fp32"
    return fastest


def cpu_path(refresh: bool = False) -> ComputePath:
    """This machine's CPU path: forced by the environment, read from the cache, or probed once."""
    forced = os.environ.get(ENV)
    if forced:
        return ComputePath.parse(forced)
    flags = cpu_flags()
    key = machine_key(flags)
    path = cache_file()
    if not refresh:
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key and cached.get("path") in PATHS:
                return ComputePath.parse(cached["path"])
        except (OSError, ValueError):
            pass
    if has_native_bf16(flags):
        chosen, how, times = "bf16+channels_last", "cpu flags (native bf16)", {}
    else:
        times = probe(candidates(flags))
        chosen, how = pick(times), "probe (no native bf16)"
    doc = {"key": key, "path": chosen, "how": how, "cpu": cpu_model(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "native_bf16": has_native_bf16(flags),
           "probe_s_per_step": times, "min_gain": MIN_GAIN}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: probe again next time
    return ComputePath.parse(chosen)


def resolve(runtime: Runtime, device: torch.device) -> ComputePath:
    """The path a run takes on ``device``: the device's default, then the runtime's explicit choices."""
    if device.type == "cuda":
        default = ComputePath(bf16=True, channels_last=True)
    elif device.type == "cpu" and (runtime.precision == "auto" or runtime.channels_last is None):
        default = cpu_path()
    else:
        default = ComputePath(bf16=False, channels_last=False)
    bf16 = default.bf16 if runtime.precision == "auto" else runtime.precision == "bf16"
    channels_last = default.channels_last if runtime.channels_last is None else runtime.channels_last
    return ComputePath(bf16=bf16, channels_last=channels_last)
