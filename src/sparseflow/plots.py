"""Every figure sparseflow draws (matplotlib's Agg canvas, imported lazily: the ``analysis`` extra).

Each function takes plain data (lists of numbers and labels) and a target: a path ending in
``.pdf``, ``.png`` (300 dpi) or ``.svg`` writes that one file; a stem without a suffix writes
all three (:func:`save_figure_set`). Every figure is drawn in one style (:data:`STYLE`, sized
for a 3.4 in single column, applied through ``matplotlib.rc_context`` so matplotlib's global
state is never changed), gives each method one colour and marker (:func:`method_style`), has a
title in words and keeps its legend outside the data. The drawing functions return the
matplotlib ``Figure`` they saved, for checks; callers may ignore it.

Kept as one module past ~400 lines on purpose: every figure shares the style, the colour of
each method and the legend placement, and the layer rules name ``plots`` as one unit.
"""

from __future__ import annotations

import functools
import re
import textwrap
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparseflow.flow.signal import by_init
from sparseflow.landscape.compare import Comparison

#: single-column figure size in inches (two panels: twice the width)
WIDTH, HEIGHT = 3.4, 2.5
#: what a figure target may end in; a stem without a suffix writes all three
FIGURE_SUFFIXES = (".pdf", ".svg", ".png")
PNG_DPI = 300

# colour-blind-safe colours: Okabe-Ito and Paul Tol's "muted" scheme
_OI = {"black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
       "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7"}
_TOL = {"indigo": "#332288", "teal": "#44AA99", "olive": "#999933", "wine": "#882255",
        "rose": "#CC6677", "cyan": "#88CCEE", "grey": "#777777"}
#: colours for labels that name no known method, picked by a stable hash of their first word
OTHER_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#332288",
                "#882255", "#44AA99", "#999933", "#CC6677")

#: the rcParams of every figure (applied with ``matplotlib.rc_context``, never globally)
STYLE: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["Arial", "Helvetica", "Liberation Sans", "DejaVu Sans"],
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 9, "figure.titlesize": 9,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 7.5,
    "mathtext.default": "regular",
    "axes.linewidth": 0.6, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "axes.axisbelow": True, "axes.titlepad": 4.0,
    "axes.prop_cycle": f"cycler('color', {list(OTHER_COLORS)!r})",
    "grid.color": "#d9d9d9", "grid.linewidth": 0.5, "grid.alpha": 1.0,
    "lines.linewidth": 1.3, "lines.markersize": 3.5, "lines.markeredgewidth": 0.8,
    "errorbar.capsize": 2.0, "patch.linewidth": 0.6,
    "xtick.major.width": 0.6, "ytick.major.width": 0.6, "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4, "xtick.major.size": 3.0, "ytick.major.size": 3.0,
    "xtick.minor.size": 1.8, "ytick.minor.size": 1.8,
    "legend.frameon": False, "legend.handlelength": 2.0, "legend.borderaxespad": 0.3,
    "legend.columnspacing": 1.2, "legend.labelspacing": 0.3,
    "figure.figsize": (WIDTH, HEIGHT), "figure.dpi": 100,
    "savefig.dpi": PNG_DPI, "savefig.bbox": "tight", "savefig.pad_inches": 0.03,
    "svg.fonttype": "none", "svg.hashsalt": "sparseflow", "pdf.fonttype": 42, "ps.fonttype": 42,
}

