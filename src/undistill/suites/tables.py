"""Markdown tables shaped like the paper's Tables 1, 3 and 6, with its numbers beside ours,
and a plain check of each phenomenon the paper reports."""

from __future__ import annotations

from typing import Any

from undistill.labels import arch_title, method_title, model_title, x_value_text
from undistill.methods import METHODS
from undistill.stats import mean_ci
from undistill.suites.claims import es_is_nasty, paper_claims, per_seed
from undistill.suites.paper import TABLE1, TABLE3, TABLE6, TABLE6_TEACHER
from undistill.suites.spec import SuiteSpec

#: Titles of the columns that are not a method's own (a method's: ``Method.title``).
COLUMN_TITLES = {"normal-kd": "Normal KD", "nasty-kd": "Nasty KD", "normal": "Normal Teacher",
                 "nasty": "Nasty KD", "nasty-es": "Nasty KD ES", "scm-defence": "Ours (SCM defence)"}


def column_title(column: str) -> str:
    """A table column's header: Table 1's KD columns and Table 6's teachers by name, every other
    Table 1 column by its method's title."""
    return COLUMN_TITLES.get(column) or METHODS.get(column).title or column


def fmt(values: list[float], paper: float | None = None) -> str:
    """Mean ± half-width of the 95 % confidence interval (n seeds); the paper's value in brackets."""
    if not values:
        return "-"
    text = mean_ci(values).fmt()
    return text if paper is None else f"{text} ({paper:.2f})"


def _grouped(records: list[dict[str, Any]], table: str) -> dict[tuple[str, str, str], list[float]]:
    return per_seed(records, table)


def _teacher_acc(doc: dict[str, Any], arch: str, kind: str) -> float | None:
    for t in doc["teachers"]:
        if t["teacher_arch"] == arch and t["kind"] == kind:
            return t["accuracy"]
    return None


def table1(doc: dict[str, Any], suite: SuiteSpec) -> list[str]:
    ds, g = doc["dataset"], _grouped(doc["records"], "table1")
    cols = list(suite.methods)
    lines = ["## Table 1: accuracy (%) of the stealing student", "",
             "Test accuracy of each student's final (last-epoch) model, never selected on the test "
             "set: mean ± half-width of the 95 % confidence interval (Student t) over n seeds; the "
             "paper's value in brackets where the suite matches one of its cells.", "",
             "| Teacher | Student | " + " | ".join(column_title(c) for c in cols) + " |",
             "|" + " --- |" * (len(cols) + 2)]
    for t in suite.teachers:
        for s in suite.students:
            paper = TABLE1.get((ds, t.arch, s.arch), {})
            cells = [fmt(g.get((t.arch, s.arch, c), []), paper.get(c)) for c in cols]
            lines.append(f"| {arch_title(t.arch)} | {arch_title(s.arch)} | " + " | ".join(cells) + " |")
    lines.append("")
    for t in suite.teachers:
        n, x = _teacher_acc(doc, t.arch, "normal"), _teacher_acc(doc, t.arch, "nasty")
        if n is not None and x is not None:
            lines.append(f"Teachers ({arch_title(t.arch)}): normal {n:.2f} %, nasty {x:.2f} % "
                         f"(difference {n - x:+.2f} points).")
    return lines + [""]


def table3(doc: dict[str, Any]) -> list[str]:
    if not doc["kl"]:
        return []
    lines = ["## Table 3: KL divergence to the original (normal) teacher", "",
             "KL(model || normal teacher), mean over the evaluation split, at T = 1 and at tau_A; "
             "the paper's value (temperature not stated there) in brackets.", "",
             "| Teacher | Model | Accuracy (%) | KL at T=1 | KL at tau_A |",
             "| --- | --- | --- | --- | --- |"]
    for r in doc["kl"]:
        paper = TABLE3.get((r["dataset"], r["teacher_arch"]), {})
        key = "nasty" if r["model"] == "nasty" else (
            "scm-ensemble" if r["model"].startswith("scm-ensemble") else None)
        p = f" ({paper[key]:.4f})" if key in paper else ""
        lines.append(f"| {arch_title(r['teacher_arch'])} | {model_title(r['model'])} | {r['accuracy']:.2f} | "
                     f"{r['kl_t1']:.4f}{p} | {r['kl_tau']:.4f} (tau_A={r['tau']:g}) |")
    return lines + [""]


