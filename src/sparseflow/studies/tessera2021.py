"""Tessera et al. 2021 (claims 6 and 7 of docs/science.md section 7): EGF against the plain
gradient norm as a predictor of accuracy, and the Same Capacity Sparse vs Dense Comparison
(SC-SDC, section 5) with and without BatchNorm, for Adam with coupled L2 against AdamW, and over
activations and optimisers.

The preset trains three SC-SDC sweeps (``preset_sweeps``; ``plan`` lists all their runs):

- ``bn``: BatchNorm off / on x (SGD momentum lr 0.05, Adam lr 0.001) x depths x dense widths;
- ``l2``: with BatchNorm, Adam with coupled L2 against AdamW with the same decoupled
  coefficient (``L2``), on the 4-hidden-layer MLP (the setting of the paper's collapse);
- ``act``: activations x the paper's five optimisers (``LR``) at one depth and dense width.

Gradient flow is averaged over ``flow.points`` = 11 evenly spaced points, steps
``round(i * T / 10)`` (docs/science.md section 4): at paper scale (500 epochs) these are the
ends of epochs 0, 50, ..., 500, the paper's 11 evenly spaced epochs; the smoke (1 epoch) and cpu
(3 epochs) runs are shorter than 10 epochs, so there the points are the same fractions of
training (every 0.1 and 0.3 epochs), not epoch boundaries.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparseflow.analysis.stats import kendall_tau_b, linear_interval, tau_gap
from sparseflow.analysis.tables import PARAMETER_SETS, POOLED
from sparseflow.config import Config, run_id
from sparseflow.studies.claims import (
    FAILED,
    HELD,
    INCONCLUSIVE,
    UNMEASURABLE,
    Claim,
    finite,
    interval_verdict,
    run_all,
)
from sparseflow.studies.figures import PaperFigure, tessera2021_tables
from sparseflow.studies.setting import Setting, base_pairs

#: peak learning rate per optimiser. The paper's grid has 0.001 and 0.1 (docs/science.md 9.2):
#: 0.1 for plain SGD, 0.001 for Adam and RMSProp; SGD with momentum 0.9 at 0.05 (its effective
#: step 0.5 would diverge at 0.1 in the deep sparse MLPs without BatchNorm) and Adagrad at 0.01
#: (torch's default: 0.001 barely moves it in a few epochs)
LR = {"sgd": 0.1, "momentum": 0.05, "adam": 0.001, "rmsprop": 0.001, "adagrad": 0.01}
#: coupled L2 of Adam+L2 and the decoupled weight decay of AdamW: one coefficient, so the two
#: differ only in how the decay is applied (section 15); on Linear weights only
L2 = 5e-4
#: claim 7b: the accuracy gap (AdamW minus Adam+L2, both with BatchNorm) that counts as a collapse
COLLAPSE = 0.05
#: claim 7c: the activations whose sparse-vs-dense difference is set against ReLU's
FAVOURED = ("prelu", "swish")
#: bootstrap resamples of claim 6 (over runs) and their seed; claim 7's intervals are Welch's
N_BOOT, BOOT_SEED = 4000, 0  # the defaults of tau_gap


@dataclass(frozen=True)
class Scale:
    """The preset's grid at one scale (run counts in docs/science.md section 9.4)."""

    sparse_width: int
    dense_widths: list[int]
    depths: list[int]
    seeds: list[int]
    duration: str
    optimisers: list[str]  # the activation sweep's optimisers
    activations: list[str]
    act_depth: int  # the activation sweep's depth and dense width
    act_width: int


SCALES = {
    "smoke": Scale(64, [16], [1], [0], "1ep", ["momentum", "adam"],
                   ["relu", "prelu", "swish"], 1, 16),
    "cpu": Scale(256, [26, 77, 128], [1, 2, 4], [0, 1, 2], "3ep", list(LR),
                 ["relu", "prelu", "swish"], 2, 77),
    "paper": Scale(3076, [308, 923, 1538, 2153, 2768], [1, 2, 4], [0, 1, 2, 3, 4], "500ep",
                   list(LR), ["relu", "prelu", "elu", "swish", "srelu", "sigmoid"], 2, 923),
}

#: the keys the study varies itself (a setting of one is refused) and why
VARIED: dict[str, str] = {
    "arch.batchnorm": "it compares BatchNorm off and on", "seed": "it repeats every cell",
    **dict.fromkeys(("optim.name", "optim.lr"), "it compares the paper's optimisers"),
    **dict.fromkeys(("optim.l2", "optim.weight_decay"), "it compares Adam with coupled L2 and "
                    "AdamW"),
    "arch.activation": "it compares activations",
    "flow.points": "its correlations average gradient flow over 11 evenly spaced points",
    **dict.fromkeys(("model", "model_args", "method", "distribution", "init", "arch.widths",
                     "arch.width", "arch.depth", "sparse.dense_width"),
                    "its SC-SDC pairs are sparse and dense MLPs of set widths and depths")}