#: (colour, marker, linestyle) of each method word of ``analysis.catalog.method_label``; a
#: trailing "+" (sparsity-aware init) keeps the colour, dashed, with its own marker
_METHODS: dict[str, tuple[str, str, str]] = {
    "dense": (_OI["black"], "s", "-"), "small dense": (_TOL["grey"], "p", "-"),
    "scratch": (_OI["blue"], "o", "-"), "scratch+": (_OI["blue"], "s", "--"),
    "scratch (pruned mask)": (_OI["sky"], "P", "-"),
    "scratch+ (pruned mask)": (_OI["sky"], "X", "--"),
    "static (loaded mask)": (_TOL["cyan"], "h", "-"),
    "static+ (loaded mask)": (_TOL["cyan"], "H", "--"),
    "one-shot pruned": (_TOL["wine"], "<", "-"), "pruned": (_OI["purple"], "v", "-"),
    "lottery": (_OI["vermillion"], "*", "-"),
    "SET": (_OI["green"], "^", "-"), "SET+": (_OI["green"], "v", "--"),
    "RigL": (_OI["orange"], "D", "-"), "RigL+": (_OI["orange"], "d", "--"),
    "RigL inverted": (_TOL["olive"], ">", "-"), "RigL inverted+": (_TOL["olive"], "<", "--"),
    "SNIP": (_TOL["indigo"], "X", "-"), "GraSP": (_TOL["teal"], "h", "-"),
    "SynFlow": (_TOL["rose"], "p", "-"),
}
#: the registry's method names, read as their words
_ALIASES = {"static": "scratch", "small_dense": "small dense", "oneshot": "one-shot pruned",
            "gradual": "pruned", "set": "SET", "rigl": "RigL", "rigl_inverted": "RigL inverted",
            "snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow"}
_WORDS = {w.lower(): w for w in _METHODS} | {a: w for a, w in _ALIASES.items()} | \
    {a + "+": w + "+" for a, w in _ALIASES.items() if w + "+" in _METHODS}
_BY_LENGTH = sorted(_WORDS, key=len, reverse=True)
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "p", "h", "*")


@dataclass(frozen=True)
class Series:
    """One curve: ``y`` over ``x``; ``lo``/``hi`` (values, not offsets) draw a band or error bar,
    e.g. a confidence interval over seeds."""

    x: Sequence[float]
    y: Sequence[float]
    lo: Sequence[float] | None = None
    hi: Sequence[float] | None = None

    def __post_init__(self) -> None:
        n = len(self.x)
        if len(self.y) != n or any(v is not None and len(v) != n for v in (self.lo, self.hi)):
            raise ValueError(f"Series: x, y, lo and hi need one value per point ({n} x values)")


@dataclass(frozen=True)
class EventMarks:
    """A measure just before (``x_before``, ``y_before``) and just after (``x_after``,
    ``y_after``) each mask update, one entry per update."""

    x_before: Sequence[float]
    y_before: Sequence[float]
    x_after: Sequence[float]
    y_after: Sequence[float]

    def __post_init__(self) -> None:
        if len({len(self.x_before), len(self.y_before), len(self.x_after),
                len(self.y_after)}) != 1:
            raise ValueError("EventMarks: x_before, y_before, x_after, y_after need one value "
                             "per mask update")


