"""The numbers of an audit (:mod:`undistill.audit`): per attack and budget a mean and 95 % interval
over seeds, the fraction of the teacher's accuracy, the plateau check, the verdict and report.md.

Pure functions of the students' scores (no training, no teacher): :func:`summarise` one attack at
one budget, :func:`plateau` on the best attack's curve, :func:`verdict_text` for the sentence a
decision maker reads, :func:`write_report` for ``report.md`` and ``curve.png``.

Intervals are two-sided 95 % Student-t intervals of the mean over seeds
(:func:`undistill.stats.mean_ci`), clipped to [0, 100] %; with one seed there is none (``null``).
``fraction_of_teacher`` and its interval are *fractions* (0.91 = 91 % of the teacher's test
accuracy): the accuracy and its interval divided by the teacher's accuracy, which is one fixed
number on the test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from undistill.stats import mean_ci


def interval(values: Sequence[float], lo: float = 0.0, hi: float = 100.0
             ) -> tuple[float, list[float] | None]:
    """Mean and 95 % interval ``[lo, hi]`` of ``values`` (percentages: clipped to ``[lo, hi]``;
    None for a single value)."""
    s = mean_ci(values)
    if s.ci is None:
        return s.mean, None
    return s.mean, [max(lo, s.mean - s.ci), min(hi, s.mean + s.ci)]


def summarise(method: str, arch: str, budget: int, seeds: Sequence[int], accuracy: Sequence[float],
              agreement: Sequence[float] | None, teacher_accuracy: float | None,
              run_ids: Sequence[str], run_dirs: Sequence[str], strategy: str = "random"
              ) -> dict[str, Any]:
    """One attack (``method`` with the query ``strategy``; ``attack``: its label, the method's
    name alone for ``random``) at one budget over its seeds: accuracy and agreement (percent) as
    mean and 95 % interval (``accuracy_half_width``: the interval's half-width before clipping),
    ``fraction_of_teacher`` (a fraction; None when the teacher was not scored) and the
    students' run ids and folders, in the order of ``seeds``."""
    acc_mean, acc_ci = interval(accuracy)
    acc_half = mean_ci(accuracy).ci
    agr_mean, agr_ci = interval(agreement) if agreement is not None else (None, None)
    frac = frac_ci = None
    if teacher_accuracy:  # unknown (not scored) or zero: no fraction
        frac = acc_mean / teacher_accuracy
        frac_ci = None if acc_ci is None else [v / teacher_accuracy for v in acc_ci]
    return {"attack": attack_label(method, strategy), "method": method, "strategy": strategy,
            "arch": arch, "budget": budget, "seeds": list(seeds),
            "accuracy_mean": acc_mean, "accuracy_ci": acc_ci, "accuracy_half_width": acc_half,
            "accuracy": list(accuracy),
            "agreement_mean": agr_mean, "agreement_ci": agr_ci,
            "agreement": None if agreement is None else list(agreement),
            "fraction_of_teacher": frac, "fraction_of_teacher_ci": frac_ci,
            "run_ids": list(run_ids), "run_dirs": list(run_dirs)}


def attack_label(method: str, strategy: str) -> str:
    """``kd`` (random queries) or ``kd+uncertainty``."""
    return method if strategy == "random" else f"{method}+{strategy}"


def half_width(entry: dict[str, Any]) -> float:
    """The half-width of an entry's 95 % accuracy interval before clipping (0 for a single seed)."""
    return entry.get("accuracy_half_width") or 0.0


def plateau(curve: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Whether an attack's accuracy-vs-queries curve still rises at its end.

    ``curve``: one attack's entries (:func:`summarise`), any order. With ``a`` and ``b`` its last
    two budgets (``a < b``), ``rise = accuracy_mean(b) - accuracy_mean(a)`` and ``half_width`` the
    larger of the two points' 95 % interval half-widths (0 for a point of one seed):
    ``still_rising`` is ``rise > half_width`` -- more queries would very likely steal more, the
    curve has not reached a plateau at the budget audited. ``still_rising`` is None with fewer than
    two budgets (nothing to compare)."""
    pts = sorted(curve, key=lambda e: e["budget"])
    method = pts[-1]["attack"] if pts else None
    if len(pts) < 2:
        return {"method": method, "still_rising": None, "from_budget": None,
                "to_budget": pts[-1]["budget"] if pts else None, "rise": None, "half_width": None}
    a, b = pts[-2], pts[-1]
    rise = b["accuracy_mean"] - a["accuracy_mean"]
    half = max(half_width(a), half_width(b))
    return {"method": method, "still_rising": rise > half, "from_budget": a["budget"],
            "to_budget": b["budget"], "rise": rise, "half_width": half}


def _pct(mean: float, ci: list[float] | None, scale: float = 1.0, digits: int = 1) -> str:
    """``91.0% [88.2, 93.1]`` (or ``91.0% (one seed)``) of ``mean`` x ``scale``."""
    text = f"{mean * scale:.{digits}f}%"
    if ci is None:
        return f"{text} (one seed, no interval)"
    return f"{text} [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"


def verdict_text(best: dict[str, Any], teacher_accuracy: float | None, stealable: bool | None,
                 margin: float) -> str:
    """The sentence naming the best attack with its interval, e.g. "stealable: with 5,000 queries a
    thief reaches 91.0% [88.2, 93.1] of your accuracy (kd: 84.2% [81.6, 86.1] test accuracy against
    your 92.5%, 95% interval over 3 seeds)". Without a teacher accuracy the accuracy is absolute."""
    n, budget = len(best["seeds"]), f"{best['budget']:,}"
    over = f"95% interval over {n} seeds" if n > 1 else "one seed"
    acc = _pct(best["accuracy_mean"], best["accuracy_ci"])
    if teacher_accuracy is None or best["fraction_of_teacher"] is None:
        return (f"with {budget} queries a thief reaches {acc} test accuracy ({best['attack']}, "
                f"{over}); the teacher was not scored, so there is no comparison with its "
                f"accuracy")
    frac = _pct(best["fraction_of_teacher"], best["fraction_of_teacher_ci"], 100.0)
    detail = f"{best['attack']}: {acc} test accuracy against your {teacher_accuracy:.1f}%, {over}"
    if stealable:
        return f"stealable: with {budget} queries a thief reaches {frac} of your accuracy ({detail})"
    return (f"not stolen at {budget} queries: the best attack reaches {frac} of your accuracy "
            f"({detail}; more than {margin:g} points below yours)")


def _cell(mean: float | None, ci: list[float] | None, scale: float = 1.0) -> str:
    if mean is None:
        return "n/a"
    if ci is None:
        return f"{mean * scale:.2f}"
    return f"{mean * scale:.2f} [{ci[0] * scale:.2f}, {ci[1] * scale:.2f}]"


def write_report(doc: dict[str, Any], out: Path) -> None:
    """``out/report.md`` (teacher, verdict, queries, the attacks' table, the curve's table, the
    defences' table when there are any) and
    ``out/curve.png`` (one line per attack with 95 % error bars, the teacher's accuracy)."""
    from undistill.audit_defences import markdown as defence_markdown
    from undistill.plots import line_plot

    curve, teacher = doc["curve"], doc["teacher"]
    budgets = sorted({c["budget"] for c in curve})
    methods = list(dict.fromkeys(c["attack"] for c in curve))
    by = {(c["attack"], c["budget"]): c for c in curve}
    series = {m: [by[(m, b)]["accuracy_mean"] for b in budgets] for m in methods}
    errors = {m: [half_width(by[(m, b)]) or None for b in budgets] for m in methods}
    if teacher["accuracy"] is not None:
        series["teacher"] = [teacher["accuracy"]] * len(budgets)
    line_plot(budgets, series, "queries (images sent to the teacher)", "test accuracy (%)",
              f"accuracy vs queries on {doc['dataset']} (mean, 95% interval)", out / "curve.png",
              logx=True, errors=errors)
    scored = ("not scored (--no-score)" if teacher["accuracy"] is None else
              f"{teacher['accuracy']:.2f}% on the {doc['dataset']} test set"
              + (f" (scored with the local copy `{teacher['scored_with']}`)"
                 if teacher.get("scored_with") else ""))
    q = doc["queries"]
    lines = ["# Audit: can this model be stolen?", "",
             f"Teacher `{teacher['source']}` ({teacher['kind']}, identity `{teacher['identity']}`): "
             f"{scored}.", "",
             f"**Verdict: {doc['verdict']}.**", "",
             f"Queries sent to the teacher in all: **{doc['queries_total']}** ({q['attacks']} by the "
             f"attacks, probe included, {q['scoring']} to score it on the test set; {q['counted']}).",
             "", "| attack | student | accuracy (%) | agreement with teacher (%) | fraction of "
             "teacher (%) | seeds | budget |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {a['attack']} | {a['arch']} | {_cell(a['accuracy_mean'], a['accuracy_ci'])} | "
              f"{_cell(a['agreement_mean'], a['agreement_ci'])} | "
              f"{_cell(a['fraction_of_teacher'], a['fraction_of_teacher_ci'], 100.0)} | "
              f"{len(a['seeds'])} | {a['budget']} |" for a in doc["attacks"]]
    p = doc["plateau"]
    if p["still_rising"] is not None:
        how = "still rises" if p["still_rising"] else "has levelled off"
        lines += ["", f"The best attack's curve ({p['method']}) {how}"
                  f" between {p['from_budget']} and {p['to_budget']} queries ({p['rise']:+.2f} points, "
                  f"interval half-width {p['half_width']:.2f})"
                  + (": a larger budget would likely steal more." if p["still_rising"] else ".")]
    busy = [a["attack"] for a in doc["attacks"] if a.get("stopped_early") == 0]
    if busy:
        lines += ["", f"Every student of {', '.join(busy)} at {doc['budget']} queries used all its "
                  f"steps without its held-out agreement levelling off: more steps (`--steps`) "
                  f"may steal more."]
    lines += ["", "## Accuracy vs queries", "",
              "| attack | budget | accuracy (%) | agreement (%) | fraction of teacher (%) |",
              "|---|---|---|---|---|"]
    lines += [f"| {c['attack']} | {c['budget']} | {_cell(c['accuracy_mean'], c['accuracy_ci'])} | "
              f"{_cell(c['agreement_mean'], c['agreement_ci'])} | "
              f"{_cell(c['fraction_of_teacher'], c['fraction_of_teacher_ci'], 100.0)} |"
              for c in curve]
    lines += defence_markdown(doc.get("defences") or [], doc["budget"])
    lines += ["", "![accuracy vs queries](curve.png)", "",
              "Accuracy: the student's checkpoint chosen on held-out paid answers (never the test "
              "set), scored once on the test set, mean [95% Student-t interval] over the seeds; "
              "agreement: top-1 agreement with the teacher on the test set; fraction of teacher: "
              "accuracy / the teacher's accuracy; budget: images each attack may send (one probe "
              "plus the images its query strategy picked; every attack and seed of a strategy "
              "learns from the same images). Students learn from the teacher's answers only (no "
              "labels); `kd+uncertainty` is KD on images picked by the `uncertainty` strategy.",
              ""]
    (out / "report.md").write_text("\n".join(lines))
