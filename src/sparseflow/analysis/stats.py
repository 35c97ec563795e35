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
from collections.abc import Callable, Hashable, Mapping, Sequence
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


def fieller_ratio_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95
                     ) -> tuple[float, float]:
    """Fieller's interval of mean(a) / mean(b) for two independent samples (Fieller 1954).

    With means m_a, m_b and squared standard errors v_a = s_a^2 / n_a, v_b = s_b^2 / n_b, the
    interval is every R with (m_a - R m_b)^2 <= t^2 (v_a + R^2 v_b): the roots of
    (m_b^2 - t^2 v_b) R^2 - 2 m_a m_b R + (m_a^2 - t^2 v_a) = 0, t the (1 + level)/2 Student
    quantile with Welch-Satterthwaite degrees of freedom of m_a - R m_b at the point estimate.
    Unbounded, (-inf, inf), when m_b is not significantly away from 0 (m_b^2 <= t^2 v_b): the
    data cannot bound the ratio. (NaN, NaN) with fewer than 2 values on a side. Unlike a
    percentile bootstrap, it keeps its level with 3 values a side (tested by simulation).
    """
    _check_level(level)
    xa = np.asarray([float(v) for v in a], dtype=np.float64)
    xb = np.asarray([float(v) for v in b], dtype=np.float64)
    if xa.size < 2 or xb.size < 2:
        return (math.nan, math.nan)
    from scipy.stats import t as student

    ma, mb = float(xa.mean()), float(xb.mean())
    va, vb = float(xa.var(ddof=1)) / xa.size, float(xb.var(ddof=1)) / xb.size
    r = ma / mb if mb != 0 else 0.0
    den = (va ** 2 / (xa.size - 1) + r ** 4 * vb ** 2 / (xb.size - 1))
    df = (va + r * r * vb) ** 2 / den if den > 0 else float(xa.size + xb.size - 2)
    q = float(student.ppf((1.0 + level) / 2.0, df)) ** 2
    a2 = mb * mb - q * vb
    if a2 <= 0:
        return (-math.inf, math.inf)
    disc = (ma * mb) ** 2 - a2 * (ma * ma - q * va)
    root = math.sqrt(max(0.0, disc))
    return ((ma * mb - root) / a2, (ma * mb + root) / a2)


def ratio_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95
                   ) -> tuple[float, float, float, str]:
    """(effect, low, high, kind) of the ratio of two independent samples' typical values.

    All values positive (norms, standard deviations): the ratio of geometric means
    exp(mean log a - mean log b) with Welch's t interval of the log difference, exponentiated
    (:func:`contrast_interval`; kind ``"geometric"``): positive quantities that vary by factors
    across seeds are compared on the scale they vary on. Otherwise mean(a) / mean(b) with
    :func:`fieller_ratio_ci` (kind ``"arithmetic"``). NaN interval with fewer than 2 values a
    side."""
    xa = [float(v) for v in a]
    xb = [float(v) for v in b]
    if xa and xb and min(xa) > 0 and min(xb) > 0:
        eff, lo, hi = contrast_interval([np.log(xa), np.log(xb)], [1.0, -1.0], level)
        return (math.exp(eff), math.exp(lo) if lo == lo else math.nan,
                math.exp(hi) if hi == hi else math.nan, "geometric")
    mb = statistics.mean(xb) if xb else math.nan
    eff = statistics.mean(xa) / mb if xa and mb else math.nan
    lo, hi = fieller_ratio_ci(xa, xb, level)
    return (eff, lo, hi, "arithmetic")


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


# -- Kendall tau-b and bootstraps over groups (the tessera2021 preset's claims) ---------------
def _signs(v: np.ndarray) -> np.ndarray:
    return np.sign(v[:, None] - v[None, :])


