"""scripts/run_timeline.py: per-group training and wall time, gaps and test scoring from run files."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "run_timeline", Path(__file__).parents[1] / "scripts" / "run_timeline.py")
assert _spec is not None and _spec.loader is not None
run_timeline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_timeline)


def _run(root: Path, name: str, arch: str, method: str, start: float, end: float, train: float,
         epochs: int, test: float | None = None) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "result.json").write_text(json.dumps({
        "config": {"model": {"arch": arch}, "method": {"name": method}},
        "result": {"epochs_run": epochs, "wall_time_s": train}}))
    os.utime(d / "config.json", (start, start))
    os.utime(d / "result.json", (end, end))
    if test is not None:
        (d / "test.json").write_text("{}")
        os.utime(d / "test.json", (test, test))


def test_groups_gaps_and_scoring(tmp_path: Path) -> None:
    t = 1_000_000.0
    _run(tmp_path, "a", "cnn", "kd", t, t + 10, 8.0, 5, test=t + 40)
    _run(tmp_path, "b", "cnn", "kd", t + 12, t + 20, 7.0, 5)  # 2 s after a
    _run(tmp_path, "c", "resnet18", "vanilla", t + 25, t + 35, 9.0, 3, test=t + 38)
    (tmp_path / "unfinished").mkdir()  # no result.json: not read
    got = run_timeline.timeline(tmp_path)
    assert got["groups"]["cnn kd"] == {"runs": 2, "epochs": 10, "train_s": 15.0, "wall_s": 18.0}
    assert got["groups"]["resnet18 vanilla"]["wall_s"] == 10.0
    assert (got["span_s"], got["between_runs_s"], got["test_scoring_after_s"]) == (35.0, 7.0, 5.0)
    only = run_timeline.timeline(tmp_path, {"a", "c"})
    assert set(only["groups"]) == {"cnn kd", "resnet18 vanilla"} and only["between_runs_s"] == 15.0


def test_run_ids_are_found_anywhere_in_a_results_document() -> None:
    doc = {"records": [{"run_id": "r1", "teacher_run_id": "t"}], "teachers": [{"run_id": "t1"}],
           "search": [{"trials": [{"run_id": "s1"}]}]}
    assert run_timeline.run_ids(doc) == {"r1", "t1", "s1"}
