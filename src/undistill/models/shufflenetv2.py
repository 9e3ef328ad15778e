"""ShuffleNetV2 (ratio 1), CIFAR variant as in the Nasty Teacher code (all convs biased)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from undistill.models.base import MODELS, ModelOutput, ZooModel, scaled

# (out channels, stride-1 units after the stride-2 unit) for stages 2, 3, 4 at ratio 1
STAGES: list[tuple[int, int]] = [(116, 3), (232, 7), (464, 3)]
LAST_CONV = 1024


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """Interleave the channels of ``groups`` equal groups."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _depthwise(ch: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(ch, ch, 3, stride=stride, padding=1, groups=ch), nn.BatchNorm2d(ch)]


def _pointwise_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class ShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit.

    Stride 1 (``in_ch == out_ch``): split the channels in half, transform one half, concatenate.
    Otherwise (downsampling): both branches see the whole input and each yields ``out_ch / 2``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch % 2:
            raise ValueError(f"ShuffleUnit needs an even channel count, got {out_ch}")
        half = out_ch // 2
        self.split = stride == 1 and in_ch == out_ch
        if self.split:
            self.shortcut: nn.Module = nn.Identity()
            self.residual = nn.Sequential(
                *_pointwise_relu(half, half), *_depthwise(half, 1), *_pointwise_relu(half, half)
            )
        else:
            self.shortcut = nn.Sequential(*_depthwise(in_ch, stride), *_pointwise_relu(in_ch, half))
            self.residual = nn.Sequential(
                *_pointwise_relu(in_ch, in_ch),
                *_depthwise(in_ch, stride),
                *_pointwise_relu(in_ch, half),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split:
            left, right = x.chunk(2, dim=1)
        else:
            left, right = x, x
        out = torch.cat([self.shortcut(left), self.residual(right)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(ZooModel):
    """ShuffleNetV2 at ratio 1 with a CIFAR pre-layer (conv3x3 -> 24 + BN, no ReLU, no max-pool).

    Stages (``ModelOutput.stages``): the outputs of stages 2, 3 and 4 (116/232/464 channels at
    strides 2, 4, 8) and of the final 1x1 conv (1024 channels), so four tensors.
    Features: the pooled output of the final 1x1 conv.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        in_ch = scaled(24, width)
        self.pre = nn.Sequential(nn.Conv2d(in_channels, in_ch, 3, padding=1), nn.BatchNorm2d(in_ch))
        stages: list[nn.Module] = []
        self.stage_channels = []
        for out, repeat in STAGES:
            out_ch = scaled(out, width, multiple=2)
            units = [ShuffleUnit(in_ch, out_ch, 2)]
            units += [ShuffleUnit(out_ch, out_ch, 1) for _ in range(repeat)]
            stages.append(nn.Sequential(*units))
            self.stage_channels.append(out_ch)
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.feature_dim = scaled(LAST_CONV, width)
        self.conv5 = nn.Sequential(*_pointwise_relu(in_ch, self.feature_dim))
        self.stage_channels.append(self.feature_dim)
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        out = self.pre(x)
        stages = []
        for stage in self.stages:
            out = stage(out)
            stages.append(out)
        out = self.conv5(out)
        stages.append(out)
        features = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return ModelOutput(self.fc(features), features, stages)


@MODELS.register("shufflenetv2")
def shufflenetv2(
    num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32
) -> ShuffleNetV2:
    """ShuffleNetV2 ratio 1; ``image_size`` is unused (adaptive pooling)."""
    return ShuffleNetV2(num_classes, in_channels, width)
