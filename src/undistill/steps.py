"""One optimisation step and one pass over an evaluation split, in a run's compute path.

Nothing here waits for the device except :func:`evaluate`, which reads its sums once at the end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from undistill.config import Runtime
from undistill.data import DeviceLoader
from undistill.precision import resolve as resolve_compute_path

EVAL_BATCH = 512


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


def eval_sums(predict: Any, loader: DeviceLoader, device: torch.device, bf16: bool
              ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(correct, summed cross-entropy, count) over the loader's split, the sums left on the device."""
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
    correct, loss_sum, total = eval_sums(predict, loader, device, bf16)
    return 100.0 * correct.item() / max(total, 1), loss_sum.item() / max(total, 1)
