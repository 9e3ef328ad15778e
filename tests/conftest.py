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


def digits_torchscript(path: Path) -> Path:
    """A tiny TorchScript teacher for the digits data (8x8 grey, 10 classes), saved at ``path``."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.trace(m, torch.randn(2, 1, 8, 8)), path)
    return path


class FailEvery:
    """ASGI middleware: every ``k``-th inference request gets 503 before reaching the model."""

    def __init__(self, app, k: int) -> None:
        self.app, self.k, self.n = app, k, 0

    async def __call__(self, scope, receive, send):
        from starlette.responses import PlainTextResponse

        if scope["type"] == "http" and scope["path"].endswith("/infer"):
            self.n += 1
            if self.n % self.k == 0:
                await PlainTextResponse("try again", status_code=503)(scope, receive, send)
                return
        await self.app(scope, receive, send)
