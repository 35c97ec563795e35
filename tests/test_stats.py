"""One-sided tests and rank correlations against hand computations."""

from __future__ import annotations

import itertools
import math

import pytest

from sparseflow.analysis.stats import correlations, one_sided_tests


def test_welch_statistic_and_direction_by_hand():
    s, d = [0.90, 0.92, 0.91, 0.93], [0.85, 0.86, 0.84, 0.88]
    r = one_sided_tests(s, d)
    ms, md = sum(s) / 4, sum(d) / 4
    vs = sum((v - ms) ** 2 for v in s) / 3
    vd = sum((v - md) ** 2 for v in d) / 3
    assert r["welch_t"] == pytest.approx((ms - md) / math.sqrt(vs / 4 + vd / 4))
    assert r["welch_p"] < 0.01  # sparse clearly better
    flipped = one_sided_tests(d, s)
    assert flipped["welch_p"] > 0.99 and flipped["welch_p"] + r["welch_p"] == pytest.approx(1)


def test_mann_whitney_u_counts_pairs():
    s, d = [3.0, 5.0, 7.0], [1.0, 5.0, 6.0]
    u = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(s, d))
    r = one_sided_tests(s, d)
    assert r["mwu_u"] == u
    assert 0 < r["mwu_p"] < 1
    assert one_sided_tests([9.0, 8.0, 7.0], [1.0, 2.0, 3.0])["mwu_p"] == pytest.approx(0.05)


def test_degenerate_inputs_give_nan():
    r = one_sided_tests([0.5], [0.4, 0.3])
    assert math.isnan(r["welch_p"])
    r = one_sided_tests([0.5, 0.5], [0.5, 0.5])
    assert math.isnan(r["welch_p"])


def test_kendall_and_spearman_by_hand():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    y = [2.0, 1.0, 4.0, 3.0, 5.0]
    pairs = list(itertools.combinations(range(5), 2))
    conc = sum(1 for i, j in pairs if (x[i] - x[j]) * (y[i] - y[j]) > 0)
    disc = sum(1 for i, j in pairs if (x[i] - x[j]) * (y[i] - y[j]) < 0)
    r = correlations(x, y)
    assert r["kendall_tau"] == pytest.approx((conc - disc) / len(pairs))
    d2 = sum((a - b) ** 2 for a, b in zip(x, y, strict=True))  # ranks equal the values here
    assert r["spearman_rho"] == pytest.approx(1 - 6 * d2 / (5 * (25 - 1)))
    assert correlations(x, [-v for v in x])["kendall_tau"] == pytest.approx(-1)
    assert correlations([1.0, float("nan"), 2.0, 3.0], [1.0, 5.0, 2.0, 3.0])["n"] == 3


def test_bootstrap_interval_of_a_difference_of_means():
    from sparseflow.analysis.stats import bootstrap_diff_ci

    a, b = [0.030, 0.026, 0.028, 0.031], [0.010, 0.008, 0.009, 0.012]
    low, high = bootstrap_diff_ci(a, b, n_boot=4000, seed=1)
    diff = sum(a) / 4 - sum(b) / 4
    assert low < diff < high and low > 0  # clearly separated samples
    assert bootstrap_diff_ci(a, b, n_boot=4000, seed=1) == (low, high)  # seeded
    # resampled means stay within the samples' ranges: the interval too
    assert low >= min(a) - max(b) and high <= max(a) - min(b)
    same = bootstrap_diff_ci([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], n_boot=4000)
    assert same[0] < 0 < same[1]
    assert all(v != v for v in bootstrap_diff_ci([1.0], [2.0, 3.0]))  # one value: none


def test_interval_verdicts():
    from sparseflow.studies.claims import FAILED, HELD, INCONCLUSIVE, interval_verdict

    assert interval_verdict(0.01, 0.02) == HELD
    assert interval_verdict(-0.02, -0.01) == FAILED
    assert interval_verdict(-0.01, 0.02) == INCONCLUSIVE
    assert interval_verdict(float("nan"), float("nan")) == INCONCLUSIVE
    assert interval_verdict(0.1, 0.3, 0.5, below=True) == HELD
    assert interval_verdict(0.6, 0.9, 0.5, below=True) == FAILED
    assert interval_verdict(0.3, 0.7, 0.5, below=True) == INCONCLUSIVE


