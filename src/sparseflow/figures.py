"""The one way sparseflow makes and saves a matplotlib figure (Agg canvas, no pyplot).

Lives at the bottom of the package so every layer that draws (flow, landscape, report) shares it.
matplotlib is imported lazily (the ``analysis`` extra); callers that can do without a figure
catch the ImportError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
