"""A rough cost estimate for planned runs: multiply-accumulates x images x epochs / machine speed.

Good to a factor of about two on a CPU (convolution efficiency varies with shapes); it is meant
to tell minutes from days before a suite starts, not to benchmark.
"""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path

import torch
from torch import nn

from undistill.config import RunConfig
from undistill.data import DatasetError
from undistill.models import build_model
from undistill.runs import get_dataset

#: achieved speed of whole training runs (steps, evaluation, bookkeeping) relative to the fp32
#: matmul probe below. Fitted on the two suites measured on the 2-core CPU: `demo` (estimate
#: 370 s against 533 s of training) and `fashion-mnist` (1,297 s against 1,247 s) -- small CNNs
#: and ShuffleNets; a ResNet-18 step alone reaches about 0.6 (docs/performance.md).
CONV_EFFICIENCY = 0.3


@cache
def model_macs(arch: str, width: float, channels: int, size: int, classes: int) -> int:
    """Multiply-accumulates of one forward pass of one image (convolutions and linear layers)."""
    model = build_model(arch, classes, channels, width, size).eval()
    total = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += out.numel() * k
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model(torch.zeros(1, channels, size, size))
    for h in handles:
        h.remove()
    return total


@cache
def machine_flops() -> float:
    """Measured float32 matmul speed of this machine (FLOP/s)."""
    a = torch.randn(1024, 1024)
    a @ a
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.3:
        a @ a
        n += 1
    return 2 * 1024**3 * n / (time.perf_counter() - t0)


#: (train images, test images, channels, size, classes) of the paper's datasets, so a plan can be
#: costed on a machine that does not hold them
KNOWN_SIZES = {"cifar10": (50000, 10000, 3, 32, 10), "cifar10-jpeg": (50000, 10000, 3, 32, 10),
               "cifar100": (50000, 10000, 3, 32, 100),
               "tinyimagenet": (100000, 10000, 3, 64, 200)}


def _sizes(cfg: RunConfig, data_root: Path | None) -> tuple[int, int, int, int, int]:
    try:
        ds = get_dataset(cfg.data.name, data_root, cfg.data.resize)
    except DatasetError:
        if cfg.data.name not in KNOWN_SIZES:
            raise
        n, m, c, size, k = KNOWN_SIZES[cfg.data.name]
        return n, m, c, cfg.data.resize or size, k
    return (ds.train_labels.numel(), ds.test_labels.numel(), ds.channels, ds.image_size,
            ds.num_classes)


def estimate_seconds(cfg: RunConfig, data_root: Path | None = None) -> float:
    """Rough training time of a run on this machine: 3 passes for the student, 1 per teacher."""
    n_train, n_eval, channels, size, classes = _sizes(cfg, data_root)
    shape = (channels, size, classes)

    def macs(c: RunConfig) -> int:
        return model_macs(c.model.arch, c.model.width, shape[0], shape[1], shape[2])

    per_image = 3 * macs(cfg) + sum(macs(t) for t in cfg.run_teachers)
    work = 2 * cfg.optim.epochs * (n_train * cfg.data.fraction * per_image + n_eval * macs(cfg))
    return work / (machine_flops() * CONV_EFFICIENCY)