def table6(doc: dict[str, Any], suite: SuiteSpec) -> list[str]:
    g = _grouped(doc["records"], "table6")
    if not g:
        return []
    ds = doc["dataset"]
    cols = ["normal", "nasty", "nasty-es", "scm-defence"]
    lines = ["## Table 6: defences, accuracy (%) of KD students", "",
             f"SCM defence = releasing S{suite.defence.release} of the sequence; Nasty KD ES = a "
             "nasty teacher stopped early at the SCM-defence teacher's accuracy (the nasty "
             "teacher itself when its training never reaches that accuracy on validation). "
             "Lower is a better defence.", ""]
    same = es_is_nasty(doc)
    if same:
        lines += [f"Nasty KD ES of {', '.join(arch_title(a) for a in sorted(same))} releases the "
                  "nasty teacher's own weights (it stops at the epoch the nasty teacher releases, "
                  "or never reaches the target): its students are Nasty KD's, and the claim "
                  "against it is the one against Nasty KD.", ""]
    for t in suite.teachers:
        accs = [_teacher_acc(doc, t.arch, k) for k in cols]
        paper_t = TABLE6_TEACHER.get((ds, t.arch), {})
        head = [f"{column_title(c)} (Acc = {'-' if a is None else f'{a:.2f}'}"
                + (f"; paper {paper_t[c]:.2f}" if c in paper_t else "") + ")"
                for c, a in zip(cols, accs, strict=True)]
        lines += [f"| Teacher: {arch_title(t.arch)} | " + " | ".join(head) + " |",
                  "|" + " --- |" * (len(cols) + 1)]
        for s in suite.students:
            paper = TABLE6.get((ds, t.arch, s.arch), {})
            lines.append(f"| {arch_title(s.arch)} student | " + " | ".join(
                fmt(g.get((t.arch, s.arch, c), []), paper.get(c)) for c in cols) + " |")
        lines.append("")
    return lines


