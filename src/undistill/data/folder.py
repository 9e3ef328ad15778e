"""Image folders: ``train/<class>/*`` plus ``test/`` or ``val/`` alike, and raw Tiny-ImageNet-200.

Images may sit in the class folder or one level below it (Tiny-ImageNet's ``<wnid>/images/``);
extensions .png/.jpg/.jpeg in any case. The raw Tiny-ImageNet ``val/images`` +
``val_annotations.txt`` layout is grouped by class from the annotations, without touching files.
Everything is decoded once with Pillow into uint8 tensors (RGB, or L when every image is grey).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from undistill.data.augment import channel_stats
from undistill.data.base import DATASETS, AugmentSpec, DatasetError, ImageDataset
from undistill.data.fingerprint import FINGERPRINTS, fingerprint_tree

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
TINY_ANNOTATIONS = "val_annotations.txt"
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class FolderStyle:
    """How one flavour of image folder is named, described and normalised.

    ``mean``/``std`` None: computed from the training images. ``augment`` None: random crop with
    size // 8 zero padding plus horizontal flip.
    """

    name: str
    how_to_get: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: AugmentSpec | None = None
    subfolder: str | None = None  # also accept root/<subfolder> as the dataset directory


FOLDER = FolderStyle(
    name="folder",
    how_to_get=(
        "arrange the images as DIR/train/<class>/*.png|jpg and DIR/test/<class>/... "
        "(or DIR/val/<class>/...) and pass --data-root DIR"
    ),
)
TINY_IMAGENET = FolderStyle(
    name="tinyimagenet",
    how_to_get=(
        "download http://cs231n.stanford.edu/tiny-imagenet-200.zip, unzip it and pass "
        "--data-root DIR/tiny-imagenet-200"
    ),
    mean=(0.4802, 0.4481, 0.3975),
    std=(0.2302, 0.2265, 0.2262),
    augment=AugmentSpec(rotate_degrees=20.0, flip=True),
    subfolder="tiny-imagenet-200",
)


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def images_in(directory: Path) -> list[Path]:
    """Image files in ``directory`` and in its immediate subfolders, sorted."""
    found = [p for p in directory.iterdir() if is_image(p)]
    for sub in directory.iterdir():
        if sub.is_dir() and not sub.name.startswith("."):
            found.extend(p for p in sub.iterdir() if is_image(p))
    return sorted(found)


def subdirs(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_class_tree(split: Path, classes: list[str], style: FolderStyle) -> list[tuple[Path, int]]:
    """(file, class index) for ``split/<class>/...``; a class unknown to ``classes`` is an error."""
    index = {name: i for i, name in enumerate(classes)}
    items: list[tuple[Path, int]] = []
    for name in subdirs(split):
        if name not in index:
            raise DatasetError(
                f"{split / name}: class {name!r} is not among the {len(classes)} training classes "
                f"in {split.parent / 'train'}; {style.how_to_get}"
            )
        files = images_in(split / name)
        if not files:
            raise DatasetError(
                f"no images (.png/.jpg/.jpeg) found in {split / name}; {style.how_to_get}"
            )
        items.extend((f, index[name]) for f in files)
    if not items:
        raise DatasetError(f"no class folders with images found in {split}; {style.how_to_get}")
    return items


def scan_tiny_val(split: Path, classes: list[str], style: FolderStyle) -> list[tuple[Path, int]]:
    """(file, class index) from Tiny-ImageNet's ``val_annotations.txt`` (file, wnid, box...)."""
    index = {name: i for i, name in enumerate(classes)}
    annotations = split / TINY_ANNOTATIONS
    items: list[tuple[Path, int]] = []
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DatasetError(
                f"{annotations}:{number}: expected 'file<TAB>wnid<TAB>...', got {line!r}; "
                f"{style.how_to_get}"
            )
        filename, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in index:
            raise DatasetError(
                f"{annotations}:{number}: class {wnid!r} is not among the {len(classes)} training "
                f"classes in {split.parent / 'train'}; {style.how_to_get}"
            )
        path = split / "images" / filename
        if not path.is_file():
            raise DatasetError(f"{annotations}:{number}: missing image {path}; {style.how_to_get}")
        items.append((path, index[wnid]))
    if not items:
        raise DatasetError(f"{annotations} lists no images; {style.how_to_get}")
    return items


def is_tiny_val(split: Path) -> bool:
    return (split / TINY_ANNOTATIONS).is_file() and (split / "images").is_dir()


def eval_split(root: Path, classes: list[str], style: FolderStyle) -> list[tuple[Path, int]]:
    """The labelled evaluation split: ``test/`` else ``val/``.

    An unlabelled ``test/images/`` (as Tiny-ImageNet ships) is skipped in favour of ``val/``.
    """
    for name in ("test", "val"):
        split = root / name
        if not split.is_dir():
            continue
        if is_tiny_val(split):
            return scan_tiny_val(split, classes, style)
        if subdirs(split) == ["images"] and "images" not in classes:
            continue  # unlabelled test images
        return scan_class_tree(split, classes, style)
    raise DatasetError(f"{root} has no labelled test/ or val/ folder; {style.how_to_get}")


