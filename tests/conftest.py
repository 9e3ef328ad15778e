"""Shared fixtures: tiny, fast, deterministic run configs on the embedded digits data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from undistill.config import Runtime, parse_config
from undistill.presets import teacher_config

torch.set_num_threads(1)  # CI has 2 cores; keep runs comparable and quick
# the same numeric path on every machine (the default is chosen per machine: undistill.precision);
# tests of the other paths ask for them explicitly
os.environ["UNDISTILL_COMPUTE_PATH"] = "fp32"


def tiny_teacher(epochs: int = 3, arch: str = "cnn", width: float = 0.25, **extra):
    d = teacher_config("digits", arch, width=width, epochs=epochs)
    d["optim"]["batch_size"] = 256
    d.update(extra)
    return parse_config(d)


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return Runtime(runs_dir=tmp_path / "runs", device="cpu", progress=False)