# -- style ---------------------------------------------------------------------------------------
@contextmanager
def style_context() -> Iterator[None]:
    """:data:`STYLE` applied inside the block (``matplotlib.rc_context``); rcParams are restored
    after it. Use it to draw a figure of one's own with :func:`new_figure` in the same style."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        yield


def _styled(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with style_context():
            return fn(*args, **kwargs)
    return wrapper


def _split_method(label: str) -> tuple[str | None, str]:
    """(method word or None, the words after it) of a legend label."""
    low = label.strip().lower()
    for word in _BY_LENGTH:
        if low == word or low.startswith(word + " "):
            return _WORDS[word], label.strip()[len(word):].strip()
    return None, label.strip()


def _hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def method_style(label: str) -> dict[str, Any]:
    """``{"color", "marker", "linestyle"}`` of a legend label, the same in every figure and
    process (pass it to ``ax.plot(**style)``).

    A label starting with a method word of sparseflow (``scratch``, ``scratch+``, ``lottery``,
    ``RigL inverted+``, ... or a registry name such as ``rigl``) gets that method's fixed colour
    (Okabe-Ito / Tol, colour-blind safe); a trailing "+" (sparsity-aware init) keeps the colour
    with a dashed line and another marker. Words after the method (``"RigL+ lr=0.1"``,
    ``"scratch s=0.95 seed=1"``) keep the colour and pick another marker (never the method's
    own) and line by a CRC-32 of method and words; the line stays solid-like (``-``, ``-.``)
    for a method and dashed-like (``--``, ``:``) for its "+". Any other label takes its colour
    from a CRC-32 of its first word.
    """
    method, rest = _split_method(label)
    if method is None:
        head, _, rest = label.strip().partition(" ")
        color, marker, ls = OTHER_COLORS[_hash(head) % len(OTHER_COLORS)], "o", "-"
    else:
        head, (color, marker, ls) = method, _METHODS[method]
    if rest.strip():
        h = _hash(f"{head}\0{rest.strip()}")
        markers = [m for m in _MARKERS if m != marker]
        styles = ("--", ":") if ls == "--" else ("-", "-.")
        marker, ls = markers[h % len(markers)], styles[(h // len(markers)) % len(styles)]
    return {"color": color, "marker": marker, "linestyle": ls}


def _figure_styles(labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """:func:`method_style` of each label, told apart within one figure: a label of no known
    method moves to a colour no other label uses, and a label that would look exactly like
    another moves to the next free marker (in sorted label order: independent of the order
    the labels come in)."""
    styles = {lb: method_style(lb) for lb in labels}
    taken = {s["color"] for lb, s in styles.items() if _split_method(lb)[0] is not None}
    heads: dict[str, str] = {}
    for lb in sorted(lb for lb in styles if _split_method(lb)[0] is None):
        head = lb.strip().partition(" ")[0]
        if head not in heads:
            start = _hash(head) % len(OTHER_COLORS)
            order = [OTHER_COLORS[(start + i) % len(OTHER_COLORS)]
                     for i in range(len(OTHER_COLORS))]
            heads[head] = next((c for c in order if c not in taken), order[0])
            taken.add(heads[head])
        styles[lb] = {**styles[lb], "color": heads[head]}
    used: set[tuple[str, str, str]] = set()
    for lb in sorted(styles):
        c, m, ls = styles[lb]["color"], styles[lb]["marker"], styles[lb]["linestyle"]
        if (c, m, ls) in used:
            lines = ("--", ":") if ls in ("--", ":") else ("-", "-.")
            m, ls = next(((m2, l2) for l2 in lines for m2 in _MARKERS
                          if (c, m2, l2) not in used), (m, ls))
            styles[lb] = {"color": c, "marker": m, "linestyle": ls}
        used.add((c, m, ls))
    return styles


# -- figures and files ---------------------------------------------------------------------------
@_styled
def new_figure(width: float = WIDTH, height: float = HEIGHT, *, ncols: int = 1,
               share: bool = False) -> tuple[Any, Any]:
    """(figure, axes) in :data:`STYLE` on an Agg canvas with constrained layout, without
    pyplot's global state; ``ncols > 1`` gives a row of axes (sharing x and y with ``share``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    if ncols == 1:
        return fig, fig.add_subplot(1, 1, 1)
    return fig, fig.subplots(1, ncols, sharex=share, sharey=share, squeeze=True)