def ablation_tables(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for ab in doc.get("ablations", []):
        xs = ab["x_values"]
        lines += [f"## Ablation: {ab['name']} (accuracy %, varying {ab['x_label']})", "",
                  "Mean ± half-width of the 95 % interval over n seeds (headline accuracy).", "",
                  "| Method: student and teacher | "
                  + " | ".join(x_value_text(ab.get("param", ""), x) for x in xs) + " |",
                  "|" + " --- |" * (len(xs) + 1)]
        cis, ns = ab.get("series_ci", {}), ab.get("series_n", {})  # absent in older results
        for label, ys in ab["series"].items():
            ci, n = cis.get(label, [None] * len(ys)), ns.get(label)
            lines.append(f"| {label} | " + " | ".join(
                "-" if y is None else f"{y:.2f}" + ("" if c is None else f" ± {c:.2f}")
                + ("" if n is None else f" (n={n[i]})")
                for i, (y, c) in enumerate(zip(ys, ci, strict=True))) + " |")
        lines.append("")
    return lines


def claims_section(doc: dict[str, Any]) -> list[str]:
    """What reproduces: each claim of the paper's Tables 1, 3 and 6 with its verdict."""
    claims = doc.get("claims") or paper_claims(doc)  # results.json files written before claims
    if not claims:
        return ["## What the paper reports: what reproduces", "", "No claim can be tested on "
                "these cells.", ""]
    n = {v: sum(c["verdict"] == v for c in claims) for v in ("PASS", "FAIL", "INCONCLUSIVE")}
    out = ["## What the paper reports: what reproduces", "",
           f"Each claim judged by a one-sided test at alpha = {claims[0]['alpha']:g} on the per-seed "
           "numbers in results.json (students: Welch t-test over seeds; Table 3: paired t-test over "
           "evaluation images). PASS: the claim's direction is significant; FAIL: the opposite "
           "direction is significant; INCONCLUSIVE: neither. "
           f"{n['PASS']} PASS, {n['FAIL']} FAIL, {n['INCONCLUSIVE']} INCONCLUSIVE.", "",
           "| Claim | Ours | Verdict | p |", "| --- | --- | --- | --- |"]
    for c in claims:
        if "a" in c and isinstance(c["a"], dict):
            a, b = c["a"], c["b"]
            ours = (f"{_summ(a)} vs {_summ(b)}")
        else:
            ours = f"mean difference {c['mean_diff']:+.4f} (n={c['n']})"
        p = "-" if c["p"] is None else f"{c['p']:.3g}"
        verdict = c["verdict"] if c["verdict"] == "PASS" else f"**{c['verdict']}**"
        out.append(f"| {c['claim']} | {ours} | {verdict} | {p} |")
    return out + [""]


def _summ(s: dict[str, Any]) -> str:
    return f"{s['mean']:.2f}" + ("" if s["ci"] is None else f" ± {s['ci']:.2f}") + f" (n={s['n']})"


def preflight_section(doc: dict[str, Any]) -> list[str]:
    checks = doc.get("preflight") or []
    if not checks:
        return []
    bad = [c for c in checks if not c["ok"]]
    out = ["## Preflight: can this scale show anything?", "",
           ("**Warning: the scale misses a precondition; read the tables with care.**" if bad else
            "Every precondition holds.") + " Checked on the "
           f"{checks[0].get('split', 'evaluation')} split once the teachers and vanilla students were "
           "trained.", ""]
    out += [f"- {'ok' if c['ok'] else '**no**'}: {c['check']} ({c['detail']})" for c in checks]
    return out + [""]


def search_section(doc: dict[str, Any]) -> list[str]:
    searches = doc.get("search") or []
    if not searches:
        return []
    out = ["## Hyper-parameters chosen on the validation split", "",
           "Every value below was chosen by the suite's grid search on a validation split carved "
           "from the training set (objective: best validation accuracy over epochs of the seed-0 "
           "run); the test set was not read. The chosen trial is the seed-0 run of its cell.", "",
           "| Teacher | Student | Method | Chosen | Validation acc. (%) | Trials |",
           "| --- | --- | --- | --- | --- | --- |"]
    for d in searches:
        chosen = ", ".join(f"{k} {v:g}" for k, v in d["chosen"].items())
        out.append(f"| {arch_title(d['teacher_arch'])} | {arch_title(d['student_arch'])} | "
                   f"{method_title(d['method'])} | {chosen} | "
                   f"{d['val_acc']:.2f} | {len(d['trials'])} |")
    return out + [""]


def render_tables(doc: dict[str, Any], suite: SuiteSpec) -> str:
    head = [f"# {suite.title or suite.name} ({doc['dataset']}, scale {doc['scale']})", ""]
    if suite.description:
        head += [suite.description.strip(), ""]
    notes = ["## Choices for this scale", ""] + [f"- {n}" for n in doc["notes"]] + [""] if doc[
        "notes"] else []
    tail = [f"Wall time of this invocation {doc['wall_time_s']:.0f} s; training time of all the "
            f"suite's runs, summed (those read back from earlier invocations included): "
            f"{doc['train_time_s']:.0f} s.", ""]
    body = (preflight_section(doc) + table1(doc, suite) + table3(doc) + table6(doc, suite)
            + ablation_tables(doc) + search_section(doc) + claims_section(doc))
    return "\n".join(head + notes + body + tail)
