"""Model zoo: exact reference parameter counts, feature/stage shapes, width scaling, generator."""

from __future__ import annotations

import pytest
import torch

from undistill.models import (
    MODELS,
    Generator,
    ModelOutput,
    ZooModel,
    build_model,
    count_parameters,
    model_table,
)

ARCHS = ["resnet18", "resnet34", "resnet50", "mobilenetv2", "shufflenetv2", "cnn"]
NARROW = 0.125

# full width, 3 input channels, 32x32 (the reference implementations' counts at 10 classes)
COUNTS = {
    10: {
        "resnet18": 11_173_962,
        "resnet34": 21_282_122,
        "resnet50": 23_520_842,
        "mobilenetv2": 2_254_090,
        "shufflenetv2": 1_268_646,
        "cnn": 357_514,
    },
    100: {
        "resnet18": 11_220_132,
        "resnet34": 21_328_292,
        "resnet50": 23_705_252,
        "mobilenetv2": 2_369_380,
        "shufflenetv2": 1_360_896,
        "cnn": 369_124,
    },
}


def test_registry_names() -> None:
    assert sorted(ARCHS) == MODELS.names()


@pytest.mark.parametrize("num_classes", [10, 100])
def test_parameter_counts(num_classes: int) -> None:
    assert dict(model_table(num_classes)) == COUNTS[num_classes]


@pytest.mark.parametrize(
    ("in_channels", "size"), [(1, 28), (3, 32), (1, 8), (3, 64)], ids=["28", "32", "8", "64"]
)
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_features_shapes(arch: str, in_channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 7, in_channels=in_channels, width=NARROW, image_size=size).eval()
    assert isinstance(model, ZooModel)
    x = torch.randn(2, in_channels, size, size)
    with torch.no_grad():
        out = model.forward_features(x)
        logits = model(x)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (2, 7)
    assert out.features.shape == (2, model.feature_dim)
    assert len(out.stages) >= 3
    assert [s.shape[1] for s in out.stages] == model.stage_channels
    assert all(s.dim() == 4 and s.shape[0] == 2 for s in out.stages)
    # shallow to deep: spatial size never grows
    sides = [s.shape[-1] for s in out.stages]
    assert sides == sorted(sides, reverse=True)
    torch.testing.assert_close(out.logits, logits)


def test_width_scaling_reduces_parameters() -> None:
    for name, full in COUNTS[10].items():
        assert count_parameters(build_model(name, 10, width=0.5)) < full


def test_grad_flows_through_narrow_model() -> None:
    model = build_model("shufflenetv2", 5, width=NARROW)
    out = model.forward_features(torch.randn(4, 3, 16, 16))
    (out.logits.sum() + sum(s.mean() for s in out.stages)).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_generator_shape_and_normalisation(channels: int, size: int) -> None:
    torch.manual_seed(0)
    gen = Generator(latent_dim=16, image_size=size, channels=channels, width=0.25)
    imgs = gen(torch.randn(32, 16))
    assert imgs.shape == (32, channels, size, size)
    mean = imgs.mean(dim=(0, 2, 3))
    std = imgs.std(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean, torch.zeros(channels), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, torch.ones(channels), atol=1e-2, rtol=0)
    assert gen.sample(3).shape == (3, channels, size, size)
    assert not gen.block2[-1].affine


def test_generator_rejects_bad_size() -> None:
    with pytest.raises(ValueError):
        Generator(latent_dim=8, image_size=30, channels=3)


def test_bad_arch_lists_known_names() -> None:
    with pytest.raises(KeyError, match="resnet18"):
        build_model("vgg16", 10)


@pytest.mark.parametrize(
    "kwargs", [{"width": 0.0}, {"width": -1.0}, {"num_classes": 1}, {"in_channels": 0}]
)
def test_bad_arguments(kwargs: dict) -> None:
    args = {"arch": "cnn", "num_classes": 10} | kwargs
    with pytest.raises(ValueError):
        build_model(**args)