def check_figure_path(path: str | Path) -> Path:
    """``path`` as a Path; a one-line ValueError unless it ends in .pdf, .png or .svg."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"plot path must end in .pdf, .png or .svg, got {path.name!r}")
    return path


def figure_paths(target: str | Path) -> list[Path]:
    """The files a figure target writes: itself when it ends in .pdf/.png/.svg, else (a stem
    without a suffix) STEM.pdf, STEM.svg and STEM.png. A suffix of letters only that is none of
    these (``.jpg``) is a one-line ValueError; other dots (``acc_s0.9``) belong to the stem."""
    path = Path(target)
    suffix = path.suffix.lower()
    if suffix in FIGURE_SUFFIXES:
        return [path]
    if re.fullmatch(r"\.[a-z]+", suffix):
        raise ValueError(f"figure path must end in .pdf, .png or .svg (or have no suffix: a "
                         f"stem, written as all three), got {path.name!r}")
    return [path.with_name(path.name + s) for s in FIGURE_SUFFIXES]


def _metadata(fmt: str) -> dict[str, Any]:
    """No creation date in SVG and PDF: the same figure gives the same bytes."""
    return {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt, {})


@_styled
def save_figure(fig: Any, path: str | Path) -> Path:
    """Save one file by the suffix (.png at 300 dpi, .svg with text as text, .pdf with TrueType
    fonts), cropped to the drawing with outside legends included; creates the folder."""
    path = check_figure_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fmt = path.suffix.lower().lstrip(".")
    fig.savefig(path, format=fmt, dpi=PNG_DPI, bbox_inches="tight",
                pad_inches=STYLE["savefig.pad_inches"], metadata=_metadata(fmt))
    return path


def save_figure_set(fig: Any, stem: str | Path) -> list[Path]:
    """Write STEM.pdf, STEM.svg and STEM.png (300 dpi) of one figure; returns the paths. A stem
    given with one of these suffixes has it removed first."""
    stem = Path(stem)
    if stem.suffix.lower() in FIGURE_SUFFIXES:
        stem = stem.with_suffix("")
    return [save_figure(fig, stem.with_name(stem.name + s)) for s in FIGURE_SUFFIXES]


def _write(fig: Any, target: str | Path) -> list[Path]:
    return [save_figure(fig, p) for p in figure_paths(target)]


def _legend(fig: Any, ax: Any, handles: list[Any], labels: list[str], *, force: bool = False,
            below: bool = False) -> Any:
    """A legend outside the data: right of ``ax`` (top-aligned) when the labels are short, else
    below the axes as a figure legend (the figure grows in height to hold its rows); none for a
    single series unless ``force``."""
    if len(handles) < 2 and not force:
        return None
    w, h = fig.get_size_inches()
    size = float(STYLE["legend.fontsize"])
    entry = max(len(lb) for lb in labels) * 0.55 * size / 72 + 0.45  # inches, estimated
    if entry <= 0.38 * w and not below:
        return ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                         borderaxespad=0.0)
    ncols = max(1, min(len(labels), int(w // entry)))
    rows = -(-len(labels) // ncols)
    fig.set_size_inches(w, h + rows * size * 1.45 / 72 + 0.1)
    return fig.legend(handles, labels, loc="outside lower center", ncols=ncols)


def _finish(fig: Any, ax: Any, target: str | Path, *, xlabel: str, ylabel: str, title: str,
            width: float, handles: list[Any], labels: list[str], force: bool = False) -> Any:
    """Axis labels, the title wrapped to ``width``, the legend outside the data
    (:func:`_legend`), the file(s) of ``target``; returns the Figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_wrap(title, width))
    _legend(fig, ax, handles, labels, force=force)
    _write(fig, target)
    return fig


def _wrap(title: str, width: float) -> str:
    """The title broken into lines that fit ``width`` inches at the title size."""
    return textwrap.fill(title, max(20, int(width * 72 / (0.5 * float(STYLE["axes.titlesize"])))))


def _set_xscale(ax: Any, xscale: str) -> None:
    if xscale == "symlog":  # linear on [0, 1], log beyond: step 0, 1, 2, 5, 10 all placed;
        # matplotlib widens the linear part by 1 / (1 - 1/base): linscale 0.9 makes it a decade
        ax.set_xscale("symlog", linthresh=1.0, linscale=0.9)
    elif xscale in ("linear", "log"):
        ax.set_xscale(xscale)
    else:
        raise ValueError(f"xscale must be linear, log or symlog, got {xscale!r}")


def _keep(x: np.ndarray, xscale: str) -> np.ndarray:
    """Mask of the points a scale can place (x > 0 on a log axis)."""
    return x > 0 if xscale == "log" else np.ones(len(x), dtype=bool)


def _arr(v: Sequence[float] | None) -> np.ndarray | None:
    return None if v is None else np.asarray(v, dtype=np.float64)


def _draw_series(ax: Any, series: Mapping[str, Series], styles: Mapping[str, dict[str, Any]],
                 xscale: str) -> tuple[dict[str, Any], bool]:
    """Draw each series (with its lo..hi band); returns ({label: line}, whether points at
    x <= 0 were left out for a log axis)."""
    handles, dropped = {}, False
    for label, s in series.items():
        x = _arr(s.x)
        keep = _keep(x, xscale)
        dropped |= not keep.all()
        st = styles[label]
        (line,) = ax.plot(x[keep], _arr(s.y)[keep], **st, label=label,
                          markevery=None if keep.sum() <= 25 else 0.1)
        if s.lo is not None and s.hi is not None:
            ax.fill_between(x[keep], _arr(s.lo)[keep], _arr(s.hi)[keep], color=st["color"],
                            alpha=0.18, linewidth=0)
        handles[label] = line
    return handles, dropped


