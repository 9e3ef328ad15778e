"""CIFAR-stem ResNets (18, 34, 50): 3x3 stem, no max-pool, adaptive average pool before the head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from undistill.models.base import MODELS, ModelOutput, ZooModel, scaled


def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """1x1 conv + BN shortcut when the shape changes, identity otherwise."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_ch),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_ch, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4 (ResNet-50)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut = _projection(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(ZooModel):
    """ResNet with a CIFAR stem (conv3x3 stride 1 + BN + ReLU, no max-pool).

    Stages (``ModelOutput.stages``): the outputs of the four residual layers, at strides
    1, 2, 4 and 8 of the input, with 64/128/256/512 (times the block expansion, times ``width``)
    channels. Features: the globally average-pooled output of the last layer.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        depths: list[int],
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        layers: list[nn.Module] = []
        in_ch = stem
        self.stage_channels = []
        for i, depth in enumerate(depths):
            planes = scaled(64 * 2**i, width)
            blocks: list[nn.Module] = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_ch, planes, stride))
                in_ch = planes * block.expansion
            layers.append(nn.Sequential(*blocks))
            self.stage_channels.append(in_ch)
        self.layers = nn.ModuleList(layers)
        self.feature_dim = in_ch
        self.linear = nn.Linear(in_ch, num_classes)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        out = F.relu(self.bn1(self.conv1(x)))
        stages = []
        for layer in self.layers:
            out = layer(out)
            stages.append(out)
        features = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return ModelOutput(self.linear(features), features, stages)


@MODELS.register("resnet18")
def resnet18(
    num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32
) -> ResNet:
    """ResNet-18: BasicBlock x [2, 2, 2, 2]."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, width)


@MODELS.register("resnet34")
def resnet34(
    num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32
) -> ResNet:
    """ResNet-34: BasicBlock x [3, 4, 6, 3]."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, width)


@MODELS.register("resnet50")
def resnet50(
    num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32
) -> ResNet:
    """ResNet-50: Bottleneck x [3, 4, 6, 3]."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, width)
