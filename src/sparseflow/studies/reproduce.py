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
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sparseflow.config import Config, load_config, run_id
from sparseflow.errors import UserError
from sparseflow.store.database import Store
from sparseflow.store.paths import store_path

PAPERS = ("evci2022", "tessera2021", "evci2019")
SCALES = ("smoke", "cpu", "paper")
HELD, FAILED, UNMEASURABLE = "held", "did not hold", "not measurable at this scale"


@dataclass
class Claim:
    """One claim of docs/science.md section 7 with what was measured."""

    number: int
    text: str
    verdict: str
    measured: str


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
def evci2022(root: Path, scale: str, workers: int | None, progress: bool,
             echo: Callable[[str], None]) -> tuple[list[Claim], list[str]]:
    """Claims 1-4: signal propagation, early gradient flow, mask updates, lottery tickets."""
    from sparseflow.analysis.runs import compare_runs, interpolate_runs
    from sparseflow.flow.signal import signal_propagation

    base = _evci2022_base(scale)
    cfgs = {(name, seed): load_config(None, base + over + [f"seed={seed}"])
            for name, over in EVCI2022_METHODS.items() for seed in
            (_seeds(scale) if name in ("scratch", "lottery") else [0])}
    _run_all(list(cfgs.values()), root, workers, progress, echo)
    claims = []
    rows = signal_propagation("lenet5", [0.0, 0.8, 0.9], ["dense", "sparse"], masks="uniform",
                              repeats=1 if scale == "smoke" else 3,
                              batch=128 if scale == "smoke" else 500)
    std = {(r["init"], r["sparsity"]): r["std_mean"] for r in rows}
    dense_ratio = std[("dense", 0.9)] / std[("dense", 0.0)]
    sparse_ratio = std[("sparse", 0.8)] / std[("sparse", 0.0)]
    claims.append(Claim(1, "With dense init the output signal vanishes as sparsity grows; the "
                        "sparsity-aware init keeps it near its dense value to ~80%",
                        _verdict(dense_ratio < 0.1 and sparse_ratio > 1 / 3),
                        f"LeNet5 output std, dense init: {dense_ratio:.2g} of its value at 0 "
                        f"sparsity when 90% sparse; sparse init at 80%: {sparse_ratio:.2f}"))
    with Store(store_path(root)) as store:
        total = _summary(store, cfgs[("scratch", 0)])["steps"]
        early = max(25, total // 50)  # the first 2%: ~230 of the paper's 11,719 steps
        g = {name: _early_mean(store, run_id(cfgs[(name, 0)]), early)
             for name in EVCI2022_METHODS}
        healthy = min(g["scratch+"], g["small dense"], g["rigl+"])
        measured = f"mean ||g||_2 over the first {early} steps: " + ", ".join(
            f"{k} {v:.3g}" for k, v in g.items())
        claims.append(Claim(2, "Early in training the gradient norm of Scratch is far below "
                            "Scratch+, Small Dense and RigL+",
                            _verdict(g["scratch"] < 0.5 * healthy), measured))
        claims.append(Claim(2, "... and the Lottery ticket's is low too",
                            _verdict(g["lottery"] < 0.5 * healthy), measured))
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
                            "updates (first half): " + ", ".join(f"{k} {v:+.3g}"
                                                                 for k, v in deltas.items())))
        ticket = _summary(store, cfgs[("lottery", 0)])
        pruned = ticket["ticket_source"]
    lts = [run_id(cfgs[("lottery", s)]) for s in _seeds(scale)]
    scs = [run_id(cfgs[("scratch", s)]) for s in _seeds(scale)]
    cmp = compare_runs(root, [pruned, *lts, *scs])
    dis = cmp["disagreement"][0]
    d_lt = statistics.mean(dis[1:1 + len(lts)])
    d_sc = statistics.mean(dis[1 + len(lts):])
    b_lt = interpolate_runs(root, lts[0], pruned, alphas="0:1:11")["barrier"]
    b_sc = interpolate_runs(root, scs[0], pruned, alphas="0:1:11")["barrier"]
    claims.append(Claim(4, "A lottery ticket ends close to the pruning solution it came from: "
                        "same basin, low disagreement", _verdict(d_lt < d_sc and b_lt < b_sc),
                        f"disagreement with pruned: ticket {d_lt:.4f} vs scratch {d_sc:.4f}; "
                        f"linear barrier to pruned: ticket {b_lt:.3f} vs scratch {b_sc:.3f}"))
    return claims, [pruned, *(run_id(c) for c in cfgs.values())]


