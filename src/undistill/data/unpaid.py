"""The images a query-budgeted thief holds but did not pay for: the unlabelled part of its pool.

A semi-supervised scheme (``methods/semi.py``) draws batches from it during training; the
engine builds it once per run, on the training device, from the thief's pool less the paid
transfer set. Draws use the global torch generator, which the engine reseeds at each epoch
start, so a resumed run draws the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from undistill.data.base import AugmentSpec


@dataclass
class UnpaidPool:
    """``images``: uint8 ``[N, C, H, W]`` on the training device; ``mean``/``std``: the dataset's
    normalisation; ``augment``: the dataset's augmentation (None: the dataset has none)."""

    images: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: AugmentSpec | None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def sample(self, n: int) -> torch.Tensor:
        """``n`` images (uint8 ``[n, C, H, W]``) drawn uniformly with replacement by the global
        generator of the pool's device (``torch.randint`` without a generator)."""
        if len(self) == 0:
            raise ValueError("cannot sample from an empty unpaid pool")
        if n < 0:
            raise ValueError(f"cannot sample {n} images")
        idx = torch.randint(0, len(self), (n,), device=self.images.device)
        return self.images[idx]
