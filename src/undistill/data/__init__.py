"""Datasets held whole as uint8 tensors, and the device-resident batch path that feeds training.

``load_dataset(name, root)`` looks the loader up in ``DATASETS``; a new dataset is one module with
a ``@DATASETS.register("name")`` loader plus one import line below.

``dataset_fingerprint(name, root)`` is the content fingerprint that goes into the id of every run
reading that data (``""`` for data shipped at the source's default location). Each source registers
a ``@FINGERPRINTS.register("name")`` function next to its loader; see
:mod:`undistill.data.fingerprint` for the rule and an example.
"""

from __future__ import annotations

from pathlib import Path

from undistill.data import archive, cifar, digits, folder, idx  # noqa: F401  (register the loaders)
from undistill.data.augment import augment_batch, channel_stats, normalize
from undistill.data.base import DATASETS, AugmentSpec, DatasetError, ImageDataset
from undistill.data.fingerprint import FINGERPRINTS, fingerprint_files, fingerprint_tree
from undistill.data.loader import DeviceLoader, split_validation, subset_indices

__all__ = [
    "DATASETS",
    "FINGERPRINTS",
    "AugmentSpec",
    "DatasetError",
    "DeviceLoader",
    "ImageDataset",
    "augment_batch",
    "channel_stats",
    "dataset_fingerprint",
    "fingerprint_files",
    "fingerprint_tree",
    "load_dataset",
    "normalize",
    "split_validation",
    "subset_indices",
]


def check_name(name: str) -> str:
    """``name`` if it is a dataset; else a DatasetError listing the known ones."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS.names())}")
    return name


def load_dataset(name: str, root: str | Path | None = None) -> ImageDataset:
    """Load dataset ``name`` from ``root`` (None: the loader's default location, if any)."""
    loader = DATASETS.get(check_name(name))
    return loader(Path(root).expanduser() if root is not None else None)


def dataset_fingerprint(name: str, root: str | Path | None = None) -> str:
    """The content fingerprint of dataset ``name`` read from ``root`` (None: its default location).

    ``""`` for data at the source's default location; otherwise 16 hex digits that change when the
    files change (see :mod:`undistill.data.fingerprint`). Missing data is a DatasetError.
    """
    path = Path(root).expanduser() if root is not None else None
    if name in FINGERPRINTS:
        return FINGERPRINTS.get(name)(path)
    check_name(name)  # an unknown name fails here, as it would when loading
    return fingerprint_tree(path) if path is not None else ""
