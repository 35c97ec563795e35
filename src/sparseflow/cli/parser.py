"""The parser of every ``sparseflow`` command in one place, so that ``sparseflow --help`` and
each sub-command's help read as one document; an argparse error is one line (exit 2) like every
other bad input."""

from __future__ import annotations

import argparse
import math
import textwrap
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


def _step(text: str) -> int | None:
    """An argparse type: a checkpoint step (an integer >= 0) or ``final`` (None)."""
    if text.strip().lower() == "final":
        return None
    try:
        return _int(0)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a step (an integer >= 0) or 'final', got {text!r}") from None


def _label_text(text: str) -> str:
    """An argparse type: a run name or tag, 1 to 80 printable characters, no comma."""
    if not 1 <= len(text) <= 80 or not text.isprintable() or "," in text:
        raise argparse.ArgumentTypeError(
            f"expected 1 to 80 printable characters without a comma, got {text!r}")
    return text


def _config_help() -> str:
    from sparseflow.config import Config
    from sparseflow.data import DATASETS
    from sparseflow.methods.registry import method_names
    from sparseflow.models import model_names
    from sparseflow.typed import describe

    valid = {"dataset": list(DATASETS), "model": model_names(), "method": method_names()}
    lines = ["config fields (set with -c FILE.yaml or --set KEY=VALUE):"]
    for name, tp, default, help_ in describe(Config):
        lines.append(f"  {name} ({tp}, default {default})")
        if name in valid:  # the registries' names (choices of the other fields are in help_)
            help_ = f"{help_} One of: {', '.join(valid[name])}."
        if help_:
            lines.extend(textwrap.wrap(help_, 88, initial_indent="      ",
                                       subsequent_indent="      "))
    return "\n".join(lines)


def _root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=None,
                   help="run store directory (default: $SPARSEFLOW_HOME or ./sparseflow-runs)")


