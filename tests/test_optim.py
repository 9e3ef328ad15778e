"""Optimisation: the one milestone rule, and the presets that use it."""

from __future__ import annotations

import pytest

from undistill.config import ConfigError, parse_config
from undistill.optim import OptimConfig, scaled_milestones
from undistill.presets import optim_preset, teacher_config, with_epochs


def test_milestones_keep_their_share_of_training() -> None:
    assert scaled_milestones([80, 120], 160, 16) == [8, 12]
    assert scaled_milestones([60, 120, 160], 200, 10) == [3, 6, 8]
    assert scaled_milestones([80, 120], 160, 2) == [1]  # 120/160 of 2 epochs rounds to the end
    assert scaled_milestones([1, 2], 100, 3) == [1]  # both fall in the first epoch: one drop


def test_presets_shorten_schedules_one_way() -> None:
    base = optim_preset("cifar10", "resnet18")
    short = optim_preset("cifar10", "resnet18", epochs=16)
    assert short == {**base, "epochs": 16, "milestones": [8, 12]}
    assert with_epochs(base, None) is base and with_epochs(base, 160) is base
    cfg = parse_config(teacher_config("cifar100", "resnet18", epochs=20))
    assert cfg.optim.epochs == 20 and cfg.optim.milestones == [6, 12, 16]
    assert optim_preset("digits", "cnn", epochs=3)["milestones"] == []


def test_optim_config_rejects_bad_milestones() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        OptimConfig(milestones=[120, 80])
    with pytest.raises(ConfigError, match="optim"):
        parse_config({**teacher_config("digits", "cnn"), "optim": {"epochs": 5, "milestones": [5]}})
