"""The builders of claim 7 (docs/science.md section 7, claim 7; Tessera et al. 2021, section
9.2): the Same Capacity Sparse vs Dense Comparison (SC-SDC, section 5) with and without
BatchNorm (:func:`bn_claim`, 7a), for Adam with coupled L2 against AdamW (:func:`l2_claim`,
7b) and over activations and optimisers (:func:`activation_claim`, 7c). Each takes one sweep's
``analysis.runs.scsdc_results`` and returns its :class:`~sparseflow.studies.claims.Claim`, the
effect with its Welch t interval over seeds. Pure: no training (tests feed them synthetic
results).

``studies/tessera2021.py`` (the sweeps, claim 6 and the preset) imports from here and
re-exports every public name.
"""

from __future__ import annotations

import statistics
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from sparseflow.analysis.stats import linear_interval
from sparseflow.studies.claims import UNMEASURABLE, Claim, finite, interval_verdict

#: coupled L2 of Adam+L2 and the decoupled weight decay of AdamW: one coefficient, so the two
#: differ only in how the decay is applied (section 15); on Linear weights only
L2 = 5e-4
#: claim 7b: the accuracy gap (AdamW minus Adam+L2, both with BatchNorm) that counts as a collapse
COLLAPSE = 0.05
#: claim 7c: the activations whose sparse-vs-dense difference is set against ReLU's
FAVOURED = ("prelu", "swish")


def _interval(v: float, low: float, high: float) -> str:
    if low == low and high == high:
        return f"{v:+.3f} [{low:+.3f}, {high:+.3f}]"
    return f"{v:+.3f} (no interval)"


# -- claim 7 -------------------------------------------------------------------------------------
_STATS = {"n_sparse", "n_dense", "mean_sparse", "mean_dense", "welch_t", "welch_p", "mwu_u",
          "mwu_p", "kind", "seed", "status", "accuracy"}


def _cells(res: Mapping[str, Any], drop: Sequence[str] = ()) -> dict[tuple, dict[str, Any]]:
    """``scsdc_results`` as ``{cell key (its axes minus drop): cell}``; a cell holds its p-value
    ``row`` (None when no run finished), the finished runs' accuracies per kind (``sparse``,
    ``dense``) and how many runs of each kind ``diverged``."""
    def key(d: Mapping[str, Any]) -> tuple:
        return tuple((k, v) for k, v in d.items() if k not in _STATS and k not in drop)

    out: dict[tuple, dict[str, Any]] = {}
    for r in res["runs"]:
        c = out.setdefault(key(r), {"row": None, "sparse": [], "dense": [],
                                    "diverged": {"sparse": 0, "dense": 0}})
        if r["status"] == "finished" and r["accuracy"] is not None:
            c[r["kind"]].append(float(r["accuracy"]))
        elif r["status"] == "diverged":
            c["diverged"][r["kind"]] += 1
    for row in res["rows"]:
        out[key(row)]["row"] = row
    return out


def _median(ps: list[float]) -> float:
    ps = [p for p in ps if p == p]
    return statistics.median(ps) if ps else float("nan")


