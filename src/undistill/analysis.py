"""Measuring models' outputs: KL to the original teacher (Table 3), output statistics (the
"peaks" of Sec. 4.5), penultimate features and their t-SNE (Fig. 5).

The functions on tensors are pure (no files, no training). The loaders at the end read finished
runs (:mod:`undistill.runs`) and return tensors for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from undistill.config import RunConfig
from undistill.data import normalize

Predict = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict_logits(predict: Predict, images_uint8: torch.Tensor, mean: tuple[float, ...],
                   std: tuple[float, ...], batch_size: int = 1000,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits [N, C] (float32, on CPU) of a model or ensemble over uint8 images, in order."""
    outs = []
    for b in images_uint8.split(batch_size):
        outs.append(predict(normalize(b.to(device), mean, std)).float().cpu())
    return torch.cat(outs)


def kl_to_reference(logits: torch.Tensor, reference_logits: torch.Tensor,
                    temperature: float = 1.0) -> float:
    """Mean over samples of KL(softmax(z/T) || softmax(z_ref/T)): how far a model's output
    distribution is from the reference (the original, normal teacher) -- Table 3.

    The model is the first argument of the KL, as the nasty teacher is in Eq. 5's KL.
    """
    return float(kl_per_sample(logits, reference_logits, temperature).mean())


