"""Builders for the paper's runs: normal teacher, nasty teacher, SCM sequence, defences, students.

Each returns a validated :class:`RunConfig`; teachers are nested configs, so building the same
recipe twice gives the same run ids and nothing is retrained. Protocol defaults per dataset come
from :mod:`undistill.presets`; everything can be overridden.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from undistill.config import RunConfig, apply_overrides, merge, parse_config
from undistill.methods import METHODS
from undistill.presets import optim_preset, teacher_config


def is_data_free(method: str) -> bool:
    """Whether a method never reads the dataset (build it with :func:`data_free_student`)."""
    return METHODS.get(method).data_free_of is not None


def with_overrides(cfg: RunConfig, sets: list[str] | None) -> RunConfig:
    """Apply ``field.path=value`` overrides to a built config (re-validated)."""
    if not sets:
        return cfg
    d = cfg.model_dump()
    apply_overrides(d, sets)
    return parse_config(d)


def normal_teacher(dataset: str, arch: str, width: float = 1.0, seed: int = 0,
                   optim: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                   name: str = "") -> RunConfig:
    d = teacher_config(dataset, arch, width, seed)
    d["optim"] = merge(d["optim"], optim)
    d["data"] = merge(d["data"], data)
    d["name"] = name or f"normal {arch}"
    return parse_config(d)


def nasty_teacher(adversary: RunConfig, omega: float | None = None,
                  temperature: float | None = None, arch: str | None = None,
                  width: float | None = None, optim: dict[str, Any] | None = None,
                  stop_at_acc: float | None = None, seed: int | None = None,
                  name: str = "") -> RunConfig:
    """Eq. 5 against a frozen adversary; same architecture and schedule unless given.

    Defaults for omega and tau_A: the protocol's for the adversary's dataset (Table: CIFAR-10
    0.04/4, CIFAR-100 0.005/20, Tiny-ImageNet 0.01/20; calibrated values for the small sets;
    ``methods/nasty.py``).
    """
    arch = arch or adversary.model.arch
    defaults = METHODS.get("nasty").defaults_for(adversary.data.name, arch)
    base_optim = (adversary.optim.model_dump() if arch == adversary.model.arch
                  else optim_preset(adversary.data.name, arch))
    d = {
        "data": adversary.data.model_dump(),
        "model": {"arch": arch, "width": adversary.model.width if width is None else width},
        "optim": merge(base_optim, optim),
        "method": {"name": "nasty", "params": {
            "omega": defaults["omega"] if omega is None else omega,
            "temperature": defaults["temperature"] if temperature is None else temperature}},
        "teachers": [adversary],
        "seed": adversary.seed if seed is None else seed,
        "stop_at_acc": stop_at_acc,
        "name": name or ("nasty" if stop_at_acc is None else f"nasty-ES@{stop_at_acc:g}"),
    }
    return parse_config(d)


def nasty_es(nasty: RunConfig, target_acc: float, name: str = "",
             nasty_best: float | None = None) -> RunConfig:
    """Nasty-ES (Table 6): ``nasty`` trained again exactly as it was (same adversary, omega,
    tau_A and optimisation) but stopped at the first epoch whose evaluation accuracy reaches
    ``target_acc`` (rounded to 0.01 %), the SCM-defence teacher's, for a comparison at equal
    accuracy.

    ``nasty_best``: the nasty run's best evaluation accuracy, when known. Below the target, the
    retraining would never stop and would repeat the nasty run to its end, so ``nasty`` itself is
    returned (same weights, nothing to train)."""
    if nasty_best is not None and nasty_best < round(target_acc, 2):
        return nasty
    p = nasty.method.params
    return nasty_teacher(nasty.teachers[0], p["omega"], p["temperature"], arch=nasty.model.arch,
                         width=nasty.model.width, optim=nasty.optim.model_dump(),
                         stop_at_acc=round(target_acc, 2), seed=nasty.seed, name=name)


def scm_sequence(nasty: RunConfig, k: int, arch: str | None = None, width: float | None = None,
                 omega: float | None = None, temperature: float | None = None,
                 optim: dict[str, Any] | None = None) -> list[RunConfig]:
    """S^1 = the nasty teacher, S^i = G(S^(i-1)) with G the Eq. 5 training (Eq. 10)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    p = nasty.method.params
    seq = [nasty]
    for i in range(2, k + 1):
        seq.append(nasty_teacher(
            seq[-1], omega=p["omega"] if omega is None else omega,
            temperature=p["temperature"] if temperature is None else temperature,
            arch=arch, width=width, optim=optim, name=f"S{i}"))
    return seq


