"""Figures (each writes a PNG), `undistill analyze` and `undistill report` on tiny real runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from undistill import plots, recipes
from undistill.cli import app
from undistill.config import Runtime
from undistill.executor import ensure_trained

PNG = b"\x89PNG\r\n\x1a\n"
cli = CliRunner()


def is_png(path: Path) -> bool:
    data = Path(path).read_bytes()
    return len(data) > 1000 and data[:8] == PNG


def test_softmax_bars(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    probs = {name: torch.softmax(torch.randn(3, 10, generator=g) * 3, 1)
             for name in ("nasty", "S2", "ensemble", "normal")}
    p = plots.softmax_bars(probs, [1, 2, 3], tmp_path / "a" / "fig1.png",
                           images=torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8))
    assert p == tmp_path / "a" / "fig1.png" and is_png(p)
    with pytest.raises(ValueError, match="labels"):
        plots.softmax_bars(probs, [1, 2], tmp_path / "bad.png")


def test_temperature_panels(tmp_path: Path) -> None:
    p = plots.temperature_panels(torch.tensor([8.0, -3.0, 7.5, 0.0, -9.0]), 0, tmp_path / "f2.png",
                                 class_names=list("abcde"))
    assert is_png(p)
    assert is_png(plots.temperature_panels(np.zeros(3), None, tmp_path / "nolabel.png"))


def test_line_plot(tmp_path: Path) -> None:
    p = plots.line_plot([10, 20, 50, 100], {"HTC": [80.0, 85.0, None, 86.0], "Nasty KD": [70] * 4},
                        "tau", "accuracy (%)", "Fig. 4(a)", tmp_path / "f4.png", logx=True)
    assert is_png(p)
    assert is_png(plots.line_plot(["10%", "50%"], {"HTC": [1.0, 2.0]}, "data", "acc", "Fig. 4(c)",
                                  tmp_path / "f4c.png"))
    with pytest.raises(ValueError, match="values"):
        plots.line_plot([1, 2], {"x": [1.0]}, "a", "b", "c", tmp_path / "bad.png")


def test_tsne_panels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    emb = {k: rng.normal(size=(40, 2)) for k in ("normal", "nasty", "S2", "S3")}
    p = plots.tsne_panels(emb, rng.integers(0, 10, 40), tmp_path / "f5.png",
                          class_names=[str(i) for i in range(10)])
    assert is_png(p)


# --------------------------------------------------------------------------------------------
# analyze and report on real (tiny) runs
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("report") / "runs"
    rt = Runtime(runs_dir=runs, device="cpu", progress=False)
    normal = recipes.normal_teacher("digits", "cnn", 0.25, optim={"epochs": 1, "batch_size": 256})
    nasty = recipes.nasty_teacher(normal, omega=0.05, temperature=4.0)
    seq = recipes.scm_sequence(nasty, 2)
    htc = recipes.student(nasty, "cnn", "htc", {"alpha": 0.8, "temperature": 40.0,
                                                "multiplier": 10.0}, width=0.25,
                          optim={"epochs": 1, "batch_size": 256})
    res = {c.run_id: ensure_trained(c, rt) for c in [normal, *seq, htc]}
    return {"runs": runs, "normal": normal, "nasty": nasty, "s2": seq[1], "htc": htc,
            "acc": {k: v.best_acc for k, v in res.items()}}


def results_doc(r: dict, ablations: bool = True) -> dict:
    """A small results.json shaped like `undistill reproduce`'s, around the real tiny runs."""
    n, x, s2, htc = r["normal"], r["nasty"], r["s2"], r["htc"]
    acc = r["acc"]

    def rec(table: str, column: str, kind: str, teacher, run_id: str, best: float) -> dict:
        return {"table": table, "dataset": "digits", "teacher_arch": "cnn", "teacher_kind": kind,
                "teacher_acc": acc[teacher.run_id] if teacher else None, "student_arch": "cnn",
                "column": column, "method": column, "best_acc": best, "last_acc": best - 1,
                "seed": 0, "run_id": run_id, "teacher_run_id": teacher.run_id if teacher else None}

    records = [rec("table1", "vanilla", "none", None, "digits-cnn-vanilla-x", 80.0),
               rec("table1", "normal-kd", "normal", n, "digits-cnn-kd-a", 82.0),
               rec("table1", "nasty-kd", "nasty", x, "digits-cnn-kd-b", 60.0),
               rec("table1", "htc", "nasty", x, htc.run_id, acc[htc.run_id]),
               rec("table1", "scm", "scm", x, "digits-cnn-scm-c", 79.0),
               rec("table6", "normal", "normal", n, "digits-cnn-kd-a", 82.0),
               rec("table6", "nasty", "nasty", x, "digits-cnn-kd-b", 60.0),
               rec("table6", "scm-defence", "scm-defence", s2, "digits-cnn-kd-d", 55.0)]
    doc = {"suite": "tiny-report", "title": "A tiny suite", "scale": "test", "dataset": "digits",
           "records": records,
           "kl": [{"dataset": "digits", "teacher_arch": "cnn", "model": "nasty", "accuracy": 70.0,
                   "kl_t1": 0.5, "kl_tau": 0.1, "tau": 4.0, "run_id": x.run_id},
                  {"dataset": "digits", "teacher_arch": "cnn", "model": "scm-ensemble (k=2)",
                   "accuracy": 71.0, "kl_t1": 0.3, "kl_tau": 0.05, "tau": 4.0, "run_id": None}],
           "teachers": [{"teacher_arch": "cnn", "kind": "normal", "accuracy": acc[n.run_id],
                         "run_id": n.run_id},
                        {"teacher_arch": "cnn", "kind": "nasty", "accuracy": acc[x.run_id],
                         "run_id": x.run_id},
                        {"teacher_arch": "cnn", "kind": "S2", "accuracy": acc[s2.run_id],
                         "run_id": s2.run_id},
                        {"teacher_arch": "cnn", "kind": "scm-defence", "accuracy": acc[s2.run_id],
                         "run_id": s2.run_id}],
           "notes": ["built by a test"], "wall_time_s": 1.0, "train_time_s": 1.0}
    if ablations:
        doc["ablations"] = [
            {"name": "Fig. 4(a): HTC temperature", "x_label": "tau", "x_values": [10, 20, 50],
             "series": {"HTC": [70.0, 75.0, 77.0], "Nasty KD": [60.0, 60.0, 60.0]},
             "series_ci": {"HTC": [1.5, None, 2.0], "Nasty KD": [None, None, None]}},
            {"name": "Table 2(b): SCM sequence length", "x_label": "k", "x_values": [2, 3, 4],
             "series": {"cnn": [61.0, 61.2, None]}},
        ]
    return doc


