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

Measures (section 6; training loss on the first ``EXAMPLES`` training examples): the linear
barrier of the line scratch -> pruned, and for each curve its *remaining barrier*
``max_t L(phi(t)) - max(L(phi(0)), L(phi(1)))`` (>= 0: the grid holds t = 0 and 1). The gap
``remaining(sparse) - remaining(dense)`` of one curve kind is what the dense space removes
beyond the sparse subspace. Intervals (section 8): per setting, Student's t over seeds
(``summarize``); pooled over settings and for the trend with sparsity, both linear
combinations of the setting means, Welch's t interval with Satterthwaite's degrees of freedom
(``contrast_interval``); the share of lines init -> pruned without a rise above
``RISE_TOLERANCE``, the exact (Clopper-Pearson) binomial interval. (A percentile bootstrap
that resamples 3 seeds within each setting is too narrow: on null data its 95% interval
excluded 0 in 18% of simulations for the slope, 10% for the pooled mean; Welch's in 4% and
3%.) :func:`judge` turns the per-seed measures into the claims; it is independent of
training (tests feed it synthetic measures). Cases whose scratch run stays at chance (LeNet5
at 98% at cpu scale) have no scratch *solution*: they are left out of the barrier rows and
named (``SOLVED_LOSS``).

Curves are fitted in worker processes (one per ``--workers``, one thread each) and cached
under ``ROOT/analyses/evci2019-SCRATCH-PRUNED/``: a rerun reuses every finished analysis.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparseflow.analysis.stats import contrast_interval, correlations, summarize
from sparseflow.config import Config, run_id
from sparseflow.store.database import Store
from sparseflow.store.paths import store_path
from sparseflow.studies.claims import (
    UNMEASURABLE,
    Claim,
    finite,
    interval_verdict,
    run_all,
    seeds_for,
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
#: curve kinds (landscape/curves.py) and subspaces of the control point (section 6)
KINDS = ("bezier", "polychain")
SUBSPACES = ("sparse", "dense")
#: seed of the pruning run of seed s: SOURCE_SEED + s (kept apart from the run seeds, so that
#: scratch never starts from the pruning run's own init, which would make it the ticket)
SOURCE_SEED = 1000
#: a barrier on the line counts when above this many nats of training loss (the check of
#: docs/science.md section 7 before the grid; half the endpoints' own training loss at 80%
#: sparsity, 0.19-0.27 at cpu scale)
BARRIER_THRESHOLD = 0.1
#: the dense space removes what the sparse subspace keeps when the pooled gap lies above this:
#: a fifth of the smallest barrier that counts (BARRIER_THRESHOLD / 5)
GAP_THRESHOLD = BARRIER_THRESHOLD / 5
#: a line init -> pruned counts as monotone when it never rises by this much between
#: neighbouring points: the smallest loss difference the claim counts (GAP_THRESHOLD). The
#: strict test of section 6 (no rise above 1e-6 |L|) fails on the plateau at chance loss
#: near a masked init (LeNet5 at cpu scale: rises up to 0.011 nats, then a fall of ~2 nats);
#: both counts are reported
RISE_TOLERANCE = GAP_THRESHOLD
#: the line init -> pruned is called monotone when more than this share of lines is
MONOTONE_THRESHOLD = 0.5
#: a case's endpoints are solutions when their training loss is below this: half the loss of a
#: uniform guess over 10 classes (ln 10 / 2); a scratch run above it (stuck near chance, as
#: LeNet5 at 98% can be) is left out of the barrier rows and counted in their text
SOLVED_LOSS = math.log(10) / 2

MODEL_WORDS = {"lenet300": "LeNet-300-100", "lenet5": "LeNet5"}
KIND_WORDS = {"bezier": "Bezier", "polychain": "polygonal chain"}
KIND_NOUNS = {"bezier": "Bezier curve", "polychain": "polygonal chain"}
#: what the grid can and cannot say about the paper's setting (rules of claim 5)
SCOPE = ("Scope: LeNet-300-100 and LeNet5 (no BatchNorm, no skip connections, 0.27M and "
         "0.04M weights) on Fashion-MNIST at 80-98% sparsity, curves fitted for a few epochs. "
         "This tests the paper's mechanism (a barrier inside the sparse subspace that paths "
         "through the dense space avoid) in small networks, across sparsities and over seeds; "
         "it cannot confirm or refute the paper's ResNet-50/ImageNet observation (BatchNorm, "
         "residual blocks, 25M weights, ImageNet budgets), and barrier sizes here do not "
         "predict sizes there")

#: the interval of the pooled and the trend rows, in words
WELCH = ("95% Welch t interval over seeds (standard error from each setting's variance over "
         "seeds, Satterthwaite degrees of freedom)")
#: the cases of the barrier rows, in words
SOLVED = (f"cases whose scratch and pruned training losses are below ln(10)/2 = "
          f"{SOLVED_LOSS:.2f} (both solutions; the others are named in the text)")

RUNS = {"scratch": ["method=static", "sparse.mask=pruned"]}

#: the keys the study varies itself (a setting of one is refused) and why
VARIED: dict[str, str] = {
    **varied_keys(RUNS, "it trains scratch on the pruning run's mask"),
    "model": "it repeats the experiment on LeNet-300-100 and LeNet5",
    "sparsity": "it repeats the experiment at 80%, 90%, 95% and 98% sparsity",
    "seed": "it repeats every setting over seeds",
    "sparse.source_seed": f"each seed s has its own pruning run, seed {SOURCE_SEED} + s",
}

#: one point of the grid: (model, sparsity, seed)
Case = tuple[str, float, int]


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


# -- measures and statistics (pure: no training) -------------------------------------------------
@dataclass(frozen=True)
class CaseResult:
    """The measures of one (model, sparsity, seed) (docs/science.md section 6).

    ``monotone``/``init_rise``: the line scratch init -> pruned, whether it has no rise on
    [0, 1] and its largest rise between neighbouring points (0 when it falls throughout);
    ``line_barrier``: the barrier of the line scratch -> pruned,
    ``max_a L(theta(a)) - ((1 - a) L_A + a L_B)`` on [0, 1]; ``remaining``: per path (``line``
    and ``KIND/SUBSPACE``) the maximum training loss along it above its worse endpoint;
    ``endpoint_loss``: the training loss of scratch and of pruned; ``init_drop``: the fall
    of the line init -> pruned, ``L(init) - L(pruned)``."""

    model: str
    sparsity: float
    seed: int
    monotone: bool
    init_rise: float
    line_barrier: float
    remaining: Mapping[str, float] = field(default_factory=dict)
    endpoint_loss: tuple[float, float] = (0.0, 0.0)
    init_drop: float = 0.0

    @property
    def solved(self) -> bool:
        """Whether both endpoints are solutions: training loss below ``SOLVED_LOSS`` (a
        scratch run stuck at chance has no barrier to the pruned one worth the name)."""
        return max(self.endpoint_loss) < SOLVED_LOSS

    def gap(self, kind: str | None = None) -> float:
        """``remaining(sparse) - remaining(dense)`` of curve ``kind`` (None: the mean over
        ``KINDS``, each pair on the same endpoints)."""
        if kind is None:
            return float(np.mean([self.gap(k) for k in KINDS]))
        return self.remaining[f"{kind}/sparse"] - self.remaining[f"{kind}/dense"]


def remaining_barrier(loss: Sequence[float]) -> float:
    """``max(loss) - max(loss[0], loss[-1])``: how far a path's loss rises above its worse
    endpoint (the first and last values; >= 0)."""
    return float(max(loss) - max(loss[0], loss[-1]))


def case_result(case: Case, measured: Mapping[str, Any]) -> CaseResult:
    """The measures of one case from :func:`measure_case`'s results."""
    curves = measured["curves"]
    first = curves[f"{KINDS[0]}/{SUBSPACES[0]}"]
    remaining = {"line": remaining_barrier(first["linear_loss"])}
    remaining.update({k: remaining_barrier(c["loss"]) for k, c in curves.items()})
    init = measured["init"]
    return CaseResult(case[0], case[1], case[2], bool(init["monotone"]),
                      largest_rise(init["alphas"], init["loss"]), float(first["linear_barrier"]),
                      remaining, (float(first["loss"][0]), float(first["loss"][-1])),
                      float(init["loss_a"] - init["loss_b"]))


def largest_rise(alphas: Sequence[float], loss: Sequence[float]) -> float:
    """``max(0, max_i L(a_{i+1}) - L(a_i))`` over neighbouring grid points in [0, 1]: how
    much a path rises on its way (0 for a path that never rises)."""
    inside = [v for a, v in zip(alphas, loss, strict=True) if 0.0 <= a <= 1.0]
    return float(max([0.0, *(b - a for a, b in zip(inside[:-1], inside[1:], strict=True))]))


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if math.isfinite(v)]


