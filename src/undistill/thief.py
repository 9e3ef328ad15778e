"""A thief's transfer set: which images it pays for, the answers it gets, what it holds back.

A run with a ``budget`` and a ``thief`` (:class:`~undistill.config.ThiefConfig`) is a thief's
student. Before it trains, :func:`prepare`:

1. picks ``budget - 1`` images of the thief's pool (the training split of the run's data, or
   the thief's own ``query_data``: :mod:`undistill.thief_pool`; one more query goes to the
   probe) with the query strategy (:mod:`undistill.queries`), over
   ``thief.rounds`` rounds whose cumulative sizes double (:func:`round_sizes`). The first round is
   the strategy's own pick when it needs no student (``random``, ``knockoff``) and random
   otherwise; each later round of an active-learning strategy (``uncertainty``, ``k-center``) is
   picked with a *selector* student (:func:`selector_config`): a KD student without labels,
   seeded by ``data.subset_seed``, trained by this module on the previous rounds. The selector
   depends on the strategy, the budget and the defence only, so every attack and seed of an audit
   pays for the same images: ``budget`` queries whatever the number of attacks and seeds.
2. asks the teacher (the run's ensemble, through its defence, answer cache and budget) about
   each paid image once, on the clean image, and keeps the answers (:class:`PaidAnswers`);
3. holds back ``thief.holdout`` of the paid images: the engine evaluates the student on them
   (agreement with the teacher's answers, split ``paid-holdout``), so the checkpoint is chosen
   and training stopped early on the thief's own data, never on the test set;
4. hands the images it holds but did not pay for to the method (``Method.attach_unpaid``; a
   semi-supervised scheme learns from them).

The student then trains for ``thief.steps`` optimisation steps (:func:`thief_optim`: epochs of
``thief.eval_every`` steps), on augmented views of the paid images when ``thief.augment``, each
view learning the stored answer to its clean image. The paid indices, round by round, and the
held-out ones are written to ``transfer.json`` in the run's folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from undistill.checkpoint import atomic_write_json
from undistill.losses import ensemble_logits

if TYPE_CHECKING:
    from undistill.config import RunConfig, Runtime
    from undistill.data.loader import DeviceLoader
    from undistill.runs import DataViews

TRANSFER = "transfer.json"
HOLDOUT_SPLIT = "paid-holdout"
ASK_BATCH = 512
SELECTOR_METHOD = "kd"


def round_sizes(budget: int, rounds: int) -> list[int]:
    """Cumulative paid images (probe excluded) after each round: ``n/2^(rounds-1)``, ..., ``n/2``,
    ``n`` for ``n = budget - 1``, at least 1 each, strictly increasing (so fewer rounds when the
    budget is too small to halve)."""
    n = budget - 1
    return sorted({max(1, n // 2 ** (rounds - 1 - r)) for r in range(rounds)})


def holdout_size(paid: int, share: float) -> int:
    """Paid images held out: ``round(share * paid)``, none below 10 paid images, at most half."""
    if paid < 10 or share <= 0:
        return 0
    return min(paid // 2, max(1, round(share * paid)))


def thief_optim(optim: dict[str, Any], thief: dict[str, Any], budget: int) -> dict[str, Any]:
    """The optimiser dict of a thief's student: ``thief.steps`` steps in epochs of
    ``thief.eval_every`` steps (:func:`loader_repeat`), milestones scaled to the new length."""
    from undistill.config import ThiefConfig
    from undistill.presets import with_epochs

    t = ThiefConfig(**thief)
    n = budget - 1 - holdout_size(budget - 1, t.holdout)
    batches = math.ceil(n * loader_repeat(n, optim["batch_size"], t.eval_every) / optim["batch_size"])
    return with_epochs(optim, max(1, math.ceil(t.steps / batches)))


def loader_repeat(n: int, batch_size: int, eval_every: int) -> int:
    """Passes over ``n`` training images per epoch so that an epoch is about ``eval_every`` steps."""
    return max(1, round(eval_every * batch_size / max(n, 1)))


def selector_config(cfg: RunConfig) -> RunConfig:
    """The selector student behind round ``rounds`` of ``cfg``: KD without labels (its protocol
    and label-free parameters), seed ``data.subset_seed``, on the previous rounds' images."""
    from undistill.config import parse_config
    from undistill.methods import METHODS
    from undistill.presets import optim_preset

    assert cfg.thief is not None and cfg.budget is not None
    sizes = round_sizes(cfg.budget, cfg.thief.rounds)
    kd = METHODS.get(SELECTOR_METHOD)
    params = {**kd.defaults_for(cfg.data.name, cfg.model.arch), **kd.label_free_params}
    thief = {**cfg.thief.model_dump(), "rounds": len(sizes) - 1}
    if thief["rounds"] == 1:  # a first round is random: the random thief's selector
        thief["strategy"] = "random"
    d = cfg.model_dump(mode="json")
    d.update(method={"name": SELECTOR_METHOD, "params": params}, seed=cfg.data.subset_seed,
             budget=sizes[-2] + 1, thief=thief, stop_at_acc=None,
             name=f"selector {cfg.thief.strategy} {cfg.model.arch} @{sizes[-2] + 1}")
    d["teachers"] = [t.model_dump(mode="json") for t in cfg.teachers]
    d["optim"] = thief_optim(optim_preset(cfg.data.name, cfg.model.arch), thief, sizes[-2] + 1)
    return parse_config(d)


