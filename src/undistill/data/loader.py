"""The device-resident data path: batches cut from tensors that already live on the training device.

Epoch ``e`` draws its permutation and augmentation from a fresh generator seeded from
``(seed, e)`` alone, so a run resumed at epoch ``e`` sees exactly the batches an uninterrupted run
would. Subsets (limited data, validation splits) are index tensors into the full arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from undistill.data.augment import augment_batch, normalize
from undistill.data.base import AugmentSpec


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed from (seed, epoch): neighbouring pairs give unrelated streams."""
    state = np.random.SeedSequence([int(seed) % 2**64, int(epoch) % 2**64])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class DeviceLoader:
    """Shuffled, augmented, normalised batches of uint8 images held on one device.

    ``epoch(e)`` yields ``(images float [B, C, H, W], labels int64 [B])``; ``len()`` is the number
    of batches per epoch. ``repeat``: an epoch passes over the images that many times (each pass in
    its own order), so a tiny set still makes an epoch of many steps.
    """

    def __init__(
        self,
        images_uint8: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: AugmentSpec | None,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        channels_last: bool = False,
        repeat: int = 1,
    ) -> None:
        if images_uint8.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W], got {tuple(images_uint8.shape)}")
        if labels.shape != (images_uint8.shape[0],):
            raise ValueError(
                f"labels shape {tuple(labels.shape)} does not match {images_uint8.shape[0]} images"
            )
        if labels.device != images_uint8.device:
            raise ValueError(f"images on {images_uint8.device} but labels on {labels.device}")
        channels = images_uint8.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"{len(mean)} means / {len(std)} stds for {channels} channels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if repeat < 1:
            raise ValueError(f"repeat must be positive, got {repeat}")
        self.images = images_uint8
        self.labels = labels.long()
        self.batch_size = batch_size
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.augment = augment
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.channels_last = channels_last
        self.repeat = repeat
        #: indices (into ``images``) of the batch last yielded: a teacher that answers from a
        #: table of stored answers (:class:`undistill.thief.PaidAnswers`) follows it
        self.last_index: torch.Tensor | None = None
        self._mean = torch.tensor(self.mean, dtype=torch.float32, device=images_uint8.device)
        self._std = torch.tensor(self.std, dtype=torch.float32, device=images_uint8.device)

    @property
    def num_samples(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        n = self.num_samples * self.repeat
        if self.drop_last:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of epoch ``epoch``; a function of (seed, epoch) only."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(epoch_seed(self.seed, epoch))
        n = self.num_samples
        if self.shuffle:
            order = torch.cat([torch.randperm(n, generator=generator, device=self.device)
                               for _ in range(self.repeat)])
        else:
            order = torch.arange(n, device=self.device).repeat(self.repeat)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            self.last_index = idx
            x = self.images[idx]
            if self.augment is not None:
                x = augment_batch(x, self.augment, generator)
            x = normalize(x, self._mean, self._std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]


def _round_half_up(x: float) -> int:
    # The epsilon absorbs binary noise such as 0.1 * 45 = 4.500000000000001 or 4.4999999999.
    return math.floor(x + 0.5 + 1e-9)


def subset_indices(n: int, fraction: float, seed: int = 230) -> torch.Tensor:
    """The reference's limited-data subset: the first round(fraction * n) (at least 1) entries of a
    fixed ``torch.randperm(n)`` seeded with ``seed``. Not class-balanced, as in the reference."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if n < 1:
        raise ValueError(f"cannot take a subset of {n} samples")
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    k = min(n, max(1, _round_half_up(fraction * n)))
    return perm[:k]


def split_validation(
    labels: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A stratified, deterministic (train_idx, val_idx) split carved out of a training set.

    Each class gives round(val_fraction * count) of its samples to validation, keeping at least one
    in training; both index tensors are sorted, on the CPU.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = labels.detach().cpu().long()
    if labels.numel() == 0:
        raise ValueError("cannot split an empty label set")
    generator = torch.Generator().manual_seed(seed)
    train_parts, val_parts = [], []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        k = min(_round_half_up(val_fraction * members.numel()), members.numel() - 1)
        val_parts.append(members[:k])
        train_parts.append(members[k:])
    train_idx = torch.sort(torch.cat(train_parts)).values
    val_idx = torch.sort(torch.cat(val_parts)).values
    return train_idx, val_idx
