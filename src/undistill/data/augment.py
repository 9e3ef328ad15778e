"""Batch-wise augmentation and normalisation on whatever device the images live.

Every random number comes from the generator passed in (created on the data's device), so one seed
gives one result; no function here loops over images in Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from undistill.data.base import AugmentSpec


def augment_batch(x: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """Rotate, crop and flip a batch [N, C, H, W] as ``spec`` says; returns the input's dtype.

    The order (rotation, crop, flip) and the order of random draws are fixed, so the output depends
    only on the input, the spec and the generator's state.
    """
    if x.dim() != 4:
        raise ValueError(f"augment_batch expects [N, C, H, W], got shape {tuple(x.shape)}")
    if spec.rotate_degrees:
        x = random_rotate(x, spec.rotate_degrees, generator)
    if spec.crop_padding:
        x = random_crop(x, spec.crop_padding, generator)
    if spec.flip:
        x = random_flip(x, generator)
    return x


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` then cut each image back to H x W at its own random offset.

    One gather with per-image row and column indices does all crops at once.
    """
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # [N, H]
    cols = dx[:, None] + torch.arange(w, device=x.device)  # [N, W]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    mask = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def random_rotate(
    x: torch.Tensor, degrees: float, generator: torch.Generator, mode: str = "nearest"
) -> torch.Tensor:
    """Rotate each image by its own angle, uniform in [-degrees, degrees], about the centre.

    Zero fill outside the source; nearest-neighbour sampling by default, as torchvision's
    ``RandomRotation`` (the reference's Tiny-ImageNet transform) does.
    """
    n = x.shape[0]
    u = torch.rand(n, generator=generator, device=x.device)
    angle = (2.0 * u - 1.0) * math.radians(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    theta = torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).view(n, 2, 3)
    work_dtype = x.dtype if x.is_floating_point() else torch.float32
    grid = F.affine_grid(theta.to(work_dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(
        x.to(work_dtype), grid, mode=mode, padding_mode="zeros", align_corners=False
    )
    if x.is_floating_point():
        return out
    info = torch.iinfo(x.dtype)
    return out.round_().clamp_(info.min, info.max).to(x.dtype)


def normalize(
    x: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel, for images on the 0..255 scale (uint8 or float).

    ``mean``/``std`` may be tensors already on ``x``'s device (saves a copy per batch).
    """
    c = x.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries for {c} channels")
    m = torch.as_tensor(mean, dtype=dtype, device=x.device).view(1, c, 1, 1)
    s = torch.as_tensor(std, dtype=dtype, device=x.device).view(1, c, 1, 1)
    return (x.to(dtype) / 255.0 - m) / s


def channel_stats(
    images: torch.Tensor, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, C, H, W] on the 0..1 scale (float64 sums)."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].to(torch.float64) / 255.0
        total += part.sum(dim=(0, 2, 3)).cpu()
        total_sq += (part * part).sum(dim=(0, 2, 3)).cpu()
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())