def _study_setting_args(p: argparse.ArgumentParser, command: str) -> None:
    """``-c/--config`` and ``--set`` of a study preset: the user's setting over its base."""
    p.add_argument("-c", "--config", help="YAML config file: settings over the study's base, "
                   "for every run")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                   metavar="KEY=VALUE", help=f"override config fields of every run of the "
                   f"{command} study, e.g. dataset=digits model=mlp train.duration=2ep")


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
    run.add_argument("--name", type=_label_text, default=None,
                     help="a human name for the run (shown by runs list and the report)")
    run.add_argument("--tag", action="append", default=[], type=_label_text,
                     help="a tag for the run (repeat for several)")
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
    ls.add_argument("--where", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="only runs whose config has these values, e.g. method=rigl "
                    "sparsity=0.9")
    ls.add_argument("--tag", action="append", default=[], type=_label_text,
                    help="only runs with this tag (repeat: all of them)")
    ls.add_argument("--sort", default=None, metavar="KEY",
                    help="order by a column (run_id, name, label, status, sparsity, "
                    "distribution, duration, seed, test_accuracy, started) or any config "
                    "field; --sort=-KEY: descending")
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

    ex = sub.add_parser(
        "export", help="write a run's model as a compact sparse model file",
        description="Writes the model of a run's checkpoint as one file: every Linear weight "
        "with zeros in compressed sparse rows (int32 indices when they fit), every other "
        "tensor dense, and what rebuilding the architecture needs. Load it in Python with "
        "sparseflow.store.sparse_model.load_sparse_model(FILE) for sparse inference; "
        "torch.load(FILE, weights_only=True) reads it too. Prints the file, its size against "
        "the dense state dict's and each layer's density.")
    ex.add_argument("run_id", metavar="RUN", help="run id (a unique prefix is enough)")
    ex.add_argument("--out", help="output file (default: RUN_ID-stepSTEP.sparse.pt here)")
    ex.add_argument("--step", type=_step, default=None,
                    help="checkpoint step, or 'final' (the default: the last checkpoint)")
    ex.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                    help="dtype of the stored non-zero values (default float32; loading "
                    "computes in the model's own dtype)")
    ex.add_argument("--force", action="store_true", help="overwrite an existing output file")
    _root_arg(ex)

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
        description=textwrap.fill(
            "LeNet-300-100 on Fashion-MNIST at 90% sparsity with dense, scratch, scratch+, SET, "
            "RigL, gradual pruning and the lottery ticket, gradient flow measured, linear paths "
            "lottery -> pruned and scratch -> pruned, and the HTML report. -c FILE and --set "
            "KEY=VALUE run it on your own setting (e.g. --set dataset=digits model=mlp), for "
            "every run; the method, its mask and init are the study's own.", 88),
        epilog=_config_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    dm.add_argument("--epochs", type=_int(1, 10**6), default=None,
                    help="epochs per run (default 5; a shortcut for --set train.duration=Nep)")
    _study_setting_args(dm, "demo")
    dm.add_argument("--workers", type=_int(0, MAX_WORKERS), default=None,
                    help="sweep workers (0: in-process)")
    dm.add_argument("--no-progress", action="store_true")
    _root_arg(dm)

    rr = sub.add_parser(
        "reproduce", help="check a paper's claims with a preset study",
        description=textwrap.fill(
            "Trains a preset study of one paper (evci2022: gradient flow and lottery tickets; "
            "tessera2021: SC-SDC and EGF; evci2019: linear paths and curves), runs the analyses "
            "and prints each claim of the paper beside the measured values with a verdict: held, "
            "did not hold, or not measurable at this scale. Scales: smoke (minutes), cpu (about "
            "an hour on 2 cores), paper (the papers' settings, for a GPU cluster). -c FILE and "
            "--set KEY=VALUE run the study on your own setting (e.g. --set dataset=digits "
            "model=mlp), over the preset's base, for every run; the keys a study varies itself "
            "(the methods it compares, their inits, the seeds) are refused. Before anything "
            "trains, every dataset of the planned runs must be here or downloadable now; "
            "--dry-run lists every run with its estimated cost instead of training. "
            "claims.json records the command, seeds, wall time and environment, from which "
            "'sparseflow reproduce-doc' writes REPRODUCTION.md.", 88),
        epilog=_config_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    rr.add_argument("paper", choices=("evci2022", "tessera2021", "evci2019"))
    rr.add_argument("--scale", choices=("smoke", "cpu", "paper"), default="smoke")
    _study_setting_args(rr, "reproduce")
    rr.add_argument("--workers", type=_int(0, MAX_WORKERS), default=None,
                    help="sweep workers (0: in-process)")
    rr.add_argument("--no-progress", action="store_true")
    rr.add_argument("--dry-run", action="store_true",
                    help="list every run (the sources it needs too) with its config and its "
                    "estimated cost (steps, FLOPs, CPU hours on this machine from a short "
                    "timed probe, GPU hours at an assumed throughput), the analyses and "
                    "whether the data is here; trains, downloads and writes nothing")
    rr.add_argument("--no-probe", action="store_true",
                    help="with --dry-run: estimate CPU time at an assumed FLOP rate instead "
                    "of timing a few training steps of each architecture")
    rr.add_argument("--json", action="store_true", help="one JSON object")
    _root_arg(rr)

    rd = sub.add_parser(
        "reproduce-doc", help="write REPRODUCTION.md from the stored reproductions",
        description=textwrap.fill(
            "Writes a Markdown document of every reproduction under ROOT/reproduce (the "
            "claims.json of each 'sparseflow reproduce' run; the cpu scale first, then the "
            "others found): per paper the setting, the command, the wall time, the seeds and "
            "the environment it was measured in (commit, CPU, torch, Python), and per claim "
            "the paper's reported value, the measured value with its effect and 95% interval, "
            "the verdict and its rule.", 88))
    rd.add_argument("--out", default="REPRODUCTION.md",
                    help="output file (default ./REPRODUCTION.md; '-' = stdout)")
    _root_arg(rd)

    rp = sub.add_parser(
        "report", help="a self-contained HTML report of runs",
        description="A folder: index.html with the figures embedded (no network needed), "
        "figures/ (PDF, SVG, 300-dpi PNG) and tables/ (CSV, LaTeX booktabs). Runs that differ "
        "only by seed are pooled (mean, sample std, 95% CI); runs are named by what they are. "
        "Sections: runs, accuracy vs sparsity, gradient norm and EGF over training, changes at "
        "mask updates, and the analyses recorded for the runs. A file in the folder that no "
        "report wrote is never replaced (--force replaces it).")
    rp.add_argument("--runs", nargs="+", metavar="RUN_ID", help="runs (default: all)")
    rp.add_argument("--sweep", help="the runs of a sweep file")
    rp.add_argument("--out", help="output folder (default ROOT/report)")
    rp.add_argument("--force", action="store_true",
                    help="replace files in --out that no sparseflow report wrote")
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
    hs.add_argument("--no-progress", action="store_true",
                    help="no progress bar (there is one only on a terminal)")
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
    ip.add_argument("--no-progress", action="store_true",
                    help="no progress bar (there is one only on a terminal)")
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
    cm = asub.add_parser(
        "methods", help="accuracy, early gradient norm, change at updates, ITOP per method",
        description="Per model, sparsity, method and pattern of a sweep's finished runs: test "
        "accuracy (mean and 95%% t-interval over seeds), the mean ||g||_2 over the first "
        "--early fraction of training, the mean change of ||g||_2 at mask updates, the ITOP "
        "rate and the realised sparsity; written as methods.md, .csv and .tex.")
    cm.add_argument("file", help="sweep YAML file")
    cm.add_argument("--early", type=float, default=0.05,
                    help="fraction of each run's steps whose gradient norms are averaged "
                    "(default 0.05)")
    cm.add_argument("--out", help="output directory (default ROOT/analyses/methods-NAME)")
    cm.add_argument("--json", action="store_true", help="one JSON object")
    _root_arg(cm)
    cp.add_argument("--out", help="output directory")
    cp.add_argument("--json", action="store_true", help="one JSON object")
    _root_arg(cp)
    return parser