def bn_claim(res: Mapping[str, Any]) -> Claim:
    """Claim 7a from the ``bn`` sweep's ``scsdc_results``: effect = mean over (optimiser,
    depth, dense width) of (S - D with BatchNorm) - (S - D without), S/D the mean accuracy of
    the sparse / dense runs, with its Welch t interval over seeds; per-cell one-sided p-values
    summarised as medians and counts below 0.05."""
    cells = _cells(res)
    groups: dict[Hashable, list[float]] = {}
    matched = []
    for key in cells:
        bn = dict(key).get("arch.batchnorm")
        if bn != "True":
            continue
        off = tuple((k, "False" if k == "arch.batchnorm" else v) for k, v in key)
        if off not in cells or not all(cells[k][kind] for k in (key, off)
                                       for kind in ("sparse", "dense")):
            continue
        matched.append((key, off))
        for k in (key, off):
            for kind in ("sparse", "dense"):
                groups[(k, kind)] = cells[k][kind]

    def stat(m: Mapping[Hashable, np.ndarray]) -> np.ndarray:
        return np.mean([(m[(on, "sparse")] - m[(on, "dense")])
                        - (m[(off, "sparse")] - m[(off, "dense")]) for on, off in matched],
                       axis=0)

    text = "BatchNorm helps sparse nets more than dense ones (SC-SDC)"
    if not matched:
        return Claim(7, text, UNMEASURABLE, "no cell finished both with and without BatchNorm")
    eff, lo, hi = linear_interval(groups, stat)
    by = {b: [c["row"] for k, c in cells.items()
              if dict(k)["arch.batchnorm"] == b and c["row"] is not None]
          for b in ("False", "True")}
    parts = []
    for b, name in (("False", "without BN"), ("True", "with BN")):
        rows = by[b]
        parts.append(f"{name}: median p Mann-Whitney {_median([r['mwu_p'] for r in rows]):.3f}"
                     f", Welch {_median([r['welch_p'] for r in rows]):.3f}; Welch p < 0.05 in "
                     f"{sum(r['welch_p'] < 0.05 for r in rows)} of {len(rows)} cells, mean "
                     f"S - D {np.mean([r['mean_sparse'] - r['mean_dense'] for r in rows]):+.4f}")
    n = min(len(v) for v in groups.values())
    return Claim(7, text, interval_verdict(lo, hi), "one-sided H1: acc(S) > acc(D) per cell; "
                 + "; ".join(parts) + f"; {len(matched)} cells matched", effect=finite(eff),
                 ci_low=finite(lo), ci_high=finite(hi), n=n,
                 rule="effect = mean over (optimiser, depth, dense width) of [acc(S) - acc(D) "
                 "with BN] - [acc(S) - acc(D) without BN], 95% Welch t interval over seeds "
                 "(Satterthwaite df over every cell's sparse and dense seeds): held when it "
                 "lies above 0, did not hold when below, inconclusive when it spans 0 or there "
                 "is one seed")


def l2_claim(res: Mapping[str, Any], chance: float | None,
             adam_bn: Mapping[str, Any] | None = None) -> Claim:
    """Claim 7b from the ``l2`` sweep's ``scsdc_results``: effect = mean over dense widths and
    kinds (sparse, dense) of acc(AdamW + BN) - acc(Adam + L2 + BN), Welch over seeds; held
    when its interval lies above ``COLLAPSE``. A run that diverged counts at ``chance``
    accuracy (1 / classes; left out when None). ``adam_bn``: the ``bn`` sweep's results, whose
    Adam + BN cells at depth 4 (no L2) are quoted beside."""
    text = "Adam with coupled L2 and BatchNorm collapses while AdamW does not"
    cells = _cells(res, drop=("optim.lr", "optim.l2", "optim.weight_decay"))
    groups: dict[Hashable, list[float]] = {}
    diverged = {"adam": 0, "adamw": 0}
    for key, c in cells.items():
        opt = dict(key)["optim.name"]
        rest = tuple(kv for kv in key if kv[0] != "optim.name")
        for kind in ("sparse", "dense"):
            lost = c["diverged"][kind]
            diverged[opt] += lost
            groups[(opt, rest, kind)] = c[kind] + ([chance] * lost if chance else [])
    pairs = [(rest, kind) for (opt, rest, kind) in groups
             if opt == "adam" and groups[("adam", rest, kind)]
             and groups.get(("adamw", rest, kind))]
    if not pairs:
        return Claim(7, text, UNMEASURABLE, "no cell finished with both Adam+L2 and AdamW")
    groups = {k: v for k, v in groups.items() if (k[1], k[2]) in pairs}

    def stat(m: Mapping[Hashable, np.ndarray]) -> np.ndarray:
        return np.mean([m[("adamw", r, k)] - m[("adam", r, k)] for r, k in pairs], axis=0)

    eff, lo, hi = linear_interval(groups, stat)
    parts = []
    for opt, name in (("adam", f"Adam+L2 {L2:g}+BN"), ("adamw", f"AdamW wd {L2:g}+BN")):
        accs = []
        for kind in ("sparse", "dense"):
            sub = {k: v for k, v in groups.items() if k[0] == opt and k[2] == kind}
            if sub:
                m, a, b = linear_interval(sub, lambda g: np.mean(list(g.values()), axis=0))
                accs.append(f"{kind} {m:.4f}" + (f" [{a:.4f}, {b:.4f}]" if a == a else ""))
        parts.append(f"{name}: " + ", ".join(accs))
    if adam_bn is not None:
        ref = [c for k, c in _cells(adam_bn).items()
               if dict(k).get("optim.name") == "adam" and dict(k).get("arch.batchnorm") == "True"
               and dict(k).get("depth") == "4"]
        if ref:
            parts.append("Adam+BN without L2: " + ", ".join(
                f"{kind} {np.mean([np.mean(c[kind]) for c in ref if c[kind]]):.4f}"
                for kind in ("sparse", "dense")))
    if any(diverged.values()):
        parts.append(f"diverged runs (counted at chance {chance}): Adam+L2 {diverged['adam']}, "
                     f"AdamW {diverged['adamw']}")
    n = min(len(v) for v in groups.values())
    return Claim(7, text, interval_verdict(lo, hi, COLLAPSE), "4 hidden layers, mean test "
                 "accuracy [95% Welch t interval over seeds]: " + "; ".join(parts),
                 effect=finite(eff), ci_low=finite(lo), ci_high=finite(hi), n=n,
                 rule="effect = mean over dense widths and over sparse/dense of acc(AdamW, "
                 f"decoupled wd {L2:g}, BN) - acc(Adam, coupled L2 {L2:g}, BN) at depth 4, 95% "
                 f"Welch t interval over seeds: held (a collapse) when it lies above "
                 f"{COLLAPSE}, did not hold when below {COLLAPSE}, inconclusive when it spans "
                 f"{COLLAPSE} or there is one seed; a diverged run counts at chance accuracy")


