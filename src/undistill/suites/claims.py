"""The paper's claims (Tables 1, 3 and 6; HTC above Nasty KD in the limited-, no-label and no-data
ablations), each judged PASS / FAIL / INCONCLUSIVE on the per-seed
numbers of a suite's results.json, and the preflight that says whether a scale can show anything.

Claims are computed from the records alone (one per student run: column, student, seed and the
headline ``test_acc``), so they can be recomputed from any results.json. Student claims use
one-sided Welch t-tests over seeds (:mod:`undistill.stats`). The KL claim of Table 3 is a paired
t-test over evaluation images of KL(ensemble || normal) - KL(nasty || normal) (``kl_t1_vs_nasty``
in the KL rows: one teacher seed, so the test is over images, not over seeds).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from undistill.stats import judge, verdict_from_summary

#: (claim text template, column a, op, column b, margin); {s} is the student architecture
TABLE1_CLAIMS: list[tuple[str, str, str, str, float]] = [
    ("Normal KD above Vanilla for {s}", "normal-kd", ">", "vanilla", 0.0),
    ("Nasty KD below Vanilla for {s}", "nasty-kd", "<", "vanilla", 0.0),
    ("Nasty KD at least 3 points below Vanilla for {s}", "nasty-kd", "<", "vanilla", 3.0),
    ("Nasty KD below Normal KD for {s}", "nasty-kd", "<", "normal-kd", 0.0),
    ("HTC above Nasty KD for {s}", "htc", ">", "nasty-kd", 0.0),
    ("SCM above Nasty KD for {s}", "scm", ">", "nasty-kd", 0.0),
    ("Skeptical above Nasty KD for {s}", "skeptical", ">", "nasty-kd", 0.0),
    ("HTC above Skeptical for {s}", "htc", ">", "skeptical", 0.0),
    ("SCM above Skeptical for {s}", "scm", ">", "skeptical", 0.0),
    ("Skeptical+HTC above Nasty KD for {s}", "skeptical+htc", ">", "nasty-kd", 0.0),
    ("Skeptical+SCM above Nasty KD for {s}", "skeptical+scm", ">", "nasty-kd", 0.0),
]
TABLE6_CLAIMS: list[tuple[str, str, str, str, float]] = [
    ("SCM defence below Nasty KD for {s}", "scm-defence", "<", "nasty", 0.0),
    ("SCM defence below Nasty KD ES for {s}", "scm-defence", "<", "nasty-es", 0.0),
]


def headline(record: dict[str, Any]) -> float:
    """A run's reported accuracy: the final model on the test split (``test_acc``); results
    written before it existed fall back to the last epoch, never to the best epoch on test."""
    v = record.get("test_acc")
    return float(record["last_acc"] if v is None else v)


def per_seed(records: list[dict[str, Any]], table: str) -> dict[tuple[str, str, str], list[float]]:
    """(teacher arch, student arch, column) -> headline accuracies over seeds."""
    g: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in records:
        if r["table"] == table and r.get("ablation") is None:
            g[(r["teacher_arch"], r["student_arch"], r["column"])].append(headline(r))
    return g


def es_is_nasty(doc: dict[str, Any]) -> set[str]:
    """Teacher architectures whose Nasty KD ES releases the nasty teacher's very weights (the
    teacher row's ``same_as``): their Nasty KD ES students are Nasty KD's, so a claim against
    Nasty KD ES is the claim against Nasty KD and is not tested a second time."""
    return {t["teacher_arch"] for t in doc.get("teachers", [])
            if t.get("kind") == "nasty-es" and t.get("same_as")}


def paper_claims(doc: dict[str, Any], alpha: float = 0.05) -> list[dict[str, Any]]:
    """Every claim the suite's cells can test, with its verdict (a claim against Nasty KD ES
    only where that is not the nasty teacher itself: :func:`es_is_nasty`)."""
    out: list[dict[str, Any]] = []
    same = es_is_nasty(doc)
    for table, claims in (("table1", TABLE1_CLAIMS), ("table6", TABLE6_CLAIMS)):
        g = per_seed(doc["records"], table)
        pairs = sorted({(t, s) for t, s, _ in g})
        for t, s in pairs:
            for text, a, op, b, margin in claims:
                va, vb = g.get((t, s, a)), g.get((t, s, b))
                if not va or not vb or (b == "nasty-es" and t in same):
                    continue
                c = judge(text.format(s=s) + f" (teacher {t})", va, vb, op, margin, alpha)  # type: ignore[arg-type]
                out.append({"table": table, "teacher_arch": t, "student_arch": s,
                            "a": a, "b": b, **c.as_dict()})
    out += ablation_claims(doc, alpha)
    for r in doc.get("kl", []):
        d = r.get("kl_t1_vs_nasty")
        if d is None or not r["model"].startswith("scm-ensemble"):  # the paper claims it of the ensemble
            continue
        c = verdict_from_summary(f"{r['model']} closer to the normal {r['teacher_arch']} than the "
                                 f"nasty teacher (KL at T=1, paired over evaluation images)",
                                 d["mean"], d["std"], d["n"], "<", alpha)
        out.append({"table": "table3", "teacher_arch": r["teacher_arch"], "student_arch": None,
                    "a": r["model"], "b": "nasty", **c})
    return out


def ablation_claims(doc: dict[str, Any], alpha: float = 0.05) -> list[dict[str, Any]]:
    """HTC above Nasty KD at every point of an ablation that has both columns: the paper's claim
    of Fig. 4(c) (limited data), Table 4 (no data) and Table 5 (no labels)."""
    from undistill.labels import x_value_text

    params = {a["name"]: a.get("param", "") for a in doc.get("ablations", [])}
    g: dict[tuple[str, Any, str, str, str], list[float]] = defaultdict(list)
    for r in doc["records"]:
        if r.get("ablation") is not None:
            g[(r["ablation"], r["x"], r["teacher_arch"], r["student_arch"], r["column"])].append(
                headline(r))
    out = []
    for (ab, x, t, s, col), va in sorted(g.items(), key=lambda kv: str(kv[0])):
        vb = g.get((ab, x, t, s, "nasty-kd"))
        if col != "htc" or not vb:
            continue
        text = f"HTC above Nasty KD for {s} (teacher {t}), {ab}: {x_value_text(params.get(ab, ''), x)}"
        c = judge(text, va, vb, ">", 0.0, alpha)
        out.append({"table": "ablation", "teacher_arch": t, "student_arch": s, "a": "htc",
                    "b": "nasty-kd", **c.as_dict()})
    return out


def preflight(teachers: dict[str, float], vanilla: dict[str, list[float]], teacher_margin: float,
              nasty_drop: float, arch: str) -> list[dict[str, Any]]:
    """Checks on validation accuracies: is the teacher clearly above every vanilla student, and
    did the nasty teacher keep its accuracy? ``teachers``: kind -> accuracy; ``vanilla``: student
    arch -> accuracies over seeds."""
    checks = []
    normal, nasty = teachers.get("normal"), teachers.get("nasty")
    for s, accs in sorted(vanilla.items()):
        if normal is None or not accs:
            continue
        best = max(accs)
        checks.append({"check": f"normal {arch} at least {teacher_margin:g} points above the vanilla "
                                f"{s} student", "ok": normal - best >= teacher_margin,
                       "detail": f"{normal:.2f} vs {best:.2f} (best seed)"})
    if normal is not None and nasty is not None:
        checks.append({"check": f"nasty {arch} within {nasty_drop:g} points of the normal teacher",
                       "ok": normal - nasty <= nasty_drop, "detail": f"{nasty:.2f} vs {normal:.2f}"})
    return checks
