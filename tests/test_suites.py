"""Suites: planning, dry-run, results schema, caching, resuming an interrupted suite."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from undistill import engine as engine_mod
from undistill.config import ConfigError, Runtime
from undistill.executor import LocalExecutor
from undistill.suites import build_plan, builtin_suites, dry_run, load_suite, reproduce
from undistill.suites.runner import RECORD_FIELDS

TINY = {
    "name": "tiny",
    "dataset": "digits",
    "teachers": [{"arch": "cnn", "width": 0.25, "epochs": 1, "nasty": {"omega": 0.04,
                                                                     "temperature": 4}}],
    "students": [{"arch": "cnn", "width": 0.5, "epochs": 1}],
    "scm": {"k": 2},
    "defence": {"release": 2},
    "params": {"skeptical": {"kd_delay": -1}, "skeptical+htc": {"kd_delay": -1},
               "skeptical+scm": {"kd_delay": -1}},
    "notes": ["a test suite"],
    "ablations": [
        {"name": "htc-tau", "columns": ["htc"], "param": "temperature", "values": [10, 50]},
        {"name": "few-data", "columns": ["nasty-kd"], "param": "fraction", "values": [0.5]},
    ],
}


@pytest.fixture
def tiny(tmp_path: Path):
    f = tmp_path / "tiny.yaml"
    f.write_text(yaml.safe_dump(TINY))
    return load_suite(f)


def test_builtin_suites_load_and_plan_every_scale() -> None:
    names = builtin_suites()
    assert {"demo", "fashion-mnist", "cifar10", "cifar100", "tinyimagenet"} <= set(names)
    for name in names:
        suite = load_suite(name)
        for scale in suite.scales:
            plan = build_plan(suite, scale)
            assert plan.cells and len({r.run_id for r in plan.runs()}) == len(plan.runs())


def test_paper_suites_match_the_papers_rows() -> None:
    c10 = build_plan(load_suite("cifar10"), "paper")
    assert [t.arch for t in c10.suite.teachers] == ["resnet18"]
    assert {c.student_arch for c in c10.cells} == {"cnn", "mobilenetv2", "shufflenetv2"}
    nasty = c10.groups[0].nasty
    assert nasty.method.params == {"omega": 0.04, "temperature": 4.0}
    assert nasty.optim.epochs == 160 and nasty.optim.milestones == [80, 120]
    c100 = build_plan(load_suite("cifar100"), "paper")
    assert [g.nasty.method.params["omega"] for g in c100.groups] == [0.005, 0.005]
    assert [g.defence is not None for g in c100.groups] == [False, True]  # Table 6: ResNet-50
    cnn = next(c for c in c100.cells if c.student_arch == "cnn" and c.column == "vanilla")
    assert (cnn.run.optim.name, cnn.run.optim.epochs) == ("adam", 100)


def test_plan_shares_runs_between_tables(tiny) -> None:
    plan = build_plan(tiny)
    by = {(c.table, c.column): c.run.run_id for c in plan.cells}
    assert by[("table6", "normal")] == by[("table1", "normal-kd")]
    assert by[("table6", "nasty")] == by[("table1", "nasty-kd")]
    scm = next(c for c in plan.cells if c.column == "scm")
    assert [t.run_id for t in scm.run.teachers] == [g.run_id for g in plan.groups[0].sequence]
    # normal, nasty, S2; 8 Table 1 students; the SCM-defence student (Nasty-ES comes later);
    # ablations: HTC at tau 10 (tau 50 is the Table 1 HTC run itself) and nasty KD on half the data
    assert len(plan.runs()) == 3 + 8 + 1 + 2
    tau50 = next(c for c in plan.cells if c.ablation == "htc-tau" and c.x == 50)
    assert tau50.run.run_id == by[("table1", "htc")]
    assert plan.pending and "Nasty-ES" in plan.pending[0]


def test_nasty_es_is_the_nasty_teacher_when_its_training_never_reaches_the_target(tiny) -> None:
    """Nasty-ES retrains the nasty teacher, stopping at the SCM release's accuracy; where the nasty
    training never reaches it, that retraining would be the nasty run again: it is not repeated."""
    from undistill.suites.plan import nasty_es_cells

    plan = build_plan(tiny)
    g = plan.groups[0]
    release = {g.defence.run_id: 90.0}
    stops = nasty_es_cells(plan, release, {g.nasty.run_id: 95.0})
    assert stops and all(c.teacher_run.stop_at_acc == 90.0 for c in stops)
    never = nasty_es_cells(plan, release, {g.nasty.run_id: 80.0})
    assert [c.teacher_run.run_id for c in never] == [g.nasty.run_id] * len(never)
    nasty_kd = {c.run.run_id for c in plan.cells if c.column == "nasty-kd"}
    assert {c.run.run_id for c in never} <= nasty_kd  # Nasty KD's students, nothing new
    assert all(c.column == "nasty-es" for c in never)


def test_invalid_suites_fail_clearly(tmp_path: Path) -> None:
    bad = dict(TINY, methods=["vanilla", "telepathy"])
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="methods"):
        load_suite(f)
    with pytest.raises(ConfigError, match="unknown suite"):
        load_suite("no-such-suite")
    with pytest.raises(ValueError, match="no scale"):
        build_plan(load_suite("cifar10"), "huge")


def test_reproduce_writes_results_then_reuses_every_run(tiny, tmp_path: Path, monkeypatch) -> None:
    rt = Runtime(runs_dir=tmp_path / "runs", device="cpu", progress=False)
    plan = build_plan(tiny)
    before = dry_run(plan, rt)
    assert (before.runs, before.done) == (14, 0) and before.estimated_s > 0
    assert any("later" in line for line in before.lines)

    doc = reproduce(tiny, rt, tmp_path / "out")
    out = tmp_path / "out"
    saved = json.loads((out / "results.json").read_text())
    assert saved["records"] == doc["records"]
    recs = [r for r in doc["records"] if r["table"] != "ablation"]
    assert len(recs) == 8 + 4  # Table 1 columns, then Table 6 normal/nasty/scm-defence/nasty-es
    (tau, few) = doc["ablations"]
    assert tau["x_values"] == [10, 50] and len(tau["series"]["HTC: CNN student of a CNN teacher"]) == 2
    assert few["series"]["Nasty KD: CNN student of a CNN teacher"][0] is not None
    for r in recs:
        assert set(RECORD_FIELDS) <= set(r)
        assert 0.0 <= r["best_acc"] <= 100.0 and r["last_acc"] <= r["best_acc"]
    kinds = {(r["table"], r["teacher_kind"]) for r in recs}
    assert ("table6", "nasty-es") in kinds and ("table6", "scm-defence") in kinds
    es = next(r for r in recs if r["teacher_kind"] == "nasty-es")
    defence = next(r for r in recs if r["teacher_kind"] == "scm-defence")
    assert es["teacher_acc"] >= round(defence["teacher_acc"], 2) or any(
        t["kind"] == "nasty-es" and t["status"] == "complete" for t in doc["teachers"])
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(doc["records"]) and rows[0].keys() == set(RECORD_FIELDS)
    assert {r["model"] for r in doc["kl"]} >= {"nasty", "S2", "scm-ensemble (k=2)"}
    assert all(r["kl_t1"] >= 0 for r in doc["kl"])
    tables = (out / "tables.md").read_text()
    for title in ("Table 1", "Table 3", "Table 6", "Ablation: htc-tau", "a test suite", "what reproduces"):
        assert title in tables
    assert "| Teacher: CNN | Normal Teacher" in tables and "| CNN student |" in tables  # Table 6
    assert "<-" not in tables and "| Nasty teacher |" in tables

    after = dry_run(plan, rt)
    assert after.done == after.runs
    monkeypatch.setattr(engine_mod, "build_method", lambda *a, **k: pytest.fail("retrained"))
    again = reproduce(tiny, rt, tmp_path / "out2")
    assert again["records"] == doc["records"]


class FailAfter(LocalExecutor):
    """An executor that dies after training a few runs (an interrupted suite)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    def run(self, runs, runtime):
        from undistill.executor import plan as order
        from undistill.runs import is_done

        todo = [r for r in order(runs) if not is_done(r, runtime.runs_dir)]
        if len(todo) > self.left:
            super().run(todo[: self.left], runtime)
            raise KeyboardInterrupt("suite interrupted")
        self.left -= len(todo)
        return super().run(runs, runtime)


