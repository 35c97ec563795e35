"""Statistics of the studies: one-sided sparse-vs-dense tests and rank correlations (scipy).

SC-SDC (Tessera et al. 2021) tests H1: acc(sparse) > acc(dense) over seeds, one-sided, with
Welch's t-test (unequal variances) and the Mann-Whitney U test. The correlation table relates
each gradient-flow measure to test accuracy / loss across runs with Kendall's tau and Spearman's
rho (two-sided p-values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _scipy_stats() -> Any:
    try:
        from scipy import stats
    except ImportError:
        from sparseflow.errors import UserError

        raise UserError("statistics need scipy (pip install 'sparseflow[analysis]')") from None
    return stats


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