def test_report_renders_tables_figures_and_ablations(suite_runs: dict, tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(results_doc(suite_runs)))
    r = cli.invoke(app, ["report", str(out), "--runs-dir", str(suite_runs["runs"]), "--samples",
                         "60", "--examples", "3", "--device", "cpu", "--html"],
                   catch_exceptions=False)
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    for heading in ("# A tiny suite", "## Table 1", "## Table 3", "## Table 6",
                    "## What the paper reports", "## Figures", "## Ablations",
                    "#### Fig. 1", "#### Fig. 2", "#### Fig. 5", "#### Output statistics"):
        assert heading in md, heading
    links = ["cnn-fig1-softmax.png", "cnn-fig2-temperature.png", "cnn-fig5-tsne.png",
             "ablation-1-fig-4-a-htc-temperature.png",
             "ablation-2-table-2-b-scm-sequence-length.png"]
    for name in links:
        assert f"]({name})" in md, name
        assert is_png(out / name), name
    # Fig. 2 uses the suite's HTC student's tau and alpha
    assert "tau = 40" in md and "alpha = 0.8" in md
    assert "| SCM ensemble (k=2) |" in md and "| normal teacher |" in md
    stats = json.loads((out / "report.json").read_text())["cnn"]["stats"]
    normal = next(s for s in stats if s["model"] == "normal teacher")
    assert normal["kl_t1"] == pytest.approx(0.0, abs=1e-12)
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(links)
    assert "<table>" in page and 'src="cnn-fig1-softmax.png"' not in page


def test_report_without_ablations_or_runs(suite_runs: dict, tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(results_doc(suite_runs, ablations=False)))
    r = cli.invoke(app, ["report", str(out), "--runs-dir", str(tmp_path / "nowhere")],
                   catch_exceptions=False)
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    assert "## Table 1" in md and "## Ablations" not in md
    assert "Figures for cnn left out" in md  # runs not found: said, not crashed
    bad = cli.invoke(app, ["report", str(tmp_path / "missing")])
    assert bad.exit_code == 2 and "results.json" in bad.output


def test_analyze_writes_kl_stats_and_figures(suite_runs: dict, tmp_path: Path) -> None:
    runs = suite_runs["runs"]
    out = tmp_path / "analysis"
    r = cli.invoke(app, ["analyze", str(runs / suite_runs["nasty"].run_id),
                         str(runs / suite_runs["s2"].run_id), "--reference",
                         str(runs / suite_runs["normal"].run_id), "--out", str(out),
                         "--samples", "50", "--examples", "2", "--device", "cpu"],
                   catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["split"] == "test" and doc["subset"] == 50
    names = [row["model"] for row in doc["kl"]]
    assert names == ["nasty", "S2", "ensemble (k=2)", "reference: normal cnn"]
    assert doc["kl"][-1]["kl_t1"] == pytest.approx(0.0, abs=1e-12)
    assert all(row["kl_t1"] >= 0 and "kl_tau" in row for row in doc["kl"])
    assert set(doc["figures"]) == {"fig1", "fig2", "fig5"}
    assert all(is_png(out / f) for f in doc["figures"].values())
    nope = cli.invoke(app, ["analyze", str(tmp_path), "--reference", str(tmp_path)])
    assert nope.exit_code == 2
