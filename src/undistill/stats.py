"""Statistics over seeds: means with confidence intervals, and claims judged by a test.

Every comparison the toolkit reports is over several seeds. :func:`mean_ci` gives the mean and the
half-width of its Student-t confidence interval; :func:`welch` is Welch's unequal-variance t-test;
:func:`judge` turns a claim "a > b" (or "a < b", optionally by a margin) into PASS, FAIL or
INCONCLUSIVE at level alpha:

- PASS: the one-sided test of the claim rejects "no effect" (p < alpha);
- FAIL: the one-sided test of the *opposite* direction rejects (the data contradict the claim);
- INCONCLUSIVE: neither (too few seeds, too much noise, or an effect too small to tell).

With one value on a side no variance can be estimated: the claim is INCONCLUSIVE (unless both
sides are single and the caller accepts a plain comparison, which this module never does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from scipy import stats as _st

Verdict = Literal["PASS", "FAIL", "INCONCLUSIVE"]


@dataclass(frozen=True)
class Summary:
    """n values summarised: mean, sample standard deviation and the CI half-width at ``level``."""

    n: int
    mean: float
    std: float | None
    ci: float | None  # half-width; None for n < 2
    level: float = 0.95

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    def fmt(self, digits: int = 2) -> str:
        """``mean ± ci (n=N)``, or ``mean (n=1)``."""
        if self.ci is None:
            return f"{self.mean:.{digits}f} (n={self.n})"
        return f"{self.mean:.{digits}f} ± {self.ci:.{digits}f} (n={self.n})"


def mean_ci(values: Sequence[float], level: float = 0.95) -> Summary:
    """Mean and the half-width of the two-sided Student-t confidence interval of the mean."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_ci needs at least one value")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return Summary(n, mean, None, None, level)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(_st.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, half, level)


def welch(a: Sequence[float], b: Sequence[float], margin: float = 0.0,
          alternative: Literal["greater", "less"] = "greater") -> float | None:
    """One-sided p-value of Welch's t-test for mean(a) - mean(b) > margin ("greater") or < margin.

    None when either side has fewer than 2 values. Both sides constant: p is 0 or 1 by the sign of
    the difference (there is no noise to test against)."""
    if len(a) < 2 or len(b) < 2:
        return None
    sa, sb = mean_ci(a), mean_ci(b)
    diff = sa.mean - sb.mean - margin
    var = (sa.std or 0.0) ** 2 / sa.n + (sb.std or 0.0) ** 2 / sb.n
    if var == 0.0:
        if diff == 0.0:
            return 1.0
        return 0.0 if (diff > 0) == (alternative == "greater") else 1.0
    t = diff / math.sqrt(var)
    df = var ** 2 / (((sa.std or 0.0) ** 2 / sa.n) ** 2 / (sa.n - 1)
                     + ((sb.std or 0.0) ** 2 / sb.n) ** 2 / (sb.n - 1))
    return float(_st.t.sf(t, df) if alternative == "greater" else _st.t.cdf(t, df))


@dataclass(frozen=True)
class Claim:
    """A claim "a <op> b [by margin]" judged on per-seed values."""

    text: str
    verdict: Verdict
    a: Summary
    b: Summary
    p: float | None  # p-value of the claim's one-sided test
    p_opposite: float | None
    alpha: float

    def as_dict(self) -> dict[str, object]:
        return {"claim": self.text, "verdict": self.verdict, "a": self.a.as_dict(), "b": self.b.as_dict(),
                "p": self.p, "p_opposite": self.p_opposite, "alpha": self.alpha,
                "test": "Welch t-test, one-sided"}


def judge(text: str, a: Sequence[float], b: Sequence[float], op: Literal[">", "<"] = ">",
          margin: float = 0.0, alpha: float = 0.05) -> Claim:
    """PASS / FAIL / INCONCLUSIVE for "mean(a) > mean(b) + margin" (op ">") or
    "mean(a) < mean(b) - margin" (op "<"), by one-sided Welch tests at level ``alpha``.

    FAIL means the opposite direction is significant ("a <= b" for ">" with no margin; with a
    margin, that a is significantly short of b + margin)."""
    sa, sb = mean_ci(a), mean_ci(b)
    if op == ">":
        p = welch(a, b, margin, "greater")
        p_opp = welch(a, b, margin, "less")
    else:
        p = welch(a, b, -margin, "less")
        p_opp = welch(a, b, -margin, "greater")
    if p is not None and p < alpha:
        verdict: Verdict = "PASS"
    elif p_opp is not None and p_opp < alpha:
        verdict = "FAIL"
    else:
        verdict = "INCONCLUSIVE"
    return Claim(text, verdict, sa, sb, p, p_opp, alpha)


def verdict_from_summary(text: str, mean_diff: float, std_diff: float, n: int, op: Literal[">", "<"],
                         alpha: float = 0.05) -> dict[str, object]:
    """A paired claim "mean difference > 0" (op ">") or "< 0" (op "<") judged by a one-sided
    one-sample t-test from the differences' mean, standard deviation and count (e.g. per-image
    KL differences between two models on the same images)."""
    if n < 2:
        p = p_opp = None
    elif std_diff == 0.0:
        p = 0.0 if (mean_diff > 0) == (op == ">") and mean_diff != 0 else 1.0
        p_opp = 0.0 if (mean_diff < 0) == (op == ">") and mean_diff != 0 else 1.0
    else:
        t = mean_diff / (std_diff / math.sqrt(n))
        p = float(_st.t.sf(t, n - 1) if op == ">" else _st.t.cdf(t, n - 1))
        p_opp = 1.0 - p
    verdict: Verdict = ("PASS" if p is not None and p < alpha else
                        "FAIL" if p_opp is not None and p_opp < alpha else "INCONCLUSIVE")
    return {"claim": text, "verdict": verdict, "mean_diff": mean_diff, "std_diff": std_diff, "n": n,
            "p": p, "p_opposite": p_opp, "alpha": alpha, "test": "paired t-test, one-sided"}
