"""MNIST and Fashion-MNIST from their IDX files (plain or ``.gz``), parsed and checked with numpy.

IDX layout: two zero bytes, a dtype code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension, then the data. Mean/std are the usual published constants
(MNIST 0.1307/0.3081, Fashion-MNIST 0.2860/0.3530), which are the training-set statistics.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from undistill.data.base import DATASETS, AugmentSpec, DatasetError, ImageDataset
from undistill.data.fingerprint import FINGERPRINTS, fingerprint_files, same_directory

IDX_DTYPES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@dataclass(frozen=True)
class IdxSource:
    """Where an IDX dataset comes from and how to describe it."""

    name: str
    default_root: Path | None
    how_to_get: str
    classes: list[str]
    mean: float
    std: float
    augment: AugmentSpec


MNIST = IdxSource(
    name="mnist",
    default_root=None,
    how_to_get=(
        "download the four MNIST IDX files (train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) "
        "into one directory and pass --data-root DIR"
    ),
    classes=[str(d) for d in range(10)],
    mean=0.1307,
    std=0.3081,
    augment=AugmentSpec(crop_padding=2, flip=False),
)
FASHION_MNIST = IdxSource(
    name="fashion-mnist",
    default_root=Path("/usr/share/datasets/fashion-mnist"),
    how_to_get=(
        "run `apt-get install dataset-fashion-mnist` (installs /usr/share/datasets/fashion-mnist) "
        "or download the four Fashion-MNIST IDX files into one directory and pass --data-root DIR"
    ),
    classes=FASHION_CLASSES,
    mean=0.2860,
    std=0.3530,
    augment=AugmentSpec(crop_padding=2, flip=True),
)


def find_idx_file(directory: Path, stem: str, how_to_get: str) -> Path:
    """``directory/stem`` or ``directory/stem.gz``, whichever exists (plain first)."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"missing file {directory / stem}[.gz]: {how_to_get}")


def read_bytes(path: Path, how_to_get: str) -> bytes:
    """The file's contents, gunzipped when it ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        kind = "corrupt or truncated gzip file" if path.suffix == ".gz" else "unreadable file"
        raise DatasetError(f"{path}: {kind} ({exc}); {how_to_get}") from exc


def parse_idx(raw: bytes, path: Path, ndim: int, how_to_get: str) -> np.ndarray:
    """Check an IDX header against the bytes that follow it; returns the uint8 array."""
    fix = f"; re-download it: {how_to_get}"
    if len(raw) < 4:
        raise DatasetError(f"{path}: truncated, only {len(raw)} bytes, no IDX header{fix}")
    magic = int.from_bytes(raw[:4], "big")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DatasetError(f"{path}: bad magic number 0x{magic:08x}, not an IDX file{fix}")
    if raw[2] != 0x08:
        raise DatasetError(
            f"{path}: IDX data type is {IDX_DTYPES[raw[2]]} (code 0x{raw[2]:02x}), "
            f"expected unsigned byte (0x08){fix}"
        )
    if raw[3] != ndim:
        raise DatasetError(
            f"{path}: IDX file has {raw[3]} dimensions (magic 0x{magic:08x}), expected {ndim}{fix}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated inside the IDX header ({len(raw)} bytes){fix}")
    dims = [int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)]
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DatasetError(
            f"{path}: {what}: header declares shape {tuple(dims)} = {expected} bytes "
            f"but the file holds {len(raw)}{fix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_split(
    directory: Path, prefix: str, source: IdxSource
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 [N, 1, H, W] and labels int64 [N] of one split (``train`` or ``t10k``)."""
    how = source.how_to_get
    image_path = find_idx_file(directory, f"{prefix}-images-idx3-ubyte", how)
    label_path = find_idx_file(directory, f"{prefix}-labels-idx1-ubyte", how)
    images = parse_idx(read_bytes(image_path, how), image_path, 3, how)
    labels = parse_idx(read_bytes(label_path, how), label_path, 1, how)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{image_path} holds {images.shape[0]} images but {label_path} holds "
            f"{labels.shape[0]} labels; re-download them: {how}"
        )
    if labels.size and int(labels.max()) >= len(source.classes):
        raise DatasetError(
            f"{label_path}: label {int(labels.max())} out of range for {len(source.classes)} "
            f"classes; re-download it: {how}"
        )
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def idx_directory(root: Path | None, source: IdxSource) -> Path:
    """``root``, or the source's default directory; it must exist."""
    directory = root if root is not None else source.default_root
    if directory is None:
        raise DatasetError(f"{source.name} has no default location: {source.how_to_get}")
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(
            f"{source.name} directory {directory} does not exist: {source.how_to_get}"
        )
    return directory


def idx_fingerprint(root: Path | None, source: IdxSource) -> str:
    """"" at the default location (shipped with the package or the OS), else the four files'."""
    directory = idx_directory(root, source)
    if root is None or same_directory(directory, source.default_root):
        return ""
    how = source.how_to_get
    files = [find_idx_file(directory, f"{prefix}-{kind}-idx{n}-ubyte", how)
             for prefix in ("train", "t10k") for kind, n in (("images", 3), ("labels", 1))]
    return fingerprint_files(directory, files)


def load_idx_dataset(root: Path | None, source: IdxSource) -> ImageDataset:
    """Read the four IDX files of ``source`` from ``root`` (or its default directory)."""
    directory = idx_directory(root, source)
    train_images, train_labels = read_split(directory, "train", source)
    test_images, test_labels = read_split(directory, "t10k", source)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DatasetError(
            f"{directory}: train images are {tuple(train_images.shape[2:])} but test images are "
            f"{tuple(test_images.shape[2:])}; {source.how_to_get}"
        )
    return ImageDataset(
        name=source.name,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        classes=list(source.classes),
        mean=(source.mean,),
        std=(source.std,),
        augment=source.augment,
    )


@DATASETS.register("mnist")
def load_mnist(root: Path | None = None) -> ImageDataset:
    """MNIST from IDX files in ``root`` (no default location)."""
    return load_idx_dataset(root, MNIST)


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(root: Path | None = None) -> ImageDataset:
    """Fashion-MNIST from IDX files in ``root`` (default: Debian's dataset-fashion-mnist)."""
    return load_idx_dataset(root, FASHION_MNIST)


FASHION_MNIST_MINI = IdxSource(
    name="fashion-mnist-mini",
    default_root=Path(__file__).resolve().parent / "embedded" / "fashion-mnist-mini",
    how_to_get="it ships inside the undistill package; reinstall undistill "
               "(or rebuild it with scripts/make_embedded.py)",
    classes=FASHION_CLASSES,
    mean=0.2860,
    std=0.3530,
    augment=AugmentSpec(crop_padding=2, flip=True),
)


@DATASETS.register("fashion-mnist-mini")
def load_fashion_mnist_mini(root: Path | None = None) -> ImageDataset:
    """Embedded class-balanced Fashion-MNIST subset: 10,000 train / 4,000 test images (MIT)."""
    return load_idx_dataset(root, FASHION_MNIST_MINI)


@FINGERPRINTS.register("mnist")
def mnist_fingerprint(root: Path | None = None) -> str:
    return idx_fingerprint(root, MNIST)


@FINGERPRINTS.register("fashion-mnist")
def fashion_mnist_fingerprint(root: Path | None = None) -> str:
    return idx_fingerprint(root, FASHION_MNIST)


@FINGERPRINTS.register("fashion-mnist-mini")
def fashion_mnist_mini_fingerprint(root: Path | None = None) -> str:
    return idx_fingerprint(root, FASHION_MNIST_MINI)
