"""The HTC/SCM hyperparameter search chooses on a validation split and never reads the test set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from undistill import recipes
from undistill import runs as runs_mod
from undistill.cli import app
from undistill.config import Runtime
from undistill.executor import ensure_trained
from undistill.search import PAPER_GRID, SearchError, grid_for, grid_size, run_search

TINY = {"epochs": 1, "batch_size": 256}


class NoTestSplit:
    """A dataset whose test split cannot be read: any access to it fails the test."""

    def __init__(self, ds: Any) -> None:
        self._ds = ds

    def __getattr__(self, name: str) -> Any:
        if name.startswith("test_"):
            raise AssertionError(f"the search read the test split ({name})")
        return getattr(self._ds, name)


def test_paper_grid() -> None:
    assert grid_size(PAPER_GRID) == 4 * 4 * 9
    assert PAPER_GRID["alpha"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert grid_for("paper", "tinyimagenet")["temperature"] == [4.0, 20.0, 50.0, 100.0, 200.0]
    assert grid_for("paper", "cifar10")["temperature"] == [4.0, 20.0, 50.0, 100.0]
    with pytest.raises(ValueError, match="unknown grid"):
        grid_for("huge", "cifar10")


def test_search_never_reads_the_test_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = Runtime(runs_dir=tmp_path / "runs", device="cpu", progress=False)
    teacher = recipes.normal_teacher("digits", "cnn", 0.25, optim=TINY)
    ensure_trained(teacher, rt)  # the teacher is trained (and tested) before the search

    real = runs_mod.get_dataset
    monkeypatch.setattr(runs_mod, "get_dataset", lambda *a, **k: NoTestSplit(real(*a, **k)))
    out = tmp_path / "search"
    grid = {"multiplier": [10.0], "temperature": [4.0, 50.0], "alpha": [0.5, 0.9]}
    doc = run_search([teacher], "cnn", "htc", rt, grid=grid, trials=2, val_fraction=0.2,
                     width=0.25, optim=TINY, final=False, out_dir=out)
    assert len(doc["trials"]) == 2 and doc["final"] is None
    for t in doc["trials"]:
        assert t["eval_split"] == "val" and 0.0 <= t["val_acc"] <= 100.0
        cfg = runs_mod.read_run_config(rt.runs_dir / t["run_id"])
        assert cfg.data.val_fraction == 0.2
        assert cfg.method.params["multiplier"] == 10.0
        assert {k: cfg.method.params[k] for k in grid} == t["params"]
    assert len({tuple(sorted(t["params"].items())) for t in doc["trials"]}) == 2  # distinct points
    best = max(doc["trials"], key=lambda t: t["val_acc"])
    assert doc["best"]["val_acc"] == best["val_acc"]
    saved = json.loads((out / "search.json").read_text())
    assert saved["best"] == doc["best"] and saved["grid"] == grid and saved["selection_split"] == "val"

    # the test split is really guarded: a run evaluated on test trips the guard
    with pytest.raises(AssertionError, match="test split"):
        ensure_trained(recipes.student(teacher, "cnn", "htc", width=0.25, optim=TINY), rt)

    # the final run (full training set, on test) comes only after the choice; it reads test
    monkeypatch.setattr(runs_mod, "get_dataset", real)
    r = CliRunner().invoke(app, ["search", str(rt.runs_dir / teacher.run_id), "--arch", "cnn",
                                 "--method", "htc", "--width", "0.25", "--epochs", "1",
                                 "--grid", "small", "--trials", "1", "--val-fraction", "0.2",
                                 "--out", str(tmp_path / "cli"), "--device", "cpu",
                                 "--no-progress"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    cli_doc = json.loads((tmp_path / "cli" / "search.json").read_text())
    assert cli_doc["trials"][0]["eval_split"] == "val"
    assert cli_doc["final"]["eval_split"] == "test"
    assert cli_doc["final"]["params"] == cli_doc["best"]["params"]


def test_search_rejects_bad_requests(tmp_path: Path) -> None:
    rt = Runtime(runs_dir=tmp_path / "runs", device="cpu", progress=False)
    teacher = recipes.normal_teacher("digits", "cnn", 0.25, optim=TINY)
    with pytest.raises(SearchError, match="method"):
        run_search([teacher], "cnn", "kd", rt)
    with pytest.raises(SearchError, match="val_fraction"):
        run_search([teacher], "cnn", "htc", rt, val_fraction=0.0)
    with pytest.raises(SearchError, match="trial budget"):
        run_search([teacher], "cnn", "scm", rt, sampler="tpe")
    with pytest.raises(SearchError, match="both searched and fixed"):
        run_search([teacher], "cnn", "htc", rt, fixed={"alpha": 0.5})
    assert not (tmp_path / "runs").exists()  # nothing trained
    r = CliRunner().invoke(app, ["search", str(tmp_path / "nope"), "--method", "htc"])
    assert r.exit_code == 2


class FakeResult:
    def __init__(self, cfg: Any, split: str) -> None:
        p = cfg.method.params
        self.run_id, self.eval_split, self.cached = cfg.run_id, split, False
        # a made-up accuracy surface with its maximum at alpha 0.8, tau 50, m 10
        self.best_acc = 90 - 10 * abs(p["alpha"] - 0.8) - abs(p["temperature"] - 50) / 10 - abs(
            p["multiplier"] - 10) / 10
        self.last_acc = self.best_acc - 1


def test_tpe_and_grid_samplers_with_a_fake_trainer(tmp_path: Path) -> None:
    rt = Runtime(runs_dir=tmp_path / "runs", device="cpu", progress=False)
    teacher = recipes.normal_teacher("digits", "cnn", 0.25, optim=TINY)
    seen: list[Any] = []

    def train(cfg: Any, runtime: Runtime) -> FakeResult:
        seen.append(cfg)
        return FakeResult(cfg, "val" if cfg.data.val_fraction > 0 else "test")

    doc = run_search([teacher], "cnn", "scm", rt, grid="small", train=train, final=True)
    assert len(doc["trials"]) == 8 and doc["n_trials"] == 8  # the whole small grid
    assert doc["best"]["params"] == {"multiplier": 10.0, "temperature": 50.0, "alpha": 0.9}
    assert doc["final"]["eval_split"] == "test" and seen[-1].data.val_fraction == 0.0
    assert all(c.data.val_fraction == 0.1 for c in seen[:-1])
    doc = run_search([teacher], "cnn", "htc", rt, sampler="tpe", trials=6, train=train, final=False,
                     study_seed=1)
    assert len(doc["trials"]) == 6 and doc["sampler"] == "tpe"
    assert all(t["params"]["alpha"] in PAPER_GRID["alpha"] for t in doc["trials"])

    def leaky(cfg: Any, runtime: Runtime) -> FakeResult:
        return FakeResult(cfg, "test")

    with pytest.raises(SearchError, match="not on the validation split"):
        run_search([teacher], "cnn", "htc", rt, grid="small", trials=1, train=leaky)