def _draw_events(ax: Any, events: Mapping[str, EventMarks], styles: Mapping[str, dict[str, Any]],
                 xscale: str) -> bool:
    """Each mask update as an open marker (before), a filled one (after) and a thin connector
    between the two; nothing joins one update to the next. All artists have gid "events"."""
    from matplotlib.collections import LineCollection

    dropped = False
    for label, ev in events.items():
        xb, yb, xa, ya = (_arr(v) for v in (ev.x_before, ev.y_before, ev.x_after, ev.y_after))
        keep = _keep(xb, xscale) & _keep(xa, xscale)
        dropped |= not keep.all()
        xb, yb, xa, ya = xb[keep], yb[keep], xa[keep], ya[keep]
        st = styles[label]
        ax.add_collection(LineCollection([[(b, c), (a, d)] for b, c, a, d in zip(
            xb, yb, xa, ya, strict=True)], colors=st["color"], linewidths=0.6, alpha=0.8,
            gid="events", zorder=2.5))
        common = {"linestyle": "none", "marker": st["marker"], "gid": "events", "zorder": 3}
        ax.plot(xb, yb, color=st["color"], markerfacecolor="white", **common)
        ax.plot(xa, ya, color=st["color"], **common)
    ax.autoscale_view()
    return dropped


def _event_proxies() -> tuple[list[Any], list[str]]:
    from matplotlib.lines import Line2D

    common = {"linestyle": "none", "marker": "o", "color": "#555555"}
    return ([Line2D([], [], markerfacecolor="white", **common), Line2D([], [], **common)],
            ["before a mask update", "after a mask update"])


def _x_label(xlabel: str, dropped: bool) -> str:
    return f"{xlabel} (step 0 not shown)" if dropped else xlabel


def _series_figure(series: Mapping[str, Series], target: str | Path, *, xlabel: str,
                   ylabel: str, title: str, xscale: str = "linear", yscale: str = "linear",
                   events: Mapping[str, EventMarks] | None = None, vlines: Sequence[float] = (),
                   width: float = WIDTH, height: float = HEIGHT) -> Any:
    figure_paths(target)
    events = events or {}
    fig, ax = new_figure(width, height)
    _set_xscale(ax, xscale)
    styles = _figure_styles(list(dict.fromkeys([*series, *events])))
    handles, dropped = _draw_series(ax, series, styles, xscale)
    dropped |= _draw_events(ax, events, styles, xscale) if events else False
    for v in vlines:
        ax.axvline(v, color="#888888", linewidth=0.7, linestyle=":")
    if yscale == "log":
        ax.set_yscale("log", nonpositive="mask")
    elif yscale != "linear":
        raise ValueError(f"yscale must be linear or log, got {yscale!r}")
    labels = list(handles)
    if events:
        from matplotlib.lines import Line2D

        for lb in events:
            if lb not in handles:
                st = styles[lb]
                handles[lb] = Line2D([], [], linestyle="none", marker=st["marker"],
                                     color=st["color"])
                labels.append(lb)
    shown = [handles[lb] for lb in labels]
    if events:  # the legend also says what open and filled markers mean
        proxies, words = _event_proxies()
        shown, labels = shown + proxies, labels + words
    return _finish(fig, ax, target, xlabel=_x_label(xlabel, dropped), ylabel=ylabel, title=title,
                   width=width, handles=shown, labels=labels, force=bool(events))


