"""MobileNetV2, CIFAR variant as in the Nasty Teacher code (all convs biased, 1x1-conv head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from undistill.models.base import MODELS, ModelOutput, ZooModel, scaled

# (repeat, out channels, first stride, expansion t) per stage, after the pre-layer
STAGES: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (2, 24, 2, 6),
    (3, 32, 2, 6),
    (4, 64, 2, 6),
    (3, 96, 1, 6),
    (3, 160, 1, 6),
    (1, 320, 1, 6),
]
# indices in STAGES after which a stage tensor is exposed: the 24-, 32-, 96- and 320-channel groups
TAPS: tuple[int, ...] = (1, 2, 4, 6)


class InvertedResidual(nn.Module):
    """1x1 expand + ReLU6, 3x3 depthwise + ReLU6, linear 1x1 project; residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = in_ch * t
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_ch, 1),
            nn.BatchNorm2d(out_ch),
        )
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.use_residual else out


class MobileNetV2(ZooModel):
    """MobileNetV2 for small images.

    Kept quirk of the reference code: the pre-layer is a 1x1 conv with padding 1, so a 32x32 input
    becomes 34x34. The classifier is a 1x1 conv applied to the pooled 1280-channel map.

    Stages (``ModelOutput.stages``): the outputs of the 24-, 32-, 96- and 320-channel groups
    (strides 2, 4, 8 and 8 of the pre-layer output). Features: the pooled 1280-d vector.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        in_ch = scaled(32, width)
        self.pre = nn.Sequential(
            nn.Conv2d(in_channels, in_ch, 1, padding=1),
            nn.BatchNorm2d(in_ch),
            nn.ReLU6(inplace=True),
        )
        groups: list[nn.Module] = []
        self.stage_channels = []
        for i, (repeat, out, stride, t) in enumerate(STAGES):
            out_ch = scaled(out, width)
            blocks = []
            for j in range(repeat):
                blocks.append(InvertedResidual(in_ch, out_ch, stride if j == 0 else 1, t))
                in_ch = out_ch
            groups.append(nn.Sequential(*blocks))
            if i in TAPS:
                self.stage_channels.append(out_ch)
        self.groups = nn.ModuleList(groups)
        self.feature_dim = scaled(1280, width)
        self.head = nn.Sequential(
            nn.Conv2d(in_ch, self.feature_dim, 1),
            nn.BatchNorm2d(self.feature_dim),
            nn.ReLU6(inplace=True),
        )
        self.classifier = nn.Conv2d(self.feature_dim, num_classes, 1)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        out = self.pre(x)
        stages = []
        for i, group in enumerate(self.groups):
            out = group(out)
            if i in TAPS:
                stages.append(out)
        pooled = F.adaptive_avg_pool2d(self.head(out), 1)
        logits = torch.flatten(self.classifier(pooled), 1)
        return ModelOutput(logits, torch.flatten(pooled, 1), stages)


@MODELS.register("mobilenetv2")
def mobilenetv2(
    num_classes: int, in_channels: int = 3, width: float = 1.0, image_size: int = 32
) -> MobileNetV2:
    """MobileNetV2 (CIFAR variant); ``image_size`` is unused (adaptive pooling)."""
    return MobileNetV2(num_classes, in_channels, width)
