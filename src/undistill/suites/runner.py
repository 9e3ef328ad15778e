"""`undistill reproduce`: plan a suite, run what is missing, write results and tables."""

from __future__ import annotations

import csv
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from undistill.analysis import kl_per_sample, kl_to_reference, predict_logits, test_accuracy
from undistill.checkpoint import atomic_write_bytes, atomic_write_json
from undistill.config import RunConfig, Runtime
from undistill.data import DatasetError
from undistill.devices import select_device
from undistill.executor import Executor, LocalExecutor
from undistill.labels import series_label
from undistill.methods import Ensemble
from undistill.run_result import RunResult
from undistill.runs import bind_data, data_views, is_done, load_run_model
from undistill.stats import mean_ci
from undistill.stopped_twin import releases_twin
from undistill.suites.claims import headline, paper_claims, preflight
from undistill.suites.plan import (
    Cell,
    Chosen,
    Plan,
    build_plan,
    column_method,
    column_teachers,
    nasty_es_cells,
    scale_of,
    search_student,
)
from undistill.suites.spec import SuiteSpec
from undistill.suites.tables import render_tables

RECORD_FIELDS = ["table", "dataset", "teacher_arch", "teacher_kind", "teacher_acc", "student_arch",
                 "column", "method", "test_acc", "eval_split", "best_acc", "last_acc", "seed", "run_id",
                 "teacher_run_id", "ablation", "x"]


@dataclass
class DryRun:
    runs: int
    done: int
    pending: list[str]
    estimated_s: float
    lines: list[str]


def dry_run(plan: Plan, runtime: Runtime) -> DryRun:
    from undistill.suites.cost import estimate_seconds

    runs = [_bound(r, runtime) for r in plan.runs()]
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


