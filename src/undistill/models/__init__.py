"""The model zoo: every classifier is registered in ``MODELS`` and built with ``build_model``."""

from __future__ import annotations

from undistill.models import cnn, mobilenetv2, resnet, shufflenetv2  # noqa: F401  (registration)
from undistill.models.base import MODELS, ModelOutput, ZooModel, count_parameters
from undistill.models.factory import build_from_factory, is_factory, load_factory
from undistill.models.generator import Generator

__all__ = [
    "MODELS",
    "Generator",
    "ModelOutput",
    "ZooModel",
    "build_model",
    "check_arch",
    "count_parameters",
    "model_table",
]


def build_model(
    arch: str,
    num_classes: int,
    in_channels: int = 3,
    width: float = 1.0,
    image_size: int = 32,
) -> ZooModel:
    """Build the architecture registered as ``arch``.

    Raises ``KeyError`` (listing the known names) for an unknown ``arch`` and ``ValueError`` for a
    non-positive width, fewer than two classes or fewer than one input channel.
    """
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be at least 1, got {in_channels}")
    if is_factory(arch):
        return build_from_factory(arch, num_classes, in_channels, width, image_size)  # type: ignore[return-value]
    builder = MODELS.get(arch)
    return builder(num_classes, in_channels=in_channels, width=width, image_size=image_size)


def model_table(
    num_classes: int = 10, width: float = 1.0, in_channels: int = 3, image_size: int = 32
) -> list[tuple[str, int]]:
    """(name, trainable parameter count) for every registered architecture."""
    return [
        (name, count_parameters(build_model(name, num_classes, in_channels, width, image_size)))
        for name in MODELS.names()
    ]


def check_arch(name: str) -> str:
    """``name`` if it is a zoo architecture or an importable factory; else a ValueError naming it
    (the one check of every ``arch`` field: a model, a defence's surrogate)."""
    if is_factory(name):
        load_factory(name)  # raises a ValueError naming what cannot be imported
    elif name not in MODELS:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(MODELS.names())}, "
                         f"or a factory package.module:function")
    return name
