"""Defences on the user's own model (``undistill audit --defence SPEC ...``): utility against
protection, one row per defence (:mod:`undistill.audit`).

* :func:`parse_defences` reads the ``--defence`` specs (YAML mappings as ``undistill serve
  --defence`` takes them, ``'{name: topk, params: {k: 1}}'``, or a bare name, ``labels``;
  ``none``/``full`` is the undefended row, always in the table) and checks them against the
  dataset's class count before anything is opened: a bad one is a ConfigError ``--defence: ...``.
* :func:`released_test` releases the teacher's test answers through a defence (the one release
  path, :func:`undistill.defences.release_answer`, on the answers already scored: nothing is
  asked again); :func:`utility` measures them: top-1 accuracy (%), agreement with the undefended
  teacher (%), and :func:`ece` (15 bins, a fraction in [0, 1]) -- the numbers of the defence
  leaderboard's utility (:func:`undistill.suites.leaderboard.utility`).
* :func:`defence_entry` is one row: the defended attacks (entries of
  :func:`undistill.audit_summary.summarise`), the best of them (highest mean accuracy over
  seeds), and the protection: the undefended best attack's mean accuracy minus the defended best
  attack's, with a 95 % Welch interval over the two attacks' per-seed accuracies
  (:func:`welch_interval`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import torch

from undistill.config import ConfigError
from undistill.defences import DefenceConfig, build_defence, parse_defence, release_answer
from undistill.metrics import ece
from undistill.stats import mean_ci

#: ``--defence`` names that stand for no defence (the undefended row, always in the table)
UNDEFENDED = ("none", "full")


def parse_defences(specs: Sequence[str | DefenceConfig | dict[str, Any]] | None,
                   num_classes: int | None = None) -> list[DefenceConfig]:
    """The defences of ``audit --defence`` (each once; ``none``/``full`` left out: the undefended
    row is always there), validated and checked against ``num_classes``; a ConfigError
    ``--defence: ...`` for the first bad one."""
    import yaml

    found: list[DefenceConfig] = []
    for spec in specs or []:
        data: Any = spec
        if isinstance(spec, DefenceConfig):
            data = spec.model_dump(mode="json")
        elif isinstance(spec, str):
            try:
                data = yaml.safe_load(spec)
            except yaml.YAMLError as e:
                raise ConfigError(f"--defence: not valid YAML: {str(e).splitlines()[0]}") from None
            if isinstance(data, str):
                data = {"name": data.strip()}
        if isinstance(data, dict) and data.get("name") in UNDEFENDED and not data.get("params"):
            continue
        if not isinstance(data, dict):
            raise ConfigError(f"--defence: expected a name or a mapping such as '{{name: topk, "
                              f"params: {{k: 1}}}}', got {spec!r}")
        try:  # the messages of every --defence (serve's too)
            parse_defence(json.dumps(data), num_classes)
        except ValueError as e:
            raise ConfigError(str(e).splitlines()[0]) from None
        cfg = DefenceConfig.model_validate(data)
        if cfg in found:
            raise ConfigError(f"--defence: {cfg.label()} is given twice")
        found.append(cfg)
    return found


@torch.no_grad()
def released_test(logits: torch.Tensor, ds: Any, defence: DefenceConfig | None, seed: int = 0,
                  batch_size: int = 1000) -> torch.Tensor:
    """What ``defence`` releases of the teacher's test ``logits`` (its answers to ``ds``'s test
    images, in order): the release path on each batch with its normalised images (read by a
    defence that uses the queries: MAD); a noise defence draws from ``seed``."""
    from undistill.data import normalize

    d = None if defence is None else build_defence(defence, ds.num_classes)
    torch.manual_seed(seed)
    return torch.cat([release_answer(z, normalize(x, ds.mean, ds.std), d)
                      for z, x in zip(logits.split(batch_size), ds.test_images.split(batch_size),
                                      strict=True)])


def utility(released: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
            ) -> dict[str, float]:
    """Top-1 accuracy (%) of released answers, their agreement (%) with the undefended teacher's
    top-1 and their :func:`ece` (a fraction)."""
    pred = released.argmax(1)
    return {"accuracy": 100.0 * float((pred == labels).float().mean()),
            "agreement": 100.0 * float((pred == teacher_logits.argmax(1)).float().mean()),
            "ece": ece(released, labels)}


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95
                   ) -> list[float] | None:
    """The ``level`` interval of ``mean(a) - mean(b)`` by Welch's t (unequal variances,
    Welch-Satterthwaite degrees of freedom); None with fewer than two values on a side; both sides
    constant: the difference itself."""
    from scipy import stats as st

    if len(a) < 2 or len(b) < 2:
        return None
    sa, sb = mean_ci(a), mean_ci(b)
    va, vb = (sa.std or 0.0) ** 2 / sa.n, (sb.std or 0.0) ** 2 / sb.n
    diff, var = sa.mean - sb.mean, va + vb
    if var == 0.0:
        return [diff, diff]
    df = var ** 2 / ((va ** 2 / (sa.n - 1) if va else 0.0) + (vb ** 2 / (sb.n - 1) if vb else 0.0))
    half = float(st.t.ppf(0.5 + level / 2, df)) * math.sqrt(var)
    return [diff - half, diff + half]


def best_attack(attacks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The attack entry of the highest mean accuracy over seeds (the first on a tie)."""
    return max(attacks, key=lambda a: a["accuracy_mean"])