# -- the figures ---------------------------------------------------------------------------------
@_styled
def plot_series(series: Mapping[str, Series], stem_or_path: str | Path, *, xlabel: str,
                ylabel: str, title: str, xscale: str = "linear", yscale: str = "linear",
                events: Mapping[str, EventMarks] | None = None, width: float = WIDTH,
                height: float = HEIGHT) -> Any:
    """One curve per label (colour and marker by :func:`method_style`; a band where the
    series has ``lo``/``hi``), and optionally the measurements around mask updates
    (``events``: open marker before, filled after, a thin connector per update, never a curve
    across updates).

    ``xscale="symlog"`` shows step 0 honestly: linear on [0, 1] (linthresh 1, that region as
    wide as one decade), logarithmic beyond, so 0, 1, 2, 5, 10, ... are all placed.
    ``xscale="log"`` leaves out points at x <= 0 and the x label then ends in
    "(step 0 not shown)". ``yscale="log"`` masks non-positive values. Returns the Figure.
    """
    return _series_figure(series, stem_or_path, xlabel=xlabel, ylabel=ylabel, title=title,
                          xscale=xscale, yscale=yscale, events=events, width=width,
                          height=height)


def _jitter(all_x: Sequence[float], n: int, transform: Any) -> list[float]:
    """Offsets (in the axis' scale coordinates) of ``n`` labels spread over 25% of the smallest
    gap between distinct x values."""
    xs = np.unique(transform.transform(np.asarray(all_x, dtype=np.float64).reshape(-1, 1)))
    xs = xs[np.isfinite(xs)]
    gaps = np.diff(xs)
    gap = float(gaps.min()) if len(gaps) else (abs(float(xs[0])) if len(xs) and xs[0] else 1.0)
    if n < 2:
        return [0.0]
    return [0.25 * gap * (i / (n - 1) - 0.5) for i in range(n)]


def _shifted(x: np.ndarray, offset: float, transform: Any) -> np.ndarray:
    t = transform.transform(x.reshape(-1, 1)).ravel() + offset
    return transform.inverted().transform(t.reshape(-1, 1)).ravel()


@_styled
def plot_errorbars(groups: Mapping[str, Series], path: str | Path, *, xlabel: str, ylabel: str,
                   title: str, xscale: str = "linear", connect: bool = True,
                   width: float = WIDTH, height: float = HEIGHT) -> Any:
    """Mean with an error bar from ``lo`` to ``hi`` at each x (e.g. sparsity) per label, one
    colour and marker per label (:func:`method_style`), each label shifted slightly in x so
    bars do not overlap (the shift is a few % of the smallest x gap); ``connect`` joins a
    label's means with a thin line. Returns the Figure."""
    figure_paths(path)
    fig, ax = new_figure(width, height)
    _set_xscale(ax, xscale)
    styles = _figure_styles(list(groups))
    tr = ax.xaxis.get_transform()
    offsets = _jitter([v for s in groups.values() for v in s.x], len(groups), tr)
    handles = []
    for (label, s), off in zip(groups.items(), offsets, strict=True):
        x, y = _arr(s.x), _arr(s.y)
        keep = _keep(x, xscale)
        yerr = None
        if s.lo is not None and s.hi is not None:
            yerr = np.clip([y - _arr(s.lo), _arr(s.hi) - y], 0, None)[:, keep]
        st = styles[label]
        handles.append(ax.errorbar(
            _shifted(x[keep], off, tr), y[keep], yerr=yerr, color=st["color"],
            marker=st["marker"], linestyle=st["linestyle"] if connect else "none",
            linewidth=0.9, elinewidth=0.8, markersize=4))
    dropped = any(not _keep(_arr(s.x), xscale).all() for s in groups.values())
    return _finish(fig, ax, path, xlabel=_x_label(xlabel, dropped), ylabel=ylabel, title=title,
                   width=width, handles=handles, labels=list(groups))