def test_interrupted_suite_continues_where_it_stopped(tiny, tmp_path: Path) -> None:
    ref = reproduce(tiny, Runtime(runs_dir=tmp_path / "a", device="cpu", progress=False),
                    tmp_path / "ref")
    rt = Runtime(runs_dir=tmp_path / "b", device="cpu", progress=False)
    with pytest.raises(KeyboardInterrupt):
        reproduce(tiny, rt, tmp_path / "out", executor=FailAfter(5))
    part = dry_run(build_plan(tiny), rt)
    assert part.done == 5
    resumed = reproduce(tiny, rt, tmp_path / "out")
    strip = [{k: v for k, v in r.items()} for r in resumed["records"]]
    assert strip == ref["records"]


def test_student_params_override_suite_params(tmp_path: Path) -> None:
    d = dict(TINY, params={"htc": {"multiplier": 5.0}},
             students=[{"arch": "cnn", "width": 0.5, "epochs": 1,
                        "params": {"htc": {"temperature": 20.0}}},
                       {"arch": "cnn", "width": 0.25, "epochs": 1}])
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    plan = build_plan(load_suite(f))
    htc = {c.run.model.width: c.run.method.params for c in plan.cells
           if c.column == "htc" and c.ablation is None}
    assert htc[0.5]["temperature"] == 20.0 and htc[0.5]["multiplier"] == 5.0
    assert htc[0.25]["temperature"] == 50.0 and htc[0.25]["multiplier"] == 5.0