def _mean_of_means(groups: Sequence[Sequence[float]]) -> float:
    gs = [g for g in (_finite(g) for g in groups) if g]
    return float(np.mean([np.mean(g) for g in gs])) if gs else math.nan


def pooled_mean(groups: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """(effect, low, high): the mean over groups of each group's mean, ``(1/G) sum_g
    mean(x_g)``, with Welch's t interval (:func:`contrast_interval`, w_g = 1/G); non-finite
    values are left out, empty groups dropped."""
    gs = [g for g in (_finite(g) for g in groups) if g]
    if not gs:
        return (math.nan, math.nan, math.nan)
    return contrast_interval(gs, [1.0 / len(gs)] * len(gs))


def density_decades(sparsity: float) -> float:
    """``log10(1 / (1 - sparsity))``: tenfold drops of density (80% -> 0.70, 98% -> 1.70)."""
    return -math.log10(1.0 - sparsity)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope ``sum (x - x_bar)(y - y_bar) / sum (x - x_bar)^2``; NaN with fewer
    than two distinct x."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    xc = x - x.mean()
    den = float(xc @ xc)
    return float(xc @ (y - y.mean()) / den) if den > 0 else math.nan


def sparsity_trend(by_sparsity: Mapping[float, Sequence[float]]) -> tuple[float, float, float]:
    """(effect, low, high): the least-squares slope of the per-sparsity means m_s against
    x_s = :func:`density_decades` (units of y per tenfold drop in density), a linear
    combination sum_s w_s m_s with w_s = (x_s - x_bar) / sum_s (x_s - x_bar)^2, and its Welch
    t interval over the values (seeds) of each sparsity (:func:`contrast_interval`)."""
    items = sorted((s, g) for s, g in ((s, _finite(v)) for s, v in by_sparsity.items()) if g)
    if len(items) < 2:
        return (math.nan, math.nan, math.nan)
    x = np.array([density_decades(s) for s, _ in items])
    xc = x - x.mean()
    return contrast_interval([g for _, g in items], xc / float(xc @ xc))


def monotone_share(flags: Sequence[bool], level: float = 0.95) -> tuple[float, float, float]:
    """(share, low, high): the fraction of ``flags`` that are true with its exact
    (Clopper-Pearson) binomial interval: the level/2 tails of Beta(k, n - k + 1) and
    Beta(k + 1, n - k) (``scipy.stats.binomtest(k, n).proportion_ci(method="exact")``)."""
    n = len(flags)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    from scipy.stats import binomtest

    k = int(sum(bool(f) for f in flags))
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return (k / n, float(ci.low), float(ci.high))


#: the measures of the per-setting table: name -> value of a case
def _measures() -> dict[str, Callable[[CaseResult], float]]:
    out: dict[str, Callable[[CaseResult], float]] = {
        "linear barrier": lambda r: r.line_barrier,
        "remaining: straight line": lambda r: r.remaining["line"]}
    for kind in KINDS:
        for sub in SUBSPACES:
            out[f"remaining: {kind} {sub}"] = lambda r, k=f"{kind}/{sub}": r.remaining[k]
        out[f"gap: {kind} sparse - dense"] = lambda r, k=kind: r.gap(k)
    return out


def setting_rows(results: Sequence[CaseResult]) -> list[dict[str, Any]]:
    """Per (model, sparsity) and measure: ``n``, ``mean`` and the 95% interval (``ci_low``,
    ``ci_high``, ``interval``): Student's t over seeds (``analysis.stats.summarize``) for the
    barriers and gaps (over the cases whose endpoints are solutions), the exact binomial
    interval for the shares of monotone init lines and of cases with solutions."""
    rows = []
    for (model, sp), cases in _group_cases(results).items():
        for name, flags in ((f"init -> pruned: no rise above {RISE_TOLERANCE:g} (share)",
                             [r.init_rise < RISE_TOLERANCE for r in cases]),
                            ("init -> pruned: strictly monotone (share)",
                             [r.monotone for r in cases])):
            share, low, high = monotone_share(flags)
            rows.append({"model": model, "sparsity": sp, "measure": name, "n": len(flags),
                         "mean": share, "ci_low": low, "ci_high": high,
                         "interval": "Clopper-Pearson"})
        share, low, high = monotone_share([r.solved for r in cases])
        rows.append({"model": model, "sparsity": sp, "measure": "endpoints are solutions (share)",
                     "n": len(cases), "mean": share, "ci_low": low, "ci_high": high,
                     "interval": "Clopper-Pearson"})
        for name, value in _measures().items():
            vals = _finite([value(r) for r in cases if r.solved])
            s = summarize(vals)
            rows.append({"model": model, "sparsity": sp, "measure": name, "n": s.n,
                         "mean": s.mean, "ci_low": s.ci_low, "ci_high": s.ci_high,
                         "interval": "Student t"})
    return rows


def _group_cases(results: Sequence[CaseResult]) -> dict[tuple[str, float], list[CaseResult]]:
    out: dict[tuple[str, float], list[CaseResult]] = {}
    for r in sorted(results, key=lambda r: (r.model, r.sparsity, r.seed)):
        out.setdefault((r.model, r.sparsity), []).append(r)
    return out


def _where(key: tuple[str, float]) -> str:
    return f"{key[0]} {key[1]:.0%}"


def _extremes(means: Mapping[tuple[str, float], float], fmt: str) -> str:
    ok = {k: v for k, v in means.items() if math.isfinite(v)}
    if not ok:
        return "none finite"
    lo, hi = min(ok, key=ok.__getitem__), max(ok, key=ok.__getitem__)
    return (f"{format(ok[lo], fmt)} ({_where(lo)}) to {format(ok[hi], fmt)} ({_where(hi)})")


def _left_out(stuck: Sequence[CaseResult]) -> str:
    if not stuck:
        return ""
    return (f" (scratch or pruned not a solution, training loss above {SOLVED_LOSS:.2f}, left "
            "out: " + ", ".join(f"{_where((r.model, r.sparsity))} seed {r.seed}" for r in stuck)
            + ")")


def _against(text: str, interval: tuple[float, float, float], threshold: float, n: int,
             measured: str, rule: str) -> Claim:
    """A claim-5 row: ``interval`` = (effect, low, high) judged against ``threshold``
    (``interval_verdict``: held above it)."""
    effect, low, high = interval
    return Claim(5, text, interval_verdict(low, high, threshold), measured,
                 effect=finite(effect), ci_low=finite(low), ci_high=finite(high), n=n,
                 rule=rule)


def judge(results: Sequence[CaseResult], failed: Sequence[str] = ()) -> list[Claim]:
    """Claim 5's rows from the per-seed measures (docs/science.md section 7):

    1. the line init -> pruned is monotone: share of lines without a rise above
       ``RISE_TOLERANCE``, exact binomial interval, held above ``MONOTONE_THRESHOLD``;
    2. the line scratch -> pruned has a barrier: mean over settings of the mean linear barrier,
       Welch t interval, held above ``BARRIER_THRESHOLD``;
    3. per curve kind, the dense space removes what the sparse subspace keeps: mean over
       settings of the gap remaining(sparse) - remaining(dense), held above ``GAP_THRESHOLD``;
    4. per model, the gap (mean of the kinds) grows with sparsity: slope against
       :func:`density_decades`, held above 0.

    Rows 2-4 use the cases whose endpoints are solutions (``CaseResult.solved``); the others
    and ``failed`` (cases whose runs did not finish) are named in the measured text."""
    note = f" (did not finish: {', '.join(failed)})" if failed else ""
    texts = {
        "monotone": "A linear path from init to the pruned solution decreases monotonically",
        "barrier": "A straight line between a scratch solution and the pruned one crosses a "
                   "loss barrier",
    }
    if not results:
        return [Claim(5, text, UNMEASURABLE, "no setting finished" + note)
                for text in texts.values()]
    seeds = sorted({r.seed for r in results})
    grid = (f"{'/'.join(dict.fromkeys(MODEL_WORDS.get(r.model, r.model) for r in results))}, "
            f"{'/'.join(f'{s:.0%}' for s in sorted({r.sparsity for r in results}))}, "
            f"seeds {','.join(map(str, seeds))}")
    claims = []

    flags = [r.init_rise < RISE_TOLERANCE for r in results]
    share, low, high = monotone_share(flags)
    worst = max(results, key=lambda r: r.init_rise)
    at = f"{_where((worst.model, worst.sparsity))} seed {worst.seed}"
    drop = statistics.mean(r.init_drop for r in results)
    claims.append(Claim(
        5, texts["monotone"], interval_verdict(low, high, MONOTONE_THRESHOLD),
        f"{sum(flags)} of {len(flags)} lines scratch init -> pruned without a rise above "
        f"{RISE_TOLERANCE:g} nats on [0, 1] ({grid}); strictly monotone: "
        f"{sum(r.monotone for r in results)} of {len(results)}; largest rise between "
        f"neighbouring points {worst.init_rise:.3g} ({at}), mean fall from init to pruned "
        f"{drop:.3g}{note}",
        effect=share, ci_low=finite(low), ci_high=finite(high), n=len(flags),
        rule=f"effect = share of the lines from scratch's init to the pruned solution whose "
        f"training loss never rises by {RISE_TOLERANCE:g} nats or more between neighbouring "
        f"points of [0, 1] (the smallest loss difference this claim counts; the strict test "
        f"of docs/science.md section 6 is reported beside it), over every model x sparsity x "
        f"seed (n lines); exact (Clopper-Pearson) 95% interval: held when it lies above "
        f"{MONOTONE_THRESHOLD:g} (most such lines are monotone), did not hold when below, "
        f"inconclusive when it spans {MONOTONE_THRESHOLD:g}"))

    stuck = [r for r in results if not r.solved]
    finished = note
    note += _left_out(stuck)
    results = [r for r in results if r.solved]
    if not results:
        return claims + [Claim(5, texts["barrier"], UNMEASURABLE,
                               "no scratch run reached a solution" + note)]
    groups = _group_cases(results)
    settings = len(groups)
    seeds = sorted({r.seed for r in results})
    line = {k: [r.line_barrier for r in cs] for k, cs in groups.items()}
    effect, low, high = pooled_mean(list(line.values()))
    claims.append(_against(
        texts["barrier"], (effect, low, high), BARRIER_THRESHOLD, len(results),
        f"linear barrier scratch -> pruned, mean over {settings} settings x {len(seeds)} "
        f"seed{'s' if len(seeds) > 1 else ''}: {effect:.3f}; setting means from "
        f"{_extremes({k: float(np.mean(v)) for k, v in line.items()}, '.3f')}{note}",
        f"effect = mean over the (model, sparsity) settings of the mean over seeds of the "
        f"barrier of the line scratch -> pruned (section 6: max over [0, 1] of L(theta(a)) - "
        f"((1 - a) L_A + a L_B), training loss; n = {SOLVED}); {WELCH}: held "
        f"when it lies above {BARRIER_THRESHOLD:g} nats, did not hold when below, inconclusive "
        f"when it spans {BARRIER_THRESHOLD:g} or a setting has one seed. {BARRIER_THRESHOLD:g} "
        f"is the check of this claim before the grid, about half the endpoints' own training "
        "loss at 80% sparsity"))

    for i, kind in enumerate(KINDS):
        gaps = {k: [r.gap(kind) for r in cs] for k, cs in groups.items()}
        effect, low, high = pooled_mean(list(gaps.values()))
        mean_of = {sub: _mean_of_means([[r.remaining[f"{kind}/{sub}"] for r in cs]
                                        for cs in groups.values()]) for sub in SUBSPACES}
        dense_low = sum(float(np.mean([r.remaining[f"{kind}/dense"] for r in cs]))
                        < BARRIER_THRESHOLD for cs in groups.values())
        straight = _mean_of_means([[r.remaining["line"] for r in cs] for cs in groups.values()])
        claims.append(_against(
            f"A {KIND_NOUNS[kind]} through the dense space removes the barrier that "
            f"remains on a {KIND_NOUNS[kind]} inside the sparse subspace",
            (effect, low, high), GAP_THRESHOLD, len(results),
            f"{KIND_WORDS[kind]}: loss above the worse endpoint, mean over {settings} settings: "
            f"sparse subspace {mean_of['sparse']:.3f}, dense space {mean_of['dense']:.3f} "
            f"(straight line {straight:.3f}); gap per setting from "
            f"{_extremes({k: float(np.mean(v)) for k, v in gaps.items()}, '+.3f')}; dense "
            f"curve below {BARRIER_THRESHOLD:g} in {dense_low} of {settings} settings{note}",
            f"effect ({KIND_WORDS[kind]}) = remaining barrier of the curve inside the "
            f"sparse subspace minus that of the curve through the dense space (max over t of "
            f"the training loss on the curve above its worse endpoint; the same endpoints, t "
            f"grid and examples; n = {SOLVED}), mean over seeds, then over settings; {WELCH}: "
            f"held when it "
            f"lies above "
            f"{GAP_THRESHOLD:g} nats (a fifth of the smallest barrier that counts, "
            f"{BARRIER_THRESHOLD:g}), did not hold when below, inconclusive when it spans "
            f"{GAP_THRESHOLD:g} or a setting has one seed." + (f" {SCOPE}." if i == 0 else "")))

    for model in dict.fromkeys(r.model for r in results):
        mine = [r for r in results if r.model == model]
        by_sp: dict[float, list[float]] = {}
        for r in mine:
            by_sp.setdefault(r.sparsity, []).append(r.gap())
        effect, low, high = sparsity_trend(by_sp)
        means = {s: float(np.mean(_finite(v) or [math.nan])) for s, v in sorted(by_sp.items())}
        per_kind = []
        for kind in KINDS:
            ks: dict[float, list[float]] = {}
            for r in mine:
                ks.setdefault(r.sparsity, []).append(r.gap(kind))
            per_kind.append(f"{KIND_WORDS[kind]} {sparsity_trend(ks)[0]:+.3f}")
        tau = (correlations(list(means), list(means.values()))["kendall_tau"]
               if len(set(means.values())) > 1 else math.nan)  # tau of constants: undefined
        tau_text = f"; Kendall tau of these means {tau:+.2f}" if math.isfinite(tau) else ""
        word = MODEL_WORDS.get(model, model)
        claims.append(Claim(
            5, f"What the dense space removes grows with sparsity ({word})",
            interval_verdict(low, high, 0.0),
            f"{word}: gap sparse - dense (mean of the curve kinds) at "
            f"{'/'.join(f'{s:.0%}' for s in means)}: "
            f"{'/'.join(f'{v:+.3f}' for v in means.values())}{tau_text}; slope per kind: "
            f"{', '.join(per_kind)}{finished}{_left_out([r for r in stuck if r.model == model])}",
            effect=finite(effect), ci_low=finite(low), ci_high=finite(high), n=len(mine),
            rule=f"effect ({word}) = least-squares slope of the per-sparsity mean gap (sparse "
            "- dense remaining barrier, mean of the Bezier and polygonal-chain gaps of each "
            f"seed; n = {SOLVED}) against log10(1 / density), in nats per tenfold drop in "
            "density (80% -> "
            f"98% is one); {WELCH}: held when it lies above 0, did not hold when below, "
            "inconclusive when it spans 0 or a sparsity has one seed. A trend over 80-98% in a "
            "small network: "
            "it does not extrapolate to the paper's ResNet-50, measured there at one sparsity"))
    return claims


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
