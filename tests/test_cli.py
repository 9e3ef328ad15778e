"""The command line: every command end to end on tiny runs, and its error messages."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from undistill.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def only_run(runs: Path, method: str) -> Path:
    (d,) = [p for p in runs.iterdir() if f"-{method}-" in p.name]
    return d


def test_models_lists_reference_counts() -> None:
    r = invoke("models")
    assert r.exit_code == 0
    assert "11,173,962" in r.stdout and "357,514" in r.stdout
    r = invoke("models", "--classes", "100", "--width", "0.5", "--channels", "1", "--size", "28")
    assert r.exit_code == 0 and "cnn" in r.stdout


def test_config_prints_validated_config_and_rejects_bad_fields() -> None:
    r = invoke("config", "--dataset", "digits", "--arch", "cnn", "--set", "seed=4")
    assert r.exit_code == 0 and "run_id: digits-cnn-vanilla-" in r.stdout and "seed: 4" in r.stdout
    r = runner.invoke(app, ["config", "--dataset", "digits", "--arch", "cnn", "--set",
                            "optim.batch_size=0"])
    assert r.exit_code == 2 and "optim.batch_size" in r.output


def test_train_eval_nasty_scm_steal_defend(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    common = ["--runs-dir", str(runs), "--device", "cpu", "--no-progress"]
    r = invoke("train", "--dataset", "digits", "--arch", "cnn", "--width", "0.25", "--epochs", "2",
               *common)
    assert r.exit_code == 0 and "best" in r.stdout
    teacher = only_run(runs, "vanilla")
    r = invoke("eval", str(teacher), "--json", "--device", "cpu")
    rec = json.loads(r.stdout)
    assert rec["split"] == "test" and rec["samples"] == 450 and 0 <= rec["accuracy"] <= 100
    again = invoke("train", "--dataset", "digits", "--arch", "cnn", "--width", "0.25",
                   "--epochs", "2", *common)
    assert "already trained" in again.stdout

    dev = ["--device", "cpu", "--no-progress"]
    r = invoke("nasty", str(teacher), "--omega", "0.05", "--tau", "4", *dev)
    assert r.exit_code == 0 and "nasty teacher" in r.stdout
    nasty = only_run(runs, "nasty")
    r = invoke("scm", str(nasty), "--k", "2", *dev)
    assert r.exit_code == 0 and "S2" in r.stdout
    r = invoke("steal", str(nasty), "--arch", "cnn", "--width", "0.25", "--method", "htc",
               "--set", "optim.epochs=1", *dev)
    assert r.exit_code == 0 and "htc student" in r.stdout
    r = invoke("steal", str(nasty), "--arch", "cnn", "--width", "0.25", "--method", "kd",
               "--no-labels", "--set", "optim.epochs=1", *dev)
    assert r.exit_code == 0
    kd_runs = [p for p in runs.iterdir() if "-kd-" in p.name]
    cfg = json.loads((kd_runs[0] / "config.json").read_text())["config"]
    assert cfg["data"]["labels"] is False
    r = invoke("defend", str(nasty), "--release", "2", *dev)
    assert r.exit_code == 0 and "SCM defence" in r.stdout and "Nasty-ES" in r.stdout


def test_errors_are_clear(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "--dataset", "cifar10", "--arch", "resnet18",
                            "--data-root", str(tmp_path / "nowhere"), "--device", "cpu"])
    assert r.exit_code == 2 and "nowhere" in r.output and "does not exist" in r.output
    r = runner.invoke(app, ["eval", str(tmp_path)])
    assert r.exit_code == 2 and "not a run directory" in r.output
    r = runner.invoke(app, ["train"])
    assert r.exit_code == 2 and "CONFIG" in r.output
    r = runner.invoke(app, ["reproduce", "no-such-suite", "--dry-run"])
    assert r.exit_code == 2 and "unknown suite" in r.output


def test_reproduce_dry_run_prints_plan_without_data() -> None:
    r = invoke("reproduce", "cifar10", "--scale", "paper", "--dry-run", "--data-root", "/nonexistent")
    assert r.exit_code == 0
    assert "32 runs" in r.stdout and "estimated training time" in r.stdout and "later" in r.stdout
