"""scikit-learn's bundled 8x8 digits: real data that needs no download (smoke tests, CPU runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from undistill.data.augment import channel_stats
from undistill.data.base import DATASETS, AugmentSpec, ImageDataset
from undistill.data.fingerprint import FINGERPRINTS

TEST_FRACTION = 0.25
SPLIT_SEED = 0


@DATASETS.register("digits")
def load_digits_dataset(root: Path | None = None) -> ImageDataset:
    """1797 grey 8x8 digits, values 0..16 scaled to 0..255, split 75/25 stratified (seed 0).

    ``root`` is ignored: the data ships with scikit-learn. Mean/std come from the training split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    train_images = torch.from_numpy(np.ascontiguousarray(x_train)).unsqueeze(1)
    mean, std = channel_stats(train_images)
    return ImageDataset(
        name="digits",
        train_images=train_images,
        train_labels=torch.from_numpy(y_train),
        test_images=torch.from_numpy(np.ascontiguousarray(x_test)).unsqueeze(1),
        test_labels=torch.from_numpy(y_test),
        classes=[str(d) for d in range(10)],
        mean=mean,
        std=std,
        augment=AugmentSpec(crop_padding=1, flip=False),
    )


@FINGERPRINTS.register("digits")
def digits_fingerprint(root: Path | None = None) -> str:
    """Constant: the data ships with scikit-learn and ``root`` is ignored."""
    return ""
