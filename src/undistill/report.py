"""``undistill report``: a finished suite's ``results.json`` as one Markdown report (optionally a
self-contained HTML page): every table of :func:`undistill.suites.tables.render_tables`, Fig. 1, 2
and 5 from the suite's own teachers (:mod:`undistill.figures`), and a line plot for each
ablation listed under the key ``ablations``. Numbers measured at reproduce time (accuracies, the
KL of Table 3) are read back from ``results.json``, not measured again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from undistill import plots
from undistill.analysis import eval_data
from undistill.checkpoint import atomic_write_bytes, atomic_write_json
from undistill.figures import FIG2_ALPHA, FIG2_HIGH, FIG2_LOW, ModelSet, ReportError, compare
from undistill.html import markdown_to_html
from undistill.labels import arch_title, x_value_text

__all__ = ["ReportError", "suite_from_results", "write_report"]


def suite_from_results(doc: dict[str, Any], suite: str | Path | None = None) -> Any:
    """The SuiteSpec that ``render_tables`` needs: ``suite`` if given (name or YAML path), the
    ``spec`` stored in results.json if any, else one rebuilt from the records (teachers,
    students, columns, seeds and the released sequence model as they appear in the results)."""
    from undistill.suites.paper import TABLE1_COLUMNS
    from undistill.suites.spec import SuiteSpec, builtin_suites, load_suite

    if suite is not None:
        return load_suite(suite)
    if isinstance(doc.get("spec"), dict):
        return SuiteSpec.model_validate(doc["spec"])
    records, teachers = doc.get("records", []), doc.get("teachers", [])

    def ordered(values: list[Any]) -> list[Any]:
        return list(dict.fromkeys(v for v in values if v is not None))

    t_archs = ordered([t["teacher_arch"] for t in teachers] +
                      [r["teacher_arch"] for r in records])
    s_archs = ordered([r["student_arch"] for r in records])
    cols = {r["column"] for r in records if r["table"] == "table1"}
    methods = [c for c in TABLE1_COLUMNS if c in cols] or list(TABLE1_COLUMNS)
    seeds = sorted({int(r["seed"]) for r in records}) or [0]
    release, k = 2, 1
    for arch in t_archs:
        seq = {t["kind"]: t["run_id"] for t in teachers if t["teacher_arch"] == arch}
        k = max(k, 1 + sum(1 for kind in seq if re.fullmatch(r"S\d+", kind)))
        if "scm-defence" in seq:
            release = next((int(kind[1:]) for kind, rid in seq.items()
                            if re.fullmatch(r"S\d+", kind) and rid == seq["scm-defence"]), release)
    description = ""
    if doc.get("suite") in builtin_suites():
        builtin = load_suite(doc["suite"])
        if builtin.dataset == doc.get("dataset"):
            description = builtin.description
    return SuiteSpec(name=str(doc.get("suite", "suite")), title=doc.get("title") or "",
                     description=description, dataset=str(doc.get("dataset", "")),
                     teachers=[{"arch": a} for a in t_archs or ["?"]],
                     students=[{"arch": a} for a in s_archs or ["?"]], methods=methods,
                     seeds=seeds, scm={"k": min(16, k)}, defence={"release": release},
                     notes=list(doc.get("notes", [])))


def _teacher_runs(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    """teacher_arch -> kind (normal, nasty, S2, ...) -> run id."""
    out: dict[str, dict[str, str]] = {}
    for t in doc.get("teachers", []):
        out.setdefault(t["teacher_arch"], {}).setdefault(t["kind"], t["run_id"])
    return out


def _htc_setting(doc: dict[str, Any], arch: str, runs_dir: Path) -> tuple[float, float, float]:
    """Fig. 2's (tau_low, tau_high, alpha): tau and alpha of the suite's HTC student if any."""
    from undistill.checkpoint import CheckpointError
    from undistill.config import ConfigError
    from undistill.runs import read_run_config

    for r in doc.get("records", []):
        if r.get("column") == "htc" and r.get("teacher_arch") == arch:
            try:
                p = read_run_config(runs_dir / r["run_id"]).method.params
                return FIG2_LOW, float(p["temperature"]), float(p["alpha"])
            except (CheckpointError, ConfigError, KeyError):  # no such run: the defaults
                break
    return FIG2_LOW, FIG2_HIGH, FIG2_ALPHA


def _add_kl_from_results(rows: list[dict[str, Any]], doc: dict[str, Any], arch: str,
                         ms: ModelSet) -> None:
    """Each figure model's KL to the normal teacher, read from results.json's ``kl`` records
    (Table 3, measured once by the suite runner); the normal teacher's own is 0."""
    kl = {r["model"]: r for r in doc.get("kl", []) if r.get("teacher_arch") == arch}
    ens = next((r for name, r in kl.items() if name.startswith("scm-ensemble")), None)
    for row in rows:
        name = row["model"]
        if name == ms.reference[0]:
            row.update({"kl_t1": 0.0, "kl_tau": 0.0})
            continue
        rec = ens if name == ms.ensemble else kl.get("nasty" if name == "nasty teacher" else name)
        if rec is not None:
            row.update({"kl_t1": rec["kl_t1"], "kl_tau": rec.get("kl_tau"), "tau": rec.get("tau")})