def parallel_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]`` on a few threads (Pillow releases the GIL while decoding)."""
    workers = max(1, min(8, os.cpu_count() or 1))
    if workers == 1 or len(items) < 64:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def peek(path: Path, how_to_get: str) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) from the file header."""
    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except Exception as exc:
        raise DatasetError(f"{path}: not a readable image ({exc}); {how_to_get}") from exc


def decode_all(paths: list[Path], how_to_get: str) -> torch.Tensor:
    """Decode every image into one uint8 tensor [N, C, H, W]; all must share one size."""
    headers = parallel_map(lambda p: peek(p, how_to_get), paths)
    size = headers[0][1]
    for path, (_, other) in zip(paths, headers, strict=True):
        if other != size:
            raise DatasetError(
                f"{path} is {other[0]}x{other[1]} but {paths[0]} is {size[0]}x{size[1]}: "
                f"all images must share one size (resize them first); {how_to_get}"
            )
    mode = "L" if all(m in GREY_MODES for m, _ in headers) else "RGB"
    channels = 1 if mode == "L" else 3
    out = np.empty((len(paths), channels, size[1], size[0]), dtype=np.uint8)

    def load(i: int) -> None:
        try:
            with Image.open(paths[i]) as im:
                arr = np.asarray(im.convert(mode), dtype=np.uint8)
        except Exception as exc:
            raise DatasetError(f"{paths[i]}: cannot decode image ({exc}); {how_to_get}") from exc
        out[i] = arr.reshape(size[1], size[0], channels).transpose(2, 0, 1)

    parallel_map(load, range(len(paths)))
    return torch.from_numpy(out)


def find_root(root: Path | None, style: FolderStyle) -> Path:
    if root is None:
        raise DatasetError(f"{style.name} has no default location: {style.how_to_get}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{style.name} directory {root} does not exist: {style.how_to_get}")
    if not (root / "train").is_dir() and style.subfolder and (root / style.subfolder).is_dir():
        root = root / style.subfolder
    if not (root / "train").is_dir():
        raise DatasetError(f"missing directory {root / 'train'}: {style.how_to_get}")
    return root


def load_folder(root: Path | None, style: FolderStyle) -> ImageDataset:
    """Read ``root/train`` and the labelled evaluation split into an ImageDataset."""
    root = find_root(root, style)
    classes = subdirs(root / "train")
    if not classes:
        raise DatasetError(f"no class folders found in {root / 'train'}; {style.how_to_get}")
    train = scan_class_tree(root / "train", classes, style)
    test = eval_split(root, classes, style)
    images = decode_all([p for p, _ in train] + [p for p, _ in test], style.how_to_get)
    if len(classes) < 2:
        raise DatasetError(f"{root / 'train'} holds one class folder ({classes[0]!r}); a classifier "
                           f"needs at least two classes: {style.how_to_get}")
    n_train = len(train)
    train_images, test_images = images[:n_train], images[n_train:]  # views, no copy
    if style.mean is not None and style.std is not None:
        mean, std = style.mean, style.std
        if len(mean) != train_images.shape[1]:
            raise DatasetError(
                f"{root}: {style.name} expects {len(mean)}-channel images, found "
                f"{train_images.shape[1]}; {style.how_to_get}"
            )
    else:
        mean, std = channel_stats(train_images)
    size = min(train_images.shape[-2:])
    augment = style.augment or AugmentSpec(crop_padding=size // 8, flip=True)
    return ImageDataset(
        name=style.name,
        train_images=train_images,
        train_labels=torch.tensor([c for _, c in train], dtype=torch.int64),
        test_images=test_images,
        test_labels=torch.tensor([c for _, c in test], dtype=torch.int64),
        classes=classes,
        mean=mean,
        std=std,
        augment=augment,
    )


@DATASETS.register("folder")
def load_image_folder(root: Path | None = None) -> ImageDataset:
    """Any ``train/<class>/`` + ``test/`` (or ``val/``) tree; statistics from its training set."""
    return load_folder(root, FOLDER)


@DATASETS.register("tinyimagenet")
def load_tiny_imagenet(root: Path | None = None) -> ImageDataset:
    """Tiny-ImageNet-200 as unzipped (raw ``val/`` accepted), with the reference's statistics."""
    return load_folder(root, TINY_IMAGENET)


def folder_fingerprint(root: Path | None, style: FolderStyle) -> str:
    """Every file below ``train/``, ``test/`` and ``val/`` (there is no default location)."""
    return fingerprint_tree(find_root(root, style), ("train", "test", "val"))


@FINGERPRINTS.register("folder")
def image_folder_fingerprint(root: Path | None = None) -> str:
    return folder_fingerprint(root, FOLDER)


@FINGERPRINTS.register("tinyimagenet")
def tiny_imagenet_fingerprint(root: Path | None = None) -> str:
    return folder_fingerprint(root, TINY_IMAGENET)
