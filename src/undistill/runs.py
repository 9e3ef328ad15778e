"""Turning a RunConfig into things: its directory, its data views, its models and teachers.

Runs are content-addressed: ``runs_dir / cfg.run_id``. A run is finished when its
``result.json`` exists; ``best.safetensors`` then holds the weights teachers are loaded from.

The data a run reads is part of its id: :func:`bind_data` puts the fingerprint of the data under
``--data-root`` (:func:`undistill.data.dataset_fingerprint`) on a config and its teachers. The
executor, the engine and :func:`load_run_model` bind every config they are given, so callers may
pass configs built without a data root; binding twice is a no-op, and a config already bound to
other data is a DatasetError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from undistill.checkpoint import CheckpointError, load_checkpoint, unprefixed
from undistill.config import DataConfig, RunConfig, parse_config
from undistill.data import (
    DatasetError,
    ImageDataset,
    dataset_fingerprint,
    load_dataset,
    split_validation,
    subset_indices,
)
from undistill.methods.base import Ensemble
from undistill.models import ZooModel, build_model
from undistill.progress import slow_task

if TYPE_CHECKING:
    from undistill.teachers.opener import Opener

RESULT = "result.json"
CONFIG = "config.json"
LAST = "last.safetensors"
BEST = "best.safetensors"
METRICS = "metrics.jsonl"
ANSWERS = "answers.sqlite"  # the black-box answer cache, shared by the runs of a runs directory


def run_dir(cfg: RunConfig, runs_dir: Path) -> Path:
    return Path(runs_dir) / cfg.run_id


def is_done(cfg: RunConfig, runs_dir: Path) -> bool:
    return (run_dir(cfg, runs_dir) / RESULT).exists()


def read_result(path: Path) -> dict[str, Any]:
    return json.loads((path / RESULT).read_text())


def read_run_config(path: Path, allow_factories: bool = True) -> RunConfig:
    """The config of a run directory (as written when the run started). With ``allow_factories``
    false (a run directory from someone else), a config naming a factory ``package.module:function``
    anywhere as an ``arch`` is refused before anything is imported: a factory runs code."""
    f = Path(path) / CONFIG
    if not f.exists():
        raise CheckpointError(f"{path} is not a run directory: {CONFIG} is missing")
    try:
        doc = json.loads(f.read_text())["config"]
        if not allow_factories and (named := factories_named(doc)):
            raise CheckpointError(f"{f} names the factory {named[0]!r} as an architecture, which runs "
                                  f"code; if you trust this run pass --trust-factory (CLI) / "
                                  f"trust_factory=True (Python)")
        return parse_config(doc)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{f} is not a run config ({type(e).__name__}: {e}); delete the "
                              f"folder {path} to train the run afresh") from None


def factories_named(doc: Any) -> list[str]:
    """Every ``arch`` of a config document (nested teachers, defences included) that is a factory."""
    if isinstance(doc, dict):
        own = [doc["arch"]] if isinstance(doc.get("arch"), str) and ":" in doc["arch"] else []
        return own + [a for v in doc.values() for a in factories_named(v)]
    if isinstance(doc, list):
        return [a for v in doc for a in factories_named(v)]
    return []


_FINGERPRINTS: dict[tuple[str, str], str] = {}


def data_fingerprint(name: str, data_root: Path | None) -> str:
    """``dataset_fingerprint``, computed once per (dataset, root) in a process."""
    key = (name, str(data_root))
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = dataset_fingerprint(name, data_root)
    return _FINGERPRINTS[key]


def bind_data(cfg: RunConfig, data_root: Path | None) -> RunConfig:
    """``cfg`` (and its teachers) with ``data.fingerprint`` set to that of the data under ``data_root``.

    A config recorded with another fingerprint (a run trained on other files) is a DatasetError
    that names both, so a teacher is never silently paired with data it was not trained on.
    """
    fp = data_fingerprint(cfg.data.name, data_root)

    def bind(c: RunConfig) -> RunConfig:
        if c.data.fingerprint not in ("", fp):
            where = data_root if data_root is not None else f"the default {c.data.name} location"
            raise DatasetError(
                f"run {c.run_id} was trained on {c.data.name} files with fingerprint "
                f"{c.data.fingerprint}, but {where} holds files with fingerprint {fp or '(default)'}:"
                f" pass the --data-root it was trained with")
        thief = c.thief
        if thief is not None and thief.query_data is not None:  # the thief's own query data
            from undistill.data.arrays import query_fingerprint

            qfp = query_fingerprint(thief.query_data, thief.query_root)
            if thief.query_fingerprint not in ("", qfp):
                raise DatasetError(f"run {c.run_id} queried {thief.query_data} files with "
                                   f"fingerprint {thief.query_fingerprint}, but "
                                   f"{thief.query_root} holds {qfp or '(default)'}")
            thief = thief.model_copy(update={"query_fingerprint": qfp})
        return c.model_copy(update={"data": c.data.model_copy(update={"fingerprint": fp}),
                                    "thief": thief,
                                    "teachers": [bind(t) if isinstance(t, RunConfig) else t
                                                 for t in c.teachers]})

    return bind(cfg)


_DATASETS: dict[tuple[str, str, int | None], ImageDataset] = {}


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    mode = "area" if size < images.shape[-1] else "bilinear"
    out = torch.cat([torch.nn.functional.interpolate(b.float(), size=(size, size), mode=mode)
                     for b in images.split(4096)])
    return out.round().clamp(0, 255).to(torch.uint8)


def get_dataset(name: str, data_root: Path | None, resize: int | None = None) -> ImageDataset:
    """Load a dataset once per process (loading decodes files; views are cheap)."""
    key = (name, str(data_root), resize)
    if key not in _DATASETS:
        if resize is None:
            where = data_root if data_root is not None else "its default location"
            with slow_task(f"decoding {name} from {where}"):
                _DATASETS[key] = load_dataset(name, Path(data_root) if data_root else None)
        else:
            ds = get_dataset(name, data_root)
            _DATASETS[key] = replace(ds, train_images=_resized(ds.train_images, resize),
                                     test_images=_resized(ds.test_images, resize))
    return _DATASETS[key]


@dataclass
class DataViews:
    """The tensors a run trains and evaluates on (CPU, uint8 images), and their dataset."""

    dataset: ImageDataset
    train_images: torch.Tensor
    train_labels: torch.Tensor
    eval_images: torch.Tensor
    eval_labels: torch.Tensor
    eval_split: str  # "test", "val" when a validation split is carved out, "paid-holdout" (thief)
    repeat: int = 1  # passes over the training images per epoch (a thief's small transfer set)
    unpaid: torch.Tensor | None = None  # a thief's pool images it did not pay for


def data_views(cfg: DataConfig, data_root: Path | None, limit: int | None = None) -> DataViews:
    """Apply the validation split, then the limited-data fraction, to the training set.

    ``limit``: keep at most this many training images (a fixed random choice, seeded by
    ``subset_seed``): a query-budgeted attack's transfer set."""
    ds = get_dataset(cfg.name, data_root, cfg.resize)
    idx = torch.arange(ds.train_labels.numel())
    if cfg.val_fraction > 0:
        idx, val_idx = split_validation(ds.train_labels, cfg.val_fraction, cfg.val_seed)
        ev_x, ev_y, split = ds.train_images[val_idx], ds.train_labels[val_idx], "val"
    else:
        ev_x, ev_y, split = ds.test_images, ds.test_labels, "test"
    if cfg.classes is not None:
        bad = sorted(set(cfg.classes) - set(range(ds.num_classes)))
        if bad:
            raise ValueError(f"data.classes: {bad} out of range for {ds.num_classes} classes")
        idx = idx[torch.isin(ds.train_labels[idx], torch.tensor(cfg.classes))]
    if cfg.fraction < 1.0:
        idx = idx[subset_indices(idx.numel(), cfg.fraction, cfg.subset_seed)]
    if limit is not None and limit < idx.numel():
        idx = idx[torch.randperm(idx.numel(), generator=torch.Generator().manual_seed(cfg.subset_seed))
                  [:limit]]
    return DataViews(ds, ds.train_images[idx], ds.train_labels[idx], ev_x, ev_y, split)


