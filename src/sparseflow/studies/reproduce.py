"""One-command checks of each paper's claims (docs/science.md section 7) at three scales.

``reproduce(paper, scale, root)`` trains the preset's runs (a sweep: resumable, skipped when
done), runs the analyses, and returns each claim with the measured values and a verdict: held,
did not hold, or not measurable at this scale.

Scales: ``smoke`` finishes in minutes on a laptop (and in CI): the claims are checked on tiny
budgets, so their verdicts are indicative only; ``cpu`` is the largest version that completes on
a 2-core machine in about an hour (Fashion-MNIST, LeNet5 / LeNet-300-100 / MLPs); ``paper`` is
for a GPU cluster: VGG-16 on CIFAR-10 for Evci et al. 2022, the paper's SC-SDC widths 308..2768
over 500 epochs for Tessera et al. 2021, and (a stand-in: ResNet-50/ImageNet is not shipped)
50-epoch LeNet-300-100 paths and curves for Evci et al. 2019.

Any setting: ``reproduce(..., overrides=["dataset=digits"], config_file=...)`` (the CLI's
``-c FILE`` / ``--set KEY=VALUE``, read as ``sparseflow run`` reads them) puts the user's
settings over the preset's base in every run (``studies/setting.py``); a key the study varies
itself (``VARIED``: methods, inits, seeds) is refused. The claims are measured on that setting
(evci2022's signal propagation on the study's own model and input shape, not the paper's
LeNet5); the outputs go to ``reproduce/PAPER-SCALE-DIGEST`` and record the setting.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sparseflow.analysis.stats import bootstrap_diff_ci, bootstrap_ratio_ci
from sparseflow.config import Config, run_id
from sparseflow.errors import UserError
from sparseflow.factories import is_reference
from sparseflow.store.database import Store
from sparseflow.store.paths import store_path
from sparseflow.studies.figures import (
    PaperFigure,
    draw_figures,
    evci2019_figures,
    evci2022_figures,
    tessera2021_tables,
)
from sparseflow.studies.setting import (
    DATA_KEYS,
    MODEL_KEYS,
    Setting,
    base_pairs,
    check_setting,
    parse_setting,
    study_config,
    varied_keys,
)

PAPERS = ("evci2022", "tessera2021", "evci2019")
SCALES = ("smoke", "cpu", "paper")
HELD, FAILED, UNMEASURABLE = "held", "did not hold", "not measurable at this scale"
INCONCLUSIVE = "inconclusive"


@dataclass
class Claim:
    """One claim of docs/science.md section 7 with what was measured."""

    number: int
    text: str
    verdict: str
    measured: str
    effect: float | None = None  # the measured effect (what it is: ``rule``)
    ci_low: float | None = None  # its 95% interval
    ci_high: float | None = None
    n: int | None = None  # seeds (per side) the interval is over
    rule: str = ""  # how the interval became the verdict


def _finite(v: float) -> float | None:
    """``v``, or None for NaN / infinity (claims.json stays plain JSON)."""
    return v if v == v and abs(v) != float("inf") else None


def interval_verdict(low: float, high: float, threshold: float = 0.0, *,
                     below: bool = False) -> str:
    """The verdict of an effect's interval against ``threshold``: the claim holds when the
    interval lies above it (``below``: under it), does not hold when it lies on the other side,
    and is inconclusive when it spans the threshold or is undefined (one seed)."""
    if not (low == low and high == high):
        return INCONCLUSIVE
    if below:
        return HELD if high < threshold else (FAILED if low > threshold else INCONCLUSIVE)
    return HELD if low > threshold else (FAILED if high < threshold else INCONCLUSIVE)


# -- settings per paper and scale ------------------------------------------------------------
def _evci2022_base(scale: str) -> list[str]:
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


EVCI2022_METHODS = {
    "scratch": ["method=static", "sparse.mask=pruned"],
    "scratch+": ["method=static", "sparse.mask=pruned", "init=sparse"],
    "small dense": ["method=small_dense"],
    "rigl+": ["method=rigl", "init=sparse", "sparse.grow_batch=heldout"],
    "set+": ["method=set", "init=sparse"],
    "rigl inverted+": ["method=rigl_inverted", "init=sparse", "sparse.grow_batch=heldout"],
    "lottery": ["method=lottery"],
}


EVCI2019_RUNS = {"scratch": ["method=static", "sparse.mask=pruned"], "lottery": ["method=lottery"]}


#: per paper, the keys the study varies itself (a setting of one is refused) and why
VARIED: dict[str, dict[str, str]] = {
    "evci2022": {**varied_keys(EVCI2022_METHODS, "it compares " + ", ".join(EVCI2022_METHODS)),
                 "seed": "it repeats scratch and lottery over seeds"},
    "evci2019": varied_keys(EVCI2019_RUNS, "it compares scratch with the lottery ticket"),
    "tessera2021": {
        "arch.batchnorm": "it compares BatchNorm off and on", "seed": "it repeats every cell",
        **dict.fromkeys(("optim.name", "optim.lr"), "it compares momentum and adam"),
        **dict.fromkeys(("model", "model_args", "method", "distribution", "init", "arch.widths",
                         "arch.width", "arch.depth", "sparse.dense_width"),
                        "its SC-SDC pairs are sparse and dense MLPs of set widths and depths")},
}


#: evci2022 runs trained on every seed: the ones claims 2 and 4 compare over seeds
SEEDED = ("scratch", "scratch+", "small dense", "rigl+", "lottery")


def _seeds(scale: str) -> list[int]:
    return [0] if scale == "smoke" else [0, 1, 2]


# -- helpers -----------------------------------------------------------------------------------
def _run_all(configs: list[Config], root: Path, workers: int | None, progress: bool,
             echo: Callable[[str], None]) -> None:
    from sparseflow.sweep.client import run_sweep

    run_sweep(configs, root, workers=workers, progress=progress, echo=echo)


def _summary(store: Store, cfg: Config) -> dict[str, Any]:
    run = store.get_run(run_id(cfg)) or {}
    if run.get("status") != "finished":
        raise UserError(f"run {run_id(cfg)} ({cfg.method}) did not finish: "
                        f"{run.get('status', 'missing')}")
    return run["summary"]


def _early_mean(store: Store, rid: str, until: int) -> float:
    vals = [v for s, v in store.series(rid, "flow/grad_l2") if 0 < s <= until and v is not None]
    return statistics.mean(vals) if vals else float("nan")


def _verdict(ok: bool | None) -> str:
    return UNMEASURABLE if ok is None else (HELD if ok else FAILED)


# -- Evci et al. 2022 ----------------------------------------------------------------------
def _signal_claim(cfg: Config, setting: Setting, scale: str, sink: list | None = None) -> Claim:
    """Claim 1 (signal propagation at init): on the paper's LeNet5 with 28x28 inputs for the
    preset's own setting; on the study's model, built as its runs build it (``arch.*``), with
    its dataset's input shape and classes when the setting changes the model or the data.
    ``flow.signal`` builds registered models only: for a model of one's own, not measurable."""
    from sparseflow.flow.signal import signal_propagation

    text = ("With dense init the output signal vanishes as sparsity grows; the sparsity-aware "
            "init keeps it near its dense value to ~80%")
    kw: dict[str, Any] = {"masks": "uniform", "repeats": 1 if scale == "smoke" else 3,
                          "batch": 128 if scale == "smoke" else 500}
    if not setting.touches(MODEL_KEYS + DATA_KEYS):
        model, label = "lenet5", "LeNet5"
    elif is_reference(cfg.model):
        return Claim(1, text, UNMEASURABLE, f"signal propagation builds the registered models "
                     f"only, not a model of one's own ({cfg.model})")
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
    std = {(r["init"], r["sparsity"]): r["std_mean"] for r in rows}
    dense_ratio = std[("dense", 0.9)] / std[("dense", 0.0)]
    sparse_ratio = std[("sparse", 0.8)] / std[("sparse", 0.0)]
    return Claim(1, text, _verdict(dense_ratio < 0.1 and sparse_ratio > 1 / 3),
                 f"{label} output std, dense init: {dense_ratio:.2g} of its value at 0 "
                 f"sparsity when 90% sparse; sparse init at 80%: {sparse_ratio:.2f}")


