"""What an audit checks and plans before any teacher is opened: its arguments (each bad one a
ConfigError naming it), the thief's pool and budget, the curve's budgets, and each attack's
``thief:`` settings. Used by :mod:`undistill.audit` and the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from undistill.config import ConfigError


def label_free(method: str) -> dict[str, Any] | None:
    """What ``method`` needs to run without labels (its ``label_free_params``), or None."""
    from undistill.methods import METHODS

    return dict(METHODS.get(method).label_free_params) or None


def curve_budgets(budget: int, points: int = 4) -> list[int]:
    """``budget``, about ``budget/2``, ``budget/4`` ... (``points`` of them, each at least 2),
    ascending: ``(budget - 1) // 2^i + 1``, the probe plus half the paid images of the next, so
    each point's images are the next one's earlier rounds (:func:`undistill.thief.round_sizes`)."""
    return sorted({max(2, (budget - 1) // (2 ** i) + 1) for i in range(points)})


def check_strategies(strategies: list[str]) -> None:
    """A ConfigError unless ``strategies`` are registered query strategies, each once."""
    from undistill.queries import STRATEGIES

    if not strategies:
        raise ConfigError("strategies: give at least one query strategy")
    for i, q in enumerate(strategies):
        if q not in STRATEGIES:
            raise ConfigError(f"strategies: {q!r} is not a query strategy; known: "
                              f"{', '.join(STRATEGIES.names())}")
        if q in strategies[:i]:
            raise ConfigError(f"strategies: {q!r} is given twice")


def thief_settings(strategy: str, budget: int, point: int, points: int,
                   thief: dict[str, Any] | None) -> dict[str, Any]:
    """The ``thief:`` of an attack with ``strategy`` at curve point ``point`` (0: ``budget``, 1:
    the next smaller one, ...): ``thief``'s settings, and for a strategy that needs a student as
    many rounds as the curve has points left, so that every point pays for the next one's first
    rounds (one set of paid images for the whole curve)."""
    from undistill.queries import STRATEGIES

    d = {**(thief or {}), "strategy": strategy}
    if STRATEGIES.get(strategy).needs_student:
        d["rounds"] = max(1, int(d.get("rounds", points)) - point)
        if d["rounds"] == 1:  # its first round is random: the random thief's run, trained once
            d["strategy"] = "random"
    return d


def query_cap(budget: int, strategies: list[str], defences: int) -> int:
    """Images the teacher may be sent by an audit: ``budget`` per thief. Random thieves pay for
    the same images whatever the answers; any other strategy picks by the answers, so each
    defence's thief pays for its own."""
    return sum(budget * (1 if q == "random" else 1 + defences) for q in strategies)


def attack_methods() -> list[str]:
    """The registered methods an audit can run: they learn from one teacher, without labels."""
    from undistill.methods import method_names

    return method_names(lambda cls: cls.needs_teacher() and not cls.makes_teacher
                        and not cls.needs_labels)


def check_methods(methods: list[str]) -> None:
    """A ConfigError unless ``methods`` are attacks (:func:`attack_methods`), each once."""
    known = attack_methods()
    if not methods:
        raise ConfigError("methods: give at least one attack")
    for i, m in enumerate(methods):
        if m not in known:
            raise ConfigError(f"methods: {m!r} is not an attack (one that learns from the "
                              f"teacher's answers, without labels); known: {', '.join(known)}")
        if m in methods[:i]:
            raise ConfigError(f"methods: {m!r} is given twice")


def check_thief(thief: dict[str, Any] | None) -> None:
    """A ConfigError naming the first bad ``thief.`` setting (:class:`~undistill.config.ThiefConfig`;
    its strategy is given by ``strategies``)."""
    from pydantic import ValidationError

    from undistill.config import ThiefConfig

    try:
        ThiefConfig(**{**(thief or {}), "strategy": "random"})
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"thief.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
    except TypeError as e:
        raise ConfigError(f"thief: {e}") from None


def is_url(source: Any) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def check_arguments(budget: int, curve_points: int, methods: list[str], thief: dict[str, Any] | None,
                    width: float, margin: float, device: str, client: dict[str, Any],
                    seeds: int = 3, score: bool = True, score_with: Any = None,
                    strategies: list[str] | None = None) -> None:
    """A ConfigError naming the first bad argument of :func:`audit`, before any work."""
    from undistill.devices import select_device

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(budget >= 2, f"budget: must be at least 2 (one image goes to the probe), got {budget}")
    need(curve_points >= 1, f"curve_points: must be at least 1, got {curve_points}")
    need(seeds >= 1, f"seeds: must be at least 1, got {seeds}")
    check_thief(thief)
    need(0 < width <= 4, f"width: must be in (0, 4] (as a run config's), got {width}")
    need(margin >= 0, f"margin: must be at least 0 (accuracy points), got {margin}")
    check_methods(methods)
    check_strategies(list(strategies or ["random"]))
    need(score or score_with is None, "score_with: a local copy scores the teacher, and "
         "no-score skips scoring; give one of them")
    need(not is_url(score_with), f"score_with: {score_with!r} is a URL; give a local copy of the "
         f"model (a file or run directory), so that the API is charged the budget alone")
    need(client.get("api_key") != "", "api_key: empty; an empty key would send no "
         "credentials (give None for a teacher without authentication)")
    select_device(device)  # a ConfigError for a device this machine lacks


def thief_pool(data: Any, data_root: Path | None) -> int:
    """The training images an attacker may ask about: the training split of a run config's
    ``data`` (after its validation split, classes and fraction), which the transfer set is drawn
    from."""
    from undistill.runs import data_views

    return int(data_views(data, data_root).train_labels.numel())


def query_pool_size(thief: dict[str, Any]) -> int:
    """Images in the thief's own query data (``thief.query_data`` under ``thief.query_root``)."""
    from undistill.config import ThiefConfig
    from undistill.thief_pool import query_pool

    t = ThiefConfig(**thief)
    return int(query_pool(t, 1, 4).shape[0]) if t.query_data else 0


def check_pool(budget: int, pool: int, dataset: str, name: str = "budget") -> None:
    """A ConfigError (naming ``name``) when ``budget`` (probe included) asks for more images than
    the pool holds."""
    if budget - 1 > pool:
        raise ConfigError(f"{name}: {budget} is above the thief's pool: the {dataset} training "
                          f"split holds {pool} images (with the probe, at most {pool + 1} "
                          f"queries)")


def check_budget(budget: int, dataset: str, sets: list[str] | None = None,
                 data_root: Path | None = None, name: str = "budget") -> None:
    """:func:`check_pool` for a file or URL teacher, before it is opened: the pool of ``dataset``'s
    training split under the ``data.`` overrides of ``sets``."""
    check_pool(budget, thief_pool(_base_data(dataset, sets), data_root), dataset, name)


def _base_data(dataset: str, sets: list[str] | None) -> Any:
    """The data config of a student of a file or URL teacher (the ``data.`` overrides of ``sets``
    applied), before any teacher is opened."""
    from pydantic import ValidationError

    from undistill.config import DataConfig, apply_overrides

    d = apply_overrides({"data": {"name": dataset}},
                        [s for s in sets or [] if s.strip().startswith("data.")])
    try:
        return DataConfig(**d["data"])
    except ValidationError as e:
        raise ConfigError(f"--set data.*: {e.errors()[0]['msg']}") from None
