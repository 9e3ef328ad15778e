"""Datasets held whole as uint8 tensors, and the device-resident batch path that feeds training.

``load_dataset(name, root)`` looks the loader up in ``DATASETS``; a new dataset is one module with
a ``@DATASETS.register("name")`` loader plus one import line below.
"""

from __future__ import annotations

from pathlib import Path

from undistill.data import archive, cifar, digits, folder, idx  # noqa: F401  (register the loaders)
from undistill.data.augment import augment_batch, channel_stats, normalize
from undistill.data.base import DATASETS, AugmentSpec, DatasetError, ImageDataset
from undistill.data.loader import DeviceLoader, split_validation, subset_indices

__all__ = [
    "DATASETS",
    "AugmentSpec",
    "DatasetError",
    "DeviceLoader",
    "ImageDataset",
    "augment_batch",
    "channel_stats",
    "load_dataset",
    "normalize",
    "split_validation",
    "subset_indices",
]


def load_dataset(name: str, root: str | Path | None = None) -> ImageDataset:
    """Load dataset ``name`` from ``root`` (None: the loader's default location, if any)."""
    loader = DATASETS.get(name)
    return loader(Path(root).expanduser() if root is not None else None)
