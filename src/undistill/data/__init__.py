"""Datasets held whole as uint8 tensors, and the device-resident batch path that feeds training.

``load_dataset(name, root)`` looks the loader up in ``DATASETS``; a new dataset is one module with
a ``@DATASETS.register("name")`` loader plus one import line below.

``dataset_fingerprint(name, root)`` is the content fingerprint that goes into the id of every run
reading that data (``""`` for data shipped at the source's default location). Each source registers
a ``@FINGERPRINTS.register("name")`` function next to its loader; see
:mod:`undistill.data.fingerprint` for the rule and an example.

``num_classes(name)`` is a dataset's class count known without loading it (``CLASS_COUNTS``, from
the sources' own declarations), so that configs are checked when they are read; a dataset whose
classes are read from its files (``folder``, ``cifar10-jpeg``) has none until it is loaded.
"""

from __future__ import annotations

from pathlib import Path

from undistill.data import archive, cifar, digits, folder, idx  # noqa: F401  (register the loaders)
from undistill.data.augment import augment_batch, channel_stats, normalize
from undistill.data.base import DATASETS, AugmentSpec, DatasetError, ImageDataset
from undistill.data.fingerprint import FINGERPRINTS, fingerprint_files, fingerprint_tree
from undistill.data.loader import DeviceLoader, split_validation, subset_indices

__all__ = [
    "CLASS_COUNTS",
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
    "num_classes",
    "split_validation",
    "subset_indices",
]

#: Class counts of the datasets whose loader fixes them, known without loading any image.
CLASS_COUNTS: dict[str, int] = {
    "digits": 10,  # scikit-learn's digits 0..9
    **{s.name: len(s.classes) for s in (idx.MNIST, idx.FASHION_MNIST, idx.FASHION_MNIST_MINI)},
    **{s.name: s.num_classes for s in (cifar.CIFAR10, cifar.CIFAR100)},
    folder.TINY_IMAGENET.name: 200,  # Tiny-ImageNet-200
}


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


def num_classes(name: str) -> int | None:
    """The class count of dataset ``name`` known without loading it (:data:`CLASS_COUNTS`); None
    for a dataset that reads its classes from its files (``folder``, ``cifar10-jpeg``). An unknown
    name is a DatasetError."""
    return CLASS_COUNTS.get(check_name(name))
