"""Evci et al. 2022 (claims 1-4 of docs/science.md section 7): signal propagation at init, early
gradient flow of scratch, scratch+, small dense, RigL+ and the lottery ticket, the change of the
gradient norm at mask updates, and lottery tickets re-learning the pruning solution."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sparseflow.analysis.stats import ratio_interval
from sparseflow.config import Config, run_id
from sparseflow.factories import is_reference
from sparseflow.store.database import Store
from sparseflow.store.paths import store_path
from sparseflow.studies.claims import (
    FAILED,
    HELD,
    UNMEASURABLE,
    Claim,
    early_mean,
    finished_summary,
    finite,
    interval_verdict,
    run_all,
    seeds_for,
    series_mean,
)
from sparseflow.studies.figures import PaperFigure, evci2022_figures
from sparseflow.studies.setting import (
    DATA_KEYS,
    MODEL_KEYS,
    Setting,
    base_pairs,
    study_config,
    varied_keys,
)


def base_settings(scale: str) -> list[str]:
    """The settings every run of the preset shares at ``scale``."""
    common = ["sparsity=0.95", "distribution=uniform", "arch.init=glorot", "optim.l2=5e-4",
              "sparse.update_every=100", "sparse.drop_schedule=lr", "sparse.update_end=1.0",
              "flow.around_updates=1"]
    if scale == "smoke":
        return common + ["model=lenet300", "train.duration=1ep", "flow.every=25",
                         "sparse.update_every=50", "optim.lr=0.05"]
    if scale == "cpu":
        return common + ["model=lenet5", "train.duration=10ep", "flow.every=50",
                         "optim.lr=0.05"]
    return common + ["dataset=cifar10", "model=vgg16", "train.duration=160ep", "optim.lr=0.1",
                     "flow.every=200", "data.augment=true"]


#: the runs of the study: name -> the settings over the base
METHODS = {
    "scratch": ["method=static", "sparse.mask=pruned"],
    "scratch+": ["method=static", "sparse.mask=pruned", "init=sparse"],
    "small dense": ["method=small_dense"],
    "rigl+": ["method=rigl", "init=sparse", "sparse.grow_batch=heldout"],
    "set+": ["method=set", "init=sparse"],
    "rigl inverted+": ["method=rigl_inverted", "init=sparse", "sparse.grow_batch=heldout"],
    "lottery": ["method=lottery"],
}


#: evci2022 runs trained on every seed: the ones claims 2, 3 and 4 compare over seeds
SEEDED = ("scratch", "scratch+", "small dense", "rigl+", "set+", "rigl inverted+", "lottery")



#: the keys the study varies itself (a setting of one is refused) and why
VARIED: dict[str, str] = {**varied_keys(METHODS, "it compares " + ", ".join(METHODS)),
                          "seed": "it repeats the seeded methods over seeds"}


def run_configs(scale: str, setting: Setting) -> dict[tuple[str, int], Config]:
    """The study's runs, ``(method name, seed) -> Config``: every method on seed 0 and the
    ``SEEDED`` ones on every seed of ``seeds_for(scale)`` (a model of one's own has no small
    dense: it cannot be narrowed). Sources a run needs (the pruned run of a ticket) are added by
    the sweep."""
    base = base_settings(scale)
    own = is_reference(str(base_pairs(base, setting).get("model", "")))
    methods = {k: v for k, v in METHODS.items() if not (own and k == "small dense")}
    return {(name, seed): study_config(base, setting, over + [f"seed={seed}"])
            for name, over in methods.items() for seed in
            (seeds_for(scale) if name in SEEDED else [0])}


def plan(scale: str, setting: Setting) -> list[Config]:
    """Every run the preset trains itself at ``scale`` (sources added by the sweep)."""
    return list(run_configs(scale, setting).values())


def analysis_plan(scale: str, configs: Sequence[Config]) -> list[dict[str, Any]]:
    """The analyses after training of the preset's runs ``configs`` (``plan``'s), as
    ``studies/evci2019.py`` lists them (for the dry run's cost): the comparison of the pruned
    solution, the tickets and the scratch runs on the test set, and the line (11 points on the
    training set) from each ticket and scratch run to the pruned solution."""
    from sparseflow.studies.cost import run_info

    ends = [c for c in configs if c.method == "lottery"]
    ends += [c for c in configs if c.method == "static" and c.init != "sparse"]
    if not ends:
        return []
    out: list[dict[str, Any]] = [{
        "kind": "compare", "label": f"compare {1 + len(ends)} solutions (pruned, tickets, "
        "scratch) on the test set", "config": ends[0], "points": 1 + len(ends),
        "examples": run_info(ends[0]).n_test, "epochs": 0}]
    out += [{"kind": "interpolate", "label": f"line {c.method} seed {c.seed} -> pruned, 11 "
             "points on the training set", "config": c, "points": 11, "examples": None,
             "epochs": 0} for c in ends]
    return out


def _signal_claims(cfg: Config, setting: Setting, scale: str, sink: list | None = None
                   ) -> list[Claim]:
    """Claim 1 (signal propagation at init): on the paper's LeNet5 with 28x28 inputs for the
    preset's own setting; on the study's model, built as its runs build it (``arch.*``), with
    its dataset's input shape and classes when the setting changes the model or the data.
    ``flow.signal`` builds registered models only: for a model of one's own, not measurable."""
    from sparseflow.flow.signal import signal_propagation

    text = ("With dense init the output signal vanishes as sparsity grows; the sparsity-aware "
            "init keeps it near its dense value to ~80%")
    kw: dict[str, Any] = {"masks": "uniform",
                          "repeats": {"smoke": 2, "cpu": 5}.get(scale, 10),
                          "batch": 128 if scale == "smoke" else 500}
    if not setting.touches(MODEL_KEYS + DATA_KEYS):
        model, label = "lenet5", "LeNet5"
    elif is_reference(cfg.model):
        return [Claim(1, text, UNMEASURABLE, f"signal propagation builds the registered "
                      f"models only, not a model of one's own ({cfg.model})")]
    else:
        from sparseflow.training.run import load_data

        data = load_data(cfg)  # in the cache: the study's runs have loaded it
        a = cfg.arch
        kw.update(input_shape=tuple(data.input_shape), num_classes=data.num_classes,
                  model_options={"widths": a.widths, "depth": a.depth, "width": a.width,
                                 "activation": a.activation, "batchnorm": a.batchnorm,
                                 "skip": a.skip})
        model = cfg.model
        label = f"{cfg.model} ({cfg.dataset} inputs {'x'.join(map(str, data.input_shape))})"
    rows = signal_propagation(model, [0.0, 0.8, 0.9], ["dense", "sparse"], **kw)
    if sink is not None:
        sink.extend(rows)
    std = {(r["init"], r["sparsity"]): r["stds"] for r in rows}
    n = kw["repeats"]
    return [
        ratio_claim(1, "With the dense init the output signal vanishes as sparsity grows",
                    std[("dense", 0.9)], std[("dense", 0.0)], 0.1, below=True,
                    measured=f"{label} output std with the dense init at 90% sparsity over its "
                    f"value at 0% (uniform random masks, {n} draws)",
                    what="output std of the dense init at 90% / at 0% sparsity over mask and "
                    "input draws: held when the interval lies below 0.1"),
        ratio_claim(1, "The sparsity-aware init keeps the output signal near its dense value "
                    "up to ~80% sparsity", std[("sparse", 0.8)], std[("sparse", 0.0)], 1 / 3,
                    measured=f"{label} output std with the sparse init at 80% sparsity over its "
                    f"value at 0% ({n} draws)",
                    what="output std of the sparse init at 80% / at 0% sparsity over mask and "
                    "input draws: held when the interval lies above 1/3"),
    ]


def update_change(store: Store, rid: str, until: int) -> float:
    """Mean change of ``flow/grad_l2`` across the run's mask updates at steps <= ``until``
    (``flow_update/delta/grad_l2``: after - before on the same batch, docs/science.md
    section 4); NaN when none was measured."""
    return series_mean(store, rid, "flow_update/delta/grad_l2", until)


#: how a ratio claim's effect and interval are formed (``analysis.stats.ratio_interval``)
RATIO_KINDS = {"geometric": "ratio of geometric means, 95% Welch t interval on the log scale",
               "arithmetic": "ratio of means, 95% Fieller interval"}


def ratio_claim(number: int, text: str, a: list[float], b: list[float], threshold: float, *,
                measured: str, what: str, below: bool = False) -> Claim:
    """A claim on the ratio of ``a`` to ``b`` against ``threshold`` (docs/science.md section
    8): positive values (norms, standard deviations) as the ratio of geometric means with a
    Welch t interval of the log ratio; otherwise the ratio of means with Fieller's interval
    (``ratio_interval``: with 3 seeds a side a percentile bootstrap is too narrow); n =
    len(a) and ``interval_verdict``. A NaN value (a run that measured nothing) makes it not
    measurable. ``measured`` gets the effect appended; ``what`` is the rule (the kind of ratio
    and ", inconclusive when it spans the threshold or n = 1" are added)."""
    if any(v != v for v in (*a, *b)) or not a or not b:
        return Claim(number, text, UNMEASURABLE, measured + ": nothing measured")
    effect, lo, hi, kind = ratio_interval(a, b)
    return Claim(number, text, interval_verdict(lo, hi, threshold, below=below),
                 f"{measured}: {effect:.3g}", effect=effect, ci_low=finite(lo),
                 ci_high=finite(hi), n=len(a),
                 rule=f"{what} ({RATIO_KINDS[kind]}), inconclusive when it spans "
                 f"{threshold:.3g} or n = 1")


def diff_claim(number: int, text: str, a: list[float], b: list[float] | None, *,
               measured: str, what: str) -> Claim:
    """A claim on ``mean(a) - mean(b)`` (``b`` None: on ``mean(a)``) against 0: the effect,
    its 95% Welch t interval over seeds (``contrast_interval``; Satterthwaite degrees of
    freedom -- with 3 seeds a side a percentile bootstrap is too narrow, docs/science.md
    section 7), n = len(a) and ``interval_verdict`` (held above 0, did not hold below 0,
    inconclusive when it spans 0 or n = 1); NaN values make it not measurable."""
    from sparseflow.analysis.stats import contrast_interval

    if any(v != v for v in (*a, *(b or []))) or not a or (b is not None and not b):
        return Claim(number, text, UNMEASURABLE, measured + ": nothing measured")
    effect, lo, hi = (contrast_interval([a], [1.0]) if b is None
                      else contrast_interval([a, b], [1.0, -1.0]))
    return Claim(number, text, interval_verdict(lo, hi), f"{measured}: {effect:+.3g}",
                 effect=effect, ci_low=finite(lo), ci_high=finite(hi), n=len(a),
                 rule=what + ", inconclusive when it spans 0 or n = 1")


def ensemble_gains(accuracy: list[float], ensembles: dict[str, float], ref: int,
                   members: list[int]) -> list[float]:
    """Per member i, the ensemble gain of the pair (i, ``ref``): acc(ensemble of i and ref)
    - (acc(i) + acc(ref)) / 2 (mean of softmax probabilities, ``landscape/compare.py``): 0 when
    the two models make the same predictions, larger the more their errors differ
    (docs/science.md section 7, claim 4)."""
    return [ensembles[",".join(map(str, sorted((ref, i))))] - (accuracy[i] + accuracy[ref]) / 2
            for i in members]


def evci2022(root: Path, scale: str, workers: int | None, progress: bool,
             echo: Callable[[str], None], setting: Setting | None = None,
             figures: list[PaperFigure] | None = None) -> tuple[list[Claim], list[str]]:
    """Claims 1-4: signal propagation, early gradient flow, mask updates, lottery tickets;
    ``setting``: the user's settings over the preset's base (``studies/setting.py``)."""
    from sparseflow.analysis.runs import compare_runs, interpolate_runs

    setting = setting or Setting()
    cfgs = run_configs(scale, setting)
    methods = {name: METHODS[name] for name, _ in cfgs}
    run_all(list(cfgs.values()), root, workers, progress, echo)
    signal_rows: list[Any] = []
    claims = _signal_claims(cfgs[("scratch", 0)], setting, scale, sink=signal_rows)
    with Store(store_path(root)) as store:
        total = finished_summary(store, cfgs[("scratch", 0)])["steps"]
        early = max(25, total // 50)  # the first 2%: ~230 of the paper's 11,719 steps
        per_seed = {name: [early_mean(store, run_id(cfgs[(name, s)]), early)
                           for s in (seeds_for(scale) if name in SEEDED else [0])]
                    for name in methods}
        g = {name: statistics.mean(v) for name, v in per_seed.items()}
        healthy = [g[n] for n in ("scratch+", "small dense", "rigl+") if n in g]
        # the healthy method closest to the low ones: "far below all three" is below it
        ref = min((n for n in ("scratch+", "small dense", "rigl+") if n in g),
                  key=lambda n: g[n] if g[n] == g[n] else float("inf"))
        failed = [name for name in methods
                  if (store.get_run(run_id(cfgs[(name, 0)])) or {}).get("status") != "finished"]
        measured = f"mean ||g||_2 over the first {early} steps: " + ", ".join(
            f"{k} {v:.3g}" for k, v in g.items()) + (
            f" (did not finish: {', '.join(failed)})" if failed else "") + (
            " (no small dense: a model of one's own cannot be narrowed)"
            if "small dense" not in methods else "")
        for text, name in (("Early in training the gradient norm of Scratch is far below "
                            "Scratch+, Small Dense and RigL+", "scratch"),
                           ("... and the Lottery ticket's is low too", "lottery")):
            low = g[name]
            # a run that failed or measured nothing early (nan): not measurable
            nan = any(v != v for v in (low, *healthy))
            eff, lo, hi, kind = ratio_interval(per_seed[name], per_seed[ref])
            claims.append(Claim(
                2, text, UNMEASURABLE if nan else interval_verdict(lo, hi, 0.5, below=True),
                measured, effect=None if nan else finite(eff), ci_low=finite(lo),
                ci_high=finite(hi), n=len(per_seed[name]),
                rule=f"effect = mean ||g||_2 of {name} over that of {ref} (the lowest of "
                f"scratch+, small dense, RigL+) over the first steps, {RATIO_KINDS[kind]}: "
                "held when it lies below 0.5, did not hold when above, inconclusive when it "
                "spans 0.5 or there is one seed"))
        # claim 3: per seed, the mean change of ||g||_2 across the updates of the first half
        seeds = {name: seeds_for(scale) if name in SEEDED else [0]
                 for name in ("rigl+", "set+", "rigl inverted+")}
        deltas = {name: [update_change(store, run_id(cfgs[(name, sd)]), total // 2)
                         for sd in seeds[name]] for name in seeds}
        said = "mean change of ||g||_2 across the mask updates of the first half, " + ", ".join(
            f"{k} {statistics.mean(v):+.3g}" for k, v in deltas.items()) + (
            f" (did not finish: {', '.join(bad)})"
            if (bad := [k for k in deltas if k in failed]) else "")
        over = "95% Welch t interval over seeds"
        claims += [
            diff_claim(3, "RigL mask updates raise the gradient norm", deltas["rigl+"], None,
                       measured=said + "; RigL+", what=f"effect = mean change of ||g||_2 at "
                       f"RigL+'s updates, {over}: held when it lies above 0"),
            diff_claim(3, "... more than SET's updates do", deltas["rigl+"], deltas["set+"],
                       measured=said + "; RigL+ - SET+",
                       what=f"effect = change at RigL+'s updates - at SET+'s, {over}: held "
                       "when it lies above 0"),
            ratio_claim(3, "... and RigL inverted's updates do not", deltas["rigl inverted+"],
                        deltas["rigl+"], 0.5, below=True,
                        measured=said + "; inverted / RigL+",
                        what="effect = change at RigL inverted's updates / at RigL+'s: held "
                        "when the interval lies below 0.5"),
        ]
        ticket = finished_summary(store, cfgs[("lottery", 0)])
        pruned = ticket["ticket_source"]
    lts = [run_id(cfgs[("lottery", s)]) for s in seeds_for(scale)]
    scs = [run_id(cfgs[("scratch", s)]) for s in seeds_for(scale)]
    cmp = compare_runs(root, [pruned, *lts, *scs])
    dis = cmp["disagreement"][0]
    dis_lt, dis_sc = dis[1:1 + len(lts)], dis[1 + len(lts):]
    d_lt, d_sc = statistics.mean(dis_lt), statistics.mean(dis_sc)
    paths_lt = [interpolate_runs(root, r, pruned, alphas="0:1:11") for r in lts]
    paths_sc = [interpolate_runs(root, r, pruned, alphas="0:1:11") for r in scs]
    p_lt, p_sc = paths_lt[0], paths_sc[0]
    b_lt = statistics.mean(p["barrier"] for p in paths_lt)
    b_sc = statistics.mean(p["barrier"] for p in paths_sc)
    lt_idx = list(range(1, 1 + len(lts)))
    sc_idx = list(range(1 + len(lts), 1 + len(lts) + len(scs)))
    gain_lt = ensemble_gains(cmp["accuracy"], cmp["ensembles"], 0, lt_idx)
    gain_sc = ensemble_gains(cmp["accuracy"], cmp["ensembles"], 0, sc_idx)
    seeds_said = ""
    if len(lts) > 1:  # the paper's reading: an ensemble of one method's seeds
        acc = cmp["accuracy"]
        ens = {k: cmp["ensembles"][",".join(map(str, idx))] - statistics.mean(acc[i] for i in idx)
               for k, idx in (("tickets", lt_idx), ("scratch", sc_idx))}
        seeds_said = (f"; an ensemble of the {len(lts)} seeds over its mean member: tickets "
                      f"{ens['tickets']:+.4f}, scratch {ens['scratch']:+.4f}")
    over = "95% Welch t interval over seeds"
    c4 = diff_claim(4, "A lottery ticket ends close to the pruning solution it came from: "
                    "same basin, low disagreement", dis_sc, dis_lt,
                    measured=f"disagreement with pruned: ticket {d_lt:.4f} vs scratch "
                    f"{d_sc:.4f}; linear barrier to pruned (mean over seeds): ticket {b_lt:.3f} "
                    f"vs scratch {b_sc:.3f}; scratch - ticket",
                    what="effect = disagreement(scratch) - disagreement(ticket) with pruned, "
                    f"{over}: held when it lies above 0 and the ticket's mean linear barrier to "
                    "pruned is below scratch's; did not hold when it lies below 0 or the "
                    "barriers are the other way")
    if c4.verdict == HELD and not b_lt < b_sc:
        c4.verdict = FAILED
    claims += [c4, diff_claim(
        4, "... so ensembling it with the pruned solution gains little (less than scratch does)",
        gain_sc, gain_lt, measured="ensemble gain with pruned (accuracy of the pair's ensemble "
        f"- its mean member): ticket {statistics.mean(gain_lt):+.4f}, scratch "
        f"{statistics.mean(gain_sc):+.4f}{seeds_said}; scratch - ticket",
        what=f"effect = ensemble gain(scratch, pruned) - gain(ticket, pruned), {over}: held "
        "when it lies above 0")]
    if figures is not None:
        with Store(store_path(root), readonly=True) as store:
            figures.extend(evci2022_figures(
                store, {name: run_id(cfgs[(name, 0)]) for name in methods}, early=early,
                early_means=g, signal_rows=signal_rows,
                paths={"lottery -> pruned": p_lt, "scratch -> pruned": p_sc},
                disagreement={"lottery": d_lt, "scratch": d_sc}))
    return claims, [pruned, *(run_id(c) for c in cfgs.values())]
