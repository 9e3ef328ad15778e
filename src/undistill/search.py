"""Hyperparameter search for HTC and SCM over the paper's grid, chosen on a validation split.

The paper (Sec. 4.1) searches m in {1, 5, 10, 50}, tau in {4, 20, 50, 100} (+200 on
Tiny-ImageNet) and alpha in {0.1, ..., 0.9}. It does not say on which split it chose; here every
trial is a student run whose data config carves a validation split out of the *training* set
(``data.val_fraction > 0``), so the run is evaluated -- and its ``best_acc`` measured -- on that
split and never on the test set (:func:`undistill.runs.data_views` does not touch the test images
then). Each trial checks that its run's evaluation split is ``"val"``. The chosen values and
every trial are written to ``search.json``; optionally a final run with the chosen values is
trained on the full training set and evaluated on the test set, once.

Trials are content-addressed runs like any other: rerunning a search reads finished trials back
instead of training them again. The search itself is driven by optuna: ``GridSampler`` walks the
grid (all of it, or a seeded random part of it with a trial budget), ``TPESampler`` spends a trial
budget on the same categorical space.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from undistill.checkpoint import atomic_write_json
from undistill.config import RunConfig, Runtime
from undistill.exceptions import UndistillError
from undistill.methods import METHODS, method_names

if TYPE_CHECKING:
    from undistill.executor import Executor

SAMPLERS = ("grid", "tpe")

#: The paper's search space (Sec. 4.1) of HTC and SCM: method parameter -> candidate values.
#: Each method declares its own (``Method.search_space``); this is HTC's.
PAPER_GRID: dict[str, list[float]] = METHODS.get("htc").search_space
#: A small grid for CPU-scale checks: the corners the paper's ablations use (2 x 2 x 2 = 8 runs).
SMALL_GRID: dict[str, list[float]] = {
    "multiplier": [10.0, 50.0],
    "temperature": [4.0, 50.0],
    "alpha": [0.5, 0.9],
}
GRIDS = ("paper", "small")


def search_methods() -> list[str]:
    """The methods with a search space (``Method.search_space``): HTC, SCM and their Skeptical
    forms."""
    return method_names(lambda cls: bool(cls.search_space))


class SearchError(UndistillError, ValueError):
    """A search that cannot run as asked (bad method, grid or budget), or that read the test set."""


def grid_for(name: str, dataset: str, method: str = "htc") -> dict[str, list[float]]:
    """A named grid for a method on a dataset: "paper" is the method's search space (the paper
    adds tau = 200 on Tiny-ImageNet), "small" a few corners of it."""
    if name not in GRIDS:
        raise SearchError(f"unknown grid {name!r}; known: {', '.join(GRIDS)}")
    space = METHODS.get(method).search_space
    grid = {k: list(v) for k, v in (space if name == "paper" else SMALL_GRID).items()}
    if name == "paper" and dataset == "tinyimagenet":
        grid["temperature"].append(200.0)
    return grid


def grid_size(grid: dict[str, list[Any]]) -> int:
    n = 1
    for values in grid.values():
        n *= len(values)
    return n


def trial_config(teachers: list[RunConfig], arch: str, method: str, params: dict[str, Any],
                 width: float = 1.0, val_fraction: float = 0.1, val_seed: int = 0,
                 optim: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                 seed: int = 0, name: str = "") -> RunConfig:
    """The student run of one trial: ``params`` on a validation split carved from training data."""
    from undistill.recipes import student

    if not 0.0 < val_fraction < 1.0:
        raise SearchError(f"val_fraction must be in (0, 1) so that trials never evaluate on the "
                          f"test set, got {val_fraction}")
    d = {**(data or {}), "val_fraction": val_fraction, "val_seed": val_seed}
    return student(teachers, arch, method, params, width=width, optim=optim, data=d, seed=seed,
                   name=name or f"search {method} {arch}")


def _ask_tell_grid(space: dict[str, list[Any]], seed: int) -> Any:
    """optuna's GridSampler for ask/tell: its ``after_trial`` stops ``study.optimize`` once the
    grid is covered, which raises outside ``optimize``; here the trial count is capped anyway."""
    import optuna

    class AskTellGrid(optuna.samplers.GridSampler):
        def after_trial(self, *args: Any, **kwargs: Any) -> None:
            pass

    return AskTellGrid(space, seed=seed)


def run_search(teachers: list[RunConfig], arch: str, method: str, runtime: Runtime, *,
               grid: str | dict[str, list[Any]] = "paper", sampler: str = "grid",
               trials: int | None = None, val_fraction: float = 0.1, val_seed: int = 0,
               width: float = 1.0, seed: int = 0, study_seed: int = 0,
               fixed: dict[str, Any] | None = None, optim: dict[str, Any] | None = None,
               data: dict[str, Any] | None = None, final: bool = True,
               out_dir: Path | None = None,
               train: Callable[[RunConfig, Runtime], Any] | None = None,
               executor: Executor | None = None) -> dict[str, Any]:
    """Search ``method``'s (alpha, tau, m) for a student ``arch`` learning from ``teachers``.

    ``grid``: "paper", "small" or a dict param -> values. ``sampler``: "grid" (optuna's
    GridSampler; the whole grid unless ``trials`` caps it, in a seeded order) or "tpe"
    (TPESampler over the same values; ``trials`` required). ``fixed``: method parameters held
    constant (e.g. a Skeptical student's ``kd_delay``). Returns the ``search.json`` document
    (also written to ``out_dir`` after every trial when given).

    Trials go through optuna's ask/tell: ``executor`` (e.g. a Ray executor) trains a batch of as
    many trials as it runs at once (its ``slots``; 1 for the local executor), then the batch is
    told; without one, ``train`` (default: train locally) trains one trial at a time. The sampler
    sees the same history whatever the timing, so a search is reproducible for a given batch size.
    """
    import optuna

    from undistill.executor import ensure_trained

    if method not in search_methods():
        raise SearchError(f"method must be one of {', '.join(search_methods())}, got {method!r}")
    if sampler not in SAMPLERS:
        raise SearchError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if not teachers:
        raise SearchError("give at least one teacher run")
    dataset = teachers[0].data.name
    space = grid_for(grid, dataset, method) if isinstance(grid, str) else {k: list(v) for k, v in
                                                                   grid.items()}
    if not space or any(not v for v in space.values()):
        raise SearchError(f"empty search space: {space}")
    overlap = set(space) & set(fixed or {})
    if overlap:
        raise SearchError(f"parameters both searched and fixed: {sorted(overlap)}")
    size = grid_size(space)
    if trials is not None and trials < 1:
        raise SearchError(f"trials must be >= 1, got {trials}")
    if sampler == "grid":
        n_trials = size if trials is None else min(trials, size)
        smp: optuna.samplers.BaseSampler = _ask_tell_grid(space, study_seed)
    else:
        if trials is None:
            raise SearchError("the tpe sampler needs a trial budget (trials)")
        n_trials = trials
        smp = optuna.samplers.TPESampler(seed=study_seed)
    # validate the method/params/teachers once, before any training
    trial_config(teachers, arch, method, {**(fixed or {}), **{k: v[0] for k, v in space.items()}},
                 width, val_fraction, val_seed, optim, data, seed)
    train = train or ensure_trained
    t0 = time.perf_counter()

    doc: dict[str, Any] = {
        "method": method, "arch": arch, "width": width, "dataset": dataset, "seed": seed,
        "teachers": [t.run_id for t in teachers], "sampler": sampler, "study_seed": study_seed,
        "grid": space, "grid_size": size, "n_trials": n_trials, "fixed": dict(fixed or {}),
        "val_fraction": val_fraction, "val_seed": val_seed, "selection_split": "val",
        "objective": "best validation accuracy over epochs (%) of the trial's run",
        "trials": [], "best": None, "final": None,
    }

    def write() -> None:
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            atomic_write_json(Path(out_dir) / "search.json", doc)

    def train_all(cfgs: list[RunConfig]) -> dict[str, Any]:
        if executor is not None:
            return dict(executor.run(cfgs, runtime))
        return {cfg.run_id: train(cfg, runtime) for cfg in cfgs}

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=smp,
                                study_name=f"{method}-{arch}-{dataset}")
    batch = max(1, int(getattr(executor, "slots", 1))) if executor is not None else 1
    asked_total = 0
    while asked_total < n_trials:
        asked = []
        for _ in range(min(batch, n_trials - asked_total)):
            trial = study.ask()
            p = {k: trial.suggest_categorical(k, v) for k, v in space.items()}
            cfg = trial_config(teachers, arch, method, {**(fixed or {}), **p}, width, val_fraction,
                               val_seed, optim, data, seed,
                               name=f"search {method} {arch} #{trial.number}")
            asked.append((trial, p, cfg))
        asked_total += len(asked)
        results = train_all([cfg for _, _, cfg in asked])
        for trial, p, cfg in asked:
            res = results[cfg.run_id]
            if res.eval_split != "val":
                raise SearchError(f"trial {trial.number} (run {res.run_id}) was evaluated on "
                                  f"{res.eval_split!r}, not on the validation split")
            doc["trials"].append({"number": trial.number, "params": p, "val_acc": res.best_acc,
                                  "val_last_acc": res.last_acc, "eval_split": res.eval_split,
                                  "run_id": res.run_id, "cached": bool(res.cached)})
            study.tell(trial, float(res.best_acc))
        write()
    # ties: the first trial reaching the best accuracy (optuna's best_trial does the same)
    best = study.best_trial
    rec = next(t for t in doc["trials"] if t["number"] == best.number)
    doc["best"] = {"params": dict(best.params), "val_acc": best.value, "run_id": rec["run_id"],
                   "trial": best.number}
    if final:
        from undistill.recipes import student

        final_cfg = student(teachers, arch, method, {**(fixed or {}), **best.params}, width=width,
                            optim=optim, data={**(data or {}), "val_fraction": 0.0}, seed=seed,
                            name=f"{method} {arch} (searched)")
        res = train_all([final_cfg])[final_cfg.run_id]
        doc["final"] = {"run_id": res.run_id, "params": dict(best.params),
                        "eval_split": res.eval_split, "best_acc": res.best_acc,
                        "last_acc": res.last_acc,
                        "note": "full training set; evaluated on the test set once, after the "
                                "choice was made on the validation split"}
    doc["wall_time_s"] = time.perf_counter() - t0
    write()
    return doc
