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
from undistill.audit_defences import defence_entry, parse_defences, welch_interval
from undistill.audit_summary import plateau, summarise, verdict_text
from undistill.cli import app
from undistill.config import ConfigError
from undistill.data.augment import normalize
from undistill.metrics import ece
from undistill.runs import get_dataset
from undistill.serve import BackgroundServer, ServeStats, create_app
from undistill.teachers import Teacher

DS = get_dataset("digits", None)
FAST = ["optim.batch_size=32"]
STEPS = {"steps": 4, "eval_every": 2}
TINY = ["--steps", "4", "--width", "0.25", "--device", "cpu", "--no-progress",
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
                curve_points=2, thief=STEPS, width=0.25, seeds=2, device="cpu", sets=FAST)
    t_acc = doc["teacher"]["accuracy"]
    assert t_acc > 0 and doc["teacher"]["scored_with"] is None
    # every attack at every budget, each over the two seeds
    assert [(c["method"], c["budget"]) for c in doc["curve"]] == [
        ("kd", 16), ("kd", 32), ("hard-label", 16), ("hard-label", 32)]
    assert [a["method"] for a in doc["attacks"]] == ["kd", "hard-label"]
    assert doc["attacks"] == [c for c in doc["curve"] if c["budget"] == 32]
    assert all(0 <= c["stopped_early"] <= 2 for c in doc["curve"])  # students per entry: 2
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
    assert doc["wall_time_s"] > 0
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
    (["--defence", "{name: nope}"], ["--defence", "unknown defence 'nope'"]),
    (["--defence", "{name: topk, params: {k: 11}}"], ["--defence", "k", "10 classes"]),
    (["--defence", "{name: topk, params: {k: 0}}"], ["--defence", "params.k"]),
    (["--defence", "{name: topk"], ["--defence", "YAML"]),
    (["--defence", "labels", "--defence", "labels"], ["--defence", "labels", "twice"]),
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
    r = invoke("audit", model_file, "--dataset", "digits", "--steps", "4", *args)
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


# ------------------------------------------------------------------ defences on the own model
def test_defences_give_utility_against_protection_with_intervals(model_file: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "audit"
    r = invoke("audit", model_file, "--dataset", "digits", "--budget", 32, "--methods",
               "kd,hard-label", "--curve-points", 1, "--seeds", 2, "--out", out, *TINY,
               "--defence", "none", "--defence", "labels",
               "--defence", "{name: topk, params: {k: 2}}")
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "audit.json").read_text())
    rows = doc["defences"]
    assert [e["label"] for e in rows] == ["none", "labels", "topk(k=2)"]
    assert [e["defence"] for e in rows] == [None, {"name": "labels", "params": {}},
                                            {"name": "topk", "params": {"k": 2}}]
    t_acc, best = doc["teacher"]["accuracy"], max(doc["attacks"], key=lambda a: a["accuracy_mean"])
    none, labels, topk = rows
    assert none["attacks"] == doc["attacks"] and none["protection_mean"] == 0.0
    assert none["utility"]["accuracy"] == pytest.approx(t_acc)
    assert none["utility"]["agreement"] == pytest.approx(100.0)
    # a one-hot release: the teacher's accuracy and top-1, confidence 1: ECE = 1 - accuracy
    assert labels["utility"]["accuracy"] == pytest.approx(t_acc)
    assert labels["utility"]["agreement"] == pytest.approx(100.0)
    assert labels["utility"]["ece"] == pytest.approx(1 - t_acc / 100, abs=1e-5)
    run_ids = {i for a in doc["attacks"] for i in a["run_ids"]}
    for e in (labels, topk):
        assert [a["method"] for a in e["attacks"]] == ["kd", "hard-label"]
        assert all(a["budget"] == 32 and a["seeds"] == [0, 1] for a in e["attacks"])
        assert not run_ids & {i for a in e["attacks"] for i in a["run_ids"]}  # its own students
        b = max(e["attacks"], key=lambda a: a["accuracy_mean"])
        assert e["best_attack"] == b["method"]
        assert e["best_attack_accuracy_mean"] == b["accuracy_mean"]
        assert e["best_attack_accuracy_ci"] == b["accuracy_ci"]
        assert e["protection_mean"] == pytest.approx(best["accuracy_mean"] - b["accuracy_mean"])
        assert e["protection_ci"] == pytest.approx(welch_interval(best["accuracy"], b["accuracy"]))
        from undistill.runs import read_run_config

        for d in b["run_dirs"]:
            assert read_run_config(Path(d)).defence.model_dump(mode="json") == e["defence"]
    # the defended attacks asked about the same images: nothing more is counted
    assert doc["queries_total"] == 1 + 31 + 450
    report = (out / "report.md").read_text()
    assert "## Defences: utility against protection" in report and "| topk(k=2) |" in report
    assert "protection: best attack undefended minus defended" in r.output
    assert "topk(k=2)" in r.output and "0 (reference)" in r.output


