"""Which torch device a run uses: ``auto`` or a device this machine has, checked before training."""

from __future__ import annotations

import torch

from undistill.config import ConfigError

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