@_styled
def plot_event_changes(deltas: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                       path: str | Path, *, ylabel: str, title: str,
                       xlabel: str = "training step of the mask update",
                       xscale: str = "linear", width: float = WIDTH,
                       height: float = HEIGHT) -> Any:
    """The change of a measure at each mask update (``deltas[label] = (steps, after -
    before)``) as separate stems from a zero line, one marker per update, never joined across
    updates; labels are shifted slightly in x so stems at the same step stay apart. Say what
    changed in ``ylabel``, e.g. "change of ||g||_2 at a mask update (after - before)". All
    stems and markers have gid "events". Returns the Figure."""
    from matplotlib.collections import LineCollection

    figure_paths(path)
    fig, ax = new_figure(width, height)
    _set_xscale(ax, xscale)
    styles = _figure_styles(list(deltas))
    tr = ax.xaxis.get_transform()
    offsets = _jitter([v for xs, _ in deltas.values() for v in xs], len(deltas), tr)
    ax.axhline(0.0, color="#444444", linewidth=0.7, zorder=1.5)
    handles, dropped = [], False
    for (label, (steps, changes)), off in zip(deltas.items(), offsets, strict=True):
        x, d = _arr(steps), _arr(changes)
        keep = _keep(x, xscale)
        dropped |= not keep.all()
        x, d = _shifted(x[keep], off, tr), d[keep]
        st = styles[label]
        ax.add_collection(LineCollection([[(a, 0.0), (a, b)] for a, b in zip(x, d, strict=True)],
                                         colors=st["color"], linewidths=0.7, alpha=0.7,
                                         gid="events"))
        (h,) = ax.plot(x, d, linestyle="none", marker=st["marker"], color=st["color"],
                       gid="events", zorder=3)
        handles.append(h)
    ax.autoscale_view()
    return _finish(fig, ax, path, xlabel=_x_label(xlabel, dropped), ylabel=ylabel, title=title,
                   width=width, handles=handles, labels=list(deltas))


@_styled
def plot_paper_comparison(ours: Mapping[str, Series], paper: Mapping[str, Series],
                          path: str | Path, *, xlabel: str, ylabel: str, title: str,
                          xscale: str = "linear", yscale: str = "linear",
                          width: float = 2 * WIDTH, height: float = HEIGHT) -> Any:
    """Two panels side by side, "this run" (``ours``) and "paper (reported)" (``paper``), with
    the same x and y limits and the same style per label, one legend for both outside them; a
    figure of a reproduction. Returns the Figure."""
    figure_paths(path)
    fig, (left, right) = new_figure(width, height, ncols=2, share=True)
    styles = _figure_styles(list(dict.fromkeys([*ours, *paper])))
    handles: dict[str, Any] = {}
    dropped = False
    for ax, data, name in ((left, ours, "this run"), (right, paper, "paper (reported)")):
        _set_xscale(ax, xscale)
        drawn, lost = _draw_series(ax, data, styles, xscale)
        handles = {**drawn, **handles}
        dropped |= lost
        if not data:
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", color="#777777")
        ax.set_title(name)
        if yscale == "log":
            ax.set_yscale("log", nonpositive="mask")
    for ax in (left, right):
        ax.set_xlabel(_x_label(xlabel, dropped))
    left.set_ylabel(ylabel)
    fig.suptitle(_wrap(title, width))
    labels = [lb for lb in styles if lb in handles]
    _legend(fig, right, [handles[lb] for lb in labels], labels)
    _write(fig, path)
    return fig


@_styled
def plot_paper_values(ours: Mapping[str, float], paper: Mapping[str, float],
                      path: str | Path, *, ylabel: str, title: str, yscale: str = "linear",
                      width: float = WIDTH, height: float = HEIGHT) -> Any:
    """One value per method label, this run (filled marker) beside the paper's reported value
    (open marker, where the paper gives one), methods along x in the order of ``ours``, in each
    method's colour; a reproduction's headline numbers. Returns the Figure."""
    figure_paths(path)
    fig, ax = new_figure(width, height)
    labels = list(dict.fromkeys([*ours, *paper]))
    styles = _figure_styles(labels)
    for i, label in enumerate(labels):
        st = styles[label]
        if label in ours:
            ax.plot([i - 0.12], [ours[label]], linestyle="none", marker=st["marker"],
                    color=st["color"], markersize=6)
        if label in paper:
            ax.plot([i + 0.12], [paper[label]], linestyle="none", marker=st["marker"],
                    markerfacecolor="white", color=st["color"], markersize=6)
    if yscale == "log":
        ax.set_yscale("log", nonpositive="mask")
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0,
                  ha="right" if len(labels) > 3 else "center")
    ax.set_xlim(-0.6, len(labels) - 0.4)
    from matplotlib.lines import Line2D

    proxies = [Line2D([], [], linestyle="none", marker="o", color="#555555"),
               Line2D([], [], linestyle="none", marker="o", color="#555555",
                      markerfacecolor="white")]
    return _finish(fig, ax, path, xlabel="method", ylabel=ylabel, title=title, width=width,
                   handles=proxies, labels=["this run", "paper (reported)"], force=True)