def test_data_free_ablation_plans_dafl_students(tmp_path: Path) -> None:
    d = dict(TINY, ablations=[{"name": "no data", "columns": ["nasty-kd", "htc"],
                               "param": "data_free", "values": [True]}])
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    cells = [c for c in build_plan(load_suite(f)).cells if c.ablation == "no data"]
    assert sorted(c.method for c in cells) == ["dafl-htc", "dafl-kd"]
    for c in cells:
        assert c.run.data.labels is False and c.run.method.params["image_size"] == 8
    d["ablations"][0]["columns"] = ["scm"]
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match="no data-free form"):
        build_plan(load_suite(f))


def test_an_ablation_brings_its_own_method_values(tmp_path: Path) -> None:
    """``params`` of an ablation (values chosen in its own setting) reach its runs only."""
    d = dict(TINY, ablations=[{"name": "no labels", "columns": ["nasty-kd", "htc"], "param": "labels",
                               "values": [False], "params": {"htc": {"temperature": 4}}}])
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    plan = build_plan(load_suite(f))
    ab = {c.method: c.run for c in plan.cells if c.ablation == "no labels"}
    assert ab["htc"].method.params["temperature"] == 4 and ab["htc"].data.labels is False
    table1 = next(c.run for c in plan.cells if c.column == "htc" and c.ablation is None)
    assert table1.method.params["temperature"] != 4


def test_several_seeds_show_mean_and_confidence_interval(tiny) -> None:
    from undistill.suites.tables import fmt, table1

    assert fmt([80.0]) == "80.00 (n=1)" and fmt([80.0], 86.31) == "80.00 (n=1) (86.31)"
    # t(0.975, 1) * 1.414 / sqrt(2) = 12.706
    assert fmt([80.0, 82.0]) == "81.00 ± 12.71 (n=2)"
    spec = tiny.model_copy(update={"seeds": [0, 1]})
    recs = [{"table": "table1", "teacher_arch": "cnn", "student_arch": "cnn", "column": "vanilla",
             "best_acc": acc + 5, "last_acc": acc - 5, "test_acc": acc} for acc in (70.0, 74.0)]
    doc = {"dataset": "digits", "records": recs, "teachers": []}
    row = next(line for line in table1(doc, spec) if line.startswith("| CNN | CNN |"))
    assert "72.00 ± 25.41 (n=2)" in row  # the headline test_acc, never the best epoch
    assert len(build_plan(spec).cells) == 2 * len(build_plan(tiny).cells)