class PaidAnswers:
    """The teacher a thief's method sees: the stored answers to the paid images, looked up by the
    positions of the batch the train loader yielded last (``loader.last_index``), whatever view
    of those images the loader augmented. Ensemble-like (``logits``, ``all_logits``, ``to``):
    ``answers`` is ``[N, C]`` for one model, ``[k, N, C]`` for the k members of an ensemble (the
    SCM sequence), each asked once per paid image."""

    def __init__(self, answers: torch.Tensor) -> None:
        self.answers = answers if answers.dim() == 3 else answers.unsqueeze(0)
        self.loader: DeviceLoader | None = None
        self.models: list[torch.nn.Module] = []

    def follow(self, loader: DeviceLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return self.answers.shape[0]

    def to(self, device: torch.device | str, memory_format: Any = None) -> PaidAnswers:
        self.answers = self.answers.to(device)
        return self

    def all_logits(self, images: torch.Tensor) -> torch.Tensor:
        index = None if self.loader is None else self.loader.last_index
        if index is None or index.numel() != images.shape[0]:
            raise RuntimeError("PaidAnswers answers the train loader's batches only (the thief "
                               "asks the teacher once, before training)")
        return self.answers[:, index]

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        out = self.all_logits(images)
        return out[0] if out.shape[0] == 1 else ensemble_logits(out)


def ask(teacher: Any, images: torch.Tensor, mean: Any, std: Any, device: torch.device,
        members: bool = False) -> torch.Tensor:
    """The teacher's logits on uint8 ``images`` (clean, normalised), in batches, on the CPU:
    ``[N, C]``, or with ``members`` every member's, ``[k, N, C]`` (``all_logits``)."""
    from undistill.data.augment import normalize

    m = torch.tensor(mean, dtype=torch.float32, device=device)
    s = torch.tensor(std, dtype=torch.float32, device=device)
    fn = teacher.all_logits if members else teacher.logits
    out = [fn(normalize(images[i:i + ASK_BATCH].to(device), m, s)).float().cpu()
           for i in range(0, images.shape[0], ASK_BATCH)]
    return torch.cat(out, dim=1 if members else 0) if out else torch.empty(0)


def _student_outputs(cfg: RunConfig, runtime: Runtime, pool: torch.Tensor, mean: Any, std: Any,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The trained student of ``cfg``: softmax and penultimate features over the whole pool."""
    from undistill.data.augment import normalize
    from undistill.runs import load_run_model

    model = load_run_model(cfg, runtime.runs_dir, runtime.data_root, which="best", device=device)
    m = torch.tensor(mean, dtype=torch.float32, device=device)
    s = torch.tensor(std, dtype=torch.float32, device=device)
    probs, feats = [], []
    with torch.no_grad():
        for i in range(0, pool.shape[0], ASK_BATCH):
            out = model.forward_features(normalize(pool[i:i + ASK_BATCH].to(device), m, s))
            probs.append(out.logits.float().softmax(1).cpu())
            feats.append(out.features.float().flatten(1).cpu())
    return torch.cat(probs), torch.cat(feats)


def paid_rounds(cfg: RunConfig, runtime: Runtime, teacher: Any, pool: torch.Tensor,
                mean: Any, std: Any, device: torch.device, train: Callable[[RunConfig], Any]
                ) -> list[torch.Tensor]:
    """The pool indices ``cfg``'s thief pays for, round by round (see the module docstring);
    ``train`` trains a selector run (the engine's ``train_run``)."""
    from undistill.queries import STRATEGIES, PoolState, select

    assert cfg.thief is not None and cfg.budget is not None
    strategy, seed = cfg.thief.strategy, cfg.data.subset_seed
    active = STRATEGIES.get(strategy).needs_student
    sizes = round_sizes(cfg.budget, cfg.thief.rounds)
    if active and len(sizes) > 1:
        selector = selector_config(cfg)
        train(selector)
        rounds = [torch.tensor(r, dtype=torch.long) for r in
                  read_transfer(selector, runtime.runs_dir, runtime.data_root)["rounds"]]
        answers = [ask(teacher, pool[r], mean, std, device).softmax(1) for r in rounds]
        probs, feats = _student_outputs(selector, runtime, pool, mean, std, device)
        state = PoolState(pool, rounds, answers, probs, feats)
        return [*rounds, select(strategy, sizes[-1] - sizes[-2], state, seed)]
    rounds, answers = [], []
    for r, size in enumerate(sizes):
        state = PoolState(pool, list(rounds), list(answers))
        pick = select("random" if active else strategy, size - (sizes[r - 1] if r else 0), state,
                      seed)
        rounds.append(pick)
        if r + 1 < len(sizes):
            answers.append(ask(teacher, pool[pick], mean, std, device).softmax(1))
    return rounds


def read_transfer(cfg: RunConfig, runs_dir: Path, data_root: Path | None = None
                  ) -> dict[str, Any]:
    """The ``transfer.json`` of a trained thief's run: ``strategy``, ``rounds`` (pool indices
    paid in each round) and ``holdout`` (those held out)."""
    import json

    from undistill.runs import bind_data, run_dir

    return json.loads((run_dir(bind_data(cfg, data_root), runs_dir) / TRANSFER).read_text())


def prepare(cfg: RunConfig, runtime: Runtime, teacher: Any, device: torch.device,
            train: Callable[[RunConfig], Any]) -> tuple[DataViews, PaidAnswers]:
    """Pick, pay for and split the transfer set of a thief's run (module docstring): the views
    the run trains on (the paid images, the held-out ones, the unpaid pool, the epoch's passes)
    and the teacher its method asks (the stored answers)."""
    from undistill.runs import DataViews, data_views, run_dir

    assert cfg.thief is not None and cfg.budget is not None
    base = data_views(cfg.data, runtime.data_root)
    ds, pool = base.dataset, base.train_images
    if cfg.thief.query_data is not None:  # the thief's own images, in the victim's format
        from undistill.thief_pool import query_pool

        pool = query_pool(cfg.thief, ds.channels, ds.image_size)
    if cfg.budget - 1 > pool.shape[0]:
        raise ValueError(f"budget: {cfg.budget} is above the thief's pool of {pool.shape[0]} "
                         f"images (with the probe, at most {pool.shape[0] + 1} queries)")
    rounds = paid_rounds(cfg, runtime, teacher, pool, ds.mean, ds.std, device, train)
    paid = torch.cat(rounds)
    # an undefended ensemble (the SCM sequence): each member's answers, stored; a defended one
    # releases one answer, its defence applied to the ensemble's
    members = len(teacher) > 1 and getattr(teacher, "defence", None) is None
    stored = ask(teacher, pool[paid], ds.mean, ds.std, device, members=members)
    answers = ensemble_logits(stored) if members else stored
    order = torch.randperm(paid.numel(), generator=torch.Generator().manual_seed(
        cfg.data.subset_seed))
    h = holdout_size(paid.numel(), cfg.thief.holdout)
    held, train = order[:h].sort().values, order[h:].sort().values
    if h == 0:  # too few to hold any back: the student is chosen on its training answers
        held = train
    unpaid = torch.ones(pool.shape[0], dtype=torch.bool)
    unpaid[paid] = False
    repeat = loader_repeat(int(train.numel()), cfg.optim.batch_size, cfg.thief.eval_every)
    views = DataViews(ds, pool[paid[train]], answers[train].argmax(1), pool[paid[held]],
                      answers[held].argmax(1), HOLDOUT_SPLIT, repeat, pool[unpaid])
    out = run_dir(cfg, runtime.runs_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / TRANSFER, {"strategy": cfg.thief.strategy,
                                       "rounds": [r.tolist() for r in rounds],
                                       "holdout": paid[held].tolist() if h else []})
    return views, PaidAnswers(stored[..., train, :].to(device))


def out_of_patience(cfg: RunConfig, history: list[dict[str, Any]]) -> bool:
    """A thief's early stop: ``thief.patience`` evaluations since the best one (:func:`thief_key`;
    the first best, as the best checkpoint keeps it)."""
    patience = None if cfg.thief is None else cfg.thief.patience
    if patience is None or not history:
        return False
    keys = [thief_key(r) for r in history]
    return len(keys) - 1 - keys.index(max(keys)) >= patience


def thief_key(record: dict[str, Any]) -> tuple[float, float]:
    """How a thief's epochs compare: agreement on the held-out paid answers, then the lower
    cross-entropy against them (a small held-out set ties often)."""
    return record["eval/acc"], -record.get("eval/loss", 0.0)
