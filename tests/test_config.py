from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from undistill.config import ConfigError, load_config, parse_config
from undistill.presets import teacher_config


def test_presets_follow_protocol() -> None:
    c10 = parse_config(teacher_config("cifar10", "resnet18"))
    assert (c10.optim.epochs, c10.optim.milestones, c10.optim.gamma) == (160, [80, 120], 0.1)
    c100 = parse_config(teacher_config("cifar100", "resnet50"))
    assert (c100.optim.epochs, c100.optim.milestones, c100.optim.gamma) == (200, [60, 120, 160], 0.2)
    cnn = parse_config(teacher_config("cifar10", "cnn"))
    assert (cnn.optim.name, cnn.optim.lr, cnn.optim.weight_decay, cnn.optim.epochs) == (
        "adam", 1e-3, 0.0, 100)
    assert c10.optim.batch_size == 128


def test_same_config_same_run_id_and_name_is_not_identity() -> None:
    a = parse_config(teacher_config("digits", "cnn"))
    b = parse_config({**teacher_config("digits", "cnn"), "name": "my teacher"})
    assert a.run_id == b.run_id
    c = parse_config(teacher_config("digits", "cnn", seed=1))
    assert c.run_id != a.run_id
    assert a.run_id.startswith("digits-cnn-vanilla-")


def test_student_identity_includes_teacher() -> None:
    t1 = teacher_config("digits", "cnn")
    t2 = teacher_config("digits", "cnn", seed=5)
    s1 = parse_config({**teacher_config("digits", "cnn"), "teachers": [t1],
                       "method": {"name": "kd"}})
    s1b = parse_config({**teacher_config("digits", "cnn"), "teachers": [t2],
                        "method": {"name": "kd"}})
    assert s1.teachers[0].run_id in s1.identity()["teachers"]
    assert s1.run_id != s1b.run_id


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("optim.lr=-0.1", "optim.lr"),
        ("optim.epochs=0", "optim.epochs"),
        ("optim.name=rmsprop", "optim.name"),
        ("data.name=imagenet21k", "data.name"),
        ("data.fraction=1.5", "data.fraction"),
        ("data.fraction=0", "data.fraction"),
        ("model.arch=vgg", "model.arch"),
        ("model.width=0", "model.width"),
        ("optim.milestones=[10,5]", "optim"),
        ("method.name=nope", "method"),
        ("bogus=1", "bogus"),
        ("data.labels=false", "data.labels"),
    ],
)
def test_invalid_values_fail_naming_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [override], base=teacher_config("digits", "cnn", epochs=15))
    assert field in str(e.value)


def test_milestones_beyond_epochs_rejected() -> None:
    base = teacher_config("cifar10", "resnet18")
    with pytest.raises(ConfigError, match="milestones"):
        load_config(None, ["optim.epochs=50"], base=base)


def test_yaml_file_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text(yaml.safe_dump(teacher_config("digits", "resnet18", width=0.25)))
    cfg = load_config(f, ["optim.lr=0.01", "seed=3"])
    assert cfg.optim.lr == 0.01 and cfg.seed == 3 and cfg.model.width == 0.25
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="field.path=value"):
        load_config(f, ["no-equals-sign"])


def test_identity_ignores_fields_at_their_default() -> None:
    base = teacher_config("digits", "cnn")
    a = parse_config(base)
    explicit = parse_config({**base, "data": {"name": "digits", "resize": None, "fraction": 1.0},
                             "stop_at_acc": None})
    assert a.run_id == explicit.run_id
    assert "resize" not in a.identity()["data"]
    assert parse_config({**base, "data": {"name": "digits", "resize": 6}}).run_id != a.run_id
    kd = parse_config({**base, "teachers": [base], "method": {"name": "kd"}})
    assert kd.identity()["method"]["params"] == {"alpha": 0.9, "temperature": 4.0}
