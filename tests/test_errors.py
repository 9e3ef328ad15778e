"""The CLI's error boundary: expected failures are one line and exit 2; --debug; Ctrl-C; resume."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from conftest import tiny_teacher
from safetensors import SafetensorError
from test_fingerprint import make_folder
from typer.testing import CliRunner

from undistill import checkpoint as ckpt_mod
from undistill import engine as engine_mod
from undistill import errors
from undistill.cli import app
from undistill.config import Runtime
from undistill.engine import TrainingDiverged, train_run
from undistill.runs import run_dir

runner = CliRunner()
TRAIN = ["train", "--dataset", "digits", "--arch", "cnn", "--width", "0.25", "--epochs", "1",
         "--set", "optim.batch_size=256", "--device", "cpu", "--no-progress"]


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def one_error_line(r) -> str:
    """The single error line (progress lines such as "decoding ..." may precede it)."""
    lines = [x for x in r.output.splitlines() if x.strip() and not x.startswith("decoding ")]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


def run_folders(runs: Path) -> list[Path]:
    return [p for p in runs.iterdir() if not p.name.startswith(".")] if runs.exists() else []


def test_divergence_in_train_is_one_line_and_leaves_no_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    r = invoke(*TRAIN, "--set", "optim.lr=1e10", "--runs-dir", str(runs))
    line = one_error_line(r)
    assert "non-finite loss in epoch 1" in line and "no checkpoint was written" in line
    assert "after epoch" not in line  # no checkpoint is claimed
    assert run_folders(runs) == []  # no folder holding only config.json


def test_runs_dir_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = one_error_line(invoke(*TRAIN, "--runs-dir", str(blocker / "runs")))
    assert str(blocker / "runs") in line


def test_read_only_runs_dir_is_one_line(tmp_path: Path, monkeypatch) -> None:
    def read_only(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))

    monkeypatch.setattr(ckpt_mod.tempfile, "mkstemp", read_only)
    runs = tmp_path / "runs"
    line = one_error_line(invoke(*TRAIN, "--runs-dir", str(runs)))
    assert "read-only" in line and str(runs) in line and "--runs-dir" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_runs_dir_by_permissions(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)
    try:
        line = one_error_line(invoke(*TRAIN, "--runs-dir", str(runs)))
    finally:
        runs.chmod(0o755)
    assert "permission denied" in line


def test_full_disk_while_writing_a_checkpoint_names_the_file(tmp_path: Path, monkeypatch) -> None:
    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: No space left on device (os error 28)")

    monkeypatch.setattr(ckpt_mod, "save_file", full)
    line = one_error_line(invoke(*TRAIN, "--runs-dir", str(tmp_path / "runs")))
    assert "cannot write checkpoint" in line and "best.safetensors" in line and "space" in line


def test_one_class_folder_is_one_line(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "data", shade=0, classes=("only",))
    runs = tmp_path / "runs"
    r = invoke("train", "--dataset", "folder", "--arch", "cnn", "--width", "0.25", "--epochs", "1",
               "--data-root", str(data), "--runs-dir", str(runs), "--device", "cpu", "--no-progress")
    line = one_error_line(r)
    assert "one class folder" in line and str(data / "train") in line
    assert run_folders(runs) == []


def test_debug_shows_the_exception(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(errors, "_debug", False)  # restored after the test
    argv = [*TRAIN, "--set", "optim.lr=1e10", "--runs-dir", str(tmp_path / "runs")]
    with pytest.raises(SystemExit) as stop:
        errors.main(app, argv)
    assert stop.value.code == 2
    with pytest.raises(TrainingDiverged):
        errors.main(app, [*argv, "--debug"])


def test_ctrl_c_prints_how_to_resume_and_exits_130(tmp_path: Path, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("undistill.executor.train_run", interrupted)
    r = runner.invoke(app, [*TRAIN, "--runs-dir", str(tmp_path / "runs")])
    assert r.exit_code == 130
    assert "rerun the same command to resume" in r.output


def test_unexpected_errors_keep_their_traceback(tmp_path: Path, monkeypatch) -> None:
    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("undistill.executor.train_run", bug)
    with pytest.raises(ZeroDivisionError):
        invoke(*TRAIN, "--runs-dir", str(tmp_path / "runs"))


def test_torn_last_metrics_line_is_dropped_on_resume(tmp_path: Path, monkeypatch) -> None:
    cfg = tiny_teacher(epochs=3)
    ref = Runtime(runs_dir=tmp_path / "ref", device="cpu", progress=False)
    train_run(cfg, ref)
    rt = Runtime(runs_dir=tmp_path / "torn", device="cpu", progress=False)
    real = ckpt_mod.save_checkpoint

    def killed(path, tensors, meta):
        if meta["epoch"] == 2:
            raise KeyboardInterrupt("killed")
        return real(path, tensors, meta)

    monkeypatch.setattr(engine_mod, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, rt)
    monkeypatch.setattr(engine_mod, "save_checkpoint", real)
    out = run_dir(cfg, rt.runs_dir)
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 2, "lr": 0.0')  # a kill in the middle of an append
    train_run(cfg, rt)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(x) for x in (run_dir(cfg, ref.runs_dir) / "metrics.jsonl").read_text()
            .splitlines()]
    drop = ("time_s", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows] == \
        [{k: v for k, v in r.items() if k not in drop} for r in want]


def test_a_torn_line_in_the_middle_is_named(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n{"epo\n{"epoch": 1}\n')
    with pytest.raises(ckpt_mod.CheckpointError, match=r"metrics.jsonl:2 is not a JSON line"):
        engine_mod._read_metrics(path, 5)


def test_teacher_commands_take_runs_dir(tmp_path: Path) -> None:
    for command in ("nasty", "scm", "steal", "defend", "search", "train", "eval", "reproduce"):
        assert "--runs-dir" in runner.invoke(app, [command, "--help"]).output, command
    first, other = tmp_path / "first", tmp_path / "other"
    assert invoke(*TRAIN, "--runs-dir", str(first)).exit_code == 0
    (teacher,) = run_folders(first)
    r = invoke("nasty", str(teacher), "--omega", "0.05", "--tau", "4", "--set", "optim.epochs=1",
               "--runs-dir", str(other), "--device", "cpu", "--no-progress")
    assert r.exit_code == 0, r.output
    assert any("-nasty-" in p.name for p in run_folders(other))  # written where it was asked
    assert not any("-nasty-" in p.name for p in run_folders(first))


def test_config_prints_the_run_id_of_the_data_it_would_read(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "A", shade=0)
    b = make_folder(tmp_path / "B", shade=40)
    ids = []
    for root in (a, b):
        r = invoke("config", "--dataset", "folder", "--arch", "cnn", "--data-root", str(root))
        ids.append(r.stdout.rsplit("# run_id: ", 1)[1].strip())
    assert ids[0] != ids[1]
    r = invoke("config", "--dataset", "folder", "--arch", "cnn")
    assert "pass --data-root" in r.stdout


def test_a_damaged_run_config_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "digits-cnn-vanilla-000000000000"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"run_id": "x", "conf')
    line = one_error_line(invoke("eval", str(run), "--device", "cpu"))
    assert str(run / "config.json") in line and "is not a run config" in line