def preset_sweeps(scale: str, setting: Setting | None = None) -> dict[str, Any]:
    """The preset's SC-SDC sweeps at ``scale`` (``bn``, ``l2``, ``act``; module docstring)
    with the user's ``setting`` over their base."""
    from sparseflow.sweep.spec import Sweep

    setting = setting or Setting()
    s = SCALES[scale]
    common = [f"train.duration={s.duration}", "flow.every=0", "flow.points=11"]
    digest = f"-{setting.digest}" if setting.pairs else ""
    where = f" with {setting.describe()}>" if setting.pairs else ">"

    def sweep(part: str, extra: list[str], grid: dict[str, list[Any]],
              zipped: dict[str, list[Any]], depths: list[int], widths: list[int]) -> Any:
        return Sweep(name=f"tessera2021-{scale}{part}{digest}",
                     base=base_pairs(["dataset=fashion_mnist", *common, *extra], setting),
                     grid=grid, zip=zipped, seeds=s.seeds,
                     path=Path(f"<tessera2021 {scale} preset{part}" + where),
                     scsdc={"sparse_width": s.sparse_width, "dense_widths": widths,
                            "depths": depths})

    return {
        "bn": sweep("", [], {"arch.batchnorm": [False, True]},
                    {"optim.name": ["momentum", "adam"], "optim.lr": [LR["momentum"],
                                                                      LR["adam"]]},
                    s.depths, s.dense_widths),
        "l2": sweep("-l2", ["arch.batchnorm=true"], {},
                    {"optim.name": ["adam", "adamw"], "optim.lr": [LR["adam"], LR["adam"]],
                     "optim.l2": [L2, 0.0], "optim.weight_decay": [0.0, L2]},
                    [4], s.dense_widths),
        # arch.batchnorm=false as in the bn sweep: its ReLU cells are the bn sweep's runs
        "act": sweep("-act", ["arch.batchnorm=false"], {"arch.activation": s.activations},
                     {"optim.name": s.optimisers, "optim.lr": [LR[o] for o in s.optimisers]},
                     [s.act_depth], [s.act_width]),
    }


def preset_sweep(scale: str, setting: Setting | None = None) -> Any:
    """The preset's BatchNorm SC-SDC sweep (the one claim 7a and the paper's Tables 1-2 use)."""
    return preset_sweeps(scale, setting)["bn"]


def plan(scale: str, setting: Setting) -> list[Config]:
    """Every run the preset trains at ``scale``: the runs of its three sweeps, each once."""
    from sparseflow.sweep.spec import expand

    out: dict[str, Config] = {}
    for sweep in preset_sweeps(scale, setting).values():
        for cfg in expand(sweep):
            out.setdefault(run_id(cfg), cfg)
    return list(out.values())


def _interval(v: float, low: float, high: float) -> str:
    if low == low and high == high:
        return f"{v:+.3f} [{low:+.3f}, {high:+.3f}]"
    return f"{v:+.3f} (no interval)"


