"""The model-zoo contract: every architecture returns logits, and on request its features."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from undistill.registry import Registry


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # [N, num_classes]
    features: torch.Tensor  # penultimate features, [N, feature_dim], the classifier's input
    stages: list[torch.Tensor]  # outputs of the intermediate stages, shallow to deep, [N, C_i, H_i, W_i]


class ZooModel(nn.Module):
    """Base of every zoo architecture.

    Subclasses set ``num_classes``, ``feature_dim`` and ``stage_channels`` (channels of each tensor
    in ``ModelOutput.stages``) and implement ``forward_features``. ``forward`` returns logits only.
    """

    num_classes: int
    feature_dim: int
    stage_channels: list[int]

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).logits


# builder(num_classes, in_channels, width, image_size) -> ZooModel
ModelBuilder = Callable[..., ZooModel]
MODELS: Registry[ModelBuilder] = Registry("architecture")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (what the reference's parameter counts mean)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def scaled(channels: int, width: float, multiple: int = 1) -> int:
    """Channel count times the width multiplier, rounded to a positive multiple of ``multiple``."""
    c = max(multiple, int(round(channels * width / multiple)) * multiple)
    return c