def defence_entry(defence: DefenceConfig | None, attacks: list[dict[str, Any]],
                  util: dict[str, float] | None, undefended_best: dict[str, Any]
                  ) -> dict[str, Any]:
    """One row of the defences' table (``defence`` None: the undefended teacher, protection 0)."""
    best = best_attack(attacks)
    if defence is None:
        protection, ci = 0.0, None
    else:
        protection = undefended_best["accuracy_mean"] - best["accuracy_mean"]
        ci = welch_interval(undefended_best["accuracy"], best["accuracy"])
    return {"defence": None if defence is None else defence.model_dump(mode="json"),
            "label": "none" if defence is None else defence.label(),
            "utility": {"accuracy": None, "agreement": None, "ece": None} if util is None else util,
            "best_attack": best["attack"], "best_attack_accuracy_mean": best["accuracy_mean"],
            "best_attack_accuracy_ci": best["accuracy_ci"],
            "protection_mean": protection, "protection_ci": ci,
            "protection_interval": "95% Welch t over the per-seed accuracies of the two best "
                                   "attacks (undefended, defended)",
            "attacks": attacks}


def _num(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ci(mean: float, ci: list[float] | None) -> str:
    return f"{mean:.2f}" if ci is None else f"{mean:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def table_rows(entries: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The table's cells: defence, accuracy (%), agreement (%), ECE, best attack, its accuracy
    (%) [CI], protection (points) [CI]."""
    return [[e["label"], _num(e["utility"]["accuracy"]), _num(e["utility"]["agreement"]),
             _num(e["utility"]["ece"], 3), e["best_attack"],
             _ci(e["best_attack_accuracy_mean"], e["best_attack_accuracy_ci"]),
             "0 (reference)" if e["defence"] is None else
             _ci(e["protection_mean"], e["protection_ci"])] for e in entries]


HEADER = ["defence", "accuracy (%)", "agreement (%)", "ECE", "best attack",
          "its accuracy (%) [95% CI]", "protection (points) [95% CI]"]


def markdown(entries: Sequence[dict[str, Any]], budget: int) -> list[str]:
    """report.md's section on the defences (empty without any)."""
    if not entries:
        return []
    lines = ["", "## Defences: utility against protection", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(entries)]
    lines += ["", f"Utility: the released answers on the test set (accuracy; top-1 agreement with "
              f"the undefended teacher; ECE, 15 bins, a fraction; n/a when the teacher was not "
              f"scored). Every attack is run at {budget} queries against the defended answers, "
              f"with the same images and seeds as undefended; protection: the best undefended "
              f"attack's mean accuracy minus the best defended attack's (best: highest mean over "
              f"seeds), with a 95% Welch t interval over the two attacks' per-seed accuracies."]
    return lines
