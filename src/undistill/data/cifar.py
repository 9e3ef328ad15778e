"""CIFAR-10 and CIFAR-100 from the standard "python version" pickles, via a restricted unpickler.

The pickles were written by Python 2; they are opened with ``encoding="latin1"`` and keys may come
back as ``str`` (the originals) or ``bytes`` (files re-pickled from Python 3). Only the globals a
numpy array needs are resolved, so a tampered file cannot run code. Mean/std are the CIFAR-10
statistics for both datasets, as in the reference code (protocol.md).
"""

from __future__ import annotations

import codecs
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from undistill.data.base import DATASETS, AugmentSpec, DatasetError, ImageDataset
from undistill.data.fingerprint import FINGERPRINTS, fingerprint_files

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.247, 0.243, 0.261)
CIFAR_AUGMENT = AugmentSpec(crop_padding=4, flip=True)

# (module, name) -> object: everything a pickled numpy array (or numpy scalar) refers to.
SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 bytes look at protocol 2
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ``SAFE_GLOBALS``; any other global is a DatasetError."""

    def __init__(self, file: io.BufferedIOBase, path: Path, how_to_get: str) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path
        self.how_to_get = how_to_get

    def find_class(self, module: str, name: str) -> Any:
        try:
            return SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise DatasetError(
                f"{self.path}: refused to unpickle global {module}.{name} (only numpy arrays are "
                f"allowed; the file is not a genuine CIFAR batch): {self.how_to_get}"
            ) from None


def safe_load(path: Path, how_to_get: str) -> dict[str, Any]:
    """Unpickle one CIFAR file into a dict with ``str`` keys."""
    if not path.is_file():
        raise DatasetError(f"missing file {path}: {how_to_get}")
    try:
        with path.open("rb") as f:
            obj = SafeUnpickler(f, path, how_to_get).load()
    except DatasetError:
        raise
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ... all mean corrupt data
        raise DatasetError(
            f"{path}: corrupt or truncated pickle ({type(exc).__name__}: {exc}); {how_to_get}"
        ) from exc
    if not isinstance(obj, dict):
        found = type(obj).__name__
        raise DatasetError(f"{path}: expected a pickled dict, found {found}; {how_to_get}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def get_key(batch: dict[str, Any], key: str, path: Path, how_to_get: str) -> Any:
    if key not in batch:
        raise DatasetError(
            f"{path}: no {key!r} entry (found {sorted(batch)}); not a CIFAR python batch: "
            f"{how_to_get}"
        )
    return batch[key]


@dataclass(frozen=True)
class CifarSource:
    """File layout of one CIFAR variant."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    how_to_get: str


CIFAR10 = CifarSource(
    name="cifar10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
    how_to_get=(
        "download the CIFAR-10 python version (cifar-10-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html), extract it and pass --data-root DIR "
        "(the directory that contains cifar-10-batches-py)"
    ),
)
CIFAR100 = CifarSource(
    name="cifar100",
    folder="cifar-100-python",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
    how_to_get=(
        "download the CIFAR-100 python version (cifar-100-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html), extract it and pass --data-root DIR "
        "(the directory that contains cifar-100-python)"
    ),
)


def find_folder(root: Path | None, source: CifarSource) -> Path:
    """``root/<folder>`` or ``root`` itself when it already is that folder."""
    if root is None:
        raise DatasetError(f"{source.name} has no default location: {source.how_to_get}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{source.name} directory {root} does not exist: {source.how_to_get}")
    if (root / source.folder).is_dir():
        return root / source.folder
    if root.name == source.folder or (root / source.test_file).is_file():
        return root
    raise DatasetError(f"{root} does not contain {source.folder}/: {source.how_to_get}")


def read_batch(path: Path, source: CifarSource) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 3, 32, 32] and labels int64 [N] of one batch file, validated."""
    how = source.how_to_get
    batch = safe_load(path, how)
    data = get_key(batch, "data", path, how)
    labels = np.asarray(get_key(batch, source.label_key, path, how))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DatasetError(f"{path}: 'data' is {dtype} {shape}, expected uint8 N x 3072; {how}")
    if data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{path}: 'data' has shape {data.shape}, expected N x 3072 (3 x 32 x 32); {how}"
        )
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise DatasetError(
            f"{path}: {data.shape[0]} images but {source.label_key!r} has shape "
            f"{labels.shape}; {how}"
        )
    if not np.issubdtype(labels.dtype, np.integer) and labels.size:
        raise DatasetError(f"{path}: {source.label_key!r} are {labels.dtype}, not integers; {how}")
    if labels.size and (labels.min() < 0 or labels.max() >= source.num_classes):
        raise DatasetError(
            f"{path}: labels span {labels.min()}..{labels.max()}, outside "
            f"0..{source.num_classes - 1}; {how}"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_class_names(folder: Path, source: CifarSource) -> list[str]:
    path = folder / source.meta_file
    names = get_key(safe_load(path, source.how_to_get), source.names_key, path, source.how_to_get)
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    if len(names) != source.num_classes:
        raise DatasetError(
            f"{path}: {len(names)} class names, expected {source.num_classes}; {source.how_to_get}"
        )
    return names


def load_cifar(root: Path | None, source: CifarSource) -> ImageDataset:
    folder = find_folder(root, source)
    train = [read_batch(folder / f, source) for f in source.train_files]
    test_x, test_y = read_batch(folder / source.test_file, source)
    return ImageDataset(
        name=source.name,
        train_images=torch.from_numpy(np.concatenate([x for x, _ in train])),
        train_labels=torch.from_numpy(np.concatenate([y for _, y in train])),
        test_images=torch.from_numpy(np.ascontiguousarray(test_x)),
        test_labels=torch.from_numpy(test_y),
        classes=read_class_names(folder, source),
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        augment=CIFAR_AUGMENT,
    )


@DATASETS.register("cifar10")
def load_cifar10(root: Path | None = None) -> ImageDataset:
    """CIFAR-10: 50k/10k 32x32 RGB images in 10 classes."""
    return load_cifar(root, CIFAR10)


@DATASETS.register("cifar100")
def load_cifar100(root: Path | None = None) -> ImageDataset:
    """CIFAR-100 with its 100 fine labels."""
    return load_cifar(root, CIFAR100)


def cifar_fingerprint(root: Path | None, source: CifarSource) -> str:
    """The batch and meta files the loader reads (CIFAR has no default location)."""
    folder = find_folder(root, source)
    files = [folder / f for f in (*source.train_files, source.test_file, source.meta_file)]
    for f in files:
        if not f.is_file():
            raise DatasetError(f"missing file {f}: {source.how_to_get}")
    return fingerprint_files(folder, files)


@FINGERPRINTS.register("cifar10")
def cifar10_fingerprint(root: Path | None = None) -> str:
    return cifar_fingerprint(root, CIFAR10)


@FINGERPRINTS.register("cifar100")
def cifar100_fingerprint(root: Path | None = None) -> str:
    return cifar_fingerprint(root, CIFAR100)
