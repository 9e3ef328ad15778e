"""scripts/seeds_needed.py agrees with the suites' own Welch test (undistill.stats.welch)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from undistill.stats import welch

_spec = importlib.util.spec_from_file_location(
    "seeds_needed", Path(__file__).parents[1] / "scripts" / "seeds_needed.py")
assert _spec is not None and _spec.loader is not None
seeds_needed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seeds_needed)


def _sample(n: int, mean: float, sd: float) -> list[float]:
    """n values with exactly this mean and sample standard deviation."""
    z = np.linspace(-1.0, 1.0, n)
    z = (z - z.mean()) / z.std(ddof=1)
    return list(mean + sd * z)


def test_the_smallest_n_is_where_the_suites_test_first_passes() -> None:
    n = seeds_needed.seeds_needed(2.32, 0.65, 1.90, 0.05, 100)
    assert n == 4
    p_at = welch(_sample(n, 77.12, 0.65), _sample(n, 74.80, 1.90))
    p_before = welch(_sample(n - 1, 77.12, 0.65), _sample(n - 1, 74.80, 1.90))
    assert p_at is not None and p_before is not None
    assert p_at < 0.05 <= p_before


def test_a_difference_the_other_way_never_passes() -> None:
    assert seeds_needed.seeds_needed(-3.7, 2.0, 3.0, 0.05, 100) is None
    assert seeds_needed.seeds_needed(0.0, 1.0, 1.0, 0.05, 100) is None


def test_rows_read_a_claims_direction_and_skip_margins_and_decided_claims() -> None:
    def claim(text, verdict, a, b, p, p_opp, test="Welch t-test, one-sided"):
        return {"claim": text, "verdict": verdict, "a": {"mean": a, "std": 1.0, "n": 3},
                "b": {"mean": b, "std": 1.0, "n": 3}, "p": p, "p_opposite": p_opp,
                "alpha": 0.05, "test": test}
    results = {"claims": [
        claim("X below Y", "INCONCLUSIVE", 60.0, 62.0, 0.06, 0.94),  # a < b, claim "<": effect +2
        claim("X above Y", "INCONCLUSIVE", 60.0, 62.0, 0.94, 0.06),  # a < b, claim ">": effect -2
        claim("X at least 3 points below Y", "INCONCLUSIVE", 60.0, 62.0, 0.3, 0.7),
        claim("X above Y", "PASS", 70.0, 60.0, 0.001, 0.999),
        claim("KL", "INCONCLUSIVE", 1.0, 2.0, 0.3, 0.7, test="paired t-test"),
    ]}
    got = seeds_needed.rows(results, 100)
    assert [(r["claim"], r["effect"]) for r in got] == [("X below Y", 2.0), ("X above Y", -2.0)]
    assert got[0]["seeds_needed"] is not None and got[1]["seeds_needed"] is None
