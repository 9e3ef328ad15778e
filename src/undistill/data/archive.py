"""CIFAR-10 as JPEG class folders, read from a ``.tar.gz`` archive or its unpacked folder.

``--data-root`` may name the archive (``cifar10-jpeg.tar.gz``: ``train/<class>/*.jpg`` and
``test/<class>/*.jpg``), a folder holding it, or the unpacked folder. The first load decodes every
image once into a uint8 tensor file in the cache directory (``$UNDISTILL_CACHE``, default
``~/.cache/undistill``; never the repository), keyed by a fingerprint of the source; later loads
read that file in about a second. The cache file is written atomically, so a killed decode never
leaves a partial cache behind. Bad archives (truncated, not gzip, a non-image member, an empty
class, mismatched test classes) fail with an error naming the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from undistill.data.base import DATASETS, DatasetError, ImageDataset
from undistill.data.cifar import CIFAR_AUGMENT, CIFAR_MEAN, CIFAR_STD
from undistill.data.fingerprint import FINGERPRINTS, fingerprint_files, fingerprint_tree
from undistill.data.folder import IMAGE_SUFFIXES, FolderStyle, load_folder

ARCHIVE_NAME = "cifar10-jpeg.tar.gz"
HOW_TO_GET = (
    f"pass --data-root PATH where PATH is {ARCHIVE_NAME} (train/<class>/*.jpg and test/<class>/*.jpg, "
    "e.g. ../shared/data/cifar10-jpeg.tar.gz), a folder holding it, or the unpacked folder"
)
CACHE_FORMAT = 1  # bump when the cached tensors' layout changes


def cache_dir() -> Path:
    """Where decoded datasets are kept: ``$UNDISTILL_CACHE`` or ``~/.cache/undistill``."""
    env = os.environ.get("UNDISTILL_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "undistill"
    return base / "datasets"


@dataclass(frozen=True)
class Source:
    """Where the images are: an archive file or an unpacked folder, with a content fingerprint."""

    path: Path
    is_archive: bool

    def fingerprint(self) -> str:
        """The cache key: sha256 of the archive's bytes (19 MB: a few hundredths of a second); for an
        unpacked folder, :func:`fingerprint_tree` of its splits (the run-id fingerprint's rule)."""
        if not self.is_archive:
            tree = fingerprint_tree(self.path, ("train", "test"))
            return hashlib.sha256(f"v{CACHE_FORMAT}\0{tree}".encode()).hexdigest()[:20]
        h = hashlib.sha256(f"v{CACHE_FORMAT}".encode())
        with open(self.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()[:20]


def find_source(root: Path | None) -> Source:
    if root is None:
        raise DatasetError(f"cifar10-jpeg has no default location: {HOW_TO_GET}")
    root = Path(root).expanduser()
    if root.is_file():
        return Source(root, True)
    if root.is_dir():
        if (root / "train").is_dir():
            return Source(root, False)
        if (root / ARCHIVE_NAME).is_file():
            return Source(root / ARCHIVE_NAME, True)
        raise DatasetError(f"{root} holds neither train/ and test/ folders nor {ARCHIVE_NAME}; {HOW_TO_GET}")
    raise DatasetError(f"cifar10-jpeg: {root} does not exist; {HOW_TO_GET}")


def _decode(data: bytes, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:
        raise DatasetError(f"{name}: cannot decode image ({exc}); {HOW_TO_GET}") from exc


def read_archive(path: Path) -> dict[str, dict[str, list[np.ndarray]]]:
    """split -> class -> decoded images (in member-name order), streaming the archive once."""
    found: dict[str, dict[str, list[tuple[str, np.ndarray]]]] = {"train": {}, "test": {}}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                parts = parts[1:] if parts and parts[0] == "." else parts
                if len(parts) >= 2 and parts[0] not in found and parts[1] in found:
                    parts = parts[1:]  # one top-level folder around train/ and test/
                if not parts or parts[0] not in found:
                    continue  # README and the like beside the splits
                split = found[parts[0]]
                if member.isdir():
                    if len(parts) == 2:
                        split.setdefault(parts[1], [])
                    continue
                if len(parts) != 3 or not member.isfile():
                    raise DatasetError(f"{path}: unexpected member {member.name!r} (want "
                                       f"<split>/<class>/<image>); {HOW_TO_GET}")
                if PurePosixPath(parts[2]).suffix.lower() not in IMAGE_SUFFIXES:
                    raise DatasetError(f"{path}: member {member.name!r} is not an image "
                                       f"({', '.join(sorted(IMAGE_SUFFIXES))}); {HOW_TO_GET}")
                f = tar.extractfile(member)
                assert f is not None
                split.setdefault(parts[1], []).append((parts[2], _decode(f.read(), f"{path}:{member.name}")))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DatasetError(f"{path}: not a readable .tar.gz archive ({exc}: truncated or not gzip?); "
                           f"{HOW_TO_GET}") from exc
    return {s: {c: [im for _, im in sorted(items, key=lambda t: t[0])] for c, items in classes.items()}
            for s, classes in found.items()}


def _stack(split: dict[str, list[np.ndarray]], classes: list[str], where: str) -> tuple[torch.Tensor,
                                                                                       torch.Tensor]:
    images, labels = [], []
    for i, c in enumerate(classes):
        ims = split.get(c, [])
        if not ims:
            raise DatasetError(f"{where}/{c}: class folder has no images; {HOW_TO_GET}")
        images.extend(ims)
        labels.extend([i] * len(ims))
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DatasetError(f"{where}: images of several sizes {sorted(shapes)}; all must share one size")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.int64)


def decode_archive(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    splits = read_archive(path)
    classes = sorted(splits["train"])
    if not classes:
        raise DatasetError(f"{path}: no train/<class>/ folders; {HOW_TO_GET}")
    extra = sorted(set(splits["test"]) - set(classes))
    if extra:
        raise DatasetError(f"{path}: test classes {extra} are not among the training classes {classes}")
    train_x, train_y = _stack(splits["train"], classes, f"{path}:train")
    test_x, test_y = _stack(splits["test"], classes, f"{path}:test")
    return {"train_images": train_x, "train_labels": train_y, "test_images": test_x,
            "test_labels": test_y}, classes


JPEG_FOLDER = FolderStyle(name="cifar10-jpeg", how_to_get=HOW_TO_GET, mean=CIFAR_MEAN, std=CIFAR_STD,
                          augment=CIFAR_AUGMENT)


def _write_atomic(tensors: dict[str, torch.Tensor], classes: list[str], dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"classes": "\n".join(classes)})
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _log(msg: str) -> None:
    print(f"[undistill] {msg}", file=sys.stderr, flush=True)


@DATASETS.register("cifar10-jpeg")
def load_cifar10_jpeg(root: Path | None = None) -> ImageDataset:
    """CIFAR-10 from JPEG class folders (archive or unpacked), decoded once and cached."""
    source = find_source(root)
    cached = cache_dir() / f"cifar10-jpeg-{source.fingerprint()}.safetensors"
    if cached.exists():
        from safetensors import safe_open

        with safe_open(str(cached), framework="pt") as f:
            classes = (f.metadata() or {}).get("classes", "").split("\n")
        tensors = load_file(str(cached))
    else:
        _log(f"decoding {source.path} once (about 10 s for CIFAR-10); cached as {cached}")
        if source.is_archive:
            tensors, classes = decode_archive(source.path)
        else:
            ds = load_folder(source.path, JPEG_FOLDER)
            tensors = {"train_images": ds.train_images.contiguous(), "train_labels": ds.train_labels,
                       "test_images": ds.test_images.contiguous(), "test_labels": ds.test_labels}
            classes = ds.classes
        if tensors["train_images"].shape[1] != 3:
            raise DatasetError(f"{source.path}: expected RGB images, found "
                               f"{tensors['train_images'].shape[1]} channel(s)")
        _write_atomic(tensors, classes, cached)
    return ImageDataset(name="cifar10-jpeg", classes=classes, mean=CIFAR_MEAN, std=CIFAR_STD,
                        augment=CIFAR_AUGMENT, **tensors)


@FINGERPRINTS.register("cifar10-jpeg")
def cifar10_jpeg_fingerprint(root: Path | None = None) -> str:
    """The run-id fingerprint (sampled, cheap): the archive, or the files of the unpacked splits."""
    source = find_source(root)
    if source.is_archive:
        return fingerprint_files(source.path.parent, [source.path])
    return fingerprint_tree(source.path, ("train", "test"))
