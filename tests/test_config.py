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


# ------------------------------------------------------------ properties (Hypothesis)

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from undistill.config import apply_overrides  # noqa: E402

keys = st.text("abcdefghij_", min_size=1, max_size=8)
scalars = st.one_of(st.integers(-10**9, 10**9), st.booleans(), st.none(),
                    st.floats(allow_nan=False, allow_infinity=False, width=32),
                    st.text("abcdefghijklmnopqrstuvwxyz0123456789 -_", max_size=12))


def as_yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n") \
        .strip()


@settings(max_examples=200, deadline=None)
@given(path=st.lists(keys, min_size=1, max_size=4), value=scalars, base=st.dictionaries(
    keys, scalars, max_size=4))
def test_override_sets_exactly_the_value_at_its_path(path, value, base) -> None:
    data = {k: v for k, v in base.items() if k != path[0]}  # the path starts at a fresh key
    before = dict(data)
    apply_overrides(data, [f"{'.'.join(path)}={as_yaml(value)}"])
    node = data
    for p in path[:-1]:
        node = node[p]
    assert node[path[-1]] == value or (value != value and node[path[-1]] != node[path[-1]])
    assert {k: v for k, v in data.items() if k != path[0]} == before  # nothing else touched


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20).filter(lambda s: "=" not in s or s.startswith("=")))
def test_override_without_a_field_path_is_rejected(item) -> None:
    with pytest.raises(ConfigError, match="is not of the form field.path=value"):
        apply_overrides({}, [item])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), lr=st.floats(1e-6, 10.0), epochs=st.integers(1, 300),
       batch=st.integers(1, 4096), width=st.floats(0.05, 4.0), name=st.text(max_size=10),
       fraction=st.floats(0.01, 1.0))
def test_overrides_equal_the_same_yaml_and_identity_is_stable(seed, lr, epochs, batch, width, name,
                                                              fraction) -> None:
    base = teacher_config("digits", "cnn")
    base["optim"]["milestones"] = []
    sets = [f"seed={seed}", f"optim.lr={lr!r}", f"optim.epochs={epochs}",
            f"optim.batch_size={batch}", f"model.width={width!r}", f"data.fraction={fraction!r}",
            f"name={as_yaml(name)}"]
    via_sets = load_config(None, sets, base=base)
    direct = {**base, "seed": seed, "name": name, "optim": {**base["optim"], "lr": lr,
              "epochs": epochs, "batch_size": batch}, "model": {**base["model"], "width": width},
              "data": {**base["data"], "fraction": fraction}}
    cfg = parse_config(direct)
    assert via_sets == cfg and via_sets.run_id == cfg.run_id
    # key order, the human label and fields spelled out at their defaults do not change the id
    shuffled = parse_config(dict(reversed(list({**direct, "name": "other"}.items()))))
    assert shuffled.run_id == cfg.run_id
    explicit = parse_config({**direct, "stop_at_acc": None, "data": {**direct["data"],
                             "fingerprint": "", "labels": True}})
    assert explicit.run_id == cfg.run_id
    assert parse_config({**direct, "seed": seed + 1}).run_id != cfg.run_id


@settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(["optim.lr", "optim.epochs", "optim.batch_size", "model.width",
                              "data.fraction", "data.val_fraction", "optim.momentum"]),
       value=st.one_of(st.floats(-1e6, -1e-9), st.just("abc"), st.floats(1e3, 1e9)))
def test_bad_numbers_fail_naming_their_field(field, value) -> None:
    sets = [f"{field}={as_yaml(value)}"]
    try:
        load_config(None, sets, base=teacher_config("digits", "cnn"))
    except ConfigError as e:
        assert field in str(e)
    else:  # only a large value may be valid (epochs, batch size, ...)
        assert isinstance(value, float) and value >= 1e3 and field in (
            "optim.lr", "optim.epochs", "optim.batch_size")


@settings(max_examples=50, deadline=None)
@given(st.text("0123456789abcdefXYZ-", max_size=20))
def test_data_fingerprint_accepts_only_empty_or_16_hex_digits(text) -> None:
    d = teacher_config("digits", "cnn")
    d["data"]["fingerprint"] = text
    ok = text == "" or (len(text) == 16 and all(c in "0123456789abcdef" for c in text))
    if ok:
        assert parse_config(d).data.fingerprint == text
    else:
        with pytest.raises(ConfigError, match="data.fingerprint"):
            parse_config(d)
