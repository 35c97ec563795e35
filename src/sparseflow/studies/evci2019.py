"""Evci et al. 2019 (claim 5 of docs/science.md section 7): the linear path from init to the
pruned solution, the barrier between a scratch solution and the pruned one, and curves inside the
sparse subspace and through the dense space."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sparseflow.config import Config, run_id
from sparseflow.store.database import Store
from sparseflow.store.paths import store_path
from sparseflow.studies.claims import Claim, finished_summary, run_all, verdict
from sparseflow.studies.figures import PaperFigure, evci2019_figures
from sparseflow.studies.setting import Setting, study_config, varied_keys

RUNS = {"scratch": ["method=static", "sparse.mask=pruned"], "lottery": ["method=lottery"]}


#: the keys the study varies itself (a setting of one is refused) and why
VARIED: dict[str, str] = varied_keys(RUNS, "it compares scratch with the lottery ticket")


def plan(scale: str, setting: Setting) -> list[Config]:
    """Every run the preset trains itself at ``scale``: scratch on the pruned mask and the
    lottery ticket (the pruned run, their source, is added by the sweep)."""
    base = {"smoke": ["model=lenet300", "train.duration=1ep"],
            "cpu": ["model=lenet300", "train.duration=15ep"],
            "paper": ["model=lenet300", "train.duration=50ep"]}[scale]
    base = base + ["sparsity=0.95", "arch.init=glorot", "flow.enabled=false"]
    return [study_config(base, setting, RUNS[name]) for name in ("scratch", "lottery")]


def evci2019(root: Path, scale: str, workers: int | None, progress: bool,
             echo: Callable[[str], None], setting: Setting | None = None,
             figures: list[PaperFigure] | None = None) -> tuple[list[Claim], list[str]]:
    """Claim 5: monotone path init -> pruned; scratch -> pruned barrier; dense curves remove
    it. ``setting``: the user's settings over the preset's base (``studies/setting.py``)."""
    from sparseflow.analysis.runs import curve_runs, interpolate_runs

    setting = setting or Setting()
    scratch, ticket = plan(scale, setting)
    run_all([scratch, ticket], root, workers, progress, echo)
    with Store(store_path(root)) as store:
        pruned = finished_summary(store, ticket)["ticket_source"]
    sc = run_id(scratch)
    alphas = "0:1:6" if scale == "smoke" else "-0.2:1.2:29"
    init_path = interpolate_runs(root, f"{sc}@0", pruned, alphas=alphas)
    end_path = interpolate_runs(root, sc, pruned, alphas=alphas)
    epochs = {"smoke": 1, "cpu": 10, "paper": 20}[scale]
    curves = {sub: curve_runs(root, sc, pruned, subspace=sub, epochs=epochs,
                              points=11 if scale == "smoke" else 21)
              for sub in ("sparse", "dense")}
    ends = max(end_path["loss_a"], end_path["loss_b"])
    over = {sub: c["max_loss"] - ends for sub, c in curves.items()}
    # held: a real linear barrier, still a substantial part of it on the best curve inside the
    # sparse subspace, and (almost) none left on the curve through the dense space
    barrier = end_path["barrier"] > 0.1
    removed = over["dense"] < 0.1 and over["sparse"] > max(0.1, 0.25 * end_path["barrier"])
    if figures is not None:
        figures.extend(evci2019_figures(
            {"scratch init -> pruned": init_path, "scratch -> pruned": end_path}, curves))
    return [
        Claim(5, "A linear path from init to the pruned solution decreases monotonically",
              verdict(init_path["monotone"]), f"scratch init -> pruned: monotone "
              f"{init_path['monotone']}, barrier {init_path['barrier']:.3f}"),
        Claim(5, "A path between a scratch solution and the pruned one has a barrier in the "
              "sparse subspace, which a curve allowed into the dense space removes",
              verdict(barrier and removed), f"linear barrier {end_path['barrier']:.3f}; "
              f"Bezier max above the endpoints: sparse subspace {over['sparse']:+.3f}, dense "
              f"{over['dense']:+.3f}"),
    ], [sc, run_id(ticket), pruned]
