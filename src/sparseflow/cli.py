"""The ``sparseflow`` command: a thin layer that parses, calls the library and prints.

Bad input (any :class:`sparseflow.errors.UserError`) prints one line on stderr and exits 2.

Longer than ~400 lines on purpose: the parser of every command stands in one place, so that
``sparseflow --help`` and each sub-command's help read as one document; the commands only call
the library and print (text formatting: ``analysis/text.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sparseflow.errors import UserError

EXIT_USAGE = 2
SEED_MAX = 2**63 - 1  # what torch.manual_seed and the store's INTEGER column take
MAX_WORKERS = 1024


class _UsageError(UserError):
    """A command line that argparse refuses: one line, like every other bad input."""


class _Parser(argparse.ArgumentParser):
    """argparse, except that an error is a :class:`UserError` (one line, exit 2) instead of a
    usage block and ``sys.exit``; the sub-parsers are of this class too."""

    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog.removeprefix("sparseflow").strip()
        raise _UsageError(f"{where + ': ' if where else ''}{message} "
                          f"(see '{self.prog} --help')")


def _int(low: int, high: int = SEED_MAX) -> Any:
    """An argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {low} to {high}, got {text!r}")
        return value
    parse.__name__ = "int"
    return parse


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _config_help() -> str:
    from sparseflow.config import Config
    from sparseflow.typed import describe

    lines = ["config fields (set with -c FILE.yaml or --set KEY=VALUE):"]
    for name, tp, default, help_ in describe(Config):
        lines.append(f"  {name} ({tp}, default {default})")
        if help_:
            lines.extend(textwrap.wrap(help_, 88, initial_indent="      ",
                                       subsequent_indent="      "))
    return "\n".join(lines)