def _bound(cfg: RunConfig, runtime: Runtime) -> RunConfig:
    """The config with its data's fingerprint, or as it is when the data is not here to plan."""
    try:
        return bind_data(cfg, runtime.data_root)
    except DatasetError:
        return cfg


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _record(cell: Cell, results: dict[str, RunResult], dataset: str, scores: dict[str, float],
            tscores: dict[str, float]) -> dict[str, Any]:
    """One record per cell. ``results`` and the scores are keyed by the configs' run ids; a
    result's own ``run_id`` (its folder) also carries the data fingerprint under ``--data-root``."""
    r = results[cell.run.run_id]
    t = results[cell.teacher_run.run_id] if cell.teacher_run is not None else None
    return {"table": cell.table, "dataset": dataset, "teacher_arch": cell.teacher_arch,
            "teacher_kind": cell.teacher_kind,
            "teacher_acc": tscores[cell.teacher_run.run_id] if cell.teacher_run is not None else None,
            "student_arch": cell.student_arch, "column": cell.column, "method": cell.method,
            "params": cell.run.method.params, "test_acc": scores[cell.run.run_id], "eval_split": r.eval_split,
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
        entries = [("nasty", logits(members[0]), results[g.nasty.run_id].run_id)]
        entries += [(f"S{i}", logits(m), results[c.run_id].run_id)
                    for i, (m, c) in enumerate(zip(members, g.sequence, strict=True), 1) if i > 1]
        if len(members) > 1:
            entries.append((f"scm-ensemble (k={len(members)})", logits(Ensemble(members).logits),
                            None))
        nasty_kl = kl_per_sample(entries[0][1], ref, 1.0)
        for name, z, run_id in entries:
            acc = 100.0 * float((z.argmax(1) == views.eval_labels).double().mean())
            kl = kl_per_sample(z, ref, 1.0)
            row = {"dataset": plan.suite.dataset, "teacher_arch": g.spec.arch, "model": name,
                   "accuracy": acc, "split": views.eval_split, "kl_t1": float(kl.mean()),
                   "kl_tau": kl_to_reference(z, ref, tau), "tau": tau, "run_id": run_id}
            if name != "nasty":  # paired over the same images, for Table 3's claim
                d = kl - nasty_kl
                row["kl_t1_vs_nasty"] = {"mean": float(d.mean()), "std": float(d.std()),
                                         "n": int(d.numel())}
            rows.append(row)
    return rows


def _teacher_runs(plan: Plan) -> list[RunConfig]:
    from undistill.executor import plan as order

    return order([r for g in plan.groups for r in (g.normal, g.nasty, *g.sequence)]
                 + [g.defence for g in plan.groups if g.defence is not None])


def run_preflight(plan: Plan, results: dict[str, RunResult]) -> list[dict[str, Any]]:
    """The preflight on the evaluation split of the teachers and vanilla students (the
    validation split when the suite carves one): warn when the scale cannot show anything."""
    pf = plan.suite.preflight
    out = []
    for g in plan.groups:
        vanilla: dict[str, list[float]] = {}
        for c in plan.cells:
            if c.table == "table1" and c.column == "vanilla" and c.ablation is None and \
                    c.teacher_arch == g.spec.arch and c.run.run_id in results:
                vanilla.setdefault(c.student_arch, []).append(results[c.run.run_id].last_acc)
        teachers = {k: results[c.run_id].released_acc for k, c in (("normal", g.normal),
                                                                    ("nasty", g.nasty))}
        for check in preflight(teachers, vanilla, pf.teacher_margin, pf.nasty_drop, g.spec.arch):
            check["split"] = results[g.normal.run_id].eval_split
            out.append(check)
            if not check["ok"]:
                print(f"[undistill] preflight warning: {check['check']} fails ({check['detail']}, "
                      f"{check['split']} split): this scale may not show the paper's effects",
                      file=sys.stderr, flush=True)
    return out


def run_searches(plan: Plan, runtime: Runtime, executor: Executor, out_dir: Path
                 ) -> tuple[Chosen, list[dict[str, Any]]]:
    """The suite's searches on the validation split: chosen parameters and every search.json."""
    from undistill.search import run_search

    spec = plan.suite.search
    if spec is None:
        return {}, []
    _, sc = scale_of(plan.suite, plan.scale)
    chosen: Chosen = {}
    docs = []
    for g in plan.groups:
        for s in plan.suite.students:
            for method in spec.methods:
                args = search_student(plan.suite, s, sc, method)
                doc = run_search(column_teachers(g, column_method(method)[1]), runtime=runtime,
                                 grid=spec.grid, sampler="grid", trials=spec.trials,
                                 study_seed=spec.study_seed, final=False,
                                 out_dir=out_dir / "search" / f"{g.spec.arch}-{s.arch}-{method}",
                                 executor=executor, **args)
                chosen[(g.spec.arch, s.arch, method)] = dict(doc["best"]["params"])
                docs.append({"teacher_arch": g.spec.arch, "student_arch": s.arch, "method": method,
                             "chosen": doc["best"]["params"], "val_acc": doc["best"]["val_acc"],
                             "trials": [{"params": t["params"], "val_acc": t["val_acc"]}
                                        for t in doc["trials"]],
                             "grid": doc["grid"], "split": doc["selection_split"]})
    return chosen, docs


def reproduce(suite: SuiteSpec, runtime: Runtime, out_dir: Path, scale: str | None = None,
              executor: Executor | None = None, plan: Plan | None = None) -> dict[str, Any]:
    """Run (or finish) a suite and write results.json, results.csv and tables.md to out_dir.

    Stages: teachers; vanilla students and the preflight; the searches on the validation split
    (their trials are the seed-0 runs of the searched cells); every cell with the chosen values;
    Nasty-ES (stopped at the SCM-defence teacher's evaluation accuracy) and its students.
    ``plan``: the suite's plan when the caller has built it already (it is built here otherwise).
    """
    t0 = time.perf_counter()
    executor = executor or LocalExecutor()
    plan = plan or build_plan(suite, scale)
    suite, scale = plan.suite, plan.scale  # a scale may name another suite
    results = dict(executor.run(_teacher_runs(plan), runtime))
    results.update(executor.run([c.run for c in plan.cells if c.column == "vanilla"
                                 and c.ablation is None], runtime))
    checks = run_preflight(plan, results)
    chosen, searches = run_searches(plan, runtime, executor, out_dir)
    if chosen:  # the cells again, with the values chosen on the validation split
        plan = build_plan(suite, plan.scale, chosen)
    results.update(executor.run(plan.runs(), runtime))
    cells = list(plan.cells)
    defended = [g.defence for g in plan.groups if g.defence is not None]
    if plan.pending and defended:
        es = nasty_es_cells(plan, {d.run_id: results[d.run_id].best_acc for d in defended},
                            {g.nasty.run_id: results[g.nasty.run_id].best_acc for g in plan.groups})
        results.update(executor.run([c.run for c in es], runtime))
        cells += es
    # the headline numbers, read from the test split only now that every choice is made
    dev = select_device(runtime.device)
    # students: the final model; teachers: the checkpoint their students learned from
    students = {c.run.run_id: c.run for c in cells}
    taught = {c.run_id: c for c in [*_teacher_runs(plan), *(c.teacher_run for c in cells
                                                             if c.teacher_run is not None)]}
    scores = {i: test_accuracy(c, runtime.runs_dir, runtime.data_root, dev)
              for i, c in students.items()}
    tscores = {i: test_accuracy(c, runtime.runs_dir, runtime.data_root, dev, which="auto")
               for i, c in taught.items()}
    records = [_record(c, results, suite.dataset, scores, tscores) for c in cells]
    kl = kl_records(plan, runtime, results) if suite.kl else []
    teachers = [_teacher_row(g.spec.arch, kind, results[c.run_id], tscores[c.run_id])
                for g in plan.groups for kind, c in
                [("normal", g.normal), *((f"S{i}" if i > 1 else "nasty", s)
                                         for i, s in enumerate(g.sequence, 1))]
                + ([("scm-defence", g.defence)] if g.defence is not None else [])]
    nasty = {g.spec.arch: g.nasty for g in plan.groups}

    def same_as(es: RunConfig, arch: str) -> str | None:  # a Nasty-ES that is the nasty teacher
        n = nasty[arch]
        return n.run_id if releases_twin(es, results[es.run_id], n, results[n.run_id]) else None

    teachers += [_teacher_row(c.teacher_arch, "nasty-es", results[c.teacher_run.run_id],
                              tscores[c.teacher_run.run_id], same_as(c.teacher_run, c.teacher_arch))
                 for c in cells if c.teacher_kind == "nasty-es" and c.teacher_run is not None]
    teachers = list({(t["kind"], t["run_id"]): t for t in teachers}.values())
    doc = {"suite": suite.name, "title": suite.title, "scale": plan.scale,
           "ablations": ablation_series(suite, records),
           "dataset": suite.dataset, "records": records, "kl": kl, "teachers": teachers,
           "preflight": checks, "search": searches,
           "notes": suite.notes, "spec": suite.model_dump(mode="json"),
           "wall_time_s": time.perf_counter() - t0,
           "train_time_s": sum(results[r].wall_time_s for r in results)}
    doc["claims"] = paper_claims(doc, suite.alpha)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "results.json", doc)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RECORD_FIELDS, extrasaction="ignore")
    w.writeheader()
    w.writerows(records)
    atomic_write_bytes(out_dir / "results.csv", buf.getvalue().encode())
    atomic_write_bytes(out_dir / "tables.md", render_tables(doc, suite).encode())
    return doc