def build_student(cfg: RunConfig, ds: ImageDataset) -> ZooModel:
    return build_model(cfg.model.arch, num_classes=ds.num_classes, in_channels=ds.channels,
                       width=cfg.model.width, image_size=ds.image_size)


def resolve_checkpoint(cfg: RunConfig, which: str = "auto") -> str:
    """"best" or "last": "auto" is the checkpoint a run releases as a teacher -- its best epoch
    when that was chosen on a validation split (or a thief's held-out paid answers), else its
    last (never one picked on test)."""
    if which not in ("auto", "best", "last"):
        raise ValueError(f"which must be auto, best or last, got {which!r}")
    if which == "auto":  # a thief's best is chosen on its held-out paid answers
        return "best" if cfg.data.val_fraction > 0 or cfg.thief is not None else "last"
    return which


def load_run_model(cfg: RunConfig, runs_dir: Path, data_root: Path | None = None,
                   which: str = "auto", device: str | torch.device = "cpu") -> ZooModel:
    """The trained model of a finished run.

    ``which``: "best" (best epoch on the run's evaluation split), "last", or "auto": the best
    epoch when that was chosen on a validation split, else the last epoch -- so a teacher is never
    a checkpoint picked on the test set."""
    cfg = bind_data(cfg, data_root)
    path = run_dir(cfg, runs_dir)
    if not (path / RESULT).exists():
        raise CheckpointError(f"run {cfg.run_id} ({cfg.method.name} {cfg.model.arch} on "
                              f"{cfg.data.name}) is not finished in {runs_dir}: train it first "
                              f"(undistill train, or undistill reproduce for a suite)")
    which = resolve_checkpoint(cfg, which)
    tensors, _ = load_checkpoint(path / (BEST if which == "best" else LAST), device="cpu")
    model = build_student(cfg, get_dataset(cfg.data.name, data_root, cfg.data.resize))
    model.load_state_dict(unprefixed(tensors, "method.student."))
    return model.to(device).eval()