def _root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=None,
                   help="run store directory (default: $SPARSEFLOW_HOME or ./sparseflow-runs)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sparseflow`` command."""
    parser = _Parser(
        prog="sparseflow",
        description="Train sparse neural networks and see why they train well or badly.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run", help="train one model",
        description="Train one model. The run id is a hash of the non-default settings: the "
        "same command resumes an interrupted run and returns a finished one.",
        epilog=_config_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("-c", "--config", help="YAML config file")
    run.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                     metavar="KEY=VALUE", help="override config fields, e.g. optim.lr=0.1")
    run.add_argument("--json", action="store_true",
                     help="print the summary as one JSON object on the last line of stdout")
    run.add_argument("--force", action="store_true",
                     help="retrain from scratch even if the run finished or has checkpoints")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _root_arg(run)

    cfg = sub.add_parser("config", help="print the resolved config and its run id",
                         epilog=_config_help(),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    cfg.add_argument("-c", "--config", help="YAML config file")
    cfg.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                     metavar="KEY=VALUE", help="override config fields")

    runs = sub.add_parser("runs", help="read the run store")
    rsub = runs.add_subparsers(dest="runs_command", metavar="ACTION")
    ls = rsub.add_parser("list", help="one line per run")
    from sparseflow.store.database import STATUSES

    ls.add_argument("--status", choices=STATUSES, help="only runs with this status")
    ls.add_argument("--json", action="store_true", help="JSON lines")
    _root_arg(ls)
    show = rsub.add_parser("show", help="config, summary and metrics of one run")
    show.add_argument("run_id", help="run id (a unique prefix is enough)")
    show.add_argument("--json", action="store_true", help="one JSON object")
    _root_arg(show)
    exp = rsub.add_parser("export", help="export a table as CSV or Parquet")
    exp.add_argument("--format", choices=("csv", "parquet"), default="csv")
    exp.add_argument("--table", choices=("runs", "metrics", "artifacts"), default="runs")
    exp.add_argument("--out", help="output file (default: TABLE.FORMAT; '-' = stdout for csv)")
    _root_arg(exp)

    sw = sub.add_parser(
        "sweep", help="run a grid of runs (resumable, on Dask)",
        description="Runs every point of a sweep file (base config + grid/zip axes + seeds); "
        "each point is a run named by its content hash, so finished runs are skipped and an "
        "interrupted sweep completes only what is missing. 'sparseflow sweep status FILE' shows "
        "done / running / failed / diverged / pending. See docs/sweeps.md.")
    sw.add_argument("file", nargs="+", metavar="[status] FILE", help="sweep YAML file")
    sw.add_argument("--workers", type=_int(0, MAX_WORKERS), default=None,
                    help="local worker processes (default: one per core; 0: in-process)")
    sw.add_argument("--scheduler", help="tcp://HOST:PORT of a running Dask scheduler")
    sw.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")
    sw.add_argument("--retries", type=_int(0, 1000), default=3,
                    help="retries of a run whose worker died")
    sw.add_argument("--no-progress", action="store_true")
    sw.add_argument("--json", action="store_true", help="one JSON object per run")
    _root_arg(sw)

    sc = sub.add_parser(
        "scsdc", help="Same Capacity Sparse vs Dense Comparison over a sweep file",
        description="Runs an SC-SDC sweep (a sweep file with an 'scsdc' section: sparse_width, "
        "dense_widths, depths) and prints, per cell, the one-sided p-values of H1: "
        "acc(sparse) > acc(dense) over seeds (Welch t and Mann-Whitney U).")
    sc.add_argument("file", help="sweep YAML file with an scsdc section")
    sc.add_argument("--workers", type=_int(0, MAX_WORKERS), default=None)
    sc.add_argument("--scheduler", help="tcp://HOST:PORT of a running Dask scheduler")
    sc.add_argument("--no-run", action="store_true", help="only tabulate the stored runs")
    sc.add_argument("--no-progress", action="store_true")
    sc.add_argument("--json", action="store_true", help="one JSON object")
    _root_arg(sc)

    dm = sub.add_parser(
        "demo", help="the default study (the README's main job)",
        description="LeNet-300-100 on Fashion-MNIST at 90% sparsity with dense, scratch, "
        "scratch+, SET, RigL, gradual pruning and the lottery ticket, gradient flow measured, "
        "linear paths lottery -> pruned and scratch -> pruned, and the HTML report.")
    dm.add_argument("--epochs", type=_int(1, 10**6), default=5,
                    help="epochs per run (default 5)")
    dm.add_argument("--workers", type=_int(0, MAX_WORKERS), default=None,
                    help="sweep workers (0: in-process)")
    dm.add_argument("--no-progress", action="store_true")
    _root_arg(dm)

    rr = sub.add_parser(
        "reproduce", help="check a paper's claims with a preset study",
        description="Trains a preset study of one paper (evci2022: gradient flow and lottery "
        "tickets; tessera2021: SC-SDC and EGF; evci2019: linear paths and curves), runs the "
        "analyses and prints each claim of the paper beside the measured values with a verdict: "
        "held, did not hold, or not measurable at this scale. Scales: smoke (minutes), cpu "
        "(about an hour on 2 cores), paper (the papers' settings, for a GPU cluster).")
    rr.add_argument("paper", choices=("evci2022", "tessera2021", "evci2019"))
    rr.add_argument("--scale", choices=("smoke", "cpu", "paper"), default="smoke")
    rr.add_argument("--workers", type=_int(0, MAX_WORKERS), default=None,
                    help="sweep workers (0: in-process)")
    rr.add_argument("--no-progress", action="store_true")
    rr.add_argument("--json", action="store_true", help="one JSON object")
    _root_arg(rr)

    rp = sub.add_parser(
        "report", help="a self-contained HTML report of runs",
        description="One HTML file with figures embedded (no network needed): runs, accuracy vs "
        "sparsity per method, gradient norm and EGF over training, changes at mask updates, and "
        "the analyses recorded for the runs. Figures also as PNG and SVG, tables as CSV.")
    rp.add_argument("--runs", nargs="+", metavar="RUN_ID", help="runs (default: all)")
    rp.add_argument("--sweep", help="the runs of a sweep file")
    rp.add_argument("--out", help="output HTML file (default ROOT/report/report.html)")
    rp.add_argument("--title", default="sparseflow report")
    _root_arg(rp)

    an = sub.add_parser("analyze", help="analyses of stored runs and of initialisations")
    asub = an.add_subparsers(dest="analyze_command", metavar="ANALYSIS")
    hs = asub.add_parser(
        "hessian", help="Hessian spectrum restricted to the active weights",
        description="Top and bottom eigenvalues of the loss Hessian restricted to the active "
        "weights (Lanczos on Hessian-vector products), g^T H g and a Hutchinson trace, for the "
        "whole model and per layer, on the run's held-out batch. Stored as hessian/* metrics.")
    hs.add_argument("run_id", help="RUN_ID, RUN_ID@STEP or a checkpoint file")
    hs.add_argument("--step", type=_int(0), help="checkpoint step (default: the last)")
    hs.add_argument("--top-k", type=_int(1), default=5,
                    help="eigenvalues at each end (default 5)")
    hs.add_argument("--biases", action="store_true", help="include the layers' biases")
    hs.add_argument("--samples", type=_int(0, 10**6), default=50,
                    help="Hutchinson probes (default 50)")
    hs.add_argument("--batch-size", type=_int(1), help="split the held-out batch (memory)")
    hs.add_argument("--no-per-layer", action="store_true", help="whole model only")
    hs.add_argument("--json", action="store_true", help="one JSON object")
    _root_arg(hs)
    sg = asub.add_parser(
        "signal", help="output std at init vs sparsity, per initialisation",
        description="Signal propagation (Evci et al. 2022, Fig. 3): the std of the network "
        "output under N(0, 1) inputs at initialisation, against sparsity, for each init.")
    sg.add_argument("--model", default="lenet5", help="model name (default lenet5)")
    sg.add_argument("--sparsities", default="0:0.97:12",
                    help="START:STOP:COUNT or a comma list (default 0:0.97:12)")
    sg.add_argument("--inits", default="dense,liu,sparse", help="comma list of inits")
    sg.add_argument("--masks", choices=("heterogeneous", "uniform"), default="heterogeneous",
                    help="the paper's masks with per-unit fan-in varying, or uniform random")
    sg.add_argument("--repeats", type=_int(1, 10**6), default=3,
                    help="networks per point (default 3)")
    sg.add_argument("--batch", type=_int(1, 2**31 - 1), default=500,
                    help="random inputs (default 500)")
    sg.add_argument("--seed", type=_int(0), default=0)
    sg.add_argument("--input-shape", default="1,28,28", help="C,H,W or D (default 1,28,28)")
    sg.add_argument("--out", help="output directory (default ROOT/analyses/signal-MODEL)")
    sg.add_argument("--json", action="store_true", help="one JSON object")
    _root_arg(sg)
    ends = ("endpoints are RUN_ID (final), RUN_ID@0 (initialisation), RUN_ID@STEP or a "
            "checkpoint file")
    ip = asub.add_parser(
        "interpolate", help="loss along the straight line between two solutions",
        description="Loss and accuracy along theta(a) = (1-a) theta_A + a theta_B, the barrier "
        "max_{a in [0,1]} L(theta(a)) - ((1-a) L_A + a L_B) and whether the loss is monotone; "
        f"stored, plotted and printed. {ends}.")
    ip.add_argument("a")
    ip.add_argument("b")
    ip.add_argument("--alphas", default="-0.2:1.2:29",
                    help="START:STOP:COUNT or a comma list; write --alphas=-0.2:1.2:29 when "
                    "it starts with a minus sign")
    ip.add_argument("--split", choices=("train", "test"), default="train")
    ip.add_argument("--mask", choices=("shared", "union", "intersection", "a", "b"),
                    default="shared", help="mask rule between two sparse endpoints")
    ip.add_argument("--no-bn-reset", action="store_true",
                    help="keep interpolated BatchNorm statistics instead of re-estimating them")
    ip.add_argument("--out", help="output directory (default ROOT/analyses/interpolate-A-B)")
    ip.add_argument("--json", action="store_true", help="one JSON object")
    _root_arg(ip)
    cv = asub.add_parser(
        "curve", help="train a Bezier or polygonal-chain curve between two solutions",
        description="Fits the control point of a quadratic Bezier curve or polygonal chain by "
        "minimising E_t L(phi(t)) (Garipov et al. 2018), inside the endpoints' sparse subspace "
        f"or through the dense space, and compares its max loss with the straight line's. {ends}.")
    cv.add_argument("a")
    cv.add_argument("b")
    cv.add_argument("--kind", choices=("bezier", "polychain"), default="bezier")
    cv.add_argument("--subspace", choices=("sparse", "dense"), default="sparse")
    cv.add_argument("--epochs", type=_int(0, 10**6), default=10,
                    help="training epochs of the curve")
    cv.add_argument("--lr", type=_positive_float,
                    help="learning rate of the curve's control point")
    cv.add_argument("--batch-size", type=_int(1, 2**31 - 1), default=128)
    cv.add_argument("--points", type=_int(2, 10**6), default=21,
                    help="evaluation points along t")
    cv.add_argument("--seed", type=_int(0), default=0)
    cv.add_argument("--out", help="output directory")
    cv.add_argument("--json", action="store_true", help="one JSON object")
    cv.add_argument("--no-progress", action="store_true")
    _root_arg(cv)
    cp = asub.add_parser(
        "compare", help="distances, disagreement, KL, ensembles, mask overlap, MDS",
        description="Pairwise L2 and cosine distances (and to each run's init), test "
        "disagreement, KL between predictive distributions, accuracy of every ensemble "
        f"(mean of softmax), mask overlap (Jaccard) and a 2-D MDS embedding. {ends}.")
    cp.add_argument("runs", nargs="+")
    cr = asub.add_parser(
        "correlate", help="correlations of gradient-flow measures with accuracy over a sweep",
        description="Kendall tau and Spearman rho (with p-values) between each gradient-flow "
        "measure (||g||_1, ||g||_2, EGF_1, EGF_2, each the mean over 11 evenly spaced points) "
        "and test accuracy / test loss, separately for the sweep's sparse and dense runs.")
    cr.add_argument("file", help="sweep YAML file")
    cr.add_argument("--json", action="store_true", help="one JSON object")
    _root_arg(cr)
    cp.add_argument("--out", help="output directory")
    cp.add_argument("--json", action="store_true", help="one JSON object")
    _root_arg(cp)
    return parser


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by None, so the JSON output is strict."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def cmd_run(args: argparse.Namespace) -> int:
    from sparseflow.config import load_config, run_id
    from sparseflow.training.distributed import dist_info
    from sparseflow.training.run import execute, resolve_device

    cfg = load_config(args.config, args.overrides)
    resolve_device(cfg.device)  # device=cuda without CUDA: an error before anything is written
    main_rank = dist_info().main
    echo = (lambda s: print(s, file=sys.stderr)) if args.json else None
    if main_rank and not args.json:  # with --json, stderr holds only messages and errors
        print(f"run {run_id(cfg)}: {cfg.method} {cfg.model} on {cfg.dataset}, seed {cfg.seed}")
    summary = execute(cfg, root=args.root, progress=not args.no_progress, echo=echo,
                      force=args.force)
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()  # no rank tears the process group down while another still uses it
        tdist.destroy_process_group()
    if main_rank and args.json:
        print(json.dumps(_finite(summary), sort_keys=True))
    elif main_rank:
        from sparseflow.analysis.text import summary_text

        print(summary_text(summary))
    return 0 if summary.get("status") in ("finished", "diverged") else 1


