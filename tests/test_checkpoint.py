from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from undistill.checkpoint import (
    CheckpointError,
    load_checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    save_checkpoint,
)


def test_roundtrip_with_metadata_inside_and_beside(tmp_path: Path) -> None:
    t = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2, 3])}
    save_checkpoint(tmp_path / "x.safetensors", t, {"epoch": 4, "run_id": "r"})
    got, meta = load_checkpoint(tmp_path / "x.safetensors")
    assert torch.equal(got["a"], t["a"]) and torch.equal(got["b"], t["b"])
    assert meta["epoch"] == 4 and meta["run_id"] == "r" and "code_version" in meta
    assert (tmp_path / "x.json").exists()


def test_interrupted_write_leaves_old_file_intact(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "x.safetensors"
    save_checkpoint(path, {"a": torch.zeros(3)}, {"epoch": 1})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("killed mid-rename")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"a": torch.ones(3)}, {"epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors"]


def test_missing_and_garbage_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 5)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(bad)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_optimizer_state_roundtrip(opt_name: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    make = (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)) if opt_name == "sgd" else (
        lambda p: torch.optim.Adam(p, lr=0.01))
    opt = make(model.parameters())
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
    tensors, rest = optimizer_to_flat(opt)
    opt2 = make(model.parameters())
    optimizer_from_flat(opt2, tensors, rest)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s1["state"]:
        for name, v in s1["state"][k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][k][name]))
