"""Confidence intervals and claims over seeds, checked against scipy's own tests."""

from __future__ import annotations

import math

import pytest
from scipy import stats as st

from undistill.stats import judge, mean_ci, welch


def test_mean_ci_matches_the_t_interval() -> None:
    s = mean_ci([1.0, 2.0, 3.0])
    assert s.n == 3 and s.mean == 2.0 and s.std == pytest.approx(1.0)
    assert s.ci == pytest.approx(st.t.ppf(0.975, 2) / math.sqrt(3))
    lo, hi = st.t.interval(0.95, 2, loc=2.0, scale=st.sem([1.0, 2.0, 3.0]))
    assert s.mean - s.ci == pytest.approx(lo) and s.mean + s.ci == pytest.approx(hi)
    assert mean_ci([5.0]).ci is None and mean_ci([5.0]).fmt() == "5.00 (n=1)"
    assert mean_ci([1.0, 2.0, 3.0]).fmt(1) == f"2.0 ± {s.ci:.1f} (n=3)"
    with pytest.raises(ValueError):
        mean_ci([])


def test_welch_matches_scipy() -> None:
    a, b = [80.1, 81.3, 79.8, 80.9], [77.2, 78.9, 76.5]
    ours = welch(a, b, alternative="greater")
    ref = st.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
    assert ours == pytest.approx(ref)
    assert welch(a, b, alternative="less") == pytest.approx(1 - ref)
    assert welch([1.0], b) is None


def test_judge_pass_fail_inconclusive() -> None:
    hi, lo = [82.0, 82.5, 81.8], [77.0, 77.6, 76.9]
    assert judge("hi > lo", hi, lo).verdict == "PASS"
    assert judge("lo > hi", lo, hi).verdict == "FAIL"
    assert judge("lo < hi", lo, hi, op="<").verdict == "PASS"
    noisy = [70.0, 85.0, 78.0]
    assert judge("noisy > hi", noisy, hi).verdict == "INCONCLUSIVE"
    # a margin: hi is about 5 points above lo, so "by at least 3" passes and "by 8" fails
    assert judge("by 3", hi, lo, margin=3.0).verdict == "PASS"
    assert judge("by 8", hi, lo, margin=8.0).verdict == "FAIL"
    assert judge("lo below hi by 3", lo, hi, op="<", margin=3.0).verdict == "PASS"
    single = judge("one seed", [90.0], [10.0])
    assert single.verdict == "INCONCLUSIVE" and single.p is None
    d = judge("hi > lo", hi, lo).as_dict()
    assert d["verdict"] == "PASS" and d["a"]["n"] == 3 and d["p"] < 0.05


def test_paired_verdict_from_summary() -> None:
    from undistill.stats import verdict_from_summary

    # differences of mean -0.3, std 1 over 400 images: t = -6, clearly below zero
    v = verdict_from_summary("a below b", -0.3, 1.0, 400, "<")
    assert v["verdict"] == "PASS" and v["p"] == pytest.approx(st.t.cdf(-6.0, 399))
    assert verdict_from_summary("a above b", -0.3, 1.0, 400, ">")["verdict"] == "FAIL"
    assert verdict_from_summary("tiny", -0.01, 1.0, 100, "<")["verdict"] == "INCONCLUSIVE"
    assert verdict_from_summary("one image", -1.0, 0.0, 1, "<")["verdict"] == "INCONCLUSIVE"