def transfer_limit(cfg: RunConfig) -> int | None:
    """Training images a budgeted attack asks about: the budget less the one probe image."""
    return None if cfg.budget is None else cfg.budget - 1


def load_teacher(cfg: RunConfig, runs_dir: Path, data_root: Path | None,
                 device: str | torch.device = "cpu", opener: Opener | None = None) -> Ensemble | None:
    """The run's teachers (runs, then external ones) as one frozen ensemble; None without any.

    External teachers are opened by ``opener`` (an :class:`undistill.teachers.Opener`; the one of
    the call, which reuses a teacher it opened already), bound to the run's dataset, probed once
    and checked against their identity; teachers whose answers cost queries (a URL) answer through
    the answer cache ``runs_dir/answers.sqlite`` within the run's query budget. Without an
    ``opener`` a run with external teachers is an error (the engine passes one).
    """
    runs, external = cfg.run_teachers, cfg.external_teachers
    if not runs and not external:
        return None
    members: list[torch.nn.Module] = [load_run_model(t, runs_dir, data_root, device=device)
                                      for t in runs]
    if external:
        if opener is None:
            raise ValueError("load_teacher: a run with external teachers needs an opener "
                             "(undistill.teachers.Opener)")
        ds = get_dataset(cfg.data.name, data_root, cfg.data.resize)
        for e in external:
            members.append(opener.open_config(e, ds, cache=Path(runs_dir) / ANSWERS,
                                              budget=cfg.budget).to(device))
    if cfg.defence is None:
        return Ensemble(members)
    from undistill.defences import build_defence
    from undistill.defences.teacher import DefendedEnsemble

    num_classes = get_dataset(cfg.data.name, data_root, cfg.data.resize).num_classes
    return DefendedEnsemble(members, build_defence(cfg.defence, num_classes).to(device))
