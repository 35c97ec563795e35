"""Every figure sparseflow draws (matplotlib's Agg canvas, imported lazily: the ``analysis`` extra).

Each function takes plain data (lists of numbers and labels) and writes PNG or SVG by the
path's suffix, so the same figure serves the CLI, the HTML report and the papers' reproductions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sparseflow.flow.signal import by_init
from sparseflow.landscape.compare import Comparison


def new_figure(width: float = 5.0, height: float = 3.6) -> tuple[Any, Any]:
    """(figure, axes) on an Agg canvas, without touching pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def check_figure_path(path: str | Path) -> Path:
    """``path`` as a Path; a one-line ValueError unless it ends in .png or .svg."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise ValueError(f"plot path must end in .png or .svg, got {path.name!r}")
    return path


def save_figure(fig: Any, path: str | Path) -> None:
    """Tight layout, create the folder, save as PNG or SVG by the suffix."""
    path = check_figure_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format=path.suffix.lower().lstrip("."))


def plot_lines(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path,
               *, xlabel: str, ylabel: str, title: str = "", logx: bool = False,
               logy: bool = False, vlines: Sequence[float] = ()) -> None:
    """One line per named (x, y) series."""
    fig, ax = new_figure()
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o" if len(xs) <= 40 else None, markersize=3,
                label=name)
    for v in vlines:
        ax.axvline(v, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("symlog", linthresh=10)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=9)
    if len(series) > 1:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_path(alphas: Sequence[float], loss: Sequence[float], path: str | Path, *,
              accuracy: Sequence[float] | None = None, title: str = "") -> None:
    """Loss (and accuracy on a second axis) along an interpolation path; endpoints marked."""
    fig, ax = new_figure()
    ax.plot(list(alphas), list(loss), marker="o", markersize=3, color="C0", label="loss")
    ax.set_xlabel("alpha")
    ax.set_ylabel("loss", color="C0")
    for v in (0.0, 1.0):
        ax.axvline(v, color="grey", linewidth=0.8, linestyle=":")
    if accuracy is not None:
        ax2 = ax.twinx()
        ax2.plot(list(alphas), list(accuracy), marker="s", markersize=2, color="C1")
        ax2.set_ylabel("accuracy", color="C1")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_signal(rows: Sequence[Mapping], path: str | Path) -> None:
    """Plot std_mean vs sparsity, one line per init with a std_min..std_max band, log y.

    Saves a PNG or an SVG chosen by ``path``'s suffix (ValueError otherwise). matplotlib is
    imported here (the ``analysis`` extra) and drawn with the Agg canvas, without pyplot,
    so no global backend is changed. Non-positive values (a dead network) are left out of
    the log axis.
    """
    path = check_figure_path(path)
    fig, ax = new_figure(6, 4)
    for init, group in by_init(rows).items():
        x = [float(r["sparsity"]) for r in group]
        (line,) = ax.plot(x, [float(r["std_mean"]) for r in group], marker="o", label=init)
        lo = [float(r["std_min"]) for r in group]
        hi = [float(r["std_max"]) for r in group]
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_yscale("log", nonpositive="mask")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("std of the output at init")
    ax.set_title("Signal propagation (x ~ N(0, 1))")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def plot_mds(c: Comparison, path: str | Path) -> None:
    """Scatter the 2-D MDS of the pairwise L2 distances, one labelled point per model.

    Saves a PNG or an SVG chosen by ``path``'s suffix (ValueError otherwise), creating parent
    folders. matplotlib is imported here and drawn on the Agg canvas without pyplot.
    """
    path = check_figure_path(path)
    fig, ax = new_figure(5, 5)
    xy = np.asarray(c.mds, dtype=np.float64)
    ax.scatter(xy[:, 0], xy[:, 1], s=30)
    for label, (px, py) in zip(c.labels, xy, strict=True):
        ax.annotate(label, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("MDS 1")
    ax.set_ylabel("MDS 2")
    ax.set_title("MDS of pairwise L2 distances between solutions")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    save_figure(fig, path)
