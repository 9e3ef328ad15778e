"""Markdown tables shaped like the paper's Tables 1, 3 and 6, with its numbers beside ours,
and a plain check of each phenomenon the paper reports."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from undistill.suites.paper import TABLE1, TABLE3, TABLE6, TABLE6_TEACHER
from undistill.suites.spec import SuiteSpec

COLUMN_TITLES = {"vanilla": "Vanilla", "normal-kd": "Normal KD", "nasty-kd": "Nasty KD",
                 "skeptical": "Skep.", "htc": "HTC", "scm": "SCM", "skeptical+htc": "Skep.+HTC",
                 "skeptical+scm": "Skep.+SCM", "normal": "Normal Teacher", "nasty": "Nasty KD",
                 "nasty-es": "Nasty KD ES", "scm-defence": "Ours (SCM defence)"}


def mean_std(values: list[float]) -> tuple[float, float | None]:
    if len(values) == 1:
        return values[0], None
    return statistics.fmean(values), statistics.stdev(values)


def fmt(values: list[float], paper: float | None = None) -> str:
    if not values:
        return "-"
    m, s = mean_std(values)
    text = f"{m:.2f}" if s is None else f"{m:.2f} ± {s:.2f}"
    return text if paper is None else f"{text} ({paper:.2f})"


def _grouped(records: list[dict[str, Any]], table: str) -> dict[tuple[str, str, str], list[float]]:
    g: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in records:
        if r["table"] == table:
            g[(r["teacher_arch"], r["student_arch"], r["column"])].append(r["best_acc"])
    return g


def _teacher_acc(doc: dict[str, Any], arch: str, kind: str) -> float | None:
    for t in doc["teachers"]:
        if t["teacher_arch"] == arch and t["kind"] == kind:
            return t["accuracy"]
    return None


def table1(doc: dict[str, Any], suite: SuiteSpec) -> list[str]:
    ds, g = doc["dataset"], _grouped(doc["records"], "table1")
    cols = list(suite.methods)
    lines = ["## Table 1: accuracy (%) of the stealing student", "",
             "Best test accuracy over epochs" + (", mean ± std over seeds" if len(suite.seeds) > 1
                                                 else "") + "; the paper's value in brackets "
             "where the suite matches one of its cells.", "",
             "| Teacher | Student | " + " | ".join(COLUMN_TITLES[c] for c in cols) + " |",
             "|" + " --- |" * (len(cols) + 2)]
    for t in suite.teachers:
        for s in suite.students:
            paper = TABLE1.get((ds, t.arch, s.arch), {})
            cells = [fmt(g.get((t.arch, s.arch, c), []), paper.get(c)) for c in cols]
            lines.append(f"| {t.arch} | {s.arch} | " + " | ".join(cells) + " |")
    lines.append("")
    for t in suite.teachers:
        n, x = _teacher_acc(doc, t.arch, "normal"), _teacher_acc(doc, t.arch, "nasty")
        if n is not None and x is not None:
            lines.append(f"Teachers ({t.arch}): normal {n:.2f} %, nasty {x:.2f} % "
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
        lines.append(f"| {r['teacher_arch']} | {r['model']} | {r['accuracy']:.2f} | "
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
             "nasty teacher stopped early at the SCM-defence teacher's accuracy. Lower is a "
             "better defence.", ""]
    for t in suite.teachers:
        accs = [_teacher_acc(doc, t.arch, k) for k in cols]
        paper_t = TABLE6_TEACHER.get((ds, t.arch), {})
        head = [f"{COLUMN_TITLES[c]} (Acc = {'-' if a is None else f'{a:.2f}'}"
                + (f"; paper {paper_t[c]:.2f}" if c in paper_t else "") + ")"
                for c, a in zip(cols, accs, strict=True)]
        lines += [f"| {t.arch} | " + " | ".join(head) + " |", "|" + " --- |" * (len(cols) + 1)]
        for s in suite.students:
            paper = TABLE6.get((ds, t.arch, s.arch), {})
            lines.append(f"| {s.arch} | " + " | ".join(
                fmt(g.get((t.arch, s.arch, c), []), paper.get(c)) for c in cols) + " |")
        lines.append("")
    return lines


def ablation_tables(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for ab in doc.get("ablations", []):
        xs = ab["x_values"]
        lines += [f"## Ablation: {ab['name']} (accuracy %, varying {ab['x_label']})", "",
                  "| series | " + " | ".join(str(x) for x in xs) + " |",
                  "|" + " --- |" * (len(xs) + 1)]
        for label, ys in ab["series"].items():
            lines.append(f"| {label} | " + " | ".join("-" if y is None else f"{y:.2f}"
                                                       for y in ys) + " |")
        lines.append("")
    return lines


def checks(doc: dict[str, Any], suite: SuiteSpec) -> list[str]:
    """Each phenomenon the paper reports, checked plainly on our numbers."""
    g1, g6 = _grouped(doc["records"], "table1"), _grouped(doc["records"], "table6")

    def m(g: dict, key: tuple[str, str, str]) -> float | None:
        return statistics.fmean(g[key]) if g.get(key) else None

    out = ["## What the paper reports, checked on these numbers", ""]

    def say(ok: bool, text: str) -> None:
        out.append(f"- {'yes' if ok else '**no**'}: {text}")

    for t in suite.teachers:
        n, x = _teacher_acc(doc, t.arch, "normal"), _teacher_acc(doc, t.arch, "nasty")
        if n is not None and x is not None:
            say(n - x <= 2.0, f"nasty {t.arch} within 2 points of the normal teacher "
                              f"({x:.2f} vs {n:.2f})")
        below = []
        for s in suite.students:
            v, nk = m(g1, (t.arch, s.arch, "vanilla")), m(g1, (t.arch, s.arch, "nasty-kd"))
            if v is not None and nk is not None:
                below.append((s.arch, nk, v))
        if below:
            hits = [b for b in below if b[1] < b[2]]
            say(bool(hits), "Nasty KD below Vanilla for at least one student: " + ", ".join(
                f"{a} {nk:.2f} vs {v:.2f}" for a, nk, v in below))
        for s in suite.students:
            v, nk = m(g1, (t.arch, s.arch, "vanilla")), m(g1, (t.arch, s.arch, "nasty-kd"))
            for col in ("htc", "scm"):
                a = m(g1, (t.arch, s.arch, col))
                if a is None or nk is None or v is None:
                    continue
                say(a > nk, f"{col.upper()} above Nasty KD for {s.arch} ({a:.2f} vs {nk:.2f})")
                say(a >= v - 2.0, f"{col.upper()} within 2 points of Vanilla or above for {s.arch} "
                                  f"({a:.2f} vs {v:.2f})")
        kl = {r["model"].split(" ")[0]: r for r in doc["kl"] if r["teacher_arch"] == t.arch}
        if "nasty" in kl and "scm-ensemble" in kl:
            a, b = kl["scm-ensemble"], kl["nasty"]
            say(a["kl_t1"] < b["kl_t1"], f"SCM ensemble closer to the normal {t.arch} than the "
                                         f"nasty teacher (KL at T=1 {a['kl_t1']:.4f} vs "
                                         f"{b['kl_t1']:.4f})")
        pairs = [(s.arch, m(g6, (t.arch, s.arch, "scm-defence")), m(g6, (t.arch, s.arch, "nasty")))
                 for s in suite.students]
        pairs = [p for p in pairs if p[1] is not None and p[2] is not None]
        if pairs:
            say(any(d < n for _, d, n in pairs), "SCM defence below Nasty KD for at least one "
                "student: " + ", ".join(f"{a} {d:.2f} vs {n:.2f}" for a, d, n in pairs))
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
    body = (table1(doc, suite) + table3(doc) + table6(doc, suite) + ablation_tables(doc)
            + checks(doc, suite))
    return "\n".join(head + notes + body + tail)