def evci2022(root: Path, scale: str, workers: int | None, progress: bool,
             echo: Callable[[str], None], setting: Setting | None = None,
             figures: list[PaperFigure] | None = None) -> tuple[list[Claim], list[str]]:
    """Claims 1-4: signal propagation, early gradient flow, mask updates, lottery tickets;
    ``setting``: the user's settings over the preset's base (``studies/setting.py``)."""
    from sparseflow.analysis.runs import compare_runs, interpolate_runs

    setting = setting or Setting()
    base = _evci2022_base(scale)
    # small dense narrows a built-in model; a model of one's own cannot be narrowed
    own = is_reference(str(base_pairs(base, setting).get("model", "")))
    methods = {k: v for k, v in EVCI2022_METHODS.items() if not (own and k == "small dense")}
    cfgs = {(name, seed): study_config(base, setting, over + [f"seed={seed}"])
            for name, over in methods.items() for seed in
            (_seeds(scale) if name in SEEDED else [0])}
    _run_all(list(cfgs.values()), root, workers, progress, echo)
    signal_rows: list[Any] = []
    claims = [_signal_claim(cfgs[("scratch", 0)], setting, scale, sink=signal_rows)]
    with Store(store_path(root)) as store:
        total = _summary(store, cfgs[("scratch", 0)])["steps"]
        early = max(25, total // 50)  # the first 2%: ~230 of the paper's 11,719 steps
        per_seed = {name: [_early_mean(store, run_id(cfgs[(name, s)]), early)
                           for s in (_seeds(scale) if name in SEEDED else [0])]
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
            " (no small dense: a model of one's own cannot be narrowed)" if own else "")
        for text, name in (("Early in training the gradient norm of Scratch is far below "
                            "Scratch+, Small Dense and RigL+", "scratch"),
                           ("... and the Lottery ticket's is low too", "lottery")):
            low = g[name]
            # a run that failed or measured nothing early (nan): not measurable
            nan = any(v != v for v in (low, *healthy))
            lo, hi = bootstrap_ratio_ci(per_seed[name], per_seed[ref])
            claims.append(Claim(
                2, text, UNMEASURABLE if nan else interval_verdict(lo, hi, 0.5, below=True),
                measured, effect=None if nan else low / g[ref], ci_low=_finite(lo),
                ci_high=_finite(hi), n=len(per_seed[name]),
                rule=f"effect = mean ||g||_2 of {name} / that of {ref} (the lowest of "
                "scratch+, small dense, RigL+) over the first steps, 95% bootstrap interval "
                "over seeds: held when it lies below 0.5, did not hold when above, "
                "inconclusive when it spans 0.5 or there is one seed"))
        deltas = {}
        for name in ("rigl+", "set+", "rigl inverted+"):
            d = [v for s, v in store.series(run_id(cfgs[(name, 0)]),
                                            "flow_update/delta/grad_l2") if s <= total // 2]
            deltas[name] = statistics.mean(d) if d else float("nan")
        ok3 = None if any(v != v for v in deltas.values()) else (
            deltas["rigl+"] > 0 and deltas["rigl+"] > deltas["set+"]
            and deltas["rigl inverted+"] < 0.5 * deltas["rigl+"])
        claims.append(Claim(3, "RigL mask updates raise the gradient norm; SET barely; RigL "
                            "inverted does not", _verdict(ok3), "mean change of ||g||_2 across "
                            "updates (first half): " + ", ".join(
                                f"{k} {v:+.3g}" for k, v in deltas.items()) + (
                                f" (did not finish: {', '.join(bad)})"
                                if (bad := [k for k in deltas if k in failed]) else "")))
        ticket = _summary(store, cfgs[("lottery", 0)])
        pruned = ticket["ticket_source"]
    lts = [run_id(cfgs[("lottery", s)]) for s in _seeds(scale)]
    scs = [run_id(cfgs[("scratch", s)]) for s in _seeds(scale)]
    cmp = compare_runs(root, [pruned, *lts, *scs])
    dis = cmp["disagreement"][0]
    dis_lt, dis_sc = dis[1:1 + len(lts)], dis[1 + len(lts):]
    d_lt, d_sc = statistics.mean(dis_lt), statistics.mean(dis_sc)
    gap_low, gap_high = bootstrap_diff_ci(dis_sc, dis_lt)
    p_lt = interpolate_runs(root, lts[0], pruned, alphas="0:1:11")
    p_sc = interpolate_runs(root, scs[0], pruned, alphas="0:1:11")
    b_lt, b_sc = p_lt["barrier"], p_sc["barrier"]
    verdict4 = interval_verdict(gap_low, gap_high)
    if verdict4 == HELD and not b_lt < b_sc:
        verdict4 = FAILED
    claims.append(Claim(4, "A lottery ticket ends close to the pruning solution it came from: "
                        "same basin, low disagreement", verdict4,
                        f"disagreement with pruned: ticket {d_lt:.4f} vs scratch {d_sc:.4f}; "
                        f"linear barrier to pruned: ticket {b_lt:.3f} vs scratch {b_sc:.3f}",
                        effect=d_sc - d_lt, ci_low=_finite(gap_low),
                        ci_high=_finite(gap_high), n=len(lts),
                        rule="effect = disagreement(scratch) - disagreement(ticket) with pruned, "
                        "95% bootstrap interval over seeds: held when it lies above 0 and the "
                        "ticket's linear barrier to pruned is below scratch's; did not hold "
                        "when it lies below 0 or the barriers are the other way; inconclusive "
                        "when it spans 0 or there is one seed per side"))
    if figures is not None:
        with Store(store_path(root), readonly=True) as store:
            figures.extend(evci2022_figures(
                store, {name: run_id(cfgs[(name, 0)]) for name in methods}, early=early,
                early_means=g, signal_rows=signal_rows,
                paths={"lottery -> pruned": p_lt, "scratch -> pruned": p_sc},
                disagreement={"lottery": d_lt, "scratch": d_sc}))
    return claims, [pruned, *(run_id(c) for c in cfgs.values())]


# -- Evci et al. 2019 -------------------------------------------------------------------------
def evci2019(root: Path, scale: str, workers: int | None, progress: bool,
             echo: Callable[[str], None], setting: Setting | None = None,
             figures: list[PaperFigure] | None = None) -> tuple[list[Claim], list[str]]:
    """Claim 5: monotone path init -> pruned; scratch -> pruned barrier; dense curves remove
    it. ``setting``: the user's settings over the preset's base (``studies/setting.py``)."""
    from sparseflow.analysis.runs import curve_runs, interpolate_runs

    setting = setting or Setting()
    base = {"smoke": ["model=lenet300", "train.duration=1ep"],
            "cpu": ["model=lenet300", "train.duration=15ep"],
            "paper": ["model=lenet300", "train.duration=50ep"]}[scale]
    base = base + ["sparsity=0.95", "arch.init=glorot", "flow.enabled=false"]
    scratch = study_config(base, setting, EVCI2019_RUNS["scratch"])
    ticket = study_config(base, setting, EVCI2019_RUNS["lottery"])
    _run_all([scratch, ticket], root, workers, progress, echo)
    with Store(store_path(root)) as store:
        pruned = _summary(store, ticket)["ticket_source"]
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
              _verdict(init_path["monotone"]), f"scratch init -> pruned: monotone "
              f"{init_path['monotone']}, barrier {init_path['barrier']:.3f}"),
        Claim(5, "A path between a scratch solution and the pruned one has a barrier in the "
              "sparse subspace, which a curve allowed into the dense space removes",
              _verdict(barrier and removed), f"linear barrier {end_path['barrier']:.3f}; "
              f"Bezier max above the endpoints: sparse subspace {over['sparse']:+.3f}, dense "
              f"{over['dense']:+.3f}"),
    ], [sc, run_id(ticket), pruned]


