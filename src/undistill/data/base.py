"""What every dataset loader returns: a whole dataset as uint8 tensors, plus how to augment it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from undistill.exceptions import UndistillError
from undistill.registry import Registry


class DatasetError(UndistillError, ValueError):
    """Bad or missing data on disk. The message names the file, what is wrong and how to get the data."""


@dataclass(frozen=True)
class AugmentSpec:
    """Training augmentation, applied to whole batches on the training device.

    crop_padding: random crop back to the original size after zero padding by this many pixels (0: off).
    flip: random horizontal flip with probability 1/2.
    rotate_degrees: random rotation, uniform in [-d, d] degrees (0: off), as for Tiny-ImageNet.
    """

    crop_padding: int = 0
    flip: bool = False
    rotate_degrees: float = 0.0


@dataclass
class ImageDataset:
    """A dataset held whole in memory: images uint8 [N, C, H, W], labels int64 [N]."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: AugmentSpec = field(default_factory=AugmentSpec)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])


# A loader takes the data directory (None: its default) and returns the dataset.
Loader = Callable[[Path | None], ImageDataset]
DATASETS: Registry[Loader] = Registry("dataset")