def _fmt(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def stats_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown rows of :func:`compare`'s statistics."""
    has_tau = any("kl_tau" in r for r in rows)
    head = "| Model | Accuracy (%) | Peaks > 0.1 | Incorrect peaks | Entropy (nats) | " \
           "p(true class) | KL to normal, T=1 |" + (" KL at tau_A |" if has_tau else "")
    lines = [head, "|" + " --- |" * (7 + has_tau)]
    for r in rows:
        line = (f"| {r['model']} | {_fmt(r.get('accuracy'))} | {_fmt(r['peaks'])} | "
                f"{_fmt(r.get('incorrect_peaks'))} | {_fmt(r['entropy'], 3)} | "
                f"{_fmt(r.get('target_prob'), 3)} | {_fmt(r.get('kl_t1'), 4)} |")
        if has_tau:
            line += f" {_fmt(r.get('kl_tau'), 4)} |"
        lines.append(line)
    return lines


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def ablation_section(ablations: Any, out_dir: Path) -> list[str]:
    """A line plot per ablation {name, x_label, x_values, series: {label: [accuracy]}}.

    The numbers themselves are in the "Ablation: ..." tables of ``render_tables``; an empty list
    gives no section.
    """
    if not isinstance(ablations, list):
        raise ReportError("results.json 'ablations' must be a list of {name, x_label, x_values, "
                          "series}")
    if not ablations:
        return []
    lines = ["## Ablations", "",
             "Accuracy (%) against the varied value, one line per series (bars: 95 % intervals over "
             "seeds, where there are several); the numbers are in the ablation tables above.", ""]
    for i, a in enumerate(ablations):
        try:
            name, xs, series = a["name"], list(a["x_values"]), dict(a["series"])
            xs = [x if isinstance(x, int | float) and not isinstance(x, bool)
                  else x_value_text(str(a.get("param", "")), x) for x in xs]
            xl = a.get("x_label") or a.get("param") or "value"
        except (KeyError, TypeError) as e:
            raise ReportError(f"ablations[{i}] lacks {e}: each needs name, x_label, x_values and "
                              "series") from None
        if not series:
            lines += [f"### {name}", "", "No runs recorded for this ablation.", ""]
            continue
        fname = f"ablation-{i + 1}-{_slug(name)}.png"
        try:
            plots.line_plot(xs, series, xl, a.get("y_label", "accuracy (%)"), name, out_dir / fname,
                            logx=bool(a.get("logx")), errors=a.get("series_ci"))
        except ValueError as e:
            raise ReportError(f"ablations[{i}] ({name}): {e}") from None
        lines += [f"### {name}", "", f"![{name}]({fname})", ""]
    return lines


def figure_section(doc: dict[str, Any], out_dir: Path, runs_dir: Path,
                   data_root: Path | None, device: str | torch.device, samples: int,
                   examples: int, seed: int) -> tuple[list[str], dict[str, Any]]:
    """Fig. 1, 2 and 5 (and output statistics) for each teacher architecture of the suite."""
    from undistill.checkpoint import CheckpointError
    from undistill.runs import load_run_model, read_run_config

    lines = ["## Figures", ""]
    measured: dict[str, Any] = {}
    for arch, kinds in _teacher_runs(doc).items():
        if "normal" not in kinds or "nasty" not in kinds:
            continue
        seq_kinds = sorted((k for k in kinds if re.fullmatch(r"S\d+", k)), key=lambda k: int(k[1:]))
        order = ["normal", "nasty", *seq_kinds]
        try:
            cfgs = {k: read_run_config(runs_dir / kinds[k]) for k in order}
            models = {k: load_run_model(cfgs[k], runs_dir, data_root, device=device) for k in order}
        except CheckpointError as e:
            lines += [f"Figures for {arch} left out: {e}", ""]
            continue
        data = eval_data(cfgs["normal"].data, data_root)
        named = [("nasty teacher", models["nasty"])] + [(k, models[k]) for k in seq_kinds]
        ms = ModelSet(models=named, reference=("normal teacher", models["normal"]),
                      ensemble=f"SCM ensemble (k={len(named)})" if len(named) > 1 else None,
                      fig2_model="nasty teacher", htc=_htc_setting(doc, arch, runs_dir),
                      kl_tau=float(cfgs["nasty"].method.params["temperature"]))
        res = compare(ms, data, out_dir, prefix=f"{_slug(arch)}-", samples=samples,
                      examples=examples, seed=seed, device=device, kl=False)
        _add_kl_from_results(res["stats"], doc, arch, ms)
        measured[arch] = res
        f = res["figures"]
        low, high, alpha = ms.htc
        n, split = res["subset"], res["split"]
        lines += [
            f"### Teacher {arch_title(arch)}", "",
            f"On a fixed subset of {n} {split} images (seed {seed}).", "",
            "#### Fig. 1: softmax outputs", "",
            f"![Fig. 1, {arch}]({f['fig1']})", "",
            "Nasty teacher, sequence models, their ensemble (the SCM teacher) and the normal "
            "teacher on the same inputs (among those the normal teacher classifies correctly); "
            "maroon = true class, orange = the other classes.", "",
            "#### Fig. 2: temperature and composition (HTC)", "",
            f"![Fig. 2, {arch}]({f['fig2']})", "",
            f"The nasty teacher's logits and probabilities for one input at tau = {low:g} and "
            f"tau = {high:g}, and y_net = (1 - alpha) onehot(y) + alpha softmax(z / {high:g}) "
            f"with alpha = {alpha:g} (Eq. 6-7).", "",
            "#### Fig. 5: t-SNE of penultimate features", "",
            f"![Fig. 5, {arch}]({f['fig5']})", "",
            f"scikit-learn t-SNE, PCA initialisation, perplexity "
            f"{res['tsne']['perplexity']:g}, seed {seed}; one embedding per model.", "",
            "#### Output statistics", "",
            "Means over the same subset: peaks are classes with probability > 0.1 at T = 1 "
            "(incorrect peaks leave out the true class). KL(model || normal teacher) over the "
            "whole evaluation split, as measured for Table 3 (from results.json).", "",
            *stats_table(res["stats"]), "",
        ]
    if not measured and len(lines) == 2:
        lines += ["No teacher runs (normal and nasty) in results.json: no figures.", ""]
    return lines, measured


def write_report(results_dir: Path, runs_dir: Path = Path("runs"), data_root: Path | None = None,
                 suite: str | Path | None = None, html: bool = False,
                 device: str | torch.device = "cpu", samples: int = 1000, examples: int = 4,
                 seed: int = 0, figures: bool = True) -> Path:
    """Write ``report.md`` (and ``report.html`` with ``html``) into ``results_dir``."""
    from undistill.suites.tables import render_tables

    results_dir, runs_dir = Path(results_dir), Path(runs_dir)
    f = results_dir / "results.json"
    if not f.exists():
        raise ReportError(f"{f} does not exist: give the output directory of `undistill "
                          "reproduce` (it holds results.json)")
    try:
        doc = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(f"{f} is not valid JSON: {e}") from None
    for key in ("records", "kl", "teachers", "dataset", "scale"):
        if key not in doc:
            raise ReportError(f"{f} lacks the key {key!r}: not a suite's results.json")
    doc.setdefault("notes", [])
    doc.setdefault("wall_time_s", 0.0)
    doc.setdefault("train_time_s", 0.0)
    spec = suite_from_results(doc, suite)
    md = [render_tables(doc, spec).rstrip(), ""]
    measured: dict[str, Any] = {}
    if figures:
        fig_lines, measured = figure_section(doc, results_dir, runs_dir, data_root, device,
                                             samples, examples, seed)
        md += fig_lines
    if "ablations" in doc:
        md += ablation_section(doc["ablations"], results_dir)
    md.append(f"Report written from {f.name} by `undistill report`; runs read from {runs_dir}.")
    text = "\n".join(md) + "\n"
    out = results_dir / "report.md"
    atomic_write_bytes(out, text.encode())
    if measured:
        atomic_write_json(results_dir / "report.json", measured)
    if html:
        atomic_write_bytes(results_dir / "report.html",
                           markdown_to_html(text, results_dir, spec.title or spec.name).encode())
    return out