def kl_per_sample(logits: torch.Tensor, reference_logits: torch.Tensor,
                  temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(z/T) || softmax(z_ref/T)) of every sample (float64 [N])."""
    if logits.shape != reference_logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and reference "
                         f"{tuple(reference_logits.shape)} differ in shape")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    lp = torch.log_softmax(logits.double() / temperature, 1)
    lq = torch.log_softmax(reference_logits.double() / temperature, 1)
    return (lp.exp() * (lp - lq)).sum(1)


def probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(z / T) in float64, [N, C]."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.softmax(logits.double() / temperature, 1)


def peak_counts(probs: torch.Tensor, threshold: float = 0.1,
                labels: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample, the number of classes whose probability is strictly above ``threshold``.

    With ``labels``, the true class is left out: the "in-correct peaks" of Sec. 4.5. A one-hot
    row has 1 peak (0 incorrect peaks); a uniform row over C classes has none at any threshold
    >= 1/C (the comparison is strict). Returns int64 [N].
    """
    above = probs > threshold
    if labels is not None:
        above = above.clone()
        above[torch.arange(probs.shape[0]), labels] = False
    return above.sum(1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy in nats (0 log 0 = 0), [N]; log C for a uniform row over C classes."""
    p = probs.double()
    return -(p * torch.log(p.clamp_min(1e-300))).sum(1)


def output_stats(logits: torch.Tensor, labels: torch.Tensor | None = None,
                 threshold: float = 0.1, temperature: float = 1.0) -> dict[str, float]:
    """Statistics of the output distributions softmax(z/T), means over the samples.

    peaks: number of classes whose probability exceeds ``threshold`` ("clear peaks", strict >);
    entropy: entropy in nats; max_prob: probability of the predicted class. With labels also
    target_prob: probability of the true class; incorrect_peaks: peaks on wrong classes;
    accuracy: % of samples whose arg-max is the true class.
    """
    p = probabilities(logits, temperature)
    stats = {
        "peaks": float(peak_counts(p, threshold).double().mean()),
        "entropy": float(entropy(p).mean()),
        "max_prob": float(p.max(1).values.mean()),
    }
    if labels is not None:
        stats["target_prob"] = float(p.gather(1, labels.view(-1, 1)).mean())
        stats["incorrect_peaks"] = float(peak_counts(p, threshold, labels).double().mean())
        stats["accuracy"] = 100.0 * float((p.argmax(1) == labels).double().mean())
    return stats


def class_mean_distributions(logits: torch.Tensor, labels: torch.Tensor, num_classes: int,
                             temperature: float = 1.0) -> torch.Tensor:
    """[C, C] float64: row c is the mean of softmax(z/T) over the samples of true class c.

    A class with no samples gets a row of NaN. The "dark knowledge" a model shows per class: a
    normal teacher's rows are peaked on the diagonal with small similar-class mass, a nasty
    teacher's have a few strong off-diagonal peaks.
    """
    if logits.shape[1] != num_classes:
        raise ValueError(f"logits have {logits.shape[1]} classes, num_classes is {num_classes}")
    p = probabilities(logits, temperature)
    out = torch.full((num_classes, num_classes), float("nan"), dtype=torch.float64)
    for c in range(num_classes):
        sel = labels == c
        if sel.any():
            out[c] = p[sel].mean(0)
    return out


def ensemble(models: Sequence[nn.Module]) -> Predict:
    """The logit-averaged ensemble of several models (Eq. 10-11's z_ens), as one predict function.

    Reuses :class:`undistill.methods.Ensemble` (which also sets the models to eval mode, frozen).
    """
    from undistill.methods import Ensemble

    return Ensemble(list(models)).logits


@torch.no_grad()
def features(model: nn.Module, images: torch.Tensor, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None, batch_size: int = 1000,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """Penultimate features [N, D] (float32, CPU), the classifier's input (``forward_features``).

    ``images``: uint8 [N, C, H, W] (then ``mean``/``std`` normalise them, as for training) or an
    already normalised float tensor. The model is put in eval mode.
    """
    if not hasattr(model, "forward_features"):
        raise ValueError(f"{type(model).__name__} has no forward_features (not a zoo model)")
    model.eval()
    if images.dtype == torch.uint8 and (mean is None or std is None):
        raise ValueError("uint8 images need the dataset's mean and std")
    outs = []
    for b in images.split(batch_size):
        b = b.to(device)
        x = normalize(b, tuple(mean), tuple(std)) if b.dtype == torch.uint8 else b.float()
        outs.append(model.forward_features(x).features.float().flatten(1).cpu())
    return torch.cat(outs)


def tsne_perplexity(n: int, perplexity: float = 30.0) -> float:
    """The perplexity actually used for ``n`` points: at most (n - 1) / 3, at least 1."""
    return float(max(1.0, min(perplexity, (n - 1) / 3.0)))


def tsne(feats: torch.Tensor | np.ndarray, seed: int = 0, perplexity: float = 30.0,
         max_iter: int = 1000) -> np.ndarray:
    """2-D t-SNE embedding [N, 2] (float64) of features [N, D] with scikit-learn's TSNE.

    Fixed ``seed``, PCA initialisation, ``perplexity`` clipped by :func:`tsne_perplexity` so that
    small N works. Deterministic for a given seed, input and machine.
    """
    from sklearn.manifold import TSNE

    x = feats.detach().cpu().double().numpy() if isinstance(feats, torch.Tensor) else np.asarray(
        feats, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {x.shape}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"t-SNE needs at least 2 points, got {n}")
    if x.shape[1] == 1:  # PCA init needs two dimensions
        x = np.concatenate([x, np.zeros_like(x)], 1)
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinity")
    t = TSNE(n_components=2, perplexity=tsne_perplexity(n, perplexity), init="pca",
             random_state=seed, max_iter=max(250, max_iter))
    return t.fit_transform(x)


def fixed_subset(n_total: int, n: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of a fixed random subset of size min(n, n_total) (same for every model)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=g)[:min(n, n_total)].sort().values


def example_indices(labels: torch.Tensor, n: int, seed: int = 0,
                    correct: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` fixed example indices, distinct classes first (for Fig. 1's rows).

    Walks a seeded permutation and takes the first sample of each class not seen yet (only
    samples with ``correct`` True, when given, e.g. those the normal teacher gets right); then
    fills up with the next samples if there are fewer classes than ``n``.
    """
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(labels.numel(), generator=g).tolist()
    ok = [i for i in order if correct is None or bool(correct[i])] or order
    picked: list[int] = []
    seen: set[int] = set()
    for i in ok:
        if int(labels[i]) not in seen:
            picked.append(i)
            seen.add(int(labels[i]))
        if len(picked) == n:
            break
    for i in ok:
        if len(picked) >= n:
            break
        if i not in picked:
            picked.append(i)
    return torch.tensor(picked[:n], dtype=torch.long)


# --------------------------------------------------------------------------------------------
# loaders from finished runs
# --------------------------------------------------------------------------------------------

@dataclass
class LoadedRun:
    """A finished run's config and model (eval mode)."""

    path: Path
    cfg: Any  # RunConfig
    model: nn.Module

    @property
    def label(self) -> str:
        return self.cfg.name or self.cfg.run_id


def load_run(path: Path, runs_dir: Path | None = None, data_root: Path | None = None,
             device: torch.device | str = "cpu") -> LoadedRun:
    """Read a run directory's config and load its best checkpoint (runs_dir: default its parent)."""
    from undistill.runs import load_run_model, read_run_config

    path = Path(path)
    cfg = read_run_config(path)
    model = load_run_model(cfg, Path(runs_dir) if runs_dir else path.parent, data_root,
                           device=device)
    return LoadedRun(path, cfg, model)


@dataclass
class EvalData:
    """The evaluation split of a data config: uint8 images, labels, and dataset facts."""

    images: torch.Tensor
    labels: torch.Tensor
    split: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]


def eval_data(data_cfg: Any, data_root: Path | None = None) -> EvalData:
    """The evaluation split (test, or val when the config carves one) of a run's data config."""
    from undistill.runs import data_views

    v = data_views(data_cfg, data_root)
    ds = v.dataset
    return EvalData(v.eval_images, v.eval_labels, v.eval_split, tuple(ds.mean), tuple(ds.std),
                    list(ds.classes))


def kl_table(models: dict[str, Predict], reference: Predict, data: EvalData,
             temperatures: Sequence[float] = (1.0,), threshold: float = 0.1,
             device: torch.device | str = "cpu") -> list[dict[str, Any]]:
    """For each named model (or ensemble), on the evaluation split: accuracy, KL to the reference
    (normal teacher) at each temperature (``kl_T<t>``), and :func:`output_stats` at T=1."""
    def logits(fn: Predict) -> torch.Tensor:
        return predict_logits(fn, data.images, data.mean, data.std, device=device)

    ref = logits(reference)
    rows = []
    for name, fn in models.items():
        z = logits(fn)
        row: dict[str, Any] = {"model": name, "split": data.split,
                               **output_stats(z, data.labels, threshold)}
        for t in temperatures:
            row[f"kl_T{t:g}"] = kl_to_reference(z, ref, t)
        rows.append(row)
    return rows



TEST_SCORE = "test.json"


def test_accuracy(cfg: RunConfig, runs_dir: Path, data_root: Path | None = None,
                  device: torch.device | str = "cpu", which: str = "last") -> float:
    """A finished run's accuracy (%) on the test split, of one checkpoint.

    ``which="last"`` (a student's headline): the final model. ``which="auto"`` (a teacher's): the
    checkpoint it released to its students (:func:`undistill.runs.resolve_checkpoint`: best on
    validation when it had a validation split), so a table's teacher accuracy is that of the model
    the students learned from. A run evaluated on the test split during training reports its
    last epoch (never its best epoch there). A run that carved a validation split never read the
    test split while training (nor did any search over it); it is scored here once per
    checkpoint, after every choice was made, and the scores are kept beside the run
    (``test.json``)."""
    from undistill.checkpoint import atomic_write_json
    from undistill.runs import bind_data, data_views, load_run_model, read_result, resolve_checkpoint, run_dir

    cfg = bind_data(cfg, data_root)  # the folder of the data the run was trained on
    which = resolve_checkpoint(cfg, which)
    out = run_dir(cfg, runs_dir)
    result = read_result(out)["result"]
    if result["eval_split"] == "test":
        return float(result["last_acc" if which == "last" else "best_acc"])
    saved = json.loads((out / TEST_SCORE).read_text()) if (out / TEST_SCORE).exists() else {}
    scores = saved.get("scores") or ({saved["checkpoint"]: saved["test_acc"]} if saved else {})
    if which in scores:
        return float(scores[which])
    ds = data_views(cfg.data, data_root).dataset
    model = load_run_model(cfg, runs_dir, data_root, which=which, device=device)
    with torch.no_grad():
        z = predict_logits(model, ds.test_images, ds.mean, ds.std, device=device)
    acc = 100.0 * float((z.argmax(1) == ds.test_labels).double().mean())
    scores[which] = acc
    doc: dict[str, Any] = {"run_id": cfg.run_id, "scores": scores, "split": "test",
                           "n": int(ds.test_labels.numel())}
    if "last" in scores:  # the final model's, under the keys older readers know
        doc.update(test_acc=scores["last"], checkpoint="last")
    atomic_write_json(out / TEST_SCORE, doc)
    return acc