def test_ece_of_a_one_hot_release_and_of_a_confident_one() -> None:
    labels = torch.tensor([0, 1, 2, 0])
    one_hot = torch.eye(3)[torch.tensor([0, 1, 2, 1])]  # three right, one wrong, confidence 1
    assert ece(one_hot, labels) == pytest.approx(0.25)
    # two bins: confidence 0.9 (both right: |1 - 0.9|) and 0.5 (one of two right: 0)
    p = torch.tensor([[0.9, 0.1, 0.0], [0.05, 0.9, 0.05], [0.5, 0.3, 0.2], [0.2, 0.5, 0.3]])
    assert ece(p, torch.tensor([0, 1, 0, 0])) == pytest.approx(0.5 * 0.1)
    # rows that do not sum to one (rounded) are renormalised, as a client reads them
    assert ece(one_hot * 0.5, labels) == pytest.approx(0.25)


def test_protection_is_the_difference_of_the_best_means_with_a_welch_interval() -> None:
    undefended = [point(32, [80.0, 82.0, 84.0], "kd"), point(32, [70.0, 71.0, 72.0], "htc")]
    defended = [point(32, [50.0, 60.0, 70.0], "kd"), point(32, [61.0, 62.0, 63.0], "htc")]
    cfg = parse_defences(["labels"])[0]
    row = defence_entry(cfg, defended, None, undefended[0])
    assert row["best_attack"] == "htc" and row["best_attack_accuracy_mean"] == pytest.approx(62.0)
    assert row["protection_mean"] == pytest.approx(82.0 - 62.0)
    lo, hi = row["protection_ci"]
    # Welch: variances 4/3 and 1/3, df = (5/3)^2 / ((4/3)^2/2 + (1/3)^2/2) = 50/17
    from scipy import stats as st

    half = st.t.ppf(0.975, 50 / 17) * (5 / 3) ** 0.5
    assert (lo, hi) == pytest.approx((20.0 - half, 20.0 + half))
    assert row["utility"] == {"accuracy": None, "agreement": None, "ece": None}
    assert welch_interval([1.0], [2.0, 3.0]) is None
    assert welch_interval([5.0, 5.0], [2.0, 2.0]) == [3.0, 3.0]
    # specs: YAML or a name, none left out, aliases read as the registered name
    assert [c.label() for c in parse_defences(["none", "top-k", "{name: round}"], 10)] == [
        "topk(k=1)", "round(decimals=2)"]
    with pytest.raises(ConfigError, match="^--defence: .*unknown defence"):
        parse_defences(["bogus"])


def test_a_url_teacher_is_not_asked_again_for_its_defences(model_file: Path, tmp_path: Path) -> None:
    stats, server = served(model_file)
    out = tmp_path / "audit"
    with server:
        r = invoke("audit", f"{server.url}/v2/models/model", "--dataset", "digits", "--budget",
                   24, "--methods", "kd", "--curve-points", 2, "--seeds", 2, "--retries", 0,
                   "--out", out, *TINY, "--no-score", "--defence", "labels",
                   "--defence", "{name: round, params: {decimals: 1}}")
        assert r.exit_code == 0, r.output
        received = stats.images
    doc = json.loads((out / "audit.json").read_text())
    assert received == doc["queries_total"] == 24  # the defended answers come from the cache
    assert [e["label"] for e in doc["defences"]] == ["none", "labels", "round(decimals=1)"]
    assert all(e["utility"] == {"accuracy": None, "agreement": None, "ece": None}
               for e in doc["defences"])  # not scored: no utility
    assert all(e["protection_ci"] is not None for e in doc["defences"][1:])
    assert "n/a" in (out / "report.md").read_text()
