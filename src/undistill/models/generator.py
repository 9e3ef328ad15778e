"""The DAFL generator (Chen et al., 2019) for the data-free setting."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from undistill.models.base import scaled

# DAFL passes 0.8 as the second positional argument of BatchNorm2d, which is ``eps`` (not the
# momentum): the two BNs after the 3x3 convs use eps = 0.8. The others use the default 1e-5.
DAFL_CONV_BN_EPS = 0.8


class Generator(nn.Module):
    """Latent vector -> image, as in DAFL.

    Linear(latent, 128*(S/4)^2) -> BN2d(128) -> 2x nearest upsample -> conv3x3 128->128 + BN
    (eps 0.8) + LeakyReLU(0.2) -> 2x upsample -> conv3x3 128->64 + BN (eps 0.8) + LeakyReLU(0.2)
    -> conv3x3 64->channels -> Tanh -> BatchNorm2d(channels, affine=False). ``width`` scales the
    128 and 64 hidden channel counts; ``image_size`` must be a multiple of 4.
    """

    def __init__(self, latent_dim: int, image_size: int, channels: int, width: float = 1.0) -> None:
        super().__init__()
        if image_size % 4 or image_size < 4:
            raise ValueError(f"image_size must be a positive multiple of 4, got {image_size}")
        self.latent_dim = latent_dim
        self.init_size = image_size // 4
        wide, narrow = scaled(128, width), scaled(64, width)
        self.wide = wide
        self.fc = nn.Linear(latent_dim, wide * self.init_size**2)
        self.bn0 = nn.BatchNorm2d(wide)
        self.block1 = nn.Sequential(
            nn.Conv2d(wide, wide, 3, padding=1),
            nn.BatchNorm2d(wide, eps=DAFL_CONV_BN_EPS),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(wide, narrow, 3, padding=1),
            nn.BatchNorm2d(narrow, eps=DAFL_CONV_BN_EPS),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(narrow, channels, 3, padding=1),
            nn.Tanh(),
            nn.BatchNorm2d(channels, affine=False),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.fc(z).view(z.shape[0], self.wide, self.init_size, self.init_size)
        out = F.interpolate(self.bn0(out), scale_factor=2)
        out = F.interpolate(self.block1(out), scale_factor=2)
        return self.block2(out)

    def sample(self, n: int) -> torch.Tensor:
        """Images from ``n`` standard-normal latent vectors (on the generator's device)."""
        z = torch.randn(n, self.latent_dim, device=self.fc.weight.device)
        return self(z)
