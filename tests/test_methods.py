"""The method registry: what each method file declares, and the lists derived from it."""

from __future__ import annotations

import pytest

from undistill import recipes
from undistill.methods import METHODS, data_free_form, method_names, stealing_methods
from undistill.search import search_methods
from undistill.suites.paper import TABLE1_COLUMNS
from undistill.suites.plan import column_method
from undistill.suites.spec import SuiteSpec, param_groups, table_columns

BUILT_IN = ("vanilla", "kd", "nasty", "htc", "scm", "skeptical", "skeptical+htc", "skeptical+scm",
            "dafl-kd", "dafl-htc", "hard-label", "soft-target")


def test_every_method_module_is_registered_without_a_list() -> None:
    assert set(BUILT_IN) <= set(METHODS.names())  # other tests may register more
    assert all(METHODS.get(n).description and METHODS.get(n).title for n in BUILT_IN)


def test_derived_lists_are_the_ones_the_package_used_to_write_out() -> None:
    assert [m for m in search_methods() if m in BUILT_IN] == ["htc", "scm", "skeptical+htc",
                                                               "skeptical+scm"]
    assert {"kd", "skeptical", "htc", "scm", "skeptical+htc", "skeptical+scm", "dafl-kd",
            "dafl-htc"} <= set(param_groups())
    assert "nasty" not in stealing_methods() and "vanilla" not in param_groups()
    assert data_free_form("kd") == "dafl-kd" and data_free_form("htc") == "dafl-htc"
    assert data_free_form("scm") is None
    assert table_columns()[:len(TABLE1_COLUMNS)] == TABLE1_COLUMNS
    assert {c: column_method(c) for c in TABLE1_COLUMNS} == {
        "vanilla": ("vanilla", "none"), "normal-kd": ("kd", "normal"),
        "nasty-kd": ("kd", "nasty"), "skeptical": ("skeptical", "nasty"),
        "htc": ("htc", "nasty"), "scm": ("scm", "scm"),
        "skeptical+htc": ("skeptical+htc", "nasty"), "skeptical+scm": ("skeptical+scm", "scm")}
    assert [m for m in method_names(lambda c: c.uses_sequence) if m in BUILT_IN] == [
        "scm", "skeptical+scm"]


def test_protocol_defaults_come_from_the_method_files() -> None:
    assert METHODS.get("kd").defaults_for("cifar10", "cnn") == {"alpha": 0.9, "temperature": 4.0}
    assert METHODS.get("skeptical").defaults_for("cifar10", "resnet18")["temperature"] == 20.0
    assert METHODS.get("htc").defaults_for("cifar10", "cnn") == {}
    assert METHODS.get("nasty").defaults_for("cifar100", "resnet18") == {
        "omega": 0.005, "temperature": 20.0}
    assert METHODS.get("dafl-kd").defaults_for("cifar100", "cnn")["ie"] == 20.0
    teacher = recipes.normal_teacher("digits", "cnn", 0.25)
    student = recipes.student(teacher, "mobilenetv2", "kd")
    assert student.method.params == {"alpha": 0.9, "temperature": 20.0}
    # HTC's defaults are declared once and reused by Skeptical+HTC and DAFL+HTC
    htc = METHODS.get("htc").Params()
    for name in ("skeptical+htc", "dafl-htc"):
        extra = {"image_size": 8, "channels": 1} if name.startswith("dafl") else {}
        p = METHODS.get(name).Params(**extra)
        assert (p.alpha, p.temperature, p.multiplier) == (htc.alpha, htc.temperature,
                                                          htc.multiplier)


def test_suites_reject_unknown_columns_groups_and_search_methods() -> None:
    base = {"name": "x", "dataset": "digits", "teachers": [{"arch": "cnn"}],
            "students": [{"arch": "cnn"}]}
    with pytest.raises(ValueError, match="unknown column"):
        SuiteSpec.model_validate({**base, "methods": ["nope"]})
    with pytest.raises(ValueError, match="unknown method group"):
        SuiteSpec.model_validate({**base, "params": {"vanilla": {}}})
    with pytest.raises(ValueError, match="no search space"):
        SuiteSpec.model_validate({**base, "data": {"val_fraction": 0.1},
                                  "search": {"methods": ["kd"], "grid": {"alpha": [0.5]}}})


def test_the_command_line_lists_methods_from_the_registry() -> None:
    from typer.testing import CliRunner

    from undistill.cli import app

    r = CliRunner().invoke(app, ["methods"], catch_exceptions=False)
    assert r.exit_code == 0 and all(name in r.stdout for name in BUILT_IN)
    r = CliRunner().invoke(app, ["steal", "--help"], catch_exceptions=False)
    assert "dafl-kd" in r.stdout and "skeptical+scm" in r.stdout