def _tau_b(sx: np.ndarray, sy: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of every resample: ``counts`` (B x n) says how often each of n runs is
    drawn; a pair of draws contributes sign(x_i - x_j) sign(y_i - y_j) (two draws of one run:
    0, tied in both), tau-b = sum sx sy / sqrt(sum |sx| * sum |sy|)."""
    def quad(m: np.ndarray) -> np.ndarray:
        return ((counts @ m) * counts).sum(axis=1)

    with np.errstate(divide="ignore", invalid="ignore"):
        return quad(sx * sy) / np.sqrt(quad(np.abs(sx)) * quad(np.abs(sy)))


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (tie-corrected; docs/science.md section 8): ``(P - Q) / sqrt((P + Q +
    T_x)(P + Q + T_y))`` with P / Q the concordant / discordant pairs and T_x (T_y) the pairs
    tied in y only (x only); NaN when x or y is constant."""
    sx, sy = _signs(np.asarray(x, float)), _signs(np.asarray(y, float))
    return float(_tau_b(sx, sy, np.ones((1, len(x))))[0])


def tau_gap(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], y: Sequence[float], *,
            level: float = 0.95, n_boot: int = 4000, seed: int = 0
            ) -> tuple[float, float, float]:
    """``max_i |tau(a_i, y)| - max_j |tau(b_j, y)|`` (Kendall tau-b over the runs) and its
    percentile bootstrap interval: ``n_boot`` resamples of the n runs with replacement
    (``numpy.random.default_rng(seed)``, the same resample for every measure), the maxima taken
    within each resample. ``a`` and ``b`` hold measures, each a value per run. Resamples where a
    tau is undefined (a constant measure) are left out; (gap, NaN, NaN) with fewer than 3 runs.
    """
    yv = np.asarray(y, float)
    n = yv.size
    sy = _signs(yv)
    sa = [_signs(np.asarray(m, float)) for m in a]
    sb = [_signs(np.asarray(m, float)) for m in b]

    def gap(counts: np.ndarray) -> np.ndarray:
        ta = np.max([np.abs(_tau_b(s, sy, counts)) for s in sa], axis=0)
        tb = np.max([np.abs(_tau_b(s, sy, counts)) for s in sb], axis=0)
        return ta - tb

    point = float(gap(np.ones((1, n)))[0])
    if n < 3:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boot = gap(rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float))
    boot = boot[np.isfinite(boot)]
    if boot.size < n_boot / 2:
        return point, float("nan"), float("nan")
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return point, float(low), float(high)


def contrast_interval(groups: Sequence[Sequence[float]], weights: Sequence[float],
                      level: float = 0.95) -> tuple[float, float, float]:
    """(effect, low, high) of a linear combination of group means, with Welch's t interval.

    effect = sum_g w_g m_g (m_g, s_g^2, n_g: mean, sample variance and size of group g); its
    standard error se = sqrt(sum_g a_g) with a_g = w_g^2 s_g^2 / n_g; Welch-Satterthwaite
    degrees of freedom df = (sum_g a_g)^2 / sum_g (a_g^2 / (n_g - 1)); interval effect -+
    t_{df, (1 + level)/2} se (``scipy.stats.t.ppf``). The groups are the fixed settings, the
    values their seeds (docs/science.md section 8). NaN interval when a group has fewer than 2
    values; a point when every group is constant.
    """
    arrs = [np.asarray(g, dtype=np.float64) for g in groups]
    w = np.asarray(weights, dtype=np.float64)
    if not arrs or len(arrs) != w.size:
        raise ValueError("contrast_interval: one weight per group")
    if any(a.size == 0 for a in arrs):
        return (math.nan, math.nan, math.nan)
    effect = float(w @ np.array([a.mean() for a in arrs]))
    if any(a.size < 2 for a in arrs):
        return (effect, math.nan, math.nan)
    n = np.array([a.size for a in arrs], dtype=np.float64)
    parts = w ** 2 * np.array([a.var(ddof=1) for a in arrs]) / n
    se = math.sqrt(float(parts.sum()))
    if se == 0.0:
        return (effect, effect, effect)
    from scipy.stats import t

    df = float(parts.sum() ** 2 / (parts ** 2 / (n - 1)).sum())
    half = float(t.ppf((1.0 + level) / 2.0, df)) * se
    return (effect, effect - half, effect + half)


def linear_interval(groups: Mapping[Hashable, Sequence[float]],
                    stat: Callable[[Mapping[Hashable, np.ndarray]], Any],
                    level: float = 0.95) -> tuple[float, float, float]:
    """(value, low, high) of a statistic that is linear in the group means (a mean of
    differences, a difference of means), with Welch's t interval (:func:`contrast_interval`).

    ``stat`` maps ``{group: means}`` (arrays of one value each) to an array; its
    weights are read off it, w_g = stat(e_g) - stat(0) with e_g the unit mean of group g, and
    checked (ValueError when ``stat`` at the group means is not c + sum_g w_g m_g). Groups of
    weight 0 are left out. With 3 seeds a side this keeps its level where a percentile
    bootstrap does not (docs/science.md section 8)."""
    keys = list(groups)
    zero = {k: np.zeros(1) for k in keys}
    base = float(np.asarray(stat(zero))[0])
    weights = {}
    for k in keys:
        unit = dict(zero)
        unit[k] = np.ones(1)
        w = float(np.asarray(stat(unit))[0]) - base
        if w != 0.0:
            weights[k] = w
    means = {k: np.asarray([np.mean(groups[k])]) for k in keys}
    value = float(np.asarray(stat(means))[0])
    linear = base + sum(w * float(means[k][0]) for k, w in weights.items())
    if not math.isclose(value, linear, rel_tol=1e-9, abs_tol=1e-12):
        raise ValueError("linear_interval: the statistic is not linear in the group means")
    if not weights:
        return (value, value, value)
    _, low, high = contrast_interval([groups[k] for k in weights], list(weights.values()), level)
    return (value, low + base, high + base)