def cmd_config(args: argparse.Namespace) -> int:
    from sparseflow.config import config_to_yaml, load_config, run_id

    cfg = load_config(args.config, args.overrides)
    print(f"# run id: {run_id(cfg)}")
    print(config_to_yaml(cfg), end="")
    return 0


def _open_store(root: str | None, must_exist: bool = True, readonly: bool = False
                ):  # noqa: ANN202
    """The run store under ``root``; ``readonly`` for commands that only read (a read-only
    folder works, nothing is created or changed)."""
    from sparseflow.store.database import Store
    from sparseflow.store.paths import default_root, store_path

    path = store_path(Path(root) if root else default_root())
    if (must_exist or readonly) and not path.exists():
        raise UserError(f"{path}: no run store here (run 'sparseflow run' first or pass --root)")
    return Store(path, readonly=readonly)


def cmd_runs(args: argparse.Namespace) -> int:
    from sparseflow.analysis.text import run_text, runs_table
    from sparseflow.store.database import effective_status

    if args.runs_command is None:
        raise UserError("runs: expected an action: list, show or export")
    with _open_store(args.root, readonly=True) as store:
        if args.runs_command == "list":
            rows = store.list_runs()
            for r in rows:
                r["status"] = effective_status(r)
            if args.status:
                rows = [r for r in rows if r["status"] == args.status]
            if args.json:
                for r in rows:
                    print(json.dumps({k: r[k] for k in ("run_id", "status", "method", "dataset",
                                                         "model", "seed", "summary")}))
            else:
                print(runs_table(rows))
            return 0
        if args.runs_command == "show":
            rid = store.resolve(args.run_id)
            run = store.get_run(rid)
            run["status"] = effective_status(run)
            metrics = store.metrics(rid)
            if args.json:
                print(json.dumps({**run, "metrics": metrics}, sort_keys=True))
            else:
                print(run_text(run, metrics))
            return 0
        if args.runs_command == "export":
            from sparseflow.store.export import export_table

            out = args.out or f"{args.table}.{args.format}"
            n = export_table(store, args.table, args.format, out)
            if out != "-":
                print(f"wrote {n} rows to {out}", file=sys.stderr)
            return 0
    return EXIT_USAGE