# -- Tessera et al. 2021 ----------------------------------------------------------------------
def _tessera_sweep(scale: str, setting: Setting | None = None) -> Any:
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


def tessera2021(root: Path, scale: str, workers: int | None, progress: bool,
                echo: Callable[[str], None], setting: Setting | None = None,
                figures: list[PaperFigure] | None = None) -> tuple[list[Claim], list[str]]:
    """Claims 6 and 7: EGF vs gradient norm correlations, BatchNorm in SC-SDC; ``setting``:
    the user's settings over the preset's base (``studies/setting.py``)."""
    from sparseflow.analysis.runs import correlate, scsdc_results
    from sparseflow.sweep.client import run_sweep
    from sparseflow.sweep.spec import expand

    sweep = _tessera_sweep(scale, setting)
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
              "gradient norm", _verdict(ok6), "|Kendall tau| with test accuracy, sparse runs: "
              + ", ".join(f"{k} {v:.3f}" for k, v in tau.items())),
        Claim(7, "BatchNorm helps sparse nets more than dense ones (SC-SDC p-values)",
              _verdict(ok7), "median one-sided Mann-Whitney p (H1: sparse > dense): "
              f"without BN {statistics.median(by_bn[False]) if by_bn[False] else float('nan'):.3f}"
              f", with BN {statistics.median(by_bn[True]) if by_bn[True] else float('nan'):.3f}"),
        Claim(7, "Adam with coupled L2 and BatchNorm collapses while AdamW does not; PReLU and "
              "Swish favour sparse nets", UNMEASURABLE, "not part of this preset's grid (add "
              "optim.l2, optim.name=adamw and arch.activation axes to an scsdc sweep)"),
    ]
    return claims, [run_id(c) for c in configs]


