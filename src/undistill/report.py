"""Putting analysis and figures together: ``undistill analyze`` and ``undistill report``.

:func:`write_analysis` measures a few trained runs against a normal teacher (KL, output
statistics) and draws Fig. 1, 2 and 5 for them. :func:`write_report` turns a finished suite's
``results.json`` into one Markdown report (optionally a self-contained HTML file): every table of
:func:`undistill.suites.report.render_tables`, Fig. 1, 2 and 5 from the suite's own teachers, and a
line plot for each ablation listed under the key ``ablations``.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from undistill import plots
from undistill.analysis import (
    EvalData,
    eval_data,
    example_indices,
    features,
    fixed_subset,
    kl_to_reference,
    load_run,
    output_stats,
    predict_logits,
    tsne,
    tsne_perplexity,
)
from undistill.checkpoint import atomic_write_bytes, atomic_write_json
from undistill.labels import arch_title, x_value_text
from undistill.losses import ensemble_logits

#: Temperatures of Fig. 2 when the suite does not say (the paper's tau_low and tau_high).
FIG2_LOW, FIG2_HIGH, FIG2_ALPHA = 4.0, 50.0, 0.9


class ReportError(ValueError):
    """A results directory or run that cannot be reported on; the message says what is missing."""


@dataclass
class ModelSet:
    """Models to compare with a reference (the normal teacher), on one dataset.

    ``models``: (name, model) in the order of Fig. 1's columns; ``ensemble``: a column name for
    the logit average of all of them (SCM's z_ens), or None.
    """

    models: list[tuple[str, nn.Module]]
    reference: tuple[str, nn.Module]
    ensemble: str | None = None
    fig2_model: str | None = None  # whose logits Fig. 2 shows (default: the first model)
    htc: tuple[float, float, float] = (FIG2_LOW, FIG2_HIGH, FIG2_ALPHA)  # tau_low, tau_high, alpha
    kl_tau: float | None = None  # a second temperature for the KL (the nasty teacher's tau_A)


def _unique(names: list[str]) -> list[str]:
    out, seen = [], {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def compare(ms: ModelSet, data: EvalData, out_dir: Path, prefix: str = "", *, samples: int = 1000,
            examples: int = 4, seed: int = 0, device: str | torch.device = "cpu",
            fig1: bool = True, fig2: bool = True, fig5: bool = True) -> dict[str, Any]:
    """Statistics and figures of a model set on a fixed subset of the evaluation split.

    Returns {"subset": n, "stats": [row per model], "examples": [indices into the subset],
    "figures": {name: file name}}; figures are written to ``out_dir`` as ``{prefix}fig*.png``.
    """
    out_dir = Path(out_dir)
    idx = fixed_subset(data.labels.numel(), samples, seed)
    x, y = data.images[idx], data.labels[idx]

    def logits(m: nn.Module) -> torch.Tensor:
        return predict_logits(m, x, data.mean, data.std, device=device)

    zs: dict[str, torch.Tensor] = {name: logits(m) for name, m in ms.models}
    if ms.ensemble and len(ms.models) > 1:
        zs[ms.ensemble] = ensemble_logits([zs[n] for n, _ in ms.models])
    ref_name, ref_model = ms.reference
    z_ref = logits(ref_model)
    zs[ref_name] = z_ref
    rows = []
    for name, z in zs.items():
        row: dict[str, Any] = {"model": name, **output_stats(z, y),
                               "kl_t1": kl_to_reference(z, z_ref, 1.0)}
        if ms.kl_tau is not None:
            row["kl_tau"] = kl_to_reference(z, z_ref, ms.kl_tau)
            row["tau"] = ms.kl_tau
        rows.append(row)
    ex = example_indices(y, examples, seed, correct=z_ref.argmax(1) == y)
    figs: dict[str, str] = {}
    classes = data.classes
    if fig1:
        probs = {name: torch.softmax(z[ex].double(), 1) for name, z in zs.items()}
        p = plots.softmax_bars(probs, y[ex], out_dir / f"{prefix}fig1-softmax.png", classes,
                               images=x[ex], title="Softmax outputs on the same inputs "
                               "(maroon: true class)")
        figs["fig1"] = p.name
    if fig2:
        name = ms.fig2_model or ms.models[0][0]
        low, high, alpha = ms.htc
        p = plots.temperature_panels(zs[name][ex[0]], int(y[ex[0]]),
                                     out_dir / f"{prefix}fig2-temperature.png", low, high, alpha,
                                     classes, title=f"{name}: one input at tau = {low:g} and "
                                     f"{high:g}, and y_net (Eq. 7)")
        figs["fig2"] = p.name
    tsne_info = None
    if fig5:
        embs = {}
        for name, m in [ms.reference, *ms.models]:
            embs[name] = tsne(features(m, x, data.mean, data.std, device=device), seed=seed)
        p = plots.tsne_panels(embs, y, out_dir / f"{prefix}fig5-tsne.png", classes,
                              title=f"t-SNE of penultimate features ({len(y)} {data.split} "
                              "images)")
        figs["fig5"] = p.name
        tsne_info = {"points": len(y), "perplexity": tsne_perplexity(len(y)), "seed": seed,
                     "init": "pca"}
    return {"split": data.split, "subset": int(idx.numel()), "subset_seed": seed,
            "stats": rows, "examples": ex.tolist(), "figures": figs, "tsne": tsne_info}


# --------------------------------------------------------------------------------------------
# undistill analyze
# --------------------------------------------------------------------------------------------

def write_analysis(run_dirs: list[Path], reference: Path, out_dir: Path,
                   runs_dir: Path | None = None, data_root: Path | None = None,
                   device: str | torch.device = "cpu", samples: int = 1000, examples: int = 4,
                   seed: int = 0, ensemble: bool = True, fig5: bool = True) -> dict[str, Any]:
    """KL to ``reference``, output statistics, Fig. 1/2/5 for trained runs -> ``out_dir``.

    Writes ``analysis.json`` (everything measured) and the PNG figures; returns the JSON doc.
    KL and statistics on the whole evaluation split are in ``kl``; the figures use a fixed
    subset of ``samples`` evaluation images (``stats`` holds the same numbers on it).
    """
    if not run_dirs:
        raise ReportError("give at least one run directory")
    ref = load_run(reference, runs_dir, data_root, device)
    runs = [load_run(r, runs_dir, data_root, device) for r in run_dirs]
    for r in runs:
        if r.cfg.data.name != ref.cfg.data.name:
            raise ReportError(f"{r.path} is a {r.cfg.data.name} run but the reference "
                              f"{reference} is a {ref.cfg.data.name} run")
    data = eval_data(ref.cfg.data, data_root)
    names = _unique([r.label for r in runs])
    nasty = next((r for r in runs if r.cfg.method.name == "nasty"), None)
    tau = float(nasty.cfg.method.params["temperature"]) if nasty else None
    ms = ModelSet(models=[(n, r.model) for n, r in zip(names, runs, strict=True)],
                  reference=(f"reference: {ref.label}", ref.model),
                  ensemble=f"ensemble (k={len(runs)})" if ensemble and len(runs) > 1 else None,
                  kl_tau=tau)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the whole evaluation split for KL (Table 3's measure), the subset for the figures
    full = compare(ms, data, out_dir, samples=data.labels.numel(), seed=seed, device=device,
                   fig1=False, fig2=False, fig5=False)
    part = compare(ms, data, out_dir, samples=samples, examples=examples, seed=seed,
                   device=device, fig5=fig5)
    doc = {
        "reference": {"path": str(reference), "run_id": ref.cfg.run_id, "name": ref.label},
        "runs": [{"path": str(r.path), "run_id": r.cfg.run_id, "name": n,
                  "method": r.cfg.method.name} for n, r in zip(names, runs, strict=True)],
        "dataset": ref.cfg.data.name, "split": data.split, "kl": full["stats"], **{
            k: part[k] for k in ("subset", "subset_seed", "stats", "examples", "figures",
                                 "tsne")},
    }
    atomic_write_json(out_dir / "analysis.json", doc)
    return doc


# --------------------------------------------------------------------------------------------
# undistill report
# --------------------------------------------------------------------------------------------

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
                f"{_fmt(r.get('target_prob'), 3)} | {_fmt(r['kl_t1'], 4)} |")
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
             "Accuracy (%) against the varied value, one line per series; the numbers are in the "
             "ablation tables above.", ""]
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
                            logx=bool(a.get("logx")))
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
                      examples=examples, seed=seed, device=device)
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
            "(incorrect peaks leave out the true class); KL(model || normal teacher).", "",
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
    from undistill.suites.report import render_tables

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


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
        "line-height:1.4}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid "
        "#bbb;padding:3px 8px;text-align:left}th{background:#eee}img{max-width:100%}")


def markdown_to_html(text: str, base_dir: Path, title: str = "report") -> str:
    """Render Markdown (CommonMark + tables) to one HTML page, PNGs inlined as base64."""
    import html as html_mod

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(text)

    def inline(m: re.Match[str]) -> str:
        src = html_mod.unescape(m.group(1))
        p = Path(base_dir) / src
        if "/" in src or not src.endswith(".png") or not p.is_file():
            return m.group(0)
        data = base64.b64encode(p.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+)"', inline, body)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>"
            f"{html_mod.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}"
            "</body></html>\n")