@_styled
def plot_lines(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path,
               *, xlabel: str, ylabel: str, title: str = "", logx: bool = False,
               logy: bool = False, vlines: Sequence[float] = ()) -> Any:
    """One line per named (x, y) series (styles by :func:`method_style`), dotted vertical lines
    at ``vlines``; ``logx`` is the symlog x axis of :func:`plot_series` (step 0 placed),
    ``logy`` a log y axis. Without a ``title``: "YLABEL vs XLABEL". Returns the Figure."""
    return _series_figure({k: Series(list(x), list(y)) for k, (x, y) in series.items()}, path,
                          xlabel=xlabel, ylabel=ylabel, title=title or f"{ylabel} vs {xlabel}",
                          xscale="symlog" if logx else "linear",
                          yscale="log" if logy else "linear", vlines=vlines)


@_styled
def plot_path(alphas: Sequence[float], loss: Sequence[float], path: str | Path, *,
              accuracy: Sequence[float] | None = None, title: str = "") -> Any:
    """Loss (and accuracy on a second y axis) along the linear path between two solutions,
    the endpoints alpha = 0 and 1 marked by dotted lines. Returns the Figure."""
    figure_paths(path)
    fig, ax = new_figure()
    blue, red = _OI["blue"], _OI["vermillion"]
    (h1,) = ax.plot(list(alphas), list(loss), marker="o", color=blue)
    ax.set_xlabel("interpolation coefficient alpha (0 = first solution, 1 = second)")
    ax.set_ylabel("loss", color=blue)
    for v in (0.0, 1.0):
        ax.axvline(v, color="#888888", linewidth=0.7, linestyle=":")
    handles, labels = [h1], ["loss"]
    if accuracy is not None:
        ax2 = ax.twinx()
        ax2.spines["right"].set_visible(True)
        ax2.grid(False)
        (h2,) = ax2.plot(list(alphas), list(accuracy), marker="s", linestyle="--", color=red)
        ax2.set_ylabel("accuracy", color=red)
        handles, labels = [h1, h2], ["loss", "accuracy"]
    ax.set_title(_wrap(title or "Loss along the linear path between two solutions", WIDTH))
    _legend(fig, ax, handles, labels, below=True)
    _write(fig, path)
    return fig


@_styled
def plot_signal(rows: Sequence[Mapping], path: str | Path) -> Any:
    """std_mean of the output at init vs sparsity, one line per init with a std_min..std_max
    band, log y (non-positive values, a dead network, are left out). Returns the Figure."""
    figure_paths(path)
    series = {init: Series([float(r["sparsity"]) for r in g], [float(r["std_mean"]) for r in g],
                           [float(r["std_min"]) for r in g], [float(r["std_max"]) for r in g])
              for init, g in by_init(rows).items()}
    return _series_figure(series, path, xlabel="sparsity", ylabel="std of the output at init",
                          title="Signal propagation at init (input x ~ N(0, 1))", yscale="log")


@_styled
def plot_mds(c: Comparison, path: str | Path) -> Any:
    """The 2-D MDS of the pairwise L2 distances, one labelled point per model (colour and
    marker by :func:`method_style`). Returns the Figure."""
    figure_paths(path)
    fig, ax = new_figure(WIDTH, WIDTH)
    xy = np.asarray(c.mds, dtype=np.float64)
    styles = _figure_styles(list(dict.fromkeys(c.labels)))
    for label, (px, py) in zip(c.labels, xy, strict=True):
        st = styles[label]
        ax.plot([px], [py], linestyle="none", marker=st["marker"], color=st["color"],
                markersize=5)
        ax.annotate(label, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("MDS coordinate 1")
    ax.set_ylabel("MDS coordinate 2")
    ax.set_title("Solutions placed by their pairwise L2 distances (MDS)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.15)
    _write(fig, path)
    return fig