# -- claim 6 -------------------------------------------------------------------------------------
def correlation_claim(runs: Sequence[Mapping[str, Any]]) -> tuple[Claim, list[dict[str, Any]]]:
    """Claim 6 from the per-run records of ``analysis.runs.correlate`` (sparse runs): per
    parameter set (``PARAMETER_SETS``) and stratum (pooled, each depth), |Kendall tau| of every
    measure with test accuracy and the gap best |tau| of EGF_1/EGF_2 minus best of
    ||g||_1/||g||_2 with its bootstrap interval over runs. The verdict is the pooled gap over
    the weights (the set EGF is defined over, docs/science.md section 4), against 0."""
    sparse = [r for r in runs if r["group"] == "sparse"]
    strata = [POOLED, *sorted({r["stratum"] for r in sparse} - {POOLED}, key=_natural)]
    gaps: list[dict[str, Any]] = []
    for pset, (gnames, enames) in PARAMETER_SETS.items():
        for stratum in strata:
            rs = [r for r in sparse if stratum == POOLED or r["stratum"] == stratum]
            rs = [r for r in rs if all(_ok(r.get(m)) for m in (*gnames, *enames,
                                                                "test_accuracy"))]
            acc = [r["test_accuracy"] for r in rs]
            taus = {m: abs(kendall_tau_b([r[m] for r in rs], acc)) if len(rs) >= 3
                    else float("nan") for m in (*enames, *gnames)}
            g, lo, hi = (tau_gap([[r[m] for r in rs] for m in enames],
                                 [[r[m] for r in rs] for m in gnames], acc)
                         if len(rs) >= 3 else (float("nan"),) * 3)
            gaps.append({"parameters": pset, "stratum": stratum, "n": len(rs), **taus,
                         "gap": g, "ci_low": lo, "ci_high": hi,
                         "verdict": interval_verdict(lo, hi) if g == g else UNMEASURABLE})
    main = gaps[0]  # weights, pooled
    other = next(x for x in gaps if x["parameters"] == "all" and x["stratum"] == POOLED)

    def describe(x: dict[str, Any]) -> str:
        if x["n"] < 3:
            return f"{x['stratum']} n={x['n']}: too few runs"
        names = [m for m in x if m.startswith(("EGF", "||g"))]
        return (f"{x['stratum']} n={x['n']}: " + " ".join(f"{m} {x[m]:.3f}" for m in names)
                + f", gap {_interval(x['gap'], x['ci_low'], x['ci_high'])} ({x['verdict']})")

    text = ("|Kendall tau| with test accuracy over the sparse runs; gap = best EGF - best "
            "gradient norm, 95% bootstrap interval over runs. Over the weights (the paper's "
            "set, EGF being defined over the layers' weights; the verdict's): "
            + "; ".join(describe(x) for x in gaps if x["parameters"] == "weights")
            + ". Over all parameters (||g|| as logged, EGF over every tensor): "
            + "; ".join(describe(x) for x in gaps if x["parameters"] == "all") + ". ")
    if main["verdict"] == UNMEASURABLE:
        text += "Too few finished sparse runs to correlate."
    elif other["verdict"] != main["verdict"]:
        text += (f"What changes the verdict: over all parameters it would be "
                 f"'{other['verdict']}'.")
    else:
        text += "Over all parameters the verdict is the same."
    claim = Claim(6, "For sparse nets EGF correlates with performance better than the plain "
                  "gradient norm", main["verdict"], text, effect=finite(main["gap"]),
                  ci_low=finite(main["ci_low"]), ci_high=finite(main["ci_high"]), n=main["n"],
                  rule="effect = max(|tau EGF_1|, |tau EGF_2|) - max(|tau ||g_w||_1|, "
                  "|tau ||g_w||_2|) (Kendall tau-b with test accuracy, sparse runs pooled over "
                  "depths, optimisers, activations and BatchNorm, flow measures averaged over 11 "
                  "evenly spaced points, both over the Linear weights), 95% bootstrap interval "
                  f"over runs ({N_BOOT} resamples, seed {BOOT_SEED}): held when it lies above 0, "
                  "did not hold when below, inconclusive when it spans 0. Within one depth "
                  "||g_w||_1 = L * EGF_1 ranks the runs alike, so there the gap comes from p = 2"
                  " only")
    return claim, gaps


def _natural(text: str) -> tuple:
    """``depth=2`` before ``depth=10``."""
    head, _, tail = text.rpartition("=")
    return (head, int(tail)) if tail.isdigit() else (head, -1, tail)


def _ok(v: Any) -> bool:
    return v is not None and v == v and abs(v) != float("inf")


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


def _chance(res: Mapping[str, Any], sweep: Any) -> float | None:
    """1 / classes of the sweep's dataset when one of its runs diverged (else None)."""
    if not any(r["status"] == "diverged" for r in res["runs"]):
        return None
    from sparseflow.sweep.spec import expand
    from sparseflow.training.run import load_data

    return 1.0 / load_data(expand(sweep)[0]).num_classes


def tessera2021(root: Path, scale: str, workers: int | None, progress: bool,
                echo: Callable[[str], None], setting: Setting | None = None,
                figures: list[PaperFigure] | None = None) -> tuple[list[Claim], list[str]]:
    """Claims 6 and 7: EGF vs gradient norm correlations over the same parameters, and the
    SC-SDC comparisons (BatchNorm, Adam+L2 vs AdamW, activations); ``setting``: the user's
    settings over the preset's base (``studies/setting.py``)."""
    from sparseflow.analysis.runs import correlate, scsdc_results

    sweeps = preset_sweeps(scale, setting)
    configs = plan(scale, setting or Setting())  # every config checked before anything trains
    run_all(configs, root, workers, progress, echo)
    corr = correlate(root, list(sweeps.values()), by="arch.depth",
                     out=Path(root) / "analyses" / f"correlate-{sweeps['bn'].name}")
    claim6, gaps = correlation_claim(corr["runs"])
    res = {k: scsdc_results(root, s) for k, s in sweeps.items()}
    claims = [claim6, bn_claim(res["bn"]),
              l2_claim(res["l2"], _chance(res["l2"], sweeps["l2"]), res["bn"]),
              activation_claim(res["act"])]
    if figures is not None:
        figures.extend(tessera2021_tables(corr["rows"], res["bn"]["rows"], gaps=gaps,
                                          optimisers=res["l2"]["rows"],
                                          activations=res["act"]["rows"]))
    assert all(c.verdict in (HELD, FAILED, INCONCLUSIVE, UNMEASURABLE) for c in claims)
    return claims, [run_id(c) for c in configs]
