"""The papers' figures, redrawn from a reproduction beside the values the papers report.

Each preset (``studies/evci2022.py``, ``evci2019.py``, ``tessera2021.py``) hands its measurements
to the builders here;
:func:`draw_figures` writes every figure as PDF, SVG and 300-dpi PNG and every table as CSV and
LaTeX into ``ROOT/reproduce/PAPER-SCALE/{figures,tables}``. Paper values are those stated in
docs/science.md section 7 (the papers' own setting: LeNet5 on MNIST at 95% sparsity for Evci et
al. 2022); where a paper gives no number for a figure, only this run's values are drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparseflow.analysis.tables import write_table
from sparseflow.store.database import Store

#: Evci et al. 2022, mean gradient norm early in training (LeNet5, MNIST, 95%; claim 2)
EVCI2022_EARLY_GRAD = {"scratch": 0.04, "scratch+": 1.1, "RigL+": 2.5}
#: Evci et al. 2022, test disagreement with the pruning solution (LeNet5; claim 4)
EVCI2022_DISAGREEMENT = {"lottery": 0.009, "scratch": 0.028}
#: the preset's run names in the words of the report and the figures
WORDS = {"scratch": "scratch", "scratch+": "scratch+", "small dense": "small dense",
         "rigl+": "RigL+", "set+": "SET+", "rigl inverted+": "RigL inverted+",
         "lottery": "lottery"}


@dataclass(frozen=True)
class PaperFigure:
    """A figure (``draw(stem)`` writes it) or a table (``table``: header and rows) of a
    reproduction, with its file name and a caption in words."""

    name: str
    caption: str
    draw: Callable[[Path], Any] | None = None
    table: tuple[Sequence[str], Sequence[Sequence[Any]]] | None = None


def draw_figures(items: Sequence[PaperFigure], outdir: Path) -> list[str]:
    """Write every figure (PDF, SVG, PNG) and table (CSV, LaTeX); the written names (figures
    are skipped when matplotlib is missing: the tables still are written)."""
    written = []
    for item in items:
        if item.table is not None:
            header, rows = item.table
            write_table(header, rows, outdir / "tables" / item.name)
            written.append(f"tables/{item.name}.csv")
        if item.draw is not None:
            (outdir / "figures").mkdir(parents=True, exist_ok=True)
            try:
                item.draw(outdir / "figures" / item.name)
            except ImportError:
                continue
            written.append(f"figures/{item.name}.png")
    return written


def _steps(store: Store, rid: str, metric: str, until: float = float("inf")
           ) -> tuple[list[float], list[float]]:
    pts = [(s, v) for s, v in store.series(rid, metric) if v is not None and s <= until]
    return [float(s) for s, _ in pts], [float(v) for _, v in pts]


def _paths_figure(paths: Mapping[str, Mapping[str, Any]], name: str, caption: str,
                  start: str) -> list[PaperFigure]:
    """The loss along linear paths to the pruning solution (interpolation results by label,
    on the split they were measured on), one curve each; none without paths."""
    from sparseflow.plots import Series, plot_series

    lines = {label: Series(res["alphas"], res["loss"]) for label, res in paths.items()}
    if not lines:
        return []
    split = str(next(iter(paths.values())).get("split", "train"))
    return [PaperFigure(name, f"{caption} ({split} set)", lambda p: plot_series(
        lines, p, xlabel=f"interpolation coefficient (0 = {start}, 1 = pruned)",
        ylabel=f"{split} loss", title="Linear paths to the pruning solution"))]


def evci2022_figures(store: Store, runs: Mapping[str, str], *, early: int,
                     early_means: Mapping[str, float], signal_rows: Sequence[Mapping],
                     paths: Mapping[str, Mapping[str, Any]],
                     disagreement: Mapping[str, float]) -> list[PaperFigure]:
    """Evci et al. 2022: signal propagation, gradient norm over the first steps and its early
    mean beside the paper's, changes at mask updates, the linear paths to the pruning solution
    and the lottery-ticket table beside the paper's disagreement. ``runs``: the seed-0 run id
    of each preset name; ``paths``: interpolation results by label."""
    from sparseflow.plots import (
        Series,
        plot_event_changes,
        plot_paper_values,
        plot_series,
        plot_signal,
    )

    out: list[PaperFigure] = []
    if signal_rows:
        out.append(PaperFigure("signal_propagation", "Output std at init against sparsity, dense "
                               "and sparsity-aware init (paper Figure 2)",
                               lambda p: plot_signal(signal_rows, p)))
    curves = {}
    for name, rid in runs.items():
        xs, ys = _steps(store, rid, "flow/grad_l2", until=max(4 * early, 2000))
        if xs:
            curves[WORDS.get(name, name)] = Series(xs, ys)
    if curves:
        out.append(PaperFigure(
            "gradient_norm_early", "Gradient norm over the first steps of training, one seed "
            "(paper Figure 4)", lambda p: plot_series(
                curves, p, xlabel="training step", ylabel="gradient norm ||g||_2",
                title="Gradient norm early in training", xscale="symlog", yscale="log")))
    ours = {WORDS.get(k, k): v for k, v in early_means.items() if v == v}
    if ours:
        out.append(PaperFigure(
            "gradient_norm_early_vs_paper", f"Mean gradient norm over the first {early} steps: "
            "this run (filled) and the paper's LeNet5/MNIST/95% values (open)",
            lambda p: plot_paper_values(ours, EVCI2022_EARLY_GRAD, p, yscale="log",
                                        ylabel="mean ||g||_2, early training",
                                        title="Early gradient norm, this run and the paper")))
    deltas = {}
    for name in ("rigl+", "set+", "rigl inverted+"):
        if name in runs:
            xs, ys = _steps(store, runs[name], "flow_update/delta/grad_l2")
            if xs:
                deltas[WORDS[name]] = (xs, ys)
    if deltas:
        out.append(PaperFigure(
            "mask_update_change", "Change of the gradient norm at each mask update (paper "
            "Figure 5)", lambda p: plot_event_changes(
                deltas, p, ylabel="change of ||g||_2 (after - before)",
                title="Gradient norm change at mask updates")))
    out += _paths_figure(paths, "paths_to_pruned", "Loss on the straight line from each "
                         "solution to the pruning solution (paper Figure 6)", "the solution")
    if disagreement:
        out.append(PaperFigure(
            "disagreement_vs_paper", "Test disagreement with the pruning solution: this run "
            "(filled) and the paper's LeNet5 values (open)",
            lambda p: plot_paper_values(dict(disagreement), EVCI2022_DISAGREEMENT, p,
                                        ylabel="disagreement with pruned",
                                        title="Disagreement with the pruning solution")))
        rows = [[label, value, EVCI2022_DISAGREEMENT.get(label),
                 next((r["barrier"] for lb, r in paths.items() if lb.startswith(label)), None)]
                for label, value in disagreement.items()]
        out.append(PaperFigure("lottery_table", "The lottery-ticket table", table=(
            ["solution", "disagreement with pruned", "paper (LeNet5)", "barrier to pruned"],
            rows)))
    return out


#: curve kinds and models of evci2019 in words (landscape/curves.py, models/registry.py)
_CURVE_WORDS = {"bezier": "Bezier", "polychain": "polygonal chain"}
_MODEL_WORDS = {"lenet300": "LeNet-300-100", "lenet5": "LeNet5"}


def _subspace_words(sub: str) -> str:
    return "sparse subspace" if sub == "sparse" else f"{sub} space"


def _evci2019_barrier_figures(rows: Sequence[Mapping[str, Any]]) -> list[PaperFigure]:
    """One figure per model: the loss above the worse endpoint on each curve (kind x
    subspace) against sparsity, the mean over seeds with its 95% interval as error bars
    (rows of ``evci2019.setting_rows``: measures named ``remaining: KIND SUBSPACE``). The
    straight line's, several times higher, is left to the table: the curves stay readable."""
    from sparseflow.plots import Series, plot_errorbars

    labels = {f"remaining: {k} {sub}": f"{_subspace_words(sub)}, {w}"
              for k, w in _CURVE_WORDS.items() for sub in ("sparse", "dense")}
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        groups = {}
        for measure, label in labels.items():
            pts = sorted((r["sparsity"], r["mean"], r["ci_low"], r["ci_high"]) for r in rows
                         if r["model"] == model and r["measure"] == measure
                         and r["mean"] == r["mean"])
            if pts:  # no interval (one seed): a bar of length 0
                groups[label] = Series([p[0] for p in pts], [p[1] for p in pts],
                                       [p[2] if p[2] == p[2] else p[1] for p in pts],
                                       [p[3] if p[3] == p[3] else p[1] for p in pts])
        if groups:
            n = max(r["n"] for r in rows if r["model"] == model)
            word = _MODEL_WORDS.get(model, model)
            out.append(PaperFigure(
                f"barrier_vs_sparsity_{model}", f"{word}: training loss above the worse "
                "endpoint on the curves scratch -> pruned inside the sparse subspace and "
                f"through the dense space against sparsity (mean over seeds, n = {n}; error "
                "bars: 95% Student-t interval; the straight line's is in the table)",
                lambda p, g=groups, w=word: plot_errorbars(
                    g, p, xlabel="sparsity", ylabel="loss above the worse endpoint",
                    title=f"Barrier left on the curves, {w}")))
    return out


