"""Batch augmentation, normalisation, the device loader and index views."""

from __future__ import annotations

import pytest
import torch

from undistill.data import (
    AugmentSpec,
    DeviceLoader,
    augment_batch,
    channel_stats,
    normalize,
    split_validation,
    subset_indices,
)
from undistill.data.augment import random_crop, random_flip, random_rotate


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 16, c: int = 3, size: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, size, size), generator=gen(99), dtype=torch.uint8)


def test_crop_is_a_window_of_the_padded_image() -> None:
    x = images()
    out = random_crop(x, 2, gen())
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(x.shape[0]):  # the test may loop; the code may not
        windows = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_crop_padding_zero_is_identity() -> None:
    x = images()
    assert torch.equal(augment_batch(x, AugmentSpec(crop_padding=0), gen()), x)
    assert torch.equal(random_crop(x, 0, gen()), x)


def test_flip_on_known_image() -> None:
    row = torch.arange(4, dtype=torch.uint8)
    x = row.expand(32, 1, 4, 4).clone()
    out = random_flip(x, gen())
    flipped = torch.tensor([3, 2, 1, 0], dtype=torch.uint8)
    is_flipped = [torch.equal(o[0, 0], flipped) for o in out]
    assert all(torch.equal(o[0, 0], row) or f for o, f in zip(out, is_flipped, strict=True))
    assert 0 < sum(is_flipped) < 32
    assert all(torch.equal(o[0, 1], o[0, 0]) for o in out)  # whole image flipped, not one row


def test_rotation_zero_is_identity_and_keeps_centre() -> None:
    x = images(size=9)
    assert torch.equal(random_rotate(x, 0.0, gen()), x)
    xf = x.float()
    bilinear = random_rotate(xf, 0.0, gen(), mode="bilinear")
    assert torch.allclose(bilinear, xf, atol=1e-3)
    rotated = random_rotate(x, 20.0, gen())
    assert rotated.shape == x.shape and rotated.dtype == torch.uint8
    assert torch.equal(rotated[:, :, 4, 4], x[:, :, 4, 4])  # rotation about the centre pixel
    assert not torch.equal(rotated, x)


def test_augment_deterministic_per_seed() -> None:
    x = images()
    spec = AugmentSpec(crop_padding=2, flip=True, rotate_degrees=15)
    a = augment_batch(x, spec, gen(1))
    assert torch.equal(a, augment_batch(x, spec, gen(1)))
    assert not torch.equal(a, augment_batch(x, spec, gen(2)))


def test_normalize_and_channel_stats() -> None:
    x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    assert normalize(x, (0.5,), (0.5,)).flatten().tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError):
        normalize(x, (0.5, 0.5), (0.5, 0.5))
    y = images(n=5)
    mean, std = channel_stats(y)
    ref = y.double() / 255
    assert mean == pytest.approx(ref.mean(dim=(0, 2, 3)).tolist(), abs=1e-4)
    assert std == pytest.approx(ref.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-4)


def make_loader(n: int = 10, **kw: object) -> DeviceLoader:
    args: dict = dict(
        batch_size=4,
        mean=(0.5,),
        std=(0.25,),
        augment=AugmentSpec(crop_padding=1, flip=True),
        shuffle=True,
        drop_last=False,
        seed=7,
    )
    args.update(kw)
    x = torch.randint(0, 256, (n, 1, 6, 6), generator=gen(3), dtype=torch.uint8)
    return DeviceLoader(x, torch.arange(n), **args)


def test_loader_epoch_depends_only_on_seed_and_epoch() -> None:
    first = list(make_loader().epoch(3))
    resumed = list(make_loader().epoch(3))  # a fresh loader, as after a restart
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(first, resumed, strict=True)
    )
    other = torch.cat([y for _, y in make_loader().epoch(4)])
    assert not torch.equal(torch.cat([y for _, y in first]), other)
    reseeded = torch.cat([y for _, y in make_loader(seed=8).epoch(3)])
    assert not torch.equal(torch.cat([y for _, y in first]), reseeded)


def test_loader_visits_every_sample_once() -> None:
    loader = make_loader()
    assert len(loader) == 3 and loader.num_samples == 10
    batches = list(loader.epoch(0))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(10))
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (4, 1, 6, 6)
    dropped = make_loader(drop_last=True)
    assert len(dropped) == 2 and [len(y) for _, y in dropped.epoch(0)] == [4, 4]


def test_loader_without_augment_or_shuffle_is_plain_normalisation() -> None:
    loader = make_loader(augment=None, shuffle=False, channels_last=True)
    x, y = next(iter(loader.epoch(5)))
    assert y.tolist() == [0, 1, 2, 3]
    assert torch.allclose(x, normalize(loader.images[:4], (0.5,), (0.25,)))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_subset_indices() -> None:
    a = subset_indices(10, 0.25)
    assert torch.equal(a, subset_indices(10, 0.25, seed=230))
    assert len(a) == 3  # 2.5 rounds half up
    assert len(subset_indices(10, 0.01)) == 1
    assert sorted(subset_indices(10, 1.0).tolist()) == list(range(10))
    assert torch.equal(subset_indices(10, 0.5), subset_indices(10, 1.0)[:5])  # prefix of one perm
    assert not torch.equal(subset_indices(100, 0.5), subset_indices(100, 0.5, seed=1))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            subset_indices(10, bad)


def test_split_validation_stratified_and_disjoint() -> None:
    labels = torch.tensor([0] * 20 + [1] * 10 + [2] * 30)
    train, val = split_validation(labels, 0.1, seed=0)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(60))
    assert torch.bincount(labels[val], minlength=3).tolist() == [2, 1, 3]
    again = split_validation(labels, 0.1, seed=0)
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])
    assert not torch.equal(val, split_validation(labels, 0.1, seed=1)[1])
    with pytest.raises(ValueError):
        split_validation(labels, 1.0, seed=0)
