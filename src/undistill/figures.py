"""Figures of trained models and the numbers they show: Fig. 1 (softmax outputs), Fig. 2
(temperature and HTC's composition), Fig. 5 (t-SNE), for a set of models compared with a
reference (the normal teacher); and ``undistill analyze``, which measures and draws them for a
few runs (:func:`write_analysis`).

Numbers come from :mod:`undistill.analysis`, drawings from :mod:`undistill.plots`.
"""

from __future__ import annotations

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
from undistill.checkpoint import atomic_write_json
from undistill.exceptions import UndistillError
from undistill.losses import ensemble_logits
from undistill.methods import METHODS
from undistill.methods.htc import ALPHA as HTC_ALPHA
from undistill.methods.htc import TEMPERATURE as HTC_TEMPERATURE

#: Temperatures of Fig. 2 when the suite does not say: the KD temperature and HTC's default
#: (the paper's tau_low and tau_high), with HTC's default alpha.
FIG2_LOW, FIG2_HIGH, FIG2_ALPHA = 4.0, HTC_TEMPERATURE, HTC_ALPHA


class ReportError(UndistillError, ValueError):
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
            fig1: bool = True, fig2: bool = True, fig5: bool = True, kl: bool = True
            ) -> dict[str, Any]:
    """Statistics and figures of a model set on a fixed subset of the evaluation split.

    Returns {"subset": n, "stats": [row per model], "examples": [indices into the subset],
    "figures": {name: file name}}; figures are written to ``out_dir`` as ``{prefix}fig*.png``.
    ``kl=False``: the rows leave out the KL to the reference (when it is known already).
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
        row: dict[str, Any] = {"model": name, **output_stats(z, y)}
        if kl:
            row["kl_t1"] = kl_to_reference(z, z_ref, 1.0)
        if kl and ms.kl_tau is not None:
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
    nasty = next((r for r in runs if METHODS.get(r.cfg.method.name).makes_teacher), None)
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
                   device=device, fig5=fig5, kl=False)
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