def student(teachers: list[RunConfig] | RunConfig | None, arch: str, method: str,
            params: dict[str, Any] | None = None, width: float = 1.0, dataset: str | None = None,
            optim: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
            seed: int = 0, name: str = "", external: list[Any] | None = None,
            budget: int | None = None, thief: dict[str, Any] | None = None) -> RunConfig:
    """A stealing student; ``method`` is a registered method name (vanilla takes no teacher).

    ``external``: teachers from files or URLs (:class:`~undistill.config.ExternalTeacherConfig`);
    ``budget``: the query budget (augmentation is then off); ``thief``: with a budget, a
    :class:`~undistill.config.ThiefConfig` dict (query strategy, rounds, steps, ...); the student
    then trains for ``thief.steps`` steps (:func:`undistill.thief.thief_optim`), not ``optim``'s
    epochs.

    Parameters default to the method's protocol values for the dataset and student
    (``Method.defaults_for``). Data-free methods go to :func:`data_free_student` (``dataset``
    must then be the teachers')."""
    if isinstance(teachers, RunConfig):
        teachers = [teachers]
    teachers = list(teachers or [])
    if is_data_free(method):
        if dataset is not None and teachers and dataset != teachers[0].data.name:
            raise ValueError(f"a data-free student uses its teachers' dataset "
                             f"{teachers[0].data.name!r}, not {dataset!r}")
        return data_free_student(teachers, arch, method, params, width=width, optim=optim,
                                 data=data, seed=seed, name=name)
    if dataset is None:
        if not teachers:
            raise ValueError("give a dataset or a teacher")
        dataset = teachers[0].data.name
    base_data = teachers[0].data.model_dump() if teachers else {"name": dataset}
    base_params = METHODS.get(method).defaults_for(dataset, arch)
    d = {
        "data": merge(base_data, data),
        "model": {"arch": arch, "width": width},
        "optim": merge(optim_preset(dataset, arch), optim),
        "method": {"name": method, "params": {**base_params, **(params or {})}},
        "teachers": teachers,
        "seed": seed,
        "name": name or f"{method} {arch}",
    }
    if external:  # one teacher list: the runs, then the teachers from files or URLs
        d["teachers"] = [*teachers, *(e.model_dump() if hasattr(e, "model_dump") else e
                                      for e in external)]
    if budget is not None:
        d["budget"] = budget
        d["data"]["augment"] = False
    if thief is not None:
        from undistill.thief import thief_optim

        if budget is None:
            raise ValueError("thief: a thief spends a query budget; give budget too")
        d["thief"] = thief
        d["optim"] = thief_optim(d["optim"], thief, budget)
    return parse_config(d)


def data_free_student(teachers: list[RunConfig] | RunConfig, arch: str, method: str = "dafl-kd",
                      params: dict[str, Any] | None = None, width: float = 1.0,
                      optim: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                      seed: int = 0, data_root: Path | None = None, name: str = "") -> RunConfig:
    """A data-free stealing student (Table 4): a DAFL generator against the teacher(s), the
    student learning by KD (``dafl-kd``) or HTC (``dafl-htc``) on generated images only.

    The generator's ``image_size`` and ``channels`` are the teachers' dataset's (after
    ``data.resize``; the dataset is read once for its shape unless both are given in
    ``params``); its loss weights are DAFL's for the dataset (``methods/dafl.py``).
    ``data.labels`` and ``data.augment`` are off (the real batches are never read; their count
    still sets the epoch length: ``ceil(train size / batch size)`` steps, see docs/methods.md).
    The student's optimiser defaults to the protocol's for its architecture; DAFL's own schedule
    (2000 epochs of 120 iterations of 1024 images) is not the default: pass ``optim``.
    """
    from undistill.runs import get_dataset

    if method not in METHODS or not is_data_free(method):
        known = ", ".join(n for n in METHODS if is_data_free(n))
        raise ValueError(f"method must be one of {known}, got {method!r}")
    if isinstance(teachers, RunConfig):
        teachers = [teachers]
    teachers = list(teachers)
    if not teachers:
        raise ValueError("a data-free student needs a teacher")
    dataset = teachers[0].data.name
    d_data = merge(teachers[0].data.model_dump(), data)
    d_data.update({"labels": False, "augment": False})
    p = {**METHODS.get(method).defaults_for(dataset, arch), **(params or {})}
    if "image_size" not in p or "channels" not in p:
        ds = get_dataset(dataset, data_root, d_data.get("resize"))
        p.setdefault("image_size", ds.image_size)
        p.setdefault("channels", ds.channels)
    d = {
        "data": d_data,
        "model": {"arch": arch, "width": width},
        "optim": merge(optim_preset(dataset, arch), optim),
        "method": {"name": method, "params": p},
        "teachers": teachers,
        "seed": seed,
        "name": name or f"{method} {arch}",
    }
    return parse_config(d)