def activation_claim(res: Mapping[str, Any]) -> Claim:
    """Claim 7c from the ``act`` sweep's ``scsdc_results``: per activation the optimisers whose
    cell has Welch p < 0.05 (H1: S > D) and the mean S - D over optimisers; effect = mean over
    optimisers of [mean of (S - D) over ``FAVOURED``] - (S - D with ReLU), Welch t interval over
    seeds."""
    text = "PReLU and Swish favour sparse nets (SC-SDC over optimisers)"
    cells = _cells(res, drop=("optim.lr", "depth", "dense_width"))
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for key, c in cells.items():
        d = dict(key)
        if c["sparse"] and c["dense"] and c["row"] is not None:
            by.setdefault(d["arch.activation"], {})[d["optim.name"]] = c
    favoured = [a for a in FAVOURED if a in by]
    opts = [o for o in by.get("relu", {}) if all(o in by[a] for a in favoured)]
    if not favoured or not opts:
        return Claim(7, text, UNMEASURABLE, "no optimiser finished with ReLU and PReLU/Swish")
    groups = {(a, o, kind): by[a][o][kind] for a in by for o in by[a]
              for kind in ("sparse", "dense")}

    def diff(m: Mapping[Hashable, np.ndarray], a: str, o: str) -> np.ndarray:
        return m[(a, o, "sparse")] - m[(a, o, "dense")]

    def stat(m: Mapping[Hashable, np.ndarray]) -> np.ndarray:
        return np.mean([np.mean([diff(m, a, o) for a in favoured], axis=0) - diff(m, "relu", o)
                        for o in opts], axis=0)

    sub = {k: v for k, v in groups.items() if k[0] in ("relu", *favoured) and k[1] in opts}
    eff, lo, hi = linear_interval(sub, stat)
    parts = []
    for a, per in by.items():
        own = {k: v for k, v in groups.items() if k[0] == a}
        m, x, y = linear_interval(own, lambda g, a=a, per=per: np.mean(
            [diff(g, a, o) for o in per], axis=0))
        sig = [o for o, c in per.items() if c["row"]["welch_p"] < 0.05]
        parts.append(f"{a}: S - D {_interval(m, x, y)}, Welch p < 0.05 for {len(sig)} of "
                     f"{len(per)} ({', '.join(sig) or 'none'})")
    n = min(len(v) for v in sub.values())
    return Claim(7, text, interval_verdict(lo, hi), "mean acc(S) - acc(D) over optimisers "
                 "[95% Welch t interval over seeds]; " + "; ".join(parts),
                 effect=finite(eff), ci_low=finite(lo), ci_high=finite(hi), n=n,
                 rule="effect = mean over optimisers (" + ", ".join(opts) + ") of [mean of "
                 "acc(S) - acc(D) over " + "/".join(favoured) + "] - [acc(S) - acc(D) with "
                 "ReLU], 95% Welch t interval over seeds: held when it lies above 0, did not "
                 "hold when below, inconclusive when it spans 0 or there is one seed")