def test_bootstrap_interval_of_a_ratio_of_means():
    from sparseflow.analysis.stats import bootstrap_ratio_ci

    low, high = bootstrap_ratio_ci([0.05, 0.04, 0.06], [1.0, 1.2, 0.9], n_boot=4000)
    assert low < 0.05 / (3.1 / 3) < high < 0.5  # far below: the whole interval under 0.5
    assert low >= 0.04 / 1.2 and high <= 0.06 / 0.9  # bounded by the samples' extremes
    assert all(v != v for v in bootstrap_ratio_ci([0.05], [1.0, 2.0]))


def test_fieller_interval_by_hand_and_its_coverage_with_three_seeds():
    """Fieller's interval solves (m_a - R m_b)^2 = t^2 (v_a + R^2 v_b) (checked at its ends);
    on simulated normal data with 3 values a side and a known ratio it covers the truth about
    95% of the time, where the percentile bootstrap of the ratio falls well short."""
    import numpy as np
    from scipy.stats import t as student

    from sparseflow.analysis.stats import bootstrap_ratio_ci, fieller_ratio_ci

    a, b = [1.0, 1.2, 1.1], [2.0, 2.4, 2.1]
    lo, hi = fieller_ratio_ci(a, b)
    ma, mb = np.mean(a), np.mean(b)
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 3
    r = ma / mb
    df = (va + r * r * vb) ** 2 / (va ** 2 / 2 + r ** 4 * vb ** 2 / 2)
    q = student.ppf(0.975, df) ** 2
    for end in (lo, hi):
        assert (ma - end * mb) ** 2 == pytest.approx(q * (va + end * end * vb), rel=1e-9)
    assert lo < r < hi
    assert fieller_ratio_ci([1.0, 2.0], [0.1, -0.1]) == (-math.inf, math.inf)  # m_b ~ 0
    assert all(math.isnan(v) for v in fieller_ratio_ci([1.0], [2.0, 3.0]))
    rng = np.random.default_rng(0)
    hits_f = hits_b = 0
    trials = 400
    for _ in range(trials):
        xa = rng.normal(1.0, 0.2, 3)
        xb = rng.normal(2.0, 0.3, 3)
        lo, hi = fieller_ratio_ci(xa, xb)
        hits_f += lo <= 0.5 <= hi
        lo, hi = bootstrap_ratio_ci(xa, xb, n_boot=400, seed=1)
        hits_b += lo <= 0.5 <= hi
    assert 0.91 <= hits_f / trials <= 0.99
    assert hits_b / trials < 0.85


def test_ratio_interval_is_geometric_for_positive_values_and_fieller_otherwise():
    import numpy as np

    from sparseflow.analysis.stats import contrast_interval, fieller_ratio_ci, ratio_interval

    a, b = [0.028, 0.027, 0.026], [1.1, 0.6, 0.44]  # far below, though b varies by 2.5x
    eff, lo, hi, kind = ratio_interval(a, b)
    e, lo_log, hi_log = contrast_interval([np.log(a), np.log(b)], [1.0, -1.0])
    assert kind == "geometric"
    assert (eff, lo, hi) == pytest.approx((math.exp(e), math.exp(lo_log), math.exp(hi_log)))
    assert hi < 0.5  # where Fieller's interval of the arithmetic ratio is unbounded
    assert fieller_ratio_ci(a, b) == (-math.inf, math.inf)
    signed = [0.05, -0.02, 0.01]
    eff, lo, hi, kind = ratio_interval(signed, [0.5, 0.4, 0.6])
    assert kind == "arithmetic" and eff == pytest.approx(np.mean(signed) / 0.5)
    assert (lo, hi) == fieller_ratio_ci(signed, [0.5, 0.4, 0.6])
