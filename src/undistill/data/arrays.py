"""Query data registered from Python (a thief's own images as arrays), by content digest.

:func:`register_arrays` keeps uint8 images under the name ``arrays-<digest>``, which a thief's
``query_data`` may name (:mod:`undistill.thief_pool`); :func:`query_fingerprint` is the content
fingerprint of any query data (arrays or a registered dataset under a root).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from undistill.data.base import DatasetError

#: in-memory query data registered from Python: name -> uint8 images [N, C, H, W]
ARRAYS: dict[str, torch.Tensor] = {}
ARRAYS_PREFIX = "arrays-"


def register_arrays(images: Any) -> str:
    """Register uint8 images (``[N, C, H, W]`` or ``[N, H, W, C]`` with C in 1, 3; numpy or torch)
    as query data; returns the name to give as ``thief.query_data`` (``arrays-<digest>``)."""
    t = torch.as_tensor(np.asarray(images))
    if t.dtype != torch.uint8 or t.dim() != 4:
        raise DatasetError(f"query data: uint8 images [N, C, H, W] expected, got {t.dtype} "
                          f"{tuple(t.shape)}")
    if t.shape[1] not in (1, 3) and t.shape[-1] in (1, 3):
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] not in (1, 3) or t.shape[0] < 1:
        raise DatasetError(f"query data: 1 or 3 channels and at least one image, got "
                          f"{tuple(t.shape)}")
    t = t.contiguous()
    name = ARRAYS_PREFIX + hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]
    ARRAYS[name] = t
    return name


def query_fingerprint(name: str, root: str | None) -> str:
    """The content fingerprint of query data (16 hex digits, or empty for embedded data)."""
    if name.startswith(ARRAYS_PREFIX):
        if name not in ARRAYS:
            raise DatasetError(f"thief.query_data: {name!r} was registered in another process; "
                              f"register the arrays again (undistill.thief_pool.register_arrays)")
        return name[len(ARRAYS_PREFIX):]
    from undistill.data import dataset_fingerprint

    return dataset_fingerprint(name, Path(root) if root else None)