def evci2019_figures(paths: Mapping[str, Mapping[str, Any]],
                     curves: Mapping[str, Mapping[str, Any]],
                     rows: Sequence[Mapping[str, Any]] = (), where: str = ""
                     ) -> list[PaperFigure]:
    """Evci et al. 2019: for one setting (``where``, in words) the linear paths (init ->
    pruned, scratch -> pruned) and the curves between scratch and pruned (``curves`` by
    ``KIND/SUBSPACE``) beside the straight line; over every setting (``rows`` of
    ``evci2019.setting_rows``: model, sparsity, measure, n, mean, 95% interval) the table
    ``barriers`` and a figure of the barrier left on each path against sparsity per model."""
    from sparseflow.plots import Series, plot_series

    at = f", {where}" if where else ""
    out = _paths_figure(paths, "linear_paths", "Loss along straight lines to the pruning "
                        f"solution (paper Figure 2){at}", "start")
    if curves:
        series = {}
        for key, c in curves.items():
            kind, _, sub = key.partition("/")
            series[f"{_subspace_words(sub or 'sparse')}, {_CURVE_WORDS.get(kind, kind)}"] = \
                Series(c["ts"], c["loss"])
        first = next(iter(curves.values()))
        if "linear_loss" in first and len(first["linear_loss"]) == len(first["ts"]):
            series["straight line"] = Series(first["ts"], first["linear_loss"])
        out.append(PaperFigure(
            "curves", "Loss along Bezier curves and polygonal chains from scratch to pruned, "
            "inside the sparse subspace and through the dense space, and the straight line "
            f"(paper Figure 3){at}",
            lambda p: plot_series(series, p, xlabel="curve parameter t", ylabel="loss",
                                  title="Curves between a scratch and the pruned solution")))
    if rows:
        out.append(PaperFigure(
            "barriers", "Every setting: mean over seeds and 95% interval (Student t; exact "
            "binomial for the share of monotone lines) of the linear barrier scratch -> "
            "pruned, the loss above the worse endpoint on each path and the gap sparse - "
            "dense per curve kind", table=(
                ["model", "sparsity", "measure", "n", "mean", "95% low", "95% high",
                 "interval"],
                [[r["model"], r["sparsity"], r["measure"], r["n"], r["mean"], r["ci_low"],
                  r["ci_high"], r["interval"]] for r in rows])))
        out += _evci2019_barrier_figures(rows)
    return out