# -- Evci et al. 2019 -------------------------------------------------------------------------
def evci2019(root: Path, scale: str, workers: int | None, progress: bool,
             echo: Callable[[str], None]) -> tuple[list[Claim], list[str]]:
    """Claim 5: monotone path init -> pruned; scratch -> pruned barrier; dense curves remove it."""
    from sparseflow.analysis.runs import curve_runs, interpolate_runs

    base = {"smoke": ["model=lenet300", "train.duration=1ep"],
            "cpu": ["model=lenet300", "train.duration=15ep"],
            "paper": ["model=lenet300", "train.duration=50ep"]}[scale]
    base = base + ["sparsity=0.95", "arch.init=glorot", "flow.enabled=false"]
    scratch = load_config(None, base + ["method=static", "sparse.mask=pruned"])
    ticket = load_config(None, base + ["method=lottery"])
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
def _tessera_sweep(scale: str) -> Any:
    from sparseflow.sweep.spec import Sweep

    sizes = {"smoke": (64, [16, 32], [1], [0, 1], "1ep"),
             "cpu": (256, [26, 77, 128], [1, 2, 4], [0, 1, 2], "3ep"),
             "paper": (3076, [308, 923, 1538, 2153, 2768], [1, 2, 4], [0, 1, 2, 3, 4], "500ep")}
    ws, wds, depths, seeds, duration = sizes[scale]
    base = {"dataset": "fashion_mnist", "train.duration": duration, "flow.every": 0}
    return Sweep(name=f"tessera2021-{scale}", base=base,
                 grid={"arch.batchnorm": [False, True]},
                 zip={"optim.name": ["momentum", "adam"], "optim.lr": [0.05, 0.001]},
                 seeds=seeds, path=Path(f"<tessera2021 {scale} preset>"),
                 scsdc={"sparse_width": ws, "dense_widths": wds, "depths": depths})


def tessera2021(root: Path, scale: str, workers: int | None, progress: bool,
                echo: Callable[[str], None]) -> tuple[list[Claim], list[str]]:
    """Claims 6 and 7: EGF vs gradient norm correlations, BatchNorm in SC-SDC."""
    from sparseflow.analysis.runs import correlate, scsdc_results
    from sparseflow.sweep.client import run_sweep
    from sparseflow.sweep.spec import expand

    sweep = _tessera_sweep(scale)
    run_sweep(sweep, root, workers=workers, progress=progress, echo=echo)
    corr = correlate(root, sweep)["rows"]
    tau = {r["measure"]: abs(r["kendall_tau"]) for r in corr
           if r["group"] == "sparse" and r["target"] == "test_accuracy"}
    best_egf = max(tau["EGF_1"], tau["EGF_2"])
    best_g = max(tau["||g||_1"], tau["||g||_2"])
    ok6 = None if best_egf != best_egf or best_g != best_g else best_egf > best_g
    rows = scsdc_results(root, sweep)["rows"]
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
    return claims, [run_id(c) for c in expand(sweep)]


PRESETS = {"evci2022": evci2022, "tessera2021": tessera2021, "evci2019": evci2019}


def reproduce(paper: str, scale: str, root: str | Path, *, workers: int | None = None,
              progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the preset, evaluate its claims, write claims.md/claims.json and an HTML report."""
    if paper not in PRESETS:
        raise UserError(f"reproduce: unknown paper {paper!r}; valid: {', '.join(PAPERS)}")
    if scale not in SCALES:
        raise UserError(f"--scale: unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    root = Path(root)
    claims, runs = PRESETS[paper](root, scale, workers, progress, echo)
    outdir = root / "reproduce" / f"{paper}-{scale}"
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "claims.json").write_text(json.dumps([asdict(c) for c in claims], indent=1))
    (outdir / "claims.md").write_text(claims_markdown(paper, scale, claims))
    report = None
    try:
        from sparseflow.report.html import build_report

        report = str(build_report(root, runs, outdir / "report.html",
                                  title=f"{paper} ({scale} scale)"))
    except UserError:
        pass  # jinja2/matplotlib missing: the claims table is the result
    return {"paper": paper, "scale": scale, "claims": [asdict(c) for c in claims],
            "dir": str(outdir), "report": report}


def claims_markdown(paper: str, scale: str, claims: list[Claim]) -> str:
    """The claims table as Markdown."""
    lines = [f"# {paper}, {scale} scale", "", "| # | claim | verdict | measured |",
             "|---|---|---|---|"]
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines += [f"| {c.number} | {cell(c.text)} | {c.verdict} | {cell(c.measured)} |"
              for c in claims]
    return "\n".join(lines) + "\n"
