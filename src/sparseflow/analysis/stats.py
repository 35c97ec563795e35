"""Statistics of the studies: summaries over seeds with confidence intervals, one-sided
sparse-vs-dense tests and rank correlations (scipy).

A group of seeds is summarised by :func:`summarize`: the mean, the sample standard deviation
(n - 1 in the denominator) and Student's t interval; :func:`bootstrap_ci` gives a percentile
bootstrap interval of any statistic.

SC-SDC (Tessera et al. 2021) tests H1: acc(sparse) > acc(dense) over seeds, one-sided, with
Welch's t-test (unequal variances) and the Mann-Whitney U test. The correlation table relates
each gradient-flow measure to test accuracy / loss across runs with Kendall's tau and Spearman's
rho (two-sided p-values).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _scipy_stats() -> Any:
    try:
        from scipy import stats
    except ImportError:
        from sparseflow.errors import UserError

        raise UserError("statistics need scipy (pip install 'sparseflow[analysis]')") from None
    return stats


@dataclass(frozen=True)
class Summary:
    """``n`` values summarised: ``mean``, sample ``std`` and the ``level`` confidence interval
    ``[ci_low, ci_high]`` of the mean (see :func:`summarize`); NaN where undefined."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    level: float


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a confidence level in (0, 1), got {level!r}")


def summarize(values: Sequence[float], level: float = 0.95) -> Summary:
    """Mean, sample standard deviation and Student's t confidence interval of the mean.

    mean = sum(x) / n; std = sqrt(sum((x - mean)^2) / (n - 1)) (``statistics.stdev``);
    interval = mean -+ t_{n-1, (1 + level)/2} * std / sqrt(n), with t the Student-t quantile
    (``scipy.stats.t.ppf``). With n < 2 the std and the interval are NaN (the mean too for
    n = 0); a NaN value makes every statistic NaN.
    """
    _check_level(level)
    xs = [float(v) for v in values]
    n = len(xs)
    nan = math.nan
    if n == 0:
        return Summary(0, nan, nan, nan, nan, level)
    mean = math.fsum(xs) / n
    if n < 2:
        return Summary(n, mean, nan, nan, nan, level)
    if any(math.isnan(x) for x in xs):
        return Summary(n, nan, nan, nan, nan, level)
    std = statistics.stdev(xs)
    half = float(_scipy_stats().t.ppf((1.0 + level) / 2.0, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half, level)


def bootstrap_ci(values: Sequence[float], stat: Callable[..., Any] = np.mean,
                 level: float = 0.95, n_boot: int = 10000, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over ``values``.

    ``n_boot`` resamples of n values drawn with replacement
    (``numpy.random.default_rng(seed)``, so the same seed gives the same interval); the
    interval is the (1 - level)/2 and (1 + level)/2 quantiles of ``stat`` over the resamples
    (``numpy.quantile``, linear interpolation). ``stat`` takes a 1-D array (``np.mean`` and
    ``np.median`` are applied to all resamples at once). (NaN, NaN) with fewer than 2 values.
    """
    _check_level(level)
    if n_boot < 1:
        raise ValueError(f"n_boot: expected at least 1 resample, got {n_boot!r}")
    xs = np.asarray([float(v) for v in values], dtype=np.float64)
    if xs.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    samples = xs[rng.integers(0, xs.size, size=(n_boot, xs.size))]
    if stat is np.mean or stat is np.median:
        boot = stat(samples, axis=1)
    else:
        boot = np.array([float(stat(row)) for row in samples])
    low, high = np.quantile(boot, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return (float(low), float(high))


def _resampled_means(a: Sequence[float], b: Sequence[float], level: float, n_boot: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Means of ``n_boot`` with-replacement resamples of each of two samples (None with fewer
    than 2 values on a side)."""
    _check_level(level)
    xa = np.asarray([float(v) for v in a], dtype=np.float64)
    xb = np.asarray([float(v) for v in b], dtype=np.float64)
    if xa.size < 2 or xb.size < 2:
        return None
    rng = np.random.default_rng(seed)
    return (xa[rng.integers(0, xa.size, size=(n_boot, xa.size))].mean(axis=1),
            xb[rng.integers(0, xb.size, size=(n_boot, xb.size))].mean(axis=1))


def bootstrap_diff_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95,
                      n_boot: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a) - mean(b)`` for two independent samples.

    Each resample draws ``len(a)`` values of ``a`` and ``len(b)`` of ``b`` with replacement
    (``numpy.random.default_rng(seed)``); the interval is the (1 - level)/2 and (1 + level)/2
    quantiles of the difference of the resampled means. (NaN, NaN) with fewer than 2 values on
    a side (one seed has no spread to resample).
    """
    means = _resampled_means(a, b, level, n_boot, seed)
    if means is None:
        return (math.nan, math.nan)
    low, high = np.quantile(means[0] - means[1], [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return (float(low), float(high))


def bootstrap_ratio_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95,
                       n_boot: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a) / mean(b)`` (resampled as in
    :func:`bootstrap_diff_ci`); (NaN, NaN) with fewer than 2 values on a side."""
    means = _resampled_means(a, b, level, n_boot, seed)
    if means is None:
        return (math.nan, math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = means[0] / means[1]
    low, high = np.quantile(ratio, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return (float(low), float(high))


def one_sided_tests(sparse: Sequence[float], dense: Sequence[float]) -> dict[str, float]:
    """p-values of H1: mean/median of ``sparse`` > ``dense`` (Welch t and Mann-Whitney U).

    Welch: t = (m_s - m_d) / sqrt(v_s/n_s + v_d/n_d) with sample variances; U counts the pairs
    (s, d) with s > d (ties count 1/2). NaN where a test is undefined (fewer than 2 values per
    side for Welch, or zero variance on both sides).
    """
    st = _scipy_stats()
    s, d = [float(v) for v in sparse], [float(v) for v in dense]
    out = {"n_sparse": len(s), "n_dense": len(d),
           "mean_sparse": sum(s) / len(s) if s else math.nan,
           "mean_dense": sum(d) / len(d) if d else math.nan}
    if len(s) >= 2 and len(d) >= 2 and (_var(s) > 0 or _var(d) > 0):
        t = st.ttest_ind(s, d, equal_var=False, alternative="greater")
        out.update(welch_t=float(t.statistic), welch_p=float(t.pvalue))
    else:
        out.update(welch_t=math.nan, welch_p=math.nan)
    if s and d:
        u = st.mannwhitneyu(s, d, alternative="greater")
        out.update(mwu_u=float(u.statistic), mwu_p=float(u.pvalue))
    else:
        out.update(mwu_u=math.nan, mwu_p=math.nan)
    return out


def _var(v: Sequence[float]) -> float:
    m = sum(v) / len(v)
    return sum((x - m) ** 2 for x in v) / (len(v) - 1)


def correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Kendall's tau-b and Spearman's rho of (x, y) with two-sided p-values; NaN pairs dropped."""
    st = _scipy_stats()
    pairs = [(float(a), float(b)) for a, b in zip(x, y, strict=True)
             if a == a and b == b and math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return {"n": len(pairs), "kendall_tau": math.nan, "kendall_p": math.nan,
                "spearman_rho": math.nan, "spearman_p": math.nan}
    xs, ys = zip(*pairs, strict=True)
    k = st.kendalltau(xs, ys)
    r = st.spearmanr(xs, ys)
    return {"n": len(pairs), "kendall_tau": float(k.statistic), "kendall_p": float(k.pvalue),
            "spearman_rho": float(r.statistic), "spearman_p": float(r.pvalue)}