def _parameter_set(measure: str) -> str:
    from sparseflow.analysis.tables import PARAMETER_SETS

    return next((k for k, (g, e) in PARAMETER_SETS.items() if measure in (*g, *e)), "")


def _scsdc_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    skip = ("n_sparse", "n_dense", "welch_t", "mwu_u")
    header = [k for k in rows[0] if k not in skip]
    at = header.index("mean_dense") + 1
    return ([*header[:at], "sparse - dense", *header[at:]],
            [[*(r[k] for k in header[:at]), r["mean_sparse"] - r["mean_dense"],
              *(r[k] for k in header[at:])] for r in rows])


def tessera2021_tables(correlations: Sequence[Mapping[str, Any]],
                       scsdc: Sequence[Mapping[str, Any]], *,
                       gaps: Sequence[Mapping[str, Any]] = (),
                       optimisers: Sequence[Mapping[str, Any]] = (),
                       activations: Sequence[Mapping[str, Any]] = ()) -> list[PaperFigure]:
    """Tessera et al. 2021: the correlation table (Kendall tau of each measure with test
    accuracy and loss, per parameter set, pooled and per depth), claim 6's |tau| gaps with
    their bootstrap intervals, and the SC-SDC tables (one-sided H1: sparse > dense) of the
    BatchNorm, Adam+L2 / AdamW and activation x optimiser cells."""
    out = []
    if correlations:
        order = {"weights": 0, "all": 1}
        rows = sorted(correlations, key=lambda r: (r["group"] != "sparse",
                                                   order.get(_parameter_set(r["measure"]), 2)))
        out.append(PaperFigure("correlations", "Kendall tau between each gradient-flow measure "
                               "(mean over 11 evenly spaced points) and the test metrics, over "
                               "the weights and over all parameters, pooled and per depth "
                               "(paper Table 3)", table=(
                                   ["parameters", "runs", "stratum", "measure", "target", "n",
                                    "Kendall tau", "p"],
                                   [[_parameter_set(r["measure"]), r["group"],
                                     r.get("stratum", "pooled"), r["measure"], r["target"],
                                     r["n"], r["kendall_tau"], r["kendall_p"]]
                                    for r in rows])))
    if gaps:
        # the two sets name their measures differently (EGF_1 / EGF_all_1, ...): by position,
        # EGF_1, EGF_2, then the gradient norm for p = 1, 2 over the row's parameters
        header = ["parameters", "stratum", "n", "|tau| EGF_1", "|tau| EGF_2", "|tau| norm_1",
                  "|tau| norm_2", "gap", "95% low", "95% high", "verdict"]
        rows = [[g["parameters"], g["stratum"], g["n"],
                 *(g[k] for k in g if k.startswith(("EGF", "||g"))),
                 g["gap"], g["ci_low"], g["ci_high"], g["verdict"]] for g in gaps]
        out.append(PaperFigure("correlation_gap", "Claim 6: |Kendall tau| with test accuracy "
                               "over the sparse runs of EGF and of the gradient norm over the "
                               "same parameters (weights: EGF_p and ||g_w||_p; all: EGF_all_p "
                               "and ||g||_p) and the gap best EGF - best norm with its 95% "
                               "bootstrap interval over runs", table=(header, rows)))
    if scsdc:
        out.append(PaperFigure("scsdc_pvalues", "SC-SDC: one-sided p-values of H1 accuracy "
                               "(sparse) > accuracy (dense) per cell (paper Tables 1-2)",
                               table=_scsdc_table(scsdc)))
    if optimisers:
        out.append(PaperFigure("scsdc_adam_l2", "SC-SDC with BatchNorm at 4 hidden layers: "
                               "Adam with coupled L2 against AdamW with decoupled weight decay",
                               table=_scsdc_table(optimisers)))
    if activations:
        out.append(PaperFigure("scsdc_activations", "SC-SDC per activation and optimiser: "
                               "one-sided p-values of H1 accuracy (sparse) > accuracy (dense)",
                               table=_scsdc_table(activations)))
    return out
