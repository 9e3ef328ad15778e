"""How many seeds an INCONCLUSIVE claim would need, if what was measured were the truth.

    python scripts/seeds_needed.py docs/results/demo-ablations/results.json

For each INCONCLUSIVE claim of a suite's ``results.json`` judged by a one-sided Welch test over
seeds (Table 3's paired KL claims are left out), it takes the observed means and standard
deviations as if they were the true ones and finds the smallest number of seeds per side (up to
``--max``) at which that difference would reach p < alpha (the claim's own alpha). A claim whose
observed difference points the other way can never pass this way ("never"). This is a planning
aid for a *future, pre-registered* design, not a licence to add seeds to a run already judged
(that is optional stopping: it inflates the false-PASS rate). Claims with a margin ("at least 3
points") are left out: the margin is not stored with the claim.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from scipy import stats


def seeds_needed(diff: float, sd_a: float, sd_b: float, alpha: float, most: int) -> int | None:
    """Smallest n (per side) with Welch's one-sided p < alpha for ``diff`` > 0; None if none <= most."""
    if diff <= 0:
        return None
    for n in range(2, most + 1):
        va, vb = sd_a ** 2 / n, sd_b ** 2 / n
        if va + vb == 0.0:
            return n
        df = (va + vb) ** 2 / (va ** 2 / (n - 1) + vb ** 2 / (n - 1))
        if stats.t.sf(diff / math.sqrt(va + vb), df) < alpha:
            return n
    return None


def rows(results: dict[str, Any], most: int) -> list[dict[str, Any]]:
    out = []
    for c in results["claims"]:
        if c.get("verdict") != "INCONCLUSIVE" or "Welch" not in str(c.get("test", "")):
            continue
        if "at least" in c["claim"]:
            continue
        a, b = c["a"], c["b"]
        # the claim's direction: its own p is the smaller one when a - b points its way
        above = (a["mean"] > b["mean"]) == (c["p"] < c["p_opposite"])
        diff = (a["mean"] - b["mean"]) if above else (b["mean"] - a["mean"])
        n = seeds_needed(diff, a["std"], b["std"], c["alpha"], most)
        out.append({"claim": c["claim"], "effect": round(diff, 2), "sd": [a["std"], b["std"]],
                    "n_now": [a["n"], b["n"]], "p": c["p"], "seeds_needed": n})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path)
    ap.add_argument("--max", type=int, default=100)
    a = ap.parse_args()
    for r in rows(json.loads(a.results.read_text()), a.max):
        need = "never" if r["seeds_needed"] is None else str(r["seeds_needed"])
        print(f"{need:>5}  effect {r['effect']:+6.2f}  sd {r['sd'][0]:.2f}/{r['sd'][1]:.2f}  "
              f"p {r['p']:.3f}  {r['claim']}")


if __name__ == "__main__":
    main()
