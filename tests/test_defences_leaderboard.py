"""The defence leaderboard end to end on tiny digits runs: rows, protection, outputs; every run
through the executor (under its run lock), class counts from the dataset registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from undistill.audit_defences import welch_interval
from undistill.config import ConfigError, RunConfig, Runtime
from undistill.data import CLASS_COUNTS, DATASETS, DatasetError, load_dataset, num_classes
from undistill.engine import RunResult
from undistill.executor import LocalExecutor
from undistill.runlock import lock_path
from undistill.suites.leaderboard import LeaderboardSpec, load_leaderboard, run_leaderboard, val_accuracy
from undistill.suites.leaderboard_spec import attack_config, victim_plan

SUITE = {
    "name": "tiny", "dataset": "digits",
    "teachers": [{"arch": "cnn", "width": 0.25, "epochs": 2, "nasty": {"omega": 0.04, "temperature": 4}}],
    "students": [{"arch": "cnn", "width": 0.25, "epochs": 1}],
    "scm": {"k": 2}, "defence": {"release": 2, "nasty_es": False},
    "scales": {"cpu": {}}, "default_scale": "cpu",
}


class Recording(LocalExecutor):
    """The local executor, recording the run ids of each ``run`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def run(self, runs: list[RunConfig], runtime: Runtime) -> dict[str, RunResult]:
        self.calls.append([c.run_id for c in runs])
        return super().run(runs, runtime)


def spec(suite_path: Path, **over) -> LeaderboardSpec:
    d = {
        "name": "tiny", "suite": str(suite_path), "seeds": [0, 1], "val_fraction": 0.2,
        "student": {"arch": "cnn", "width": 0.25, "epochs": 1},
        "attacks": [{"name": "vanilla", "method": "vanilla"},
                    {"name": "kd", "method": "kd", "grid": [{"temperature": 1}, {"temperature": 4}]},
                    {"name": "hard-label", "method": "hard-label"},
                    {"name": "scm", "method": "scm", "teachers": "sequence"}],
        "defences": [{"name": "none"}, {"name": "nasty", "model": "nasty"},
                     {"name": "nasty-es", "model": "nasty-es"},
                     {"name": "labels", "output": {"name": "labels"}}],
    }
    d.update(over)
    return LeaderboardSpec.model_validate(d)


def test_leaderboard_rows_protection_and_outputs(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    runtime = Runtime(runs_dir=tmp_path / "runs", device="cpu", progress=False)
    executor = Recording()
    board = spec(suite)
    out = run_leaderboard(board, runtime, tmp_path / "out", log=lambda *_: None, executor=executor)
    rows = {r["defence"]: r for r in out["rows"]}
    assert set(rows) == {"none", "nasty", "nasty-es", "labels"}
    assert [r["protection"] for r in out["rows"]] == sorted((r["protection"] for r in out["rows"]),
                                                            reverse=True)
    cells = {(c["defence"], c["attack"]): c for c in out["cells"]}
    assert ("nasty", "scm") in cells and ("labels", "scm") not in cells  # the sequence: nasty only
    for name, r in rows.items():
        best = cells[(name, r["best_attack"])]
        # the best attack is chosen on validation; vanilla minus its test accuracy is a reference
        assert best["val"]["mean"] == max(c["val"]["mean"] for (d, _), c in cells.items() if d == name)
        assert r["vs_vanilla"] == pytest.approx(out["vanilla"]["mean"] - r["best_attack_acc"])
        assert len(cells[(name, "kd")]["grid_val"]) == 2
        # protection: the undefended release's best attack minus this defence's (the audit's
        # definition: difference of means, Welch interval)
        ref = [c["test"] for c in cells[("none", rows["none"]["best_attack"])]["seeds"].values()]
        mine = [c["test"] for c in best["seeds"].values()]
        assert r["protection"] == pytest.approx(sum(ref) / 2 - sum(mine) / 2)
        if name != "none":
            assert r["protection_ci"] == pytest.approx(welch_interval(ref, mine) or [r["protection"]] * 2)
    assert rows["none"]["protection"] == 0.0 and rows["none"]["protection_ci"] == [0.0, 0.0]
    assert out["stolen"]["fraction_of_teacher"] == pytest.approx(
        rows["none"]["best_attack_acc"] / rows["none"]["teacher_acc"])
    assert out["stolen"]["stolen"] == (out["stolen"]["fraction_of_teacher"] >= 0.85)
    # Nasty KD ES: the nasty training stopped at the SCM release's validation accuracy (Table 6),
    # or the nasty teacher itself where its training never reaches that accuracy
    runs = tmp_path / "runs"
    es = json.loads(next(runs.glob(f"*{cells[('nasty-es', 'kd')]['seeds']['0']['run_id']}"
                                   "/config.json")).read_text())["config"]["teachers"][0]
    v = victim_plan(board)

    def best(cfg: RunConfig) -> float:
        return json.loads(next(runs.glob(f"*{cfg.run_id}/last.json")).read_text())["best_acc"]

    assert es["method"]["name"] == "nasty"
    if best(v.nasty) < best(v.release):
        assert es["stop_at_acc"] is None and RunConfig.model_validate(es).run_id == v.nasty.run_id
    else:
        assert es["stop_at_acc"] is not None
    assert "nasty-es = Nasty KD ES" in (tmp_path / "out" / "leaderboard.md").read_text()
    assert rows["labels"]["utility_acc"] == pytest.approx(rows["none"]["utility_acc"])  # same top-1
    assert rows["labels"]["agreement"] == 100.0 and rows["labels"]["nll"] > rows["none"]["nll"]
    saved = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert set(saved["rows"][0]) == {"defence", "params", "utility_acc", "agreement", "best_attack",
                                     "best_attack_acc", "protection", "protection_ci", "vs_vanilla"}
    assert saved["rows"][0]["defence"] == out["rows"][0]["defence"]
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| labels | normal |" in md and "Incomplete" not in md
    assert "a thief with labels" in md and "Vanilla minus best attack" in md
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 1000
    # every run goes through the executor, stage by stage: the normal teacher first, the vanilla
    # students of every seed, then per defence (the normal teacher's first) the victims it releases
    # (Nasty KD ES in a call of its own unless it is the nasty teacher), its grid candidates, its seeds
    assert executor.calls[0] == [v.normal.run_id]
    vanilla = board.attacks[0]  # the floor: every seed in one call
    assert executor.calls[1] == [
        attack_config(board, v, {}, None, vanilla, vanilla.grid[0], s).run_id for s in board.seeds]
    retrained = es["stop_at_acc"] is not None
    victims_of_nasty = list(dict.fromkeys(c.run_id for c in (v.normal, v.nasty, *v.sequence, v.release)))
    assert executor.calls[6] == victims_of_nasty  # after none's and labels' two stages each
    assert executor.calls[9] == victims_of_nasty  # nasty-es: read back, then ES trained if it differs
    assert len(executor.calls) == 2 + 2 * len(board.defences) + 2 + retrained
    passed = {i for call in executor.calls for i in call}
    students = {r["run_id"] for c in out["cells"] for r in c["seeds"].values()}
    assert students <= passed
    # ... and each trained under its run lock (a run trained around the executor leaves none)
    folders = [p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(folders) >= len(students) + 3 + retrained
    assert all(lock_path(tmp_path / "runs", p.name).exists() for p in folders)


def test_leaderboard_spec_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vanilla"):
        spec(tmp_path / "s.yaml", vanilla="floor")
    with pytest.raises(ValueError, match="names repeat"):
        spec(tmp_path / "s.yaml", defences=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ValueError, match="reference"):  # the undefended release must be there
        spec(tmp_path / "s.yaml", defences=[{"name": "nasty", "model": "nasty"}])
    with pytest.raises(ValueError, match="reference"):
        spec(tmp_path / "s.yaml", reference="nasty", defences=[{"name": "none"},
                                                               {"name": "nasty", "model": "nasty"}])
    with pytest.raises(ValueError, match=r"params.k"):
        spec(tmp_path / "s.yaml", defences=[{"name": "a", "output": {"name": "topk", "params": {"k": 0}}}])
    assert len(load_leaderboard("defences-demo").defences) >= 10
    with pytest.raises(ConfigError, match="unknown leaderboard"):
        load_leaderboard("nope")


def test_a_label_free_thief_learns_from_answers_alone(tmp_path: Path) -> None:
    """student.labels false: every attack but the vanilla reference has no labels and its method's
    label-free parameters (Skeptical: the teacher's head from the start)."""
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    board = spec(suite, student={"arch": "cnn", "width": 0.25, "epochs": 1, "labels": False},
                 attacks=[{"name": "vanilla", "method": "vanilla"}, {"name": "kd", "method": "kd"},
                          {"name": "skeptical", "method": "skeptical"}])
    v = victim_plan(board)
    models = {"normal": v.normal}
    none = board.defences[0]
    vanilla, kd, skeptical = (attack_config(board, v, models, d, a, a.grid[0], 0)
                              for a, d in zip(board.attacks, (None, none, none), strict=True))
    assert vanilla.data.labels and not kd.data.labels and not skeptical.data.labels
    assert skeptical.method.params["kd_delay"] == -1
    labelled = attack_config(spec(suite), v, models, none, board.attacks[2], {}, 0)
    assert labelled.data.labels and labelled.method.params["kd_delay"] != -1


def test_leaderboard_command_writes_the_board_and_names_bad_specs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from undistill import api
    from undistill.cli import app

    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    board = tmp_path / "board.yaml"
    board.write_text(yaml.safe_dump(spec(
        suite, seeds=[0], attacks=[{"name": "vanilla", "method": "vanilla"},
                                   {"name": "hard-label", "method": "hard-label"}],
        defences=[{"name": "none"}, {"name": "labels", "output": {"name": "labels"}}],
    ).model_dump(mode="json")))
    runner = CliRunner()
    r = runner.invoke(app, ["leaderboard", str(board), "--out", str(tmp_path / "out"),
                            "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "labels" in r.stdout and "hard-label" in r.stdout
    saved = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert {row["defence"] for row in saved["rows"]} == {"none", "labels"}
    r = runner.invoke(app, ["leaderboard", "nope", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "defences-cifar10-cpu" in r.output and "defences-demo" in r.output
    # --executor and --address as reproduce has them: the runs go through that executor
    made: list[tuple[str, str | None]] = []
    executor = Recording()

    def make_executor(name: str = "local", address: str | None = None) -> Recording:
        made.append((name, address))
        return executor

    monkeypatch.setattr(api, "make_executor", make_executor)
    r = runner.invoke(app, ["leaderboard", str(board), "--out", str(tmp_path / "again"),
                            "--runs-dir", str(tmp_path / "runs"), "--device", "cpu",
                            "--executor", "ray", "--address", "10.0.0.1:6379"])
    assert r.exit_code == 0, r.output
    assert made == [("ray", "10.0.0.1:6379")]
    runs = {r["run_id"] for c in saved["details"]["cells"] for r in c["seeds"].values()}
    assert runs <= {i for call in executor.calls for i in call}  # read back through the executor
    again = json.loads((tmp_path / "again" / "leaderboard.json").read_text())
    assert again["rows"] == saved["rows"]


def test_a_broken_leaderboard_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nattacks: [\n")
    with pytest.raises(ConfigError, match="leaderboard .* is not valid YAML"):
        load_leaderboard(bad)
    with pytest.raises(ConfigError, match="leaderboard file .* does not exist"):
        load_leaderboard(tmp_path / "missing.yaml")
    bad.write_text(yaml.safe_dump({"name": "x", "attacks": [], "defences": [{"name": "none"}]}))
    with pytest.raises(ConfigError, match="invalid leaderboard .*attacks"):
        load_leaderboard(bad)


def test_class_counts_come_from_the_dataset_registry(tmp_path: Path) -> None:
    import undistill.defences

    assert not hasattr(undistill.defences, "KNOWN_CLASSES")  # no table of its own beside the registry
    assert set(CLASS_COUNTS) <= set(DATASETS.names())
    assert {n: num_classes(n) for n in ("mnist", "fashion-mnist", "cifar10", "cifar100", "tinyimagenet")} \
        == {"mnist": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100, "tinyimagenet": 200}
    for name in ("digits", "fashion-mnist-mini"):  # the shipped ones: as loaded
        assert num_classes(name) == load_dataset(name).num_classes
    assert num_classes("folder") is None and num_classes("cifar10-jpeg") is None  # read from the files
    with pytest.raises(DatasetError, match="unknown dataset"):
        num_classes("nope")
    # a leaderboard's defence is checked against them when its student configs are planned
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    board = spec(suite, defences=[{"name": "none"},
                                  {"name": "top11", "output": {"name": "topk", "params": {"k": 11}}}])
    v = victim_plan(board)
    kd = board.attacks[1]
    with pytest.raises(ValueError, match=r"defence.params.k: 11 is larger than the 10 classes"):
        attack_config(board, v, {"normal": v.normal}, board.defences[1], kd, kd.grid[0], 0)


def test_victims_trains_only_the_teachers_the_board_releases(tmp_path: Path) -> None:
    """A board of output defences on the normal teacher trains that one alone; the nasty teacher
    joins for a nasty defence; the SCM sequence only where a release or an attack needs it."""
    from undistill.suites.leaderboard import victims

    class Fake(Recording):  # records, trains nothing
        def run(self, runs: list[RunConfig], runtime: Runtime) -> dict[str, RunResult]:
            self.calls.append([c.run_id for c in runs])
            return {}

    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    runtime = Runtime(runs_dir=tmp_path / "runs", device="cpu", progress=False)
    output_only = [{"name": "none"}, {"name": "labels", "output": {"name": "labels"}}]
    plain = [{"name": "vanilla", "method": "vanilla"}, {"name": "kd", "method": "kd"}]
    v = victim_plan(spec(suite))
    for defences, attacks, want in (
            (output_only, spec(suite).attacks, [v.normal]),  # SCM's sequence: nasty row only
            (output_only + [{"name": "nasty", "model": "nasty"}], plain, [v.normal, v.nasty]),
            (output_only + [{"name": "nasty", "model": "nasty"}], spec(suite).attacks,
             [v.normal, v.nasty, *v.sequence, v.release]),
            (output_only + [{"name": "scm-release", "model": "scm-release"}], plain,
             [v.normal, v.nasty, *v.sequence, v.release])):
        executor = Fake()
        victims(spec(suite, defences=defences, attacks=[a if isinstance(a, dict) else a.model_dump()
                                                        for a in attacks]), runtime, executor)
        assert executor.calls == [list(dict.fromkeys(c.run_id for c in want))]


def test_a_budgeted_thief_board_pays_once_and_scores_on_validation(tmp_path: Path) -> None:
    """student.budget: every attack but vanilla is a query-budgeted thief (SCM asking each member
    of the sequence), its student chosen on its held-out paid answers and compared on the
    validation split; vanilla keeps its labels and epochs."""
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    with pytest.raises(ValueError, match="labels: false"):
        spec(suite, student={"arch": "cnn", "width": 0.25, "budget": 50})
    with pytest.raises(ValueError, match="give a budget"):
        spec(suite, student={"arch": "cnn", "labels": False, "thief": {"steps": 3}})
    with pytest.raises(ValueError, match="steps"):
        spec(suite, student={"arch": "cnn", "labels": False, "budget": 50, "thief": {"steps": 0}})
    too_many = spec(suite, defences=[{"name": "none"}], attacks=[{"name": "vanilla", "method": "vanilla"},
                                                                 {"name": "kd", "method": "kd"}],
                    student={"arch": "cnn", "labels": False, "budget": 5000})
    with pytest.raises(ConfigError, match="student.budget: 5000 is above the thief's pool"):
        run_leaderboard(too_many, Runtime(runs_dir=tmp_path / "none", device="cpu", progress=False),
                        tmp_path / "o", log=lambda *_: None)
    assert not (tmp_path / "none").exists()  # nothing trained
    board = spec(suite, seeds=[0, 1], defences=[{"name": "none"}, {"name": "nasty", "model": "nasty"}],
                 student={"arch": "cnn", "width": 0.25, "epochs": 1, "labels": False, "budget": 200,
                          "thief": {"steps": 6, "eval_every": 3}},
                 attacks=[{"name": "vanilla", "method": "vanilla"}, {"name": "kd", "method": "kd"},
                          {"name": "scm", "method": "scm", "teachers": "sequence"}])
    runs = tmp_path / "runs"
    rt = Runtime(runs_dir=runs, device="cpu", progress=False)
    out = run_leaderboard(board, rt, tmp_path / "out", log=lambda *_: None)
    v = victim_plan(board)
    models = {"normal": v.normal, "nasty": v.nasty}
    a = {x.name: x for x in board.attacks}
    vanilla = attack_config(board, v, models, None, a["vanilla"], {}, 0)
    kd = attack_config(board, v, models, board.defences[0], a["kd"], {}, 0)
    scm = attack_config(board, v, models, board.defences[1], a["scm"], {}, 0)
    assert vanilla.budget is None and vanilla.thief is None and vanilla.data.labels
    assert kd.budget == 200 and kd.thief is not None and kd.thief.steps == 6 and not kd.data.labels
    assert len(scm.teachers) == 2 and scm.budget == 200
    from undistill.runs import read_result, run_dir
    from undistill.thief import HOLDOUT_SPLIT, TRANSFER

    for cfg in (kd, scm):
        d = run_dir(cfg, runs)
        assert (d / TRANSFER).exists() and read_result(d)["result"]["eval_split"] == HOLDOUT_SPLIT
    cell = next(c for c in out["cells"] if c["defence"] == "none" and c["attack"] == "kd")
    assert cell["val"]["mean"] == pytest.approx(
        sum(val_accuracy(attack_config(board, v, models, board.defences[0], a["kd"], {}, s), runs)
            for s in board.seeds) / 2)
    nasty = next(c for c in out["cells"] if c["defence"] == "nasty" and c["attack"] == "scm")
    assert 0.0 <= nasty["test"]["mean"] <= 100.0


def test_an_attack_can_be_kept_to_some_defences(tmp_path: Path) -> None:
    from undistill.suites.leaderboard_spec import applicable

    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    attacks = [{"name": "vanilla", "method": "vanilla"},
               {"name": "htc", "method": "htc", "defences": ["nasty"]}]
    board = spec(suite, attacks=attacks)
    d = {x.name: x for x in board.defences}
    assert applicable(board.attacks[1], d["nasty"]) and not applicable(board.attacks[1], d["none"])
    with pytest.raises(ValueError, match=r"attacks.htc.defences: \['nope'\]"):
        spec(suite, attacks=[attacks[0], {**attacks[1], "defences": ["nope"]}])