PRESETS = {"evci2022": evci2022, "tessera2021": tessera2021, "evci2019": evci2019}


def reproduce(paper: str, scale: str, root: str | Path, *, overrides: Sequence[str] = (),
              config_file: str | Path | None = None, workers: int | None = None,
              progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the preset, evaluate its claims, write claims.md/claims.json and an HTML report.

    ``config_file`` (YAML) and ``overrides`` (``KEY=VALUE``, later wins) are the user's setting
    over the preset's base, for every run, read like ``sparseflow run``'s; a key the study
    varies itself (``VARIED``) or a bad key or value is a ``ConfigError`` before anything
    trains. Returns ``paper``, ``scale``, ``setting`` (the ``KEY=VALUE`` texts, empty for the
    preset's own), ``claims``, ``dir`` (``ROOT/reproduce/PAPER-SCALE``, ``-DIGEST`` added for a
    setting) and ``report`` (None when jinja2/matplotlib are missing).
    """
    if paper not in PRESETS:
        raise UserError(f"reproduce: unknown paper {paper!r}; valid: {', '.join(PAPERS)}")
    if scale not in SCALES:
        raise UserError(f"--scale: unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    setting = parse_setting(config_file, overrides)
    check_setting(setting, VARIED[paper], f"reproduce {paper}")
    root = Path(root)
    figures: list[PaperFigure] = []
    claims, runs = PRESETS[paper](root, scale, workers, progress, echo, setting=setting,
                                  figures=figures)
    outdir = root / "reproduce" / (f"{paper}-{scale}"
                                   + (f"-{setting.digest}" if setting.pairs else ""))
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "claims.json").write_text(json.dumps(
        {"paper": paper, "scale": scale, "setting": setting.items,
         "claims": [asdict(c) for c in claims]}, indent=1))
    drawn = draw_figures(figures, outdir)
    captions = {f"{kind}/{f.name}": f.caption for f in figures for kind in ("figures", "tables")}
    (outdir / "claims.md").write_text(
        claims_markdown(paper, scale, claims, setting.items)
        + ("\n## Figures and tables\n\n" + "\n".join(
            f"- [{captions.get(w.rsplit('.', 1)[0], w)}]({w})" for w in drawn) + "\n"
           if drawn else ""))
    report = None
    title = f"{paper} ({scale} scale" + (f", {setting.describe()})" if setting.pairs else ")")
    try:
        from sparseflow.report.html import build_report

        report = str(build_report(root, runs, outdir / "report", title=title))
    except UserError:
        pass  # jinja2/matplotlib missing: the claims table is the result
    return {"paper": paper, "scale": scale, "setting": setting.items,
            "claims": [asdict(c) for c in claims], "dir": str(outdir), "report": report,
            "figures": drawn}


def claims_markdown(paper: str, scale: str, claims: list[Claim],
                    setting: Sequence[str] = ()) -> str:
    """The claims table as Markdown, after a line with the setting (the user's ``KEY=VALUE``
    settings over the preset's base, or that it is the preset's own)."""
    where = ("the preset's base with " + " ".join(f"`{s}`" for s in setting) if setting
             else "the preset's own")
    lines = [f"# {paper}, {scale} scale", "", f"setting: {where}", "",
             "| # | claim | verdict | measured | effect [95% CI] (n) |",
             "|---|---|---|---|---|"]
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines += [f"| {c.number} | {cell(c.text)} | {c.verdict} | {cell(c.measured)} | "
              f"{effect_text(c.effect, c.ci_low, c.ci_high, c.n)} |" for c in claims]
    rules = [f"- claim {c.number}: {c.rule}" for c in claims if c.rule]
    return "\n".join(lines + (["", "Verdict rules:", *rules] if rules else [])) + "\n"


def effect_text(effect: float | None, low: float | None, high: float | None,
                n: int | None) -> str:
    """``+0.0193 [+0.0110, +0.0280] (n=3)``; ``-`` without an effect; ``no interval`` with
    one seed."""
    if effect is None:
        return "-"
    if low is None or high is None or low != low or high != high:
        return f"{effect:+.4g} (no interval: n={n})"
    return f"{effect:+.4g} [{low:+.4g}, {high:+.4g}] (n={n})"
