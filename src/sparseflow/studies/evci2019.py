"""Evci et al. 2019 (claim 5 of docs/science.md section 7) across settings, with intervals.

The paper (section 9.3) shows on ResNet-50/ImageNet that the straight line from init to the
pruned solution decreases monotonically, that a scratch solution (trained on the pruned mask
from a fresh init) is separated from the pruned one by a barrier inside the sparse subspace,
and that curves allowed into the dense space connect them. The preset repeats the experiment on
a grid of settings: every model of ``MODELS`` x sparsity of ``SPARSITIES`` x seed of
``seeds_for(scale)``. Per (model, sparsity, seed):

- the pruned solution: gradual magnitude pruning (section 3), seed ``SOURCE_SEED + seed``
  (added by the sweep as the source of the scratch run);
- scratch: the pruned run's final mask, a fresh init (``seed``), trained alike;
- the straight line scratch init -> pruned (monotone?), and four curves scratch -> pruned
  (section 6): quadratic Bezier and polygonal chain, each inside the sparse subspace and
  through the dense space, with the straight line on the same t grid.

The judging (:func:`judge`: the per-seed measures of each case, :class:`CaseResult`, made into
the claim's rows with intervals over seeds and settings; independent of training) lives in
``studies/curve_verdicts.py``; every public name of it is re-exported here.

Curves are fitted in worker processes (one per ``--workers``, one thread each) and cached
under ``ROOT/analyses/evci2019-SCRATCH-PRUNED/``: a rerun reuses every finished analysis.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sparseflow.config import Config, run_id
from sparseflow.store.database import Store
from sparseflow.store.paths import store_path
from sparseflow.studies.claims import Claim, run_all, seeds_for
from sparseflow.studies.curve_verdicts import (  # noqa: F401 (the unused ones: re-exported)
    BARRIER_THRESHOLD,
    GAP_THRESHOLD,
    KIND_NOUNS,
    KIND_WORDS,
    KINDS,
    MODEL_WORDS,
    MONOTONE_THRESHOLD,
    RISE_TOLERANCE,
    SCOPE,
    SOLVED,
    SOLVED_LOSS,
    SUBSPACES,
    WELCH,
    Case,
    CaseResult,
    _measures,
    case_result,
    density_decades,
    judge,
    largest_rise,
    monotone_share,
    pooled_mean,
    remaining_barrier,
    setting_rows,
    slope,
    sparsity_trend,
)
from sparseflow.studies.figures import PaperFigure, evci2019_figures
from sparseflow.studies.setting import Setting, study_config, varied_keys

#: the models of the grid at each scale (section 9.4)
MODELS: dict[str, tuple[str, ...]] = {"smoke": ("lenet300",), "cpu": ("lenet300", "lenet5"),
                                      "paper": ("lenet300", "lenet5")}
#: the sparsities of the grid at each scale
SPARSITIES: dict[str, tuple[float, ...]] = {"smoke": (0.8, 0.95),
                                            "cpu": (0.8, 0.9, 0.95, 0.98),
                                            "paper": (0.8, 0.9, 0.95, 0.98)}
#: training of the pruned and the scratch runs
TRAIN = {"smoke": "1ep", "cpu": "10ep", "paper": "50ep"}
#: epochs of each curve's fit (section 6: SGD momentum 0.9, lr 0.01, batch 128)
CURVE_EPOCHS = {"smoke": 1, "cpu": 3, "paper": 20}
#: values of t each curve and its straight line are evaluated at (odd: t = 0.5 is one)
POINTS = {"smoke": 11, "cpu": 11, "paper": 21}
#: the grid of the line scratch init -> pruned (its monotonicity is judged on [0, 1])
ALPHAS = {"smoke": "0:1:6", "cpu": "0:1:11", "paper": "-0.2:1.2:29"}
#: the training examples every path is evaluated on (the first N; None: all). 10,000 of
#: Fashion-MNIST's 59,000 (balanced classes) put the standard error of a loss value near 0.01
#: and make the cpu scale fit an hour; the curves are fitted on the whole training set
EXAMPLES: dict[str, int | None] = {"smoke": 2000, "cpu": 10000, "paper": None}
#: seed of the pruning run of seed s: SOURCE_SEED + s (kept apart from the run seeds, so that
#: scratch never starts from the pruning run's own init, which would make it the ticket)
SOURCE_SEED = 1000

RUNS = {"scratch": ["method=static", "sparse.mask=pruned"]}

#: the keys the study varies itself (a setting of one is refused) and why
VARIED: dict[str, str] = {
    **varied_keys(RUNS, "it trains scratch on the pruning run's mask"),
    "model": "it repeats the experiment on LeNet-300-100 and LeNet5",
    "sparsity": "it repeats the experiment at 80%, 90%, 95% and 98% sparsity",
    "seed": "it repeats every setting over seeds",
    "sparse.source_seed": f"each seed s has its own pruning run, seed {SOURCE_SEED} + s",
}


# -- the runs ---------------------------------------------------------------------------------
def base_settings(scale: str) -> list[str]:
    """The settings every run of the preset shares at ``scale``."""
    return [f"train.duration={TRAIN[scale]}", "arch.init=glorot", "flow.enabled=false"]


def run_configs(scale: str, setting: Setting) -> dict[Case, Config]:
    """The scratch run of every (model, sparsity, seed) of the grid; its source, the pruned
    run (seed ``SOURCE_SEED + seed``), is added by the sweep."""
    base = base_settings(scale)
    return {(m, s, seed): study_config(base, setting, [
        f"model={m}", f"sparsity={s}", f"seed={seed}",
        f"sparse.source_seed={SOURCE_SEED + seed}", *RUNS["scratch"]])
        for m in MODELS[scale] for s in SPARSITIES[scale] for seed in seeds_for(scale)}


def plan(scale: str, setting: Setting) -> list[Config]:
    """Every run the preset trains itself at ``scale``: scratch on the pruned mask for each
    model, sparsity and seed (the pruned runs, their sources, are added by the sweep)."""
    return list(run_configs(scale, setting).values())


def pruned_config(scratch: Config) -> Config:
    """The pruning run whose final mask ``scratch`` trains on (training/lineage.py)."""
    from sparseflow.training.lineage import direct_sources

    return direct_sources(scratch)[0]


def analysis_plan(scale: str, configs: Sequence[Config]) -> list[dict[str, Any]]:
    """The analyses after training of the preset's runs ``configs`` (``plan``'s scratch runs),
    one entry each: ``kind`` (interpolate, curve), ``label``, ``config`` (the scratch run),
    ``points`` (evaluations, each a forward pass over ``min(examples, training set)``
    examples; ``examples`` None: the whole training set) and ``epochs`` (a curve's fit: passes
    of forward and backward over the whole training set)."""
    out = []
    n_alphas = len(_grid(ALPHAS[scale]))
    for cfg in configs:
        where = f"{cfg.model} {cfg.sparsity:g} seed {cfg.seed}"
        out.append({"kind": "interpolate", "label": f"line scratch init -> pruned, {where}",
                    "config": cfg, "points": n_alphas, "examples": EXAMPLES[scale],
                    "epochs": 0})
        for kind in KINDS:
            for sub in SUBSPACES:
                out.append({"kind": "curve", "label": f"{KIND_NOUNS[kind]} scratch -> "
                            f"pruned in the {sub} space, then it and the line at "
                            f"{POINTS[scale]} points, {where}", "config": cfg,
                            "points": 2 * POINTS[scale], "examples": EXAMPLES[scale],
                            "epochs": CURVE_EPOCHS[scale]})
    return out


def _grid(alphas: str) -> list[float]:
    from sparseflow.grids import parse_grid

    return list(parse_grid(alphas, "alphas", increasing=True))


# -- the analyses of one case (run in a worker process) -----------------------------------------
def _cached(path: Path, compute: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """``path/result.json`` when an earlier call wrote it (written last and atomically by the
    analysis), else ``compute(path)``; without the figure list."""
    import json

    done = path / "result.json"
    res = json.loads(done.read_text()) if done.exists() else compute(path)
    return {k: v for k, v in res.items() if k != "figures"}


def measure_case(root: str, scratch: str, pruned: str, scale: str, seed: int,
                 threads: int | None = None) -> dict[str, Any]:
    """The analyses of one case: the line scratch init -> pruned (``init``) and the four
    curves scratch -> pruned (``curves``, by ``KIND/SUBSPACE``; each holds the straight line
    on its t grid), as ``interpolate_runs`` / ``curve_runs`` return them. ``threads``: torch
    threads of this process (a worker's: 1)."""
    from sparseflow.analysis.runs import curve_runs, interpolate_runs

    if threads:
        import torch

        torch.set_num_threads(threads)
    examples, alphas = EXAMPLES[scale], ALPHAS[scale]
    epochs, points = CURVE_EPOCHS[scale], POINTS[scale]
    out = Path(root) / "analyses" / f"evci2019-{scratch[:12]}-{pruned[:12]}"
    ex = "all" if examples is None else str(examples)
    tag = alphas.replace(":", "_")
    init = _cached(out / f"init-line-{tag}-{ex}ex", lambda o: interpolate_runs(
        root, f"{scratch}@0", pruned, alphas=alphas, examples=examples, out=o))
    curves = {f"{kind}/{sub}": _cached(
        out / f"{kind}-{sub}-{epochs}ep-{points}pt-{ex}ex-seed{seed}",
        lambda o, kind=kind, sub=sub: curve_runs(
            root, scratch, pruned, kind=kind, subspace=sub, epochs=epochs, points=points,
            seed=seed, examples=examples, out=o))
        for kind in KINDS for sub in SUBSPACES}
    return {"init": init, "curves": curves}


def _measure_all(root: Path, scale: str, jobs: Sequence[tuple[Case, str, str]],
                 workers: int | None, echo: Callable[[str], None]) -> dict[Case, dict[str, Any]]:
    """``measure_case`` of every job: in worker processes (spawned, one thread each) when
    ``workers`` (default: one per core) allows two or more, else in this process."""
    n = min((os.cpu_count() or 1) if workers is None else workers, len(jobs))
    root = Path(root).absolute()
    done: dict[Case, dict[str, Any]] = {}

    def report(case: Case, res: dict[str, Any]) -> None:
        done[case] = res
        m, s, seed = case
        c = res["curves"]
        echo(f"measured {m} {s:g} seed {seed} ({len(done)}/{len(jobs)}): line barrier "
             f"{c['bezier/sparse']['linear_barrier']:.3f}, remaining sparse/dense: " + ", ".join(
                 f"{k} {remaining_barrier(c[k + '/sparse']['loss']):.3f}/"
                 f"{remaining_barrier(c[k + '/dense']['loss']):.3f}" for k in KINDS))

    if n < 2:
        for case, sc, pr in jobs:
            report(case, measure_case(str(root), sc, pr, scale, case[2]))
        return done
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(measure_case, str(root), sc, pr, scale, case[2], 1): case
                   for case, sc, pr in jobs}
        for fut in as_completed(futures):
            report(futures[fut], fut.result())
    return done


