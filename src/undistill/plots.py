"""The paper's figures as PNG files: each function takes data and a path and returns the path.

Nothing here trains or loads a model (see :mod:`undistill.analysis` for the data, and
:mod:`undistill.figures` and :mod:`undistill.report` for what puts both together). Figures are
drawn with matplotlib's object-oriented API on the Agg canvas, so importing this module never changes the
process-wide backend and no display is needed.

- :func:`softmax_bars` -- Fig. 1: softmax outputs of the same inputs under several models.
- :func:`temperature_panels` -- Fig. 2: logits and probabilities at a low and a high temperature
  and the HTC composition with the one-hot label (Eq. 6-7).
- :func:`line_plot` -- Fig. 4 (a)-(d) and Table 2(b): accuracy against a varied value.
- :func:`tsne_panels` -- Fig. 5: t-SNE of penultimate features, one panel per model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

#: The paper's colours in Fig. 1: the target class maroon, the other classes orange.
TARGET_COLOR = "#800000"
OTHER_COLOR = "#f28e2b"
DPI = 110


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _bar_colors(num_classes: int, target: int | None) -> list[str]:
    return [TARGET_COLOR if c == target else OTHER_COLOR for c in range(num_classes)]


def _class_ticks(ax: Any, num_classes: int, class_names: Sequence[str] | None) -> None:
    if num_classes <= 20:
        ax.set_xticks(range(num_classes))
        names = list(class_names) if class_names is not None else [str(c) for c in
                                                                     range(num_classes)]
        short = max(len(n) for n in names) > 3
        ax.set_xticklabels(names, fontsize=6, rotation=90 if short else 0)
    else:
        ax.set_xticks([])


def softmax_bars(probs: Mapping[str, Any], labels: Sequence[int] | torch.Tensor, path: Path | str,
                 class_names: Sequence[str] | None = None, images: torch.Tensor | None = None,
                 title: str | None = None) -> Path:
    """Fig. 1: one row per input, one column per model, a bar per class of its softmax output.

    ``probs``: model name -> probabilities [n, C] (the same n inputs, in order), the columns
    left to right (the paper: nasty teacher, sequence models, their ensemble, normal teacher).
    ``labels``: the n true classes (bar in maroon, the others orange). ``images``: optionally the
    n inputs (uint8 [n, C, H, W]), drawn in a first column.
    """
    if not probs:
        raise ValueError("softmax_bars needs at least one model")
    arrays = {k: _np(v) for k, v in probs.items()}
    n, c = next(iter(arrays.values())).shape
    for k, a in arrays.items():
        if a.shape != (n, c):
            raise ValueError(f"probabilities of {k!r} have shape {a.shape}, expected {(n, c)}")
    labels = [int(y) for y in labels]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} inputs")
    extra = 1 if images is not None else 0
    cols = len(arrays) + extra
    fig = _figure(0.6 + 2.1 * len(arrays) + 1.2 * extra, 0.6 + 1.45 * n)
    ratios = [0.55] * extra + [1.0] * len(arrays)
    axes = fig.subplots(n, cols, squeeze=False, width_ratios=ratios)
    for i in range(n):
        if images is not None:
            ax = axes[i, 0]
            img = images[i].detach().cpu()
            img = (img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)).numpy()
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            name = class_names[labels[i]] if class_names is not None else str(labels[i])
            ax.set_ylabel(f"input {i + 1}\n({name})", fontsize=7)
        for j, (name, a) in enumerate(arrays.items()):
            ax = axes[i, j + extra]
            ax.bar(range(c), a[i], color=_bar_colors(c, labels[i]), width=0.8)
            ax.set_ylim(0.0, 1.0)
            ax.tick_params(labelsize=6)
            _class_ticks(ax, c, class_names)
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j > 0:
                ax.set_yticklabels([])
            elif images is None:
                ax.set_ylabel(f"input {i + 1}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def temperature_panels(logits: Any, label: int | None, path: Path | str, low: float = 4.0,
                       high: float = 50.0, alpha: float = 0.9,
                       class_names: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Fig. 2 for one input: (a) z/tau_low, (b) z/tau_high, (c) softmax(z/tau_low),
    (d) softmax(z/tau_high) and (e) y_net = (1 - alpha) onehot(y) + alpha softmax(z/tau_high)
    (Eq. 7, computed by :func:`undistill.losses.htc_targets`). ``logits``: the teacher's [C]."""
    from undistill.losses import htc_targets

    z = torch.as_tensor(_np(logits)).flatten()
    c = z.numel()
    y = None if label is None else torch.tensor([int(label)])
    panels = [
        (f"(a) logits / {low:g}", (z / low).numpy(), False),
        (f"(b) logits / {high:g}", (z / high).numpy(), False),
        (f"(c) softmax at tau = {low:g}", torch.softmax(z / low, 0).numpy(), True),
        (f"(d) softmax at tau = {high:g}", torch.softmax(z / high, 0).numpy(), True),
        (f"(e) y_net, alpha = {alpha:g}",
         htc_targets(z.view(1, -1), y, alpha, high, c)[0].numpy(), True),
    ]
    fig = _figure(13.0, 2.6)
    axes = fig.subplots(1, len(panels))
    target = None if label is None else int(label)
    for ax, (name, values, is_prob) in zip(axes, panels, strict=True):
        ax.bar(range(c), values, color=_bar_colors(c, target), width=0.8)
        if is_prob:
            ax.set_ylim(0.0, 1.0)
        else:
            ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        _class_ticks(ax, c, class_names)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def line_plot(x_values: Sequence[Any], series: Mapping[str, Sequence[float | None]], xlabel: str,
              ylabel: str, title: str, path: Path | str, logx: bool = False,
              errors: Mapping[str, Sequence[float | None]] | None = None) -> Path:
    """Accuracy against a varied value, one line per method or teacher (Fig. 4, Table 2(b)).

    ``x_values``: numbers (plotted at their value) or labels (plotted evenly, in order);
    ``series``: label -> one y per x (None or NaN: missing, the line skips it); ``errors``: label ->
    the half-width of an error bar per x (None: no bar), e.g. a 95 % interval over seeds.
    """
    if not series:
        raise ValueError("line_plot needs at least one series")
    xs = list(x_values)
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
    pos = [float(x) for x in xs] if numeric else list(range(len(xs)))
    fig = _figure(5.2, 3.6)
    ax = fig.subplots()
    for label, ys in series.items():
        ys = list(ys)
        if len(ys) != len(xs):
            raise ValueError(f"series {label!r} has {len(ys)} values for {len(xs)} x values")
        y = [math.nan if v is None else float(v) for v in ys]
        line, = ax.plot(pos, y, marker="o", markersize=4, linewidth=1.5, label=str(label))
        err = list((errors or {}).get(label) or [])
        if len(err) == len(xs) and any(e is not None for e in err):
            ax.errorbar(pos, y, yerr=[0.0 if e is None else float(e) for e in err], fmt="none",
                        ecolor=line.get_color(), alpha=0.6, capsize=3, linewidth=1)
    if logx and numeric:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # only the given values are labelled
    ax.set_xticks(pos)
    ax.set_xticklabels([f"{x:g}" if numeric else str(x) for x in xs], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def tsne_panels(embeddings: Mapping[str, Any], labels: Sequence[int] | torch.Tensor,
                path: Path | str, class_names: Sequence[str] | None = None,
                title: str | None = None) -> Path:
    """Fig. 5: one scatter panel per model (name -> [N, 2] embedding), points coloured by class."""
    if not embeddings:
        raise ValueError("tsne_panels needs at least one embedding")
    y = _np(labels).astype(int).ravel()
    num_classes = int(y.max()) + 1 if y.size else 1
    if class_names is not None:
        num_classes = max(num_classes, len(class_names))
    cmap_name = "tab10" if num_classes <= 10 else "tab20" if num_classes <= 20 else "turbo"
    from matplotlib import colormaps

    cmap = colormaps[cmap_name]
    k = len(embeddings)
    fig = _figure(0.6 + 3.2 * k, 3.6)
    axes = np.atleast_1d(fig.subplots(1, k, squeeze=False))[0]
    for ax, (name, emb) in zip(axes, embeddings.items(), strict=True):
        e = _np(emb)
        if e.shape != (y.size, 2):
            raise ValueError(f"embedding of {name!r} has shape {e.shape}, expected {(y.size, 2)}")
        colors = cmap(y / max(1, num_classes - 1)) if cmap_name == "turbo" else cmap(y)
        ax.scatter(e[:, 0], e[:, 1], c=colors, s=4, linewidths=0)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if num_classes <= 20:
        from matplotlib.lines import Line2D

        names = list(class_names) if class_names is not None else [str(c) for c in
                                                                     range(num_classes)]
        handles = [Line2D([], [], marker="o", linestyle="", markersize=4, color=cmap(c),
                          label=names[c]) for c in range(num_classes)]
        fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
