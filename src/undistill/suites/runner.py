"""`undistill reproduce`: plan a suite, run what is missing, write results and tables."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from undistill.analysis import kl_to_reference, predict_logits
from undistill.checkpoint import atomic_write_bytes, atomic_write_json
from undistill.config import Runtime
from undistill.engine import RunResult, select_device
from undistill.executor import Executor, LocalExecutor
from undistill.methods import Teacher
from undistill.runs import data_views, is_done, load_run_model
from undistill.suites.plan import Cell, Plan, build_plan, nasty_es_cells
from undistill.suites.report import render_tables
from undistill.suites.spec import SuiteSpec

RECORD_FIELDS = ["table", "dataset", "teacher_arch", "teacher_kind", "teacher_acc", "student_arch",
                 "column", "method", "best_acc", "last_acc", "seed", "run_id", "teacher_run_id",
                 "ablation", "x"]


@dataclass
class DryRun:
    runs: int
    done: int
    pending: list[str]
    estimated_s: float
    lines: list[str]


def dry_run(plan: Plan, runtime: Runtime) -> DryRun:
    from undistill.suites.cost import estimate_seconds

    runs = plan.runs()
    todo = [r for r in runs if not is_done(r, runtime.runs_dir)]
    est = sum(estimate_seconds(r, runtime.data_root) for r in todo)
    lines = [f"suite {plan.suite.name} at scale {plan.scale}: {len(runs)} runs, "
             f"{len(runs) - len(todo)} already done, {len(todo)} to train"]
    for r in runs:
        mark = "done " if is_done(r, runtime.runs_dir) else "todo "
        lines.append(f"  {mark} {r.run_id}  {r.name}  ({r.optim.epochs} epochs, width "
                     f"{r.model.width:g})")
    for p in plan.pending:
        lines.append(f"  later  {p}")
    lines.append(f"estimated training time of the runs to do: {_hms(est)} on this machine "
                 f"(rough; Nasty-ES runs not counted)")
    return DryRun(len(runs), len(runs) - len(todo), plan.pending, est, lines)


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _record(cell: Cell, results: dict[str, RunResult], dataset: str) -> dict[str, Any]:
    r = results[cell.run.run_id]
    t = results[cell.teacher_run.run_id] if cell.teacher_run is not None else None
    return {"table": cell.table, "dataset": dataset, "teacher_arch": cell.teacher_arch,
            "teacher_kind": cell.teacher_kind, "teacher_acc": t.best_acc if t else None,
            "student_arch": cell.student_arch, "column": cell.column, "method": cell.method,
            "best_acc": r.best_acc, "last_acc": r.last_acc, "seed": cell.seed,
            "run_id": r.run_id, "teacher_run_id": t.run_id if t else None,
            "ablation": cell.ablation, "x": cell.x}


def kl_records(plan: Plan, runtime: Runtime, results: dict[str, RunResult]) -> list[dict[str, Any]]:
    """Table 3: KL(model || normal teacher) on the evaluation split, at T=1 and at tau_A."""
    dev = select_device(runtime.device)
    rows = []
    for g in plan.groups:
        views = data_views(g.normal.data, runtime.data_root)
        ds = views.dataset

        def logits(fn: Any, views: Any = views, ds: Any = ds) -> torch.Tensor:
            return predict_logits(fn, views.eval_images, ds.mean, ds.std, device=dev)

        def model(cfg: Any) -> Any:
            return load_run_model(cfg, runtime.runs_dir, runtime.data_root, device=dev)

        ref = logits(model(g.normal))
        tau = g.nasty.method.params["temperature"]
        members = [model(c) for c in g.sequence]
        entries = [("nasty", logits(members[0]), g.nasty.run_id)]
        entries += [(f"S{i}", logits(m), c.run_id)
                    for i, (m, c) in enumerate(zip(members, g.sequence, strict=True), 1) if i > 1]
        if len(members) > 1:
            entries.append((f"scm-ensemble (k={len(members)})", logits(Teacher(members).logits),
                            None))
        for name, z, run_id in entries:
            acc = 100.0 * float((z.argmax(1) == views.eval_labels).double().mean())
            rows.append({"dataset": plan.suite.dataset, "teacher_arch": g.spec.arch, "model": name,
                         "accuracy": acc, "kl_t1": kl_to_reference(z, ref, 1.0),
                         "kl_tau": kl_to_reference(z, ref, tau), "tau": tau, "run_id": run_id})
    return rows


def reproduce(suite: SuiteSpec, runtime: Runtime, out_dir: Path, scale: str | None = None,
              executor: Executor | None = None) -> dict[str, Any]:
    """Run (or finish) a suite and write results.json, results.csv and tables.md to out_dir."""
    t0 = time.perf_counter()
    executor = executor or LocalExecutor()
    plan = build_plan(suite, scale)
    results = dict(executor.run(plan.runs(), runtime))
    cells = list(plan.cells)
    defended = [g.defence for g in plan.groups if g.defence is not None]
    if plan.pending and defended:
        es = nasty_es_cells(plan, {d.run_id: results[d.run_id].best_acc for d in defended})
        results.update(executor.run([c.run for c in es], runtime))
        cells += es
    records = [_record(c, results, suite.dataset) for c in cells]
    kl = kl_records(plan, runtime, results) if suite.kl else []
    teachers = [{"teacher_arch": g.spec.arch, "kind": kind, "accuracy": results[c.run_id].best_acc,
                 "run_id": c.run_id}
                for g in plan.groups for kind, c in
                [("normal", g.normal), *((f"S{i}" if i > 1 else "nasty", s)
                                         for i, s in enumerate(g.sequence, 1))]
                + ([("scm-defence", g.defence)] if g.defence is not None else [])]
    teachers += [{"teacher_arch": c.teacher_arch, "kind": "nasty-es",
                  "accuracy": results[c.teacher_run.run_id].best_acc,
                  "run_id": c.teacher_run.run_id, "status": results[c.teacher_run.run_id].status}
                 for c in cells if c.teacher_kind == "nasty-es" and c.teacher_run is not None]
    teachers = list({(t["kind"], t["run_id"]): t for t in teachers}.values())
    doc = {"suite": suite.name, "title": suite.title, "scale": plan.scale,
           "ablations": ablation_series(suite, records),
           "dataset": suite.dataset, "records": records, "kl": kl, "teachers": teachers,
           "notes": suite.notes, "spec": suite.model_dump(mode="json"),
           "wall_time_s": time.perf_counter() - t0,
           "train_time_s": sum(results[r].wall_time_s for r in results)}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "results.json", doc)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RECORD_FIELDS)
    w.writeheader()
    w.writerows(records)
    atomic_write_bytes(out_dir / "results.csv", buf.getvalue().encode())
    atomic_write_bytes(out_dir / "tables.md", render_tables(doc, suite).encode())
    return doc


def ablation_series(suite: SuiteSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each ablation as line-plot data: x values and one accuracy series per column/student."""
    out = []
    for ab in suite.ablations:
        acc: dict[str, list[list[float]]] = {}
        for r in records:
            if r["ablation"] == ab.name:
                label = f"{r['column']} {r['student_arch']} <- {r['teacher_arch']}"
                acc.setdefault(label, [[] for _ in ab.values])[ab.values.index(r["x"])].append(
                    r["best_acc"])
        series = {k: [sum(v) / len(v) if v else None for v in vs] for k, vs in acc.items()}
        out.append({"name": ab.name, "param": ab.param, "x_label": ab.x_label or ab.param,
                    "x_values": ab.values, "series": series})
    return out


def results_from(out_dir: Path) -> dict[str, Any]:
    return json.loads((out_dir / "results.json").read_text())