# -- the preset ---------------------------------------------------------------------------------
def _representative(results: Mapping[Case, Any], scale: str) -> Case:
    """The case the path and curve figures show: the first model, the sparsity nearest 95%,
    the lowest seed."""
    first = MODELS[scale][0]
    cases = [c for c in results if c[0] == first] or list(results)
    return min(cases, key=lambda c: (abs(c[1] - 0.95), c[2]))


def evci2019(root: Path, scale: str, workers: int | None, progress: bool,
             echo: Callable[[str], None], setting: Setting | None = None,
             figures: list[PaperFigure] | None = None) -> tuple[list[Claim], list[str]]:
    """Claim 5 over models x sparsities x seeds: monotone path init -> pruned; a barrier on
    the line scratch -> pruned; what curves through the dense space remove beyond the sparse
    subspace, and whether that grows with sparsity. ``setting``: the user's settings over the
    preset's base (``studies/setting.py``)."""
    setting = setting or Setting()
    cfgs = run_configs(scale, setting)
    run_all(list(cfgs.values()), root, workers, progress, echo)
    jobs, failed, runs = [], [], []
    with Store(store_path(root)) as store:
        for case, cfg in cfgs.items():
            sc, pr = run_id(cfg), run_id(pruned_config(cfg))
            runs += [sc, pr]
            if all((store.get_run(r) or {}).get("status") == "finished" for r in (sc, pr)):
                jobs.append((case, sc, pr))
            else:
                failed.append(f"{case[0]} {case[1]:g} seed {case[2]}")
    measured = _measure_all(root, scale, jobs, workers, echo)
    results = [case_result(case, measured[case]) for case, _, _ in jobs]
    claims = judge(results, failed)
    if figures is not None and measured:
        case = _representative(measured, scale)
        m = measured[case]
        first = m["curves"][f"{KINDS[0]}/{SUBSPACES[0]}"]
        paths = {"scratch init -> pruned": m["init"],
                 "scratch -> pruned": {"alphas": first["ts"], "loss": first["linear_loss"],
                                       "split": m["init"].get("split", "train")}}
        where = (f"{MODEL_WORDS.get(case[0], case[0])} at {case[1]:.0%} sparsity, seed "
                 f"{case[2]}")
        figures.extend(evci2019_figures(paths, m["curves"], setting_rows(results), where))
    return claims, list(dict.fromkeys(runs))
