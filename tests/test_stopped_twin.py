"""A run stopped at an accuracy, written from its finished twin: the same weights as training it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import tiny_teacher

from undistill.checkpoint import load_checkpoint
from undistill.config import Runtime
from undistill.engine import TIMING_KEYS, train_run
from undistill.stopped_twin import from_twin, stop_epoch, twin_of


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _twin(runtime: Runtime) -> tuple[list[dict], int]:
    res = train_run(tiny_teacher(epochs=6), runtime)
    return _rows(Path(res.run_dir)), res.best_epoch


def test_stop_at_the_twins_best_epoch_is_read_off_the_twin(runtime: Runtime, tmp_path: Path
                                                            ) -> None:
    history, best = _twin(runtime)
    target = history[best]["eval/acc"]
    assert stop_epoch(history, target) == best > 0  # the stopped run would end at the twin's best
    es = tiny_teacher(epochs=6, stop_at_acc=target)
    assert twin_of(es).run_id == tiny_teacher(epochs=6).run_id != es.run_id
    derived = train_run(es, runtime)
    assert (derived.status, derived.best_epoch, derived.epochs_run, derived.wall_time_s) == (
        "stopped_at_acc", best, best + 1, 0.0)
    out = Path(derived.run_dir)
    saved = json.loads((out / "result.json").read_text())
    assert saved["derived_from"] == tiny_teacher(epochs=6).run_id
    assert train_run(es, runtime).cached  # a second call reads the written run

    trained = train_run(es, Runtime(runs_dir=tmp_path / "fresh", device="cpu", progress=False))
    assert trained.wall_time_s > 0  # no twin there: it trained
    mine, theirs = (load_checkpoint(Path(p) / "best.safetensors")[0]
                    for p in (derived.run_dir, trained.run_dir))
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert _rows(out) == _rows(Path(trained.run_dir))
    for k in ("best_acc", "best_epoch", "last_acc", "epochs_run", "status"):
        assert getattr(derived, k) == getattr(trained, k)


def test_a_stop_before_the_twins_best_or_never_trains(runtime: Runtime) -> None:
    history, best = _twin(runtime)
    early = history[0]["eval/acc"]
    assert stop_epoch(history, early) == 0 != best  # epoch 0's weights were not kept
    assert from_twin(tiny_teacher(epochs=6, stop_at_acc=early), runtime.runs_dir) is None
    too_high = min(100.0, max(r["eval/acc"] for r in history) + 0.01)
    assert stop_epoch(history, too_high) is None
    assert from_twin(tiny_teacher(epochs=6, stop_at_acc=too_high), runtime.runs_dir) is None
    # without a finished twin (another runs directory) nothing is written either
    assert from_twin(tiny_teacher(epochs=6, stop_at_acc=early), runtime.runs_dir / "none") is None
    assert not (runtime.runs_dir / "none").exists()


def test_a_run_without_a_target_is_never_derived(runtime: Runtime) -> None:
    _twin(runtime)
    assert from_twin(tiny_teacher(epochs=6), runtime.runs_dir) is None
