"""The plain CNN of the Nasty Teacher experiments ("CNN" in the paper's tables)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from undistill.models.base import MODELS, ModelOutput, ZooModel, scaled


class PlainCNN(ZooModel):
    """Three conv blocks (biased conv3x3 + BN -> max-pool 2 -> ReLU), then a two-layer MLP head.

    The head is Linear(flat, 128) + BN1d + ReLU + Dropout(``dropout``, 0.0 by default) followed by
    Linear(128, C). ``image_size`` fixes the flatten size: three 2x2 pools give
    ``image_size // 8`` per side (32 -> 4, 28 -> 3, 8 -> 1).

    Stages (``ModelOutput.stages``): the outputs of the three conv blocks (32/64/128 channels).
    Features: the 128-d hidden vector fed to the last Linear.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        image_size: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"the plain CNN needs images of at least 8x8, got {image_size}")
        self.num_classes = num_classes
        self.stage_channels = [scaled(c, width) for c in (32, 64, 128)]
        convs, norms = [], []
        in_ch = in_channels
        for ch in self.stage_channels:
            convs.append(nn.Conv2d(in_ch, ch, 3, padding=1))
            norms.append(nn.BatchNorm2d(ch))
            in_ch = ch
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(norms)
        side = image_size // 8
        self.feature_dim = scaled(128, width)
        self.fc1 = nn.Linear(in_ch * side * side, self.feature_dim)
        self.fc_bn = nn.BatchNorm1d(self.feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        stages = []
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.relu(F.max_pool2d(norm(conv(x)), 2))
            stages.append(x)
        hidden = F.relu(self.fc_bn(self.fc1(torch.flatten(x, 1))))
        features = self.dropout(hidden)
        return ModelOutput(self.fc2(features), features, stages)


@MODELS.register("cnn")
def cnn(
    num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32
) -> PlainCNN:
    """The plain CNN; ``image_size`` sets the flatten size of the head."""
    return PlainCNN(num_classes, in_channels, width, image_size)
