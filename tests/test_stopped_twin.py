"""A run stopped at an accuracy, written from its finished twin: the same weights as training it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import tiny_teacher

from undistill.checkpoint import load_checkpoint
from undistill.config import Runtime
from undistill.engine import TIMING_KEYS, train_run
from undistill.run_result import RunResult
from undistill.stopped_twin import from_twin, releases_twin, stop_epoch, twin_of


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


def _result(best: int, runs: int, split: str = "val") -> RunResult:
    return RunResult(run_id="x", run_dir="x", best_acc=80.0, best_epoch=best, last_acc=79.0,
                     epochs_run=runs, status="complete", eval_split=split, wall_time_s=1.0)


def test_releases_twin_when_it_stops_at_the_epoch_the_twin_releases() -> None:
    twin = tiny_teacher(epochs=6)
    es = tiny_teacher(epochs=6, stop_at_acc=80.0)
    assert releases_twin(es, _result(3, 4), twin, _result(3, 6))  # both release epoch 3
    assert not releases_twin(es, _result(2, 3), twin, _result(3, 6))  # stopped before its best
    assert releases_twin(twin, _result(3, 6), twin, _result(3, 6))  # the twin itself
    # on the test split a run releases its last epoch: the stopped run's is not the twin's
    assert not releases_twin(es, _result(3, 4, "test"), twin, _result(3, 6, "test"))
    other = tiny_teacher(epochs=5, stop_at_acc=80.0)  # another training: not this twin's
    assert not releases_twin(other, _result(3, 4), twin, _result(3, 6))