def test_suite_search_preflight_and_claims(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Hyper-parameters are chosen on the validation split by the suite itself (the chosen trial
    is the seed-0 cell), a weak scale is flagged by the preflight, and every claim gets a
    verdict computed from the per-seed records."""
    from undistill.search import run_search  # noqa: F401  (the search the suite drives)

    d = {**TINY, "ablations": [], "methods": ["vanilla", "nasty-kd", "htc"], "seeds": [0, 1],
         "data": {"val_fraction": 0.2}, "defence": {"enabled": False, "nasty_es": False},
         "search": {"methods": ["htc"], "grid": {"temperature": [4, 20]}, "trials": 2}}
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    suite = load_suite(f)
    rt = Runtime(runs_dir=tmp_path / "runs", device="cpu", progress=False)
    doc = reproduce(suite, rt, tmp_path / "out")
    (search,) = doc["search"]
    assert search["split"] == "val" and len(search["trials"]) == 2
    chosen = search["chosen"]["temperature"]
    best = max(search["trials"], key=lambda t: t["val_acc"])
    assert chosen == best["params"]["temperature"]
    htc = [r for r in doc["records"] if r["column"] == "htc"]
    assert {r["params"]["temperature"] for r in htc} == {chosen}
    seed0 = next(r for r in htc if r["seed"] == 0)
    assert seed0["eval_split"] == "val"  # trained and judged on validation, scored on test after
    trial_runs = json.loads((tmp_path / "out/search/cnn-cnn-htc/search.json").read_text())["trials"]
    assert seed0["run_id"] in {t["run_id"] for t in trial_runs}  # the chosen trial is the cell
    assert all(json.loads((rt.runs_dir / r["run_id"] / "test.json").read_text())["test_acc"]
               == r["test_acc"] for r in doc["records"])
    # the tiny teacher is no better than its students: the preflight says so, loudly
    assert any(not c["ok"] for c in doc["preflight"]) and "preflight warning" in capsys.readouterr().err
    claims = {c["claim"]: c for c in doc["claims"]}
    assert "Nasty KD below Vanilla for cnn (teacher cnn)" in claims
    assert all(c["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE") for c in doc["claims"])
    assert all(c["a"]["n"] == 2 for c in doc["claims"] if c["table"] == "table1")
    tables = (tmp_path / "out/tables.md").read_text()
    for text in ("Preflight", "chosen on the validation split", "what reproduces", "(n=2)"):
        assert text in tables


def test_search_needs_a_validation_split(tmp_path: Path) -> None:
    d = {**TINY, "search": {"methods": ["htc"], "grid": {"temperature": [4, 20]}}}
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match="val_fraction"):
        load_suite(f)


def test_a_scale_can_be_a_suite_of_its_own() -> None:
    plan = build_plan(load_suite("cifar10"), "cpu")
    assert plan.suite.name == "cifar10-cpu" and plan.suite.dataset == "cifar10-jpeg"
    normal, nasty = plan.groups[0].normal, plan.groups[0].nasty
    assert normal.data.fraction == 1.0 and normal.data.val_fraction == 0.1
    students = [c.run for c in plan.cells if c.column == "vanilla"]
    assert {s.data.fraction for s in students} == {0.1} and {c.seed for c in plan.cells} == {0, 1, 2}
    assert nasty.teachers == [normal]


def test_ablation_series_carry_intervals_over_seeds_into_tables() -> None:
    from undistill.stats import mean_ci
    from undistill.suites.runner import ablation_series
    from undistill.suites.spec import SuiteSpec
    from undistill.suites.tables import ablation_tables

    suite = SuiteSpec.model_validate(TINY)
    ab = suite.ablations[0]
    accs = {ab.values[0]: [60.0, 62.0, 67.0], ab.values[1]: [70.0]}
    records = [{"ablation": ab.name, "column": ab.columns[0], "student_arch": "cnn",
                "teacher_arch": "cnn", "x": x, "test_acc": a, "last_acc": 0.0}
               for x, values in accs.items() for a in values]
    (out, *_) = ablation_series(suite, records)
    (label,) = out["series"]
    three = mean_ci(accs[ab.values[0]])
    assert out["series"][label] == [pytest.approx(three.mean), 70.0]
    assert out["series_ci"][label] == [pytest.approx(three.ci), None]  # one seed: no interval
    assert out["series_n"][label] == [3, 1]
    row = next(line for line in ablation_tables({"ablations": [out]}) if line.startswith(f"| {label}"))
    assert f"{three.mean:.2f} ± {three.ci:.2f} (n=3)" in row and "70.00 (n=1)" in row


def test_ablation_points_with_htc_and_nasty_kd_are_claims() -> None:
    from undistill.suites.claims import paper_claims

    def rec(ab, x, col, acc):
        return {"table": "ablation", "ablation": ab, "x": x, "column": col, "teacher_arch": "cnn",
                "student_arch": "cnn", "test_acc": acc, "last_acc": 0.0}

    records = ([rec("no labels", False, "htc", a) for a in (50.0, 52.0, 51.0)]
               + [rec("no labels", False, "nasty-kd", a) for a in (70.0, 71.0, 72.0)]
               + [rec("tau", 4, "htc", a) for a in (60.0, 61.0, 62.0)])  # no Nasty KD: no claim
    doc = {"records": records, "ablations": [{"name": "no labels", "param": "labels"},
                                             {"name": "tau", "param": "temperature"}]}
    (c,) = [c for c in paper_claims(doc) if c["table"] == "ablation"]
    assert c["claim"] == "HTC above Nasty KD for cnn (teacher cnn), no labels: labels: withheld"
    assert c["verdict"] == "FAIL"


def test_a_nasty_kd_es_that_is_the_nasty_teacher_is_not_a_second_claim() -> None:
    from undistill.suites.claims import paper_claims

    def rec(col, acc):
        return {"table": "table6", "ablation": None, "column": col, "teacher_arch": "cnn",
                "student_arch": "cnn", "test_acc": acc, "last_acc": 0.0}

    records = ([rec("scm-defence", a) for a in (50.0, 52.0, 51.0)]
               + [rec(col, a) for col in ("nasty", "nasty-es") for a in (60.0, 61.0, 62.0)])
    es = {"kind": "nasty-es", "teacher_arch": "cnn", "run_id": "es"}
    both = [c["claim"] for c in paper_claims({"records": records, "teachers": [es]})]
    assert both == ["SCM defence below Nasty KD for cnn (teacher cnn)",
                    "SCM defence below Nasty KD ES for cnn (teacher cnn)"]  # an ES of its own
    one = paper_claims({"records": records, "teachers": [{**es, "same_as": "nasty-run"}]})
    assert [(c["claim"], c["verdict"]) for c in one] == [(both[0], "PASS")]


def test_a_suite_on_fingerprinted_data_scores_every_run(tmp_path: Path, monkeypatch) -> None:
    """Under --data-root, run folders carry the data's fingerprint, so their ids differ from the
    plan's config ids; scoring and records must key by the plan's ids (a KeyError before)."""
    from test_archive import files, make_tar

    monkeypatch.setenv("UNDISTILL_CACHE", str(tmp_path / "cache"))
    archive = make_tar(tmp_path / "cifar10-jpeg.tar.gz", files(n_train=8, n_test=3))
    d = dict(TINY, dataset="cifar10-jpeg", data={"val_fraction": 0.25}, ablations=[],
             methods=["vanilla", "normal-kd", "nasty-kd"], defence={"release": 2, "nasty_es": False})
    f = tmp_path / "fp.yaml"
    f.write_text(yaml.safe_dump(d))
    rt = Runtime(runs_dir=tmp_path / "runs", data_root=archive, device="cpu", progress=False)
    doc = reproduce(load_suite(f), rt, tmp_path / "out")
    plan_ids = {r.run_id for r in build_plan(load_suite(f)).runs()}
    assert {r["run_id"] for r in doc["records"]}.isdisjoint(plan_ids)  # the folders' ids differ
    assert all(r["test_acc"] is not None for r in doc["records"])
    assert all(r["teacher_acc"] is not None for r in doc["records"] if r["column"] != "vanilla")
    assert {t["kind"] for t in doc["teachers"]} >= {"normal", "nasty", "scm-defence"}
