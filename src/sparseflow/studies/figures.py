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


def evci2019_figures(paths: Mapping[str, Mapping[str, Any]],
                     curves: Mapping[str, Mapping[str, Any]]) -> list[PaperFigure]:
    """Evci et al. 2019: the linear paths (init -> pruned, scratch -> pruned) and the curves
    between scratch and pruned inside the sparse subspace and through the dense space, beside
    the straight line."""
    from sparseflow.plots import Series, plot_series

    out = _paths_figure(paths, "linear_paths", "Loss along straight lines to the pruning "
                        "solution (paper Figure 2)", "start")
    if curves:
        series = {f"Bezier, {sub} space": Series(c["ts"], c["loss"]) for sub, c in curves.items()}
        first = next(iter(curves.values()))
        if "linear_loss" in first and len(first["linear_loss"]) == len(first["ts"]):
            series["straight line"] = Series(first["ts"], first["linear_loss"])
        out.append(PaperFigure(
            "curves", "Loss along Bezier curves from scratch to pruned, inside the sparse "
            "subspace and through the dense space, and the straight line (paper Figure 3)",
            lambda p: plot_series(series, p, xlabel="curve parameter t", ylabel="loss",
                                  title="Curves between a scratch and the pruned solution")))
    return out


def tessera2021_tables(correlations: Sequence[Mapping[str, Any]],
                       scsdc: Sequence[Mapping[str, Any]]) -> list[PaperFigure]:
    """Tessera et al. 2021: the correlation table (Kendall tau of each measure with test
    accuracy) and the SC-SDC p-value table (one-sided H1: sparse > dense)."""
    out = []
    if correlations:
        out.append(PaperFigure("correlations", "Kendall tau between each gradient-flow measure "
                               "and test accuracy (paper Table 3)", table=(
                                   ["runs", "measure", "target", "n", "Kendall tau", "p"],
                                   [[r["group"], r["measure"], r["target"], r["n"],
                                     r["kendall_tau"], r["kendall_p"]] for r in correlations])))
    if scsdc:
        skip = ("n_sparse", "n_dense", "welch_t", "mwu_u")
        header = [k for k in scsdc[0] if k not in skip]
        out.append(PaperFigure("scsdc_pvalues", "SC-SDC: one-sided p-values of H1 accuracy "
                               "(sparse) > accuracy (dense) per cell (paper Tables 1-2)",
                               table=(header, [[r[k] for k in header] for r in scsdc])))
    return out
