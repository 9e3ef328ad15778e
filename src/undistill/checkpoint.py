"""Checkpoints: safetensors weights with their metadata inside, a JSON twin, atomic writes.

The safetensors file is self-describing (its metadata holds the same JSON as the sidecar), so a
reader never depends on the two files having been replaced together. Every file is written to a
temporary name in the same directory, flushed to disk, then renamed over the final name: a reader
sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors.torch import safe_open as _safe_open

from undistill.exceptions import UndistillError

META_KEY = "undistill"


class CheckpointError(UndistillError, RuntimeError):
    """A checkpoint that is missing, unreadable or of another run."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write ``path`` (.safetensors) and its ``.json`` twin atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**metadata, "code_version": code_version()}
    blob = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(blob, tmp, metadata={META_KEY: json.dumps(meta, sort_keys=True)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except SafetensorError as e:  # e.g. a full disk, reported by the Rust writer
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {e}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_json(path.with_suffix(".json"), meta)


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        with _safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file without undistill metadata")
    return json.loads(raw)


def load_checkpoint(path: Path, device: str | torch.device = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    return tensors, meta


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in state.items()}


def unprefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


def optimizer_to_flat(opt: torch.optim.Optimizer, prefix: str = "optim."
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state into tensors (for safetensors) and JSON-able rest.

    Tensors are named ``{prefix}{param index}.{state name}``; the engine's main optimizer uses
    ``optim.``, a method's extra optimizer ``optim.<name>.`` (names are never all digits, so the
    two never collide).
    """
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                        rest: dict[str, Any], prefix: str = "optim.") -> None:
    """Restore what :func:`optimizer_to_flat` split; reads only ``{prefix}<digits>.<name>`` keys."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix):
            idx, sep, name = key[len(prefix):].partition(".")
            if sep and idx.isdigit():  # e.g. "optim.generator.0.exp_avg" is not the main one's
                state.setdefault(int(idx), {})[name] = v
    for idx, sc in rest.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


@cache
def code_version() -> str:
    """Package version plus the git commit of the source tree when there is one."""
    from undistill.version import __version__ as version
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5, check=False)
        if out.returncode == 0 and out.stdout.strip():
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=here, capture_output=True, text=True, timeout=5,
                                   check=False).stdout.strip()
            return f"{version}+g{out.stdout.strip()}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        pass
    return version
