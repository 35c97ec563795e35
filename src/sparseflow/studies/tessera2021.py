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

Claim 7's builders (:func:`bn_claim`, :func:`l2_claim`, :func:`activation_claim`) live in
``studies/scsdc_claims.py`` and are re-exported here with its constants (``L2``, ``COLLAPSE``,
``FAVOURED``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparseflow.analysis.stats import kendall_tau_b, tau_gap
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
from sparseflow.studies.scsdc_claims import (  # noqa: F401 (the unused ones: re-exported)
    COLLAPSE,
    FAVOURED,
    L2,
    _interval,
    activation_claim,
    bn_claim,
    l2_claim,
)
from sparseflow.studies.setting import Setting, base_pairs

#: peak learning rate per optimiser. The paper's grid has 0.001 and 0.1 (docs/science.md 9.2):
#: 0.1 for plain SGD, 0.001 for Adam and RMSProp; SGD with momentum 0.9 at 0.05 (its effective
#: step 0.5 would diverge at 0.1 in the deep sparse MLPs without BatchNorm) and Adagrad at 0.01
#: (torch's default: 0.001 barely moves it in a few epochs)
LR = {"sgd": 0.1, "momentum": 0.05, "adam": 0.001, "rmsprop": 0.001, "adagrad": 0.01}
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


# -- claim 7 (its builders: studies/scsdc_claims.py) ---------------------------------------------
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
