"""The images a thief may query: the victim's training split, or its own query data.

``thief.query_data`` names a registered dataset (``folder`` for any image tree, ``cifar10-jpeg``,
``fashion-mnist``, ...) read from ``thief.query_root``, or in-memory arrays registered from Python
(:func:`register_arrays`). Only its training images are used, never its labels; they are
converted to the victim's channels and size (area averaging down, bilinear up), once per process.
Its content fingerprint (``thief.query_fingerprint``, filled in at launch by
:func:`undistill.runs.bind_data`) is part of the run's identity; where it lives is not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from undistill.data.arrays import ARRAYS, ARRAYS_PREFIX, query_fingerprint, register_arrays

__all__ = ["ARRAYS", "convert", "query_fingerprint", "query_pool", "register_arrays"]

def convert(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """uint8 images in another format as the victim's: ``channels`` (grey <-> RGB) and ``size``."""
    from undistill.runs import _resized

    if images.shape[1] != channels:
        if channels == 1:
            images = images.float().mean(1, keepdim=True).round().to(torch.uint8)
        else:
            images = images.expand(-1, channels, -1, -1).contiguous()
    return _resized(images, size)


def query_pool(thief: Any, channels: int, size: int) -> torch.Tensor:
    """The thief's own query images as the victim's (uint8 ``[N, channels, size, size]``)."""
    from undistill.runs import get_dataset

    name = thief.query_data
    if name.startswith(ARRAYS_PREFIX):
        query_fingerprint(name, None)  # a clear error when not registered here
        images = ARRAYS[name]
    else:
        images = get_dataset(name, Path(thief.query_root) if thief.query_root else None
                             ).train_images
    return convert(images, channels, size)