def _root(args: argparse.Namespace) -> Path:
    from sparseflow.store.paths import default_root

    return Path(args.root) if args.root else default_root()


def cmd_analyze(args: argparse.Namespace) -> int:
    from sparseflow.analysis import runs as analyses
    from sparseflow.analysis.text import curve_text, hessian_text, interpolation_text, table_text

    cmd = args.analyze_command
    if cmd is None:
        raise UserError("analyze: expected an analysis: hessian, signal, interpolate, curve, "
                        "compare or correlate")
    if cmd in ("hessian", "interpolate", "curve", "compare"):
        with _open_store(args.root, readonly=True):
            pass  # a clear error when there is no store
    root = _root(args)
    if cmd == "correlate":
        res, show = analyses.correlate(root, args.file), table_text
    elif cmd == "interpolate":
        res = analyses.interpolate_runs(root, args.a, args.b, alphas=args.alphas,
                                        split=args.split, mask=args.mask,
                                        bn_reset=not args.no_bn_reset, out=args.out)
        show = interpolation_text
    elif cmd == "curve":
        res = analyses.curve_runs(root, args.a, args.b, kind=args.kind, subspace=args.subspace,
                                  epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                  seed=args.seed, points=args.points, out=args.out,
                                  progress=not args.no_progress)
        show = curve_text
    elif cmd == "compare":
        res, show = analyses.compare_runs(root, args.runs, out=args.out), table_text
    elif cmd == "hessian":
        spec = args.run_id if args.step is None else f"{args.run_id}@{args.step}"
        res = analyses.hessian_of_run(root, spec, top_k=args.top_k, include_biases=args.biases,
                                      samples=args.samples, per_layer=not args.no_per_layer,
                                      batch_size=args.batch_size)
        show = hessian_text
    elif cmd == "signal":
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise UserError(f"--input-shape: expected integers like 1,28,28, got "
                            f"{args.input_shape!r}") from None
        res = analyses.signal_study(root, args.model, args.sparsities, args.inits,
                                    masks=args.masks, repeats=args.repeats, batch=args.batch,
                                    seed=args.seed, input_shape=shape, out=args.out)
        show = table_text
    else:
        return EXIT_USAGE
    if args.json:
        print(json.dumps(_finite({k: v for k, v in res.items() if k != "table"}),
                         sort_keys=True))
    else:
        print(show(res))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from sparseflow.sweep.client import results_table, run_sweep
    from sparseflow.sweep.spec import load_sweep
    from sparseflow.sweep.status import status_table

    files = list(args.file)
    if files[0] == "status":
        if len(files) != 2:
            raise UserError("sweep status: expected one sweep file")
        print(status_table(load_sweep(files[1]), _root(args)))
        return 0
    if len(files) != 1:
        raise UserError("sweep: expected one sweep file (or 'status FILE')")
    sweep = load_sweep(files[0])
    summaries = run_sweep(sweep, _root(args), workers=args.workers, scheduler=args.scheduler,
                          dry_run=args.dry_run, retries=args.retries,
                          progress=not args.no_progress,
                          echo=lambda m: print(m, file=sys.stderr))
    if args.json:
        for s in summaries:
            print(json.dumps(_finite(s), sort_keys=True))
    elif not args.dry_run:
        print(results_table(summaries))
    bad = [s for s in summaries if s.get("status") in ("failed", "blocked")]
    return 1 if bad else 0