def _teacher_row(arch: str, kind: str, r: RunResult, test_acc: float,
                 same_as: str | None = None) -> dict[str, Any]:
    """A teacher's accuracy on test, of the checkpoint it released to its students (best on
    validation when it had a validation split), plus that checkpoint's evaluation-split accuracy.
    ``same_as``: the run whose very weights it releases (a Nasty-ES that is the nasty teacher:
    :func:`undistill.stopped_twin.releases_twin`)."""
    row = {"teacher_arch": arch, "kind": kind, "accuracy": test_acc,
           "eval_acc": r.released_acc, "checkpoint": "best" if r.eval_split == "val" else "last",
           "eval_split": r.eval_split, "run_id": r.run_id, "status": r.status}
    return row if same_as is None else {**row, "same_as": same_as}


def ablation_series(suite: SuiteSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each ablation as line-plot data: x values and one accuracy series per column/student
    (mean over seeds, with its 95 % interval half-width and seed count)."""
    out = []
    for ab in suite.ablations:
        acc: dict[str, list[list[float]]] = {}
        for r in records:
            if r["ablation"] == ab.name:
                label = series_label(r["column"], r["student_arch"], r["teacher_arch"])
                acc.setdefault(label, [[] for _ in ab.values])[ab.values.index(r["x"])].append(
                    headline(r))
        stats = {k: [mean_ci(v) if v else None for v in vs] for k, vs in acc.items()}
        out.append({"name": ab.name, "param": ab.param, "x_label": ab.x_label or ab.param,
                    "x_values": ab.values,
                    "series": {k: [m.mean if m else None for m in ms] for k, ms in stats.items()},
                    # 95 % Student-t half-widths over seeds (None: one seed) and the seed counts
                    "series_ci": {k: [m.ci if m else None for m in ms] for k, ms in stats.items()},
                    "series_n": {k: [m.n if m else 0 for m in ms] for k, ms in stats.items()}})
    return out

