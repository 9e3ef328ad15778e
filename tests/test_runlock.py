"""A run folder has one owner: concurrent launches train once; orphans and unstarted folders go."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_teacher
from filelock import FileLock

from undistill.config import Runtime, load_config
from undistill.executor import ensure_trained
from undistill.presets import teacher_config
from undistill.runlock import discard_unstarted, lock_path, own_run, remove_orphans
from undistill.runs import bind_data

EPOCHS = 3
SETS = ["optim.batch_size=256"]


def _cli(runs: Path) -> list[str]:
    return [sys.executable, "-m", "undistill", "train", "--dataset", "digits", "--arch", "cnn",
            "--width", "0.25", "--epochs", str(EPOCHS), "--set", SETS[0], "--runs-dir", str(runs),
            "--device", "cpu", "--no-progress"]


def _wait_for(path: Path, text: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    pytest.fail(f"{text!r} never appeared in {path}: {path.read_text() if path.exists() else ''}")


def test_two_concurrent_processes_train_a_run_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    cfg = bind_data(load_config(None, SETS, base=teacher_config("digits", "cnn", 0.25, 0, EPOCHS)),
                    None)
    held = FileLock(lock_path(runs, cfg.run_id))
    lock_path(runs, cfg.run_id).parent.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with held:  # both processes start while the run is owned, so they are truly concurrent
        procs = []
        for i in range(2):
            out, err = (tmp_path / f"out{i}").open("w"), (tmp_path / f"err{i}").open("w")
            procs.append((subprocess.Popen(_cli(runs), env=env, stdout=out, stderr=err), out, err))
        for i in range(2):
            _wait_for(tmp_path / f"err{i}", "is in progress in another process")
    for proc, out, err in procs:
        assert proc.wait(timeout=300) == 0
        out.close()
        err.close()
    rows = [json.loads(x) for x in (runs / cfg.run_id / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(EPOCHS))  # not written twice
    outputs = [(tmp_path / f"out{i}").read_text() for i in range(2)]
    assert sum("(already trained)" in o for o in outputs) == 1, outputs
    assert all(f"run {cfg.run_id}: best" in o for o in outputs)


def test_the_waiting_process_says_so_and_reuses_the_result(tmp_path: Path, monkeypatch) -> None:
    rt = Runtime(runs_dir=tmp_path / "runs", device="cpu", progress=False)
    cfg = tiny_teacher(epochs=1)
    said: list[str] = []
    path = lock_path(rt.runs_dir, cfg.run_id)
    path.parent.mkdir(parents=True)
    with FileLock(path), pytest.raises(TimeoutError):  # the owner holds it: a waiter blocks
        FileLock(path).acquire(timeout=0.05)
    first = ensure_trained(cfg, rt)
    with own_run(Path(first.run_dir), rt.runs_dir, cfg.run_id, notify=said.append):
        pass
    assert said == []  # free lock: no message
    assert ensure_trained(cfg, rt).cached


def test_orphaned_tmp_files_are_removed_when_a_run_is_resumed(tmp_path: Path) -> None:
    rt = Runtime(runs_dir=tmp_path / "runs", device="cpu", progress=False)
    cfg = tiny_teacher(epochs=1)
    folder = rt.runs_dir / cfg.run_id
    folder.mkdir(parents=True)
    orphans = [folder / ".last.safetensors.abc123.tmp", folder / ".metrics.jsonl.x.tmp"]
    for p in orphans:
        p.write_bytes(b"half a file")
    ensure_trained(cfg, rt)
    assert not any(p.exists() for p in orphans)
    assert (folder / "result.json").exists()


def test_a_run_failing_before_training_leaves_no_folder(tmp_path: Path) -> None:
    rt = Runtime(runs_dir=tmp_path / "runs", device="cpu", progress=False)
    student = tiny_teacher(epochs=1)
    folder = rt.runs_dir / student.run_id
    with pytest.raises(RuntimeError), own_run(folder, rt.runs_dir, student.run_id):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        raise RuntimeError("the dataset could not be read")
    assert not folder.exists()


def test_discard_unstarted_keeps_resumable_and_foreign_folders(tmp_path: Path) -> None:
    resumable = tmp_path / "r"
    resumable.mkdir()
    (resumable / "config.json").write_text("{}")
    (resumable / "last.safetensors").write_bytes(b"x")
    assert not discard_unstarted(resumable) and resumable.exists()
    foreign = tmp_path / "f"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    (foreign / "notes.txt").write_text("mine")
    assert not discard_unstarted(foreign) and (foreign / "notes.txt").exists()
    started = tmp_path / "s"
    started.mkdir()
    for name in ("config.json", "metrics.jsonl", ".best.safetensors.q.tmp"):
        (started / name).write_text("")
    assert discard_unstarted(started) and not started.exists()
    assert remove_orphans(tmp_path / "absent") == []
