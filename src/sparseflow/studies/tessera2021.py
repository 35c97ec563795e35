"""Tessera et al. 2021 (claims 6 and 7 of docs/science.md section 7): EGF against the plain
gradient norm as a predictor of accuracy, and the Same Capacity Sparse vs Dense Comparison with
and without BatchNorm."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparseflow.config import Config, run_id
from sparseflow.studies.claims import UNMEASURABLE, Claim, verdict
from sparseflow.studies.figures import PaperFigure, tessera2021_tables
from sparseflow.studies.setting import Setting, base_pairs

#: the keys the study varies itself (a setting of one is refused) and why
VARIED: dict[str, str] = {
    "arch.batchnorm": "it compares BatchNorm off and on", "seed": "it repeats every cell",
    **dict.fromkeys(("optim.name", "optim.lr"), "it compares momentum and adam"),
    **dict.fromkeys(("model", "model_args", "method", "distribution", "init", "arch.widths",
                     "arch.width", "arch.depth", "sparse.dense_width"),
                    "its SC-SDC pairs are sparse and dense MLPs of set widths and depths")}


def preset_sweep(scale: str, setting: Setting | None = None) -> Any:
    """The preset's SC-SDC sweep at ``scale`` with the user's ``setting`` over its base."""
    from sparseflow.sweep.spec import Sweep

    setting = setting or Setting()

    sizes = {"smoke": (64, [16, 32], [1], [0, 1], "1ep"),
             "cpu": (256, [26, 77, 128], [1, 2, 4], [0, 1, 2], "3ep"),
             "paper": (3076, [308, 923, 1538, 2153, 2768], [1, 2, 4], [0, 1, 2, 3, 4], "500ep")}
    ws, wds, depths, seeds, duration = sizes[scale]
    base = base_pairs(["dataset=fashion_mnist", f"train.duration={duration}", "flow.every=0"],
                      setting)
    name = f"tessera2021-{scale}" + (f"-{setting.digest}" if setting.pairs else "")
    return Sweep(name=name, base=base,
                 grid={"arch.batchnorm": [False, True]},
                 zip={"optim.name": ["momentum", "adam"], "optim.lr": [0.05, 0.001]},
                 seeds=seeds, path=Path(f"<tessera2021 {scale} preset"
                                        + (f" with {setting.describe()}>" if setting.pairs
                                           else ">")),
                 scsdc={"sparse_width": ws, "dense_widths": wds, "depths": depths})


def plan(scale: str, setting: Setting) -> list[Config]:
    """Every run the preset trains at ``scale``: the SC-SDC sweep's runs."""
    from sparseflow.sweep.spec import expand

    return expand(preset_sweep(scale, setting))


def tessera2021(root: Path, scale: str, workers: int | None, progress: bool,
                echo: Callable[[str], None], setting: Setting | None = None,
                figures: list[PaperFigure] | None = None) -> tuple[list[Claim], list[str]]:
    """Claims 6 and 7: EGF vs gradient norm correlations, BatchNorm in SC-SDC; ``setting``:
    the user's settings over the preset's base (``studies/setting.py``)."""
    from sparseflow.analysis.runs import correlate, scsdc_results
    from sparseflow.sweep.client import run_sweep
    from sparseflow.sweep.spec import expand

    sweep = preset_sweep(scale, setting)
    configs = expand(sweep)  # every config checked before anything trains
    run_sweep(sweep, root, workers=workers, progress=progress, echo=echo)
    corr = correlate(root, sweep)["rows"]
    tau = {r["measure"]: abs(r["kendall_tau"]) for r in corr
           if r["group"] == "sparse" and r["target"] == "test_accuracy"}
    best_egf = max(tau["EGF_1"], tau["EGF_2"])
    best_g = max(tau["||g||_1"], tau["||g||_2"])
    ok6 = None if best_egf != best_egf or best_g != best_g else best_egf > best_g
    rows = scsdc_results(root, sweep)["rows"]
    if figures is not None:
        figures.extend(tessera2021_tables(corr, rows))
    by_bn: dict[bool, list[float]] = {False: [], True: []}
    for r in rows:
        if r["mwu_p"] == r["mwu_p"]:
            by_bn[r["arch.batchnorm"] == "True"].append(r["mwu_p"])
    ok7 = None if not by_bn[False] or not by_bn[True] else (
        statistics.median(by_bn[True]) < statistics.median(by_bn[False]))
    claims = [
        Claim(6, "For sparse nets EGF correlates with performance better than the plain "
              "gradient norm", verdict(ok6), "|Kendall tau| with test accuracy, sparse runs: "
              + ", ".join(f"{k} {v:.3f}" for k, v in tau.items())),
        Claim(7, "BatchNorm helps sparse nets more than dense ones (SC-SDC p-values)",
              verdict(ok7), "median one-sided Mann-Whitney p (H1: sparse > dense): "
              f"without BN {statistics.median(by_bn[False]) if by_bn[False] else float('nan'):.3f}"
              f", with BN {statistics.median(by_bn[True]) if by_bn[True] else float('nan'):.3f}"),
        Claim(7, "Adam with coupled L2 and BatchNorm collapses while AdamW does not; PReLU and "
              "Swish favour sparse nets", UNMEASURABLE, "not part of this preset's grid (add "
              "optim.l2, optim.name=adamw and arch.activation axes to an scsdc sweep)"),
    ]
    return claims, [run_id(c) for c in configs]
