"""Figures of the analyses (matplotlib's Agg canvas, imported lazily: the ``analysis`` extra).

Each function takes plain data (lists of numbers and labels) and writes PNG or SVG by the
path's suffix, so the same figure serves the CLI, the HTML report and the papers' reproductions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sparseflow.figures import new_figure, save_figure


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
