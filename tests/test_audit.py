"""Issue #19: the audit a security engineer can act on -- seeds with 95 % intervals, the fraction
of the teacher's accuracy, a curve for every attack, the plateau flag, every query counted (scoring
included, or skipped / done on a local copy) and a budget above the thief's pool refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import digits_torchscript
from typer.testing import CliRunner

from undistill import errors
from undistill.audit import audit
from undistill.audit_summary import plateau, summarise, verdict_text
from undistill.cli import app
from undistill.config import ConfigError
from undistill.data.augment import normalize
from undistill.runs import get_dataset
from undistill.serve import BackgroundServer, ServeStats, create_app
from undistill.teachers import Teacher

DS = get_dataset("digits", None)
FAST = ["optim.batch_size=32"]
TINY = ["--epochs", "1", "--width", "0.25", "--device", "cpu", "--no-progress",
        "--set", "optim.batch_size=32"]


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return digits_torchscript(tmp_path / "models" / "teacher.ts")


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


# ------------------------------------------------------------------- seeds, intervals, curve
def test_seeds_intervals_fraction_and_a_curve_for_every_attack(model_file: Path, tmp_path: Path
                                                               ) -> None:
    out = tmp_path / "audit"
    doc = audit(model_file, "digits", "cnn", 32, out, methods=["kd", "hard-label"],
                curve_points=2, epochs=1, width=0.25, seeds=2, device="cpu", sets=FAST)
    t_acc = doc["teacher"]["accuracy"]
    assert t_acc > 0 and doc["teacher"]["scored_with"] is None
    # every attack at every budget, each over the two seeds
    assert [(c["method"], c["budget"]) for c in doc["curve"]] == [
        ("kd", 16), ("kd", 32), ("hard-label", 16), ("hard-label", 32)]
    assert [a["method"] for a in doc["attacks"]] == ["kd", "hard-label"]
    assert doc["attacks"] == [c for c in doc["curve"] if c["budget"] == 32]
    for e in doc["curve"]:
        assert e["seeds"] == [0, 1] and len(set(e["run_ids"])) == 2
        lo, hi = e["accuracy_ci"]
        assert lo <= e["accuracy_mean"] <= hi and lo >= 0 and hi <= 100
        assert e["accuracy_mean"] == pytest.approx(sum(e["accuracy"]) / 2)
        lo, hi = e["agreement_ci"]
        assert lo <= e["agreement_mean"] <= hi
        assert e["fraction_of_teacher"] == pytest.approx(e["accuracy_mean"] / t_acc)
        assert e["fraction_of_teacher_ci"] == pytest.approx([v / t_acc for v in e["accuracy_ci"]])
        for folder in e["run_dirs"]:
            assert (Path(folder) / "result.json").is_file()
    # the seeds are different students learning from the same paid images
    from undistill.runs import load_run_model, read_run_config

    kd = doc["attacks"][0]
    a, b = (load_run_model(read_run_config(Path(d)), Path(d).parent, which="last")
            for d in kd["run_dirs"])
    assert any(not torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                      b.state_dict().values(), strict=True))
    cfgs = [read_run_config(Path(d)) for d in kd["run_dirs"]]
    assert [c.seed for c in cfgs] == [0, 1] and cfgs[0].data == cfgs[1].data
    # a file teacher: one query per distinct image (probe, 31 transfer images, 450 test images)
    assert doc["queries_total"] == 1 + 31 + 450
    assert doc["queries"]["attacks"] == 32 and doc["queries"]["scoring"] == 450
    best = max(doc["attacks"], key=lambda x: x["accuracy_mean"])
    assert doc["best"] == best["method"] and best["method"] in doc["verdict"]
    assert "with 32 queries" in doc["verdict"] or "at 32 queries" in doc["verdict"]
    assert doc["plateau"]["method"] == best["method"] and doc["defences"] == []
    assert json.loads((out / "audit.json").read_text()) == doc
    report = (out / "report.md").read_text()
    assert "**482**" in report and "| hard-label | 16 |" in report
    assert (out / "curve.png").stat().st_size > 1000


# -------------------------------------------------------------------------- query accounting
def served(model_file: Path):
    t = Teacher.open(model_file).bind_dataset(DS)
    app_ = create_app(t, stats=ServeStats())
    return app_.state.stats, BackgroundServer(app_)


@pytest.mark.parametrize("scoring", ["scored", "--no-score", "--score-with"])
def test_queries_total_is_what_the_server_received(scoring: str, model_file: Path,
                                                   tmp_path: Path) -> None:
    stats, server = served(model_file)
    out = tmp_path / "audit"
    extra = {"scored": [], "--no-score": ["--no-score"],
             "--score-with": ["--score-with", model_file]}[scoring]
    with server:
        r = invoke("audit", f"{server.url}/v2/models/model", "--dataset", "digits", "--budget",
                   24, "--methods", "kd", "--curve-points", 2, "--seeds", 2, "--retries", 0,
                   "--out", out, *TINY, *extra)
        assert r.exit_code == 0, r.output
        received = stats.images
    doc = json.loads((out / "audit.json").read_text())
    scored = 450 if scoring == "scored" else 0
    assert received == doc["queries_total"] == 24 + scored  # the budget alone, unless scored
    assert doc["queries"] == {**doc["queries"], "attacks": 24, "scoring": scored}
    assert f"queries sent to the teacher: {24 + scored}" in r.output
    direct = Teacher.open(model_file).bind_dataset(DS)
    answers = direct.logits(normalize(DS.test_images, DS.mean, DS.std))
    file_acc = 100.0 * float((answers.argmax(1) == DS.test_labels).float().mean())
    if scoring == "--no-score":
        assert doc["teacher"]["accuracy"] is None and doc["stealable"] is None
        assert all(a["fraction_of_teacher"] is None and a["agreement_mean"] is None
                   for a in doc["curve"])
        assert "not scored" in doc["verdict"] and "teacher: not scored" in r.output
    else:
        assert doc["teacher"]["accuracy"] == pytest.approx(file_acc, abs=0.3)
        assert doc["attacks"][0]["fraction_of_teacher"] is not None
    if scoring == "--score-with":
        assert doc["teacher"]["scored_with"] == str(model_file)


# --------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("args", "words"), [
    (["--budget", "2000"], ["--budget", "2000", "pool", "1347"]),
    (["--budget", "200", "--set", "data.fraction=0.1"], ["--budget", "200", "pool", "135"]),
    (["--seeds", "0"], ["--seeds", "at least 1"]),
    (["--score-with", "http://127.0.0.1:9/v2/models/m"], ["--score-with", "URL", "local copy"]),
    (["--no-score", "--score-with", "x.ts"], ["--score-with", "--no-score"]),
])
def test_bad_audit_input_is_one_line_and_nothing_is_done(args: list[str], words: list[str],
                                                         model_file: Path, tmp_path: Path,
                                                         monkeypatch) -> None:
    def never(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(errors, "_debug", False)
    monkeypatch.setattr("undistill.stealing.open_teacher", never)
    monkeypatch.setattr("undistill.executor.train_run", never)
    r = invoke("audit", model_file, "--dataset", "digits", "--epochs", "1", *args)
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert all(w in lines[0] for w in words), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_the_api_refuses_a_budget_above_the_pool_before_opening(model_file: Path, tmp_path: Path,
                                                                monkeypatch) -> None:
    def never(*a, **k):
        raise AssertionError("the teacher was opened")

    monkeypatch.setattr("undistill.stealing.open_teacher", never)
    with pytest.raises(ConfigError, match="budget: 1349 is above the thief's pool.*1347"):
        audit(model_file, "digits", budget=1349, out=tmp_path / "a")
    with pytest.raises(ConfigError, match="seeds"):
        audit(model_file, "digits", budget=16, seeds=0, out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


# --------------------------------------------------------------------------- pure functions
def point(budget: int, values: list[float], method: str = "kd") -> dict:
    return summarise(method, "cnn", budget, list(range(len(values))), values, None, None,
                     [f"r{budget}"] * len(values), [""] * len(values))


def test_plateau_flags_a_curve_still_rising_beyond_its_interval() -> None:
    rising = [point(100, [60, 61, 62]), point(200, [70, 71, 72]), point(50, [40, 41, 42])]
    p = plateau(rising)  # any order; the last two budgets are 100 and 200
    assert p["still_rising"] is True and (p["from_budget"], p["to_budget"]) == (100, 200)
    assert p["rise"] == pytest.approx(10.0) and p["half_width"] == pytest.approx(2.484, abs=1e-3)
    # a rise inside the wider of the two intervals is no evidence of more to steal
    flat = [point(100, [60, 70, 80]), point(200, [66, 67, 68])]
    p = plateau(flat)
    assert p["still_rising"] is False and p["rise"] == pytest.approx(-3.0)
    assert plateau([point(100, [60, 70, 80]), point(200, [71, 72, 73])])["still_rising"] is False
    # one seed: no interval, any rise counts; one budget: nothing to compare
    assert plateau([point(10, [50.0]), point(20, [50.5])])["still_rising"] is True
    assert plateau([point(10, [50.0]), point(20, [50.0])])["still_rising"] is False
    assert plateau([point(20, [50.0, 52.0])])["still_rising"] is None


def test_verdict_names_the_attack_its_interval_and_fraction() -> None:
    best = summarise("kd", "cnn", 5000, [0, 1, 2], [84.0, 85.0, 86.0], [90.0, 91.0, 92.0], 92.0,
                     ["a", "b", "c"], ["", "", ""])
    assert best["fraction_of_teacher"] == pytest.approx(85.0 / 92.0)
    text = verdict_text(best, 92.0, True, 5.0)
    assert text.startswith("stealable: with 5,000 queries a thief reaches 92.4% [")
    assert "of your accuracy (kd: 85.0% [" in text and "3 seeds" in text
    assert verdict_text(best, 92.0, False, 5.0).startswith("not stolen at 5,000 queries")
    blind = summarise("kd", "cnn", 5000, [0, 1, 2], [84.0, 85.0, 86.0], None, None,
                      ["a", "b", "c"], ["", "", ""])
    assert blind["fraction_of_teacher"] is None and blind["agreement_mean"] is None
    text = verdict_text(blind, None, None, 5.0)
    assert text.startswith("with 5,000 queries a thief reaches 85.0% [") and "not scored" in text
