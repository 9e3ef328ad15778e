"""Issue #21, command line: every bad argument is one line naming the flag, exit status 2, no
traceback, and is caught before anything is trained, queried or written."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
import typer
from conftest import digits_torchscript
from torch import nn
from typer.testing import CliRunner

from undistill import errors
from undistill.audit import audit
from undistill.cli import app
from undistill.config import ConfigError
from undistill.data import DatasetError, load_dataset
from undistill.engine import select_device
from undistill.teachers import TeacherError

runner = CliRunner()
DEAD_URL = "http://127.0.0.1:9/v2/models/m"  # nothing listens there
FAST = ["--retries", "0", "--timeout", "0.5"]


@pytest.fixture(autouse=True)
def _no_work(tmp_path: Path, monkeypatch):
    """Run in an empty folder; training, serving and writing a run are bugs in these tests."""
    def never(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("undistill.executor.train_run", never)
    monkeypatch.setattr(importlib.import_module("undistill.serve"), "serve", never)
    monkeypatch.setattr(errors, "_debug", False)
    yield


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return digits_torchscript(tmp_path / "models" / "teacher.ts")


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_error_line(r) -> str:
    lines = [x for x in r.output.splitlines() if x.strip() and not x.startswith("decoding ")]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    return lines[0]


def nothing_written(tmp_path: Path) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["models"]), list(tmp_path.iterdir())


def commands(model: Path) -> dict[str, list[str]]:
    """A valid invocation of each teacher command (up to the flag under test)."""
    return {
        "serve": ["serve", str(model), "--dataset", "digits"],
        "inspect": ["inspect", str(model), "--dataset", "digits"],
        "audit": ["audit", str(model), "--dataset", "digits", "--budget", "16", "--steps", "4"],
        "steal": ["steal", "--teacher", str(model), "--dataset", "digits", "--budget", "16"],
    }


# ------------------------------------------------------------------------------------ --device
@pytest.mark.parametrize("command", ["train", "inspect", "audit", "steal"])
def test_unknown_device_is_one_line_before_any_work(command: str, model_file: Path,
                                                    tmp_path: Path) -> None:
    args = (["train", "--dataset", "digits", "--arch", "cnn", "--epochs", "1"] if command == "train"
            else commands(model_file)[command])
    line = one_error_line(invoke(*args, "--device", "banana"))
    assert "--device" in line and "banana" in line and "cpu" in line
    nothing_written(tmp_path)


def test_a_device_this_machine_lacks_is_one_line(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = one_error_line(invoke("train", "--dataset", "digits", "--arch", "cnn", "--device",
                                 "cuda:1"))
    assert "--device" in line and "cuda:1" in line and "not available" in line
    nothing_written(tmp_path)


def test_select_device_raises_a_config_error() -> None:
    with pytest.raises(ConfigError, match="banana"):
        select_device("banana")
    assert select_device("cpu") == torch.device("cpu")


# ----------------------------------------------------------------------------------- --dataset
@pytest.mark.parametrize("command", ["serve", "inspect", "audit", "steal"])
def test_unknown_dataset_lists_the_known_ones(command: str, model_file: Path, tmp_path: Path
                                               ) -> None:
    args = [a if a != "digits" else "nosuch" for a in commands(model_file)[command]]
    line = one_error_line(invoke(*args))
    assert "--dataset" in line and "'nosuch'" in line and "digits, fashion-mnist" in line
    nothing_written(tmp_path)


def test_load_dataset_of_an_unknown_name_is_a_dataset_error() -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'nosuch'; known: .*digits"):
        load_dataset("nosuch")


# ----------------------------------------------------------------------------- unparsable URL
@pytest.mark.parametrize("command", ["serve", "inspect", "audit", "steal"])
def test_a_url_that_does_not_parse_is_one_line(command: str, model_file: Path, tmp_path: Path
                                               ) -> None:
    args = [a if a != str(model_file) else "http://[::1" for a in commands(model_file)[command]]
    line = one_error_line(invoke(*args))
    assert "http://[::1" in line and "URL" in line
    nothing_written(tmp_path)


def test_inspect_reference_url_is_checked_too(model_file: Path) -> None:
    line = one_error_line(invoke(*commands(model_file)["inspect"], "--reference", "http://[::1"))
    assert "--reference" in line and "http://[::1" in line


# --------------------------------------------------------------------------- audit's arguments
@pytest.mark.parametrize(("flag", "value", "words"), [
    ("--curve-points", "0", ["--curve-points", "at least 1"]),
    ("--methods", "knockoff", ["--methods", "knockoff", "hard-label", "htc", "kd", "skeptical"]),
    ("--methods", "kd,vanilla", ["--methods", "vanilla", "hard-label"]),
    ("--methods", " , ", ["--methods", "at least one"]),
    ("--methods", "kd,htc,kd", ["--methods", "'kd'", "twice"]),
    ("--budget", "0", ["--budget", "at least 2"]),
    ("--budget", "-5", ["--budget", "at least 2"]),
    ("--steps", "0", ["--steps", "at least 1"]),
    ("--strategies", "uncertainty,psychic", ["--strategies", "psychic", "k-center", "knockoff"]),
    ("--strategies", "random,random", ["--strategies", "'random'", "twice"]),
    ("--query-data", "nowhere:/x", ["--query-data", "nowhere", "folder"]),
    ("--width", "0", ["--width", "(0, 4]"]),
    ("--width", "-1", ["--width", "(0, 4]"]),
    ("--width", "5", ["--width", "(0, 4]"]),
])
def test_audit_rejects_bad_arguments_before_any_work(flag: str, value: str, words: list[str],
                                                      model_file: Path, tmp_path: Path,
                                                      monkeypatch) -> None:
    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was opened before the arguments were checked")

    monkeypatch.setattr("undistill.stealing.open_teacher", no_teacher)
    line = one_error_line(invoke(*commands(model_file)["audit"], flag, value))
    assert all(w in line for w in words), line
    nothing_written(tmp_path)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"curve_points": 0}, ["curve_points", "at least 1"]),
    ({"methods": ["knockoff"]}, ["knockoff", "known: ", "hard-label"]),
    ({"methods": []}, ["methods", "at least one"]),
    ({"methods": ["kd", "kd"]}, ["'kd'", "twice"]),
    ({"budget": 1}, ["budget", "at least 2"]),
    ({"thief": {"steps": 0}}, ["thief.steps", "greater than or equal to 1"]),
    ({"thief": {"holdout": 0.7}}, ["thief.holdout", "less than 0.5"]),
    ({"thief": {"wings": 2}}, ["thief.wings", "Extra inputs"]),
    ({"strategies": ["psychic"]}, ["strategies", "psychic", "k-center"]),
    ({"width": 0.0}, ["width", "(0, 4]"]),
    ({"margin": -1.0}, ["margin", "at least 0"]),
    ({"device": "banana"}, ["device", "banana"]),
    ({"api_key": ""}, ["api_key", "empty"]),
])
def test_the_audit_api_checks_its_arguments_first(kwargs: dict, words: list[str], model_file: Path,
                                                  tmp_path: Path, monkeypatch) -> None:
    def no_teacher(*args, **kw):
        raise AssertionError("the teacher was opened before the arguments were checked")

    monkeypatch.setattr("undistill.stealing.open_teacher", no_teacher)
    with pytest.raises(ConfigError) as e:
        audit(model_file, "digits", **{"budget": 16, **kwargs})
    assert all(w in str(e.value) for w in words), str(e.value)
    nothing_written(tmp_path)


# ------------------------------------------------------------------------ numeric flag ranges
@pytest.mark.parametrize(("command", "flag", "value", "words"), [
    ("serve", "--port", "99999", ["0", "65535"]),
    ("serve", "--port", "-1", ["0", "65535"]),
    ("serve", "--max-request-mb", "-1", ["greater than 0"]),
    ("serve", "--max-request-mb", "0", ["greater than 0"]),
    ("serve", "--top-k", "0", ["at least 1"]),
    ("serve", "--decimals", "-1", ["at least 0"]),
    ("serve", "--input-size", "0", ["at least 1"]),
    ("serve", "--num-classes", "1", ["at least 2"]),
    ("serve", "--teacher-width", "0", ["(0, 4]"]),
    ("serve", "--max-request-mb", "inf", ["finite"]),
    ("serve", "--max-inflight-mb", "-1", ["greater than 0"]),
    ("serve", "--body-timeout", "0", ["greater than 0"]),
    ("audit", "--rate", "-1", ["greater than 0"]),
    ("audit", "--rate", "0", ["greater than 0"]),
    ("audit", "--concurrency", "0", ["at least 1"]),
    ("audit", "--timeout", "0", ["greater than 0"]),
    ("audit", "--retries", "-1", ["at least 0"]),
    ("audit", "--request-batch", "0", ["at least 1"]),
    ("steal", "--rate", "-2", ["greater than 0"]),
    ("steal", "--budget", "1", ["at least 2"]),
    ("steal", "--width", "0", ["(0, 4]"]),
    ("steal", "--teacher-width", "-1", ["(0, 4]"]),
    ("steal", "--timeout", "-3", ["greater than 0"]),
    ("inspect", "--temperature", "0", ["greater than 0"]),
])
def test_numeric_flags_are_range_checked(command: str, flag: str, value: str, words: list[str],
                                         model_file: Path, tmp_path: Path) -> None:
    line = one_error_line(invoke(*commands(model_file)[command], flag, value))
    assert flag in line and value in line and all(w in line for w in words), line
    nothing_written(tmp_path)


@pytest.mark.parametrize(("args", "flag"), [
    (["train", "--dataset", "digits", "--arch", "cnn", "--epochs", "0"], "--epochs"),
    (["search", "runs/x", "--trials", "0"], "--trials"),
    (["models", "--classes", "0"], "--classes"),
])
def test_other_commands_range_check_too(args: list[str], flag: str, tmp_path: Path) -> None:
    assert flag in one_error_line(invoke(*args))
    nothing_written(tmp_path)


def test_every_numeric_flag_has_a_range_rule() -> None:
    from undistill.cli.checks import EXEMPT, RULES, parameters

    numeric = {(info.callback.__name__, name) for info in app.registered_commands if info.callback
               for name, (_, types) in parameters(info.callback).items()
               if int in types or float in types}
    assert ("serve", "port") in numeric and ("inspect", "temperature") in numeric
    unruled = {(c, p) for c, p in numeric if p not in RULES and p not in EXEMPT}
    assert not unruled, f"numeric flags without a range rule or a reason: {sorted(unruled)}"


def test_flags_are_named_as_typed() -> None:
    from undistill.cli.checks import parameters

    serve = next(i.callback for i in app.registered_commands
                 if i.callback and i.callback.__name__ == "serve")
    flags = {name: flag for name, (flag, _) in parameters(serve).items()}
    assert flags["teacher"] == "TEACHER" and flags["top_k"] == "--top-k"
    assert flags["spec_file"] == "--spec" and flags["max_request_mb"] == "--max-request-mb"


# ------------------------------------------------------------------------------ empty API keys
@pytest.mark.parametrize("command", ["serve", "inspect", "audit", "steal"])
def test_an_empty_api_key_is_refused(command: str, model_file: Path, tmp_path: Path,
                                     monkeypatch) -> None:
    monkeypatch.setenv("UNDISTILL_TEST_KEY", "")
    args = commands(model_file)[command]
    if command != "serve":  # the client commands: the key is sent to a URL teacher
        args = [a if a != str(model_file) else DEAD_URL for a in args]
        args += FAST if command != "inspect" else []
    line = one_error_line(invoke(*args, "--api-key-env", "UNDISTILL_TEST_KEY"))
    assert "--api-key-env" in line and "UNDISTILL_TEST_KEY" in line and "empty" in line
    nothing_written(tmp_path)


def test_an_empty_api_key_variable_name_is_refused(model_file: Path) -> None:
    line = one_error_line(invoke(*commands(model_file)["serve"], "--api-key-env", ""))
    assert "--api-key-env" in line


# ----------------------------------------------------------------------------- --trust-factory
@pytest.mark.parametrize("command", ["serve", "inspect", "audit", "steal"])
def test_trust_factory_is_a_flag_passed_to_open_source(command: str, model_file: Path,
                                                       monkeypatch) -> None:
    seen: list[object] = []

    def spy(source, spec=None, **kwargs):
        seen.append(kwargs.get("trust_factory", "not passed"))
        raise TeacherError(f"{source}: stop here")

    monkeypatch.setattr("undistill.teachers.open_source", spy)
    monkeypatch.setattr("undistill.stealing.open_source", spy)
    help_text = " ".join(invoke(command, "--help").output.replace("│", " ").split())
    assert "--trust-factory" in help_text and "(this runs that code)" in help_text
    one_error_line(invoke(*commands(model_file)[command]))
    one_error_line(invoke(*commands(model_file)[command], "--trust-factory"))
    assert seen == [False, True]


# ------------------------------------------------------------------- state_dicts: the arch flag
@pytest.mark.parametrize("command", ["serve", "inspect", "audit", "steal"])
def test_a_state_dict_without_architecture_names_teacher_arch(command: str, tmp_path: Path) -> None:
    path = tmp_path / "models" / "weights.pt"
    path.parent.mkdir()
    torch.save(nn.Linear(64, 10).state_dict(), path)
    line = one_error_line(invoke(*commands(path)[command]))
    assert "--teacher-arch" in line and "(--arch" not in line


# -------------------------------------------------------------------------------------- --debug
def test_debug_shows_the_teacher_commands_exceptions(tmp_path: Path) -> None:
    argv = ["inspect", str(tmp_path / "nope.onnx"), "--dataset", "digits"]
    with pytest.raises(SystemExit) as stop:
        errors.main(app, argv)
    assert stop.value.code == 2
    with pytest.raises(TeacherError, match="no such model file"):
        errors.main(app, [*argv, "--debug"])


def test_the_boundary_knows_teacher_errors() -> None:
    def opens_a_bad_teacher() -> None:
        raise TeacherError("model.onnx: not an ONNX model")

    with pytest.raises(typer.Exit) as stop:
        errors.boundary(opens_a_bad_teacher)()
    assert stop.value.exit_code == 2


def test_debug_shows_the_exception_of_a_bad_flag(model_file: Path) -> None:
    with pytest.raises(ConfigError, match="--port"):
        errors.main(app, [*commands(model_file)["serve"], "--port", "99999", "--debug"])


# ------------------------------------------------------------------- audit.json names real runs
def test_audit_json_run_dirs_exist(tmp_path: Path, monkeypatch) -> None:
    """On data under --data-root (a fingerprint in every run id) the students' folders are the
    ids of the data-bound configs: audit.json names those, for each attack and curve point."""
    from test_fingerprint import make_folder

    from undistill.engine import train_run

    monkeypatch.setattr("undistill.executor.train_run", train_run)  # this test trains
    data = make_folder(tmp_path / "data", shade=0)
    torch.manual_seed(0)
    model = tmp_path / "models" / "teacher.ts"
    model.parent.mkdir()
    torch.jit.save(torch.jit.trace(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval(),
                                   torch.randn(2, 1, 8, 8)), model)
    out = tmp_path / "audit"
    r = invoke("audit", model, "--dataset", "folder", "--data-root", data, "--budget", "8",
               "--out", out, "--steps", "2", "--width", "0.25", "--methods", "kd",
               "--curve-points", "2", "--device", "cpu", "--no-progress",
               "--set", "optim.batch_size=4")
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "audit.json").read_text())
    entries = doc["attacks"] + doc["curve"]
    assert [e["budget"] for e in entries] == [8, 4, 8]
    for e in entries:
        assert len(e["run_ids"]) == len(e["run_dirs"]) == len(e["seeds"]) == 3, e
        for run_id, folder in zip(e["run_ids"], e["run_dirs"], strict=True):
            assert (out / "runs" / run_id / "result.json").is_file(), e
            assert Path(folder).resolve() == (out / "runs" / run_id).resolve()


def test_a_policy_the_model_cannot_serve_is_one_line(model_file: Path, tmp_path: Path) -> None:
    """top-k with k above the model's classes fails before serving (it was a traceback inside the
    server's start-up)."""
    line = one_error_line(invoke(*commands(model_file)["serve"], "--policy", "top-k", "--top-k", "20"))
    assert "k" in line and "20" in line and "10" in line
    nothing_written(tmp_path)


def test_serve_without_its_extra_is_one_line(model_file: Path, monkeypatch, tmp_path: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvicorn" else real(name, *a))
    line = one_error_line(invoke(*commands(model_file)["serve"]))
    assert "uvicorn" in line and "undistill[serve]" in line