def cmd_scsdc(args: argparse.Namespace) -> int:
    from sparseflow.analysis import runs as analyses
    from sparseflow.sweep.client import run_sweep
    from sparseflow.sweep.spec import load_sweep

    sweep = load_sweep(args.file)
    if not sweep.scsdc:
        raise UserError(f"{args.file}: not an SC-SDC sweep (it has no 'scsdc' section)")
    if not args.no_run:
        run_sweep(sweep, _root(args), workers=args.workers, scheduler=args.scheduler,
                  progress=not args.no_progress, echo=lambda m: print(m, file=sys.stderr))
    res = analyses.scsdc_results(_root(args), args.file)
    if args.json:
        print(json.dumps(_finite(res), sort_keys=True))
        return 0
    print(analyses.format_scsdc(res["rows"]))
    print(f"written to {res['dir']}" + (f" ({res['pending']} runs not finished)"
                                        if res["pending"] else ""))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sparseflow.studies.demo import default_study

    res = default_study(_root(args), epochs=args.epochs, workers=args.workers,
                        progress=not args.no_progress, echo=lambda m: print(m, file=sys.stderr))
    print("test accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in res["accuracy"].items()
                                        if v is not None))
    print("loss barrier on the straight line to the pruned solution: "
          + ", ".join(f"{k} {v:.3f}" for k, v in res["barrier_to_pruned"].items()))
    print(f"report: {res['report']}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from sparseflow.studies.reproduce import reproduce

    res = reproduce(args.paper, args.scale, _root(args), workers=args.workers,
                    progress=not args.no_progress, echo=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(_finite(res), sort_keys=True))
        return 0
    from sparseflow.analysis.text import claims_text

    print(claims_text(res))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sparseflow.report.html import build_report

    runs = list(args.runs or [])
    sweep = None
    if args.sweep:
        from sparseflow.config import run_id
        from sparseflow.sweep.spec import expand, load_sweep

        sweep = load_sweep(args.sweep)
        runs += [run_id(c) for c in expand(sweep)]
    path = build_report(_root(args), runs or None, args.out, title=args.title, sweep=sweep)
    print(f"report written to {path}")
    return 0


def _check_path(path: Path, what: str, *, folder: bool) -> None:
    """``path`` can become a folder (``folder``) or a file: it is not the other kind, and no
    folder above it is a file. Checked before anything is written."""
    if path.exists() and path.is_dir() != folder:
        kind = "a file, not a folder" if folder else "a folder, expected a file"
        raise UserError(f"{what}: {path} is {kind}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{what}: {path}: {parent} is a file, not a folder")
            return


def _check_args(args: argparse.Namespace) -> None:
    """What can be checked of the paths and the environment before a command writes."""
    if "root" in vars(args):
        if args.root:
            _check_path(Path(args.root), "--root", folder=True)
        else:
            from sparseflow.store.paths import default_root

            home = os.environ.get("SPARSEFLOW_HOME")
            _check_path(default_root(), "$SPARSEFLOW_HOME" if home else
                        "--root (default ./sparseflow-runs)", folder=True)
    out = getattr(args, "out", None)
    if out and out != "-":
        is_folder = args.command == "analyze"  # the analyses write a folder, the others a file
        _check_path(Path(out), "--out", folder=is_folder)
    if args.command in ("run", "sweep", "scsdc", "demo", "reproduce", "analyze"):
        from sparseflow.sparsity.kernels import kernel_name

        try:
            kernel_name()  # SPARSEFLOW_KERNELS: a bad value is an error now, not mid-run
        except ValueError as e:
            raise UserError(str(e)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparseflow`` command."""
    handlers = {"run": cmd_run, "config": cmd_config, "runs": cmd_runs,
                "analyze": cmd_analyze, "sweep": cmd_sweep, "scsdc": cmd_scsdc,
                "report": cmd_report, "reproduce": cmd_reproduce, "demo": cmd_demo}
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise _UsageError(f"expected a command: {', '.join(handlers)} "
                              "(see 'sparseflow --help')")
        _check_args(args)
        return handlers[args.command](args)
    except UserError as e:
        print(f"sparseflow: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        from sparseflow.training.interrupts import Interrupted

        if isinstance(e, Interrupted):
            print(f"sparseflow: interrupted at step {e.step} (checkpoint saved; run the same "
                  "command to resume)", file=sys.stderr)
        else:
            print("sparseflow: aborted (nothing saved since the last checkpoint; run the same "
                  "command to resume from it)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
