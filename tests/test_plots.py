"""Figures for papers (sparseflow.plots): files (PDF, SVG with text as text, 300-dpi PNG), one
style applied without touching matplotlib's global state, a fixed colour and marker per method,
legends outside the data, step 0 on a symlog axis and mask-update events never joined."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from sparseflow import plots  # noqa: E402
from sparseflow.landscape.compare import Comparison  # noqa: E402
from sparseflow.plots import EventMarks, Series  # noqa: E402

STEPS = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]


@pytest.fixture(autouse=True)
def rc_unchanged():
    """No test may leave matplotlib's global rcParams changed."""
    before = dict(matplotlib.rcParams)
    yield
    assert dict(matplotlib.rcParams) == before


# -- file checks ---------------------------------------------------------------------------------
def png_dpi(path) -> float:
    """Dots per inch from the PNG's pHYs chunk (pixels per metre)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if kind == b"pHYs":
            ppx, ppy, unit = struct.unpack(">IIB", data[pos + 8:pos + 17])
            assert unit == 1 and ppx == ppy
            return ppx * 0.0254
        pos += 12 + length
    raise AssertionError("no pHYs chunk")


def svg_texts(path) -> str:
    """All <text> of an SVG joined (it must parse, with root <svg>)."""
    root = ET.parse(path).getroot()
    assert root.tag.rsplit("}", 1)[-1] == "svg"
    return "\n".join("".join(t.itertext()) for t in root.iter()
                     if t.tag.rsplit("}", 1)[-1] == "text")


def check_files(paths, *, texts=()) -> None:
    """Every file valid for its format; the SVG keeps ``texts`` as text."""
    for p in paths:
        assert p.exists() and p.stat().st_size > 0, p
        if p.suffix == ".pdf":
            data = p.read_bytes()
            assert data.startswith(b"%PDF-") and b"/FontFile2" in data  # TrueType (Type 42)
        elif p.suffix == ".png":
            assert png_dpi(p) == pytest.approx(300, abs=0.5)
        elif p.suffix == ".svg":
            text = svg_texts(p)
            for t in texts:
                assert t in text, (t, text[:500])


def check_set(stem, *, texts=()) -> None:
    paths = [stem.with_name(stem.name + s) for s in (".pdf", ".svg", ".png")]
    check_files(paths, texts=texts)


def legends_outside(fig) -> int:
    """Number of legends; each lies outside every axes' box."""
    with plots.style_context():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        for leg in legends:
            box = leg.get_window_extent(renderer)
            for ax in fig.axes:
                assert not box.overlaps(ax.get_window_extent(renderer)), (box, ax)
    return len(legends)


def event_artists(ax):
    lines = [a for a in ax.get_lines() if a.get_gid() == "events"]
    colls = [c for c in ax.collections if c.get_gid() == "events"]
    return lines, colls


def assert_not_joined(ax, n_events: int) -> None:
    """Event markers draw no line; every connector has exactly its two ends."""
    lines, colls = event_artists(ax)
    assert lines and colls
    assert all(ln.get_linestyle() == "None" for ln in lines)
    assert sum(len(ln.get_xdata()) > 2 and ln.get_linestyle() != "None" for ln in lines) == 0
    segments = [s for c in colls for s in c.get_segments()]
    assert len(segments) == n_events and all(len(s) == 2 for s in segments)


def series() -> dict[str, Series]:
    y = [1 / (1 + i) for i in range(len(STEPS))]
    return {"scratch": Series(STEPS, y, [0.8 * v for v in y], [1.2 * v for v in y]),
            "RigL+": Series(STEPS, [2 * v for v in y]),
            "RigL+ lr=0.1": Series(STEPS, [1.5 * v for v in y])}


def events() -> dict[str, EventMarks]:
    return {"RigL+": EventMarks([100, 200, 500], [0.2, 0.15, 0.1], [100, 200, 500],
                                [0.3, 0.25, 0.2])}


# -- style ---------------------------------------------------------------------------------------
def test_style_is_for_papers():
    s = plots.STYLE
    assert s["svg.fonttype"] == "none" and s["pdf.fonttype"] == 42
    assert s["font.family"] == "sans-serif"
    assert 8 <= s["font.size"] <= 9 and s["axes.labelsize"] == 9
    assert s["xtick.labelsize"] == 8 and 7 <= s["legend.fontsize"] <= 8
    assert 1.2 <= s["lines.linewidth"] <= 1.5
    with plots.style_context():
        assert matplotlib.rcParams["svg.fonttype"] == "none"


def test_method_style_same_colour_other_marker_for_variants():
    base, variant = plots.method_style("RigL"), plots.method_style("RigL lr=0.1")
    assert set(base) == {"color", "marker", "linestyle"}
    assert variant["color"] == base["color"]
    assert variant["marker"] != base["marker"]
    assert plots.method_style("RigL+ lr=0.1")["color"] == plots.method_style("RigL+")["color"]
    assert plots.method_style("scratch s=0.95")["color"] == plots.method_style("scratch")["color"]
    assert plots.method_style("rigl") == base  # the registry name reads as its word


def test_method_style_fixed_per_method_word():
    words = ["dense", "scratch", "scratch+", "scratch (pruned mask)", "small dense",
             "one-shot pruned", "pruned", "lottery", "SET", "SET+", "RigL", "RigL+",
             "RigL inverted", "RigL inverted+", "SNIP", "GraSP", "SynFlow"]
    styles = {w: plots.method_style(w) for w in words}
    bases = [w for w in words if not w.endswith("+")]
    assert len({styles[w]["color"] for w in bases}) == len(bases)  # one colour per method
    for w in words:  # "+" keeps its method's colour and differs in marker and line
        if w.endswith("+"):
            assert styles[w]["color"] == styles[w[:-1]]["color"]
            assert styles[w]["marker"] != styles[w[:-1]]["marker"]
            assert styles[w]["linestyle"] != styles[w[:-1]]["linestyle"]
    # the longest method word wins: these are not "scratch" or "RigL" variants
    assert styles["scratch (pruned mask)"]["color"] != styles["scratch"]["color"]
    assert styles["RigL inverted"]["color"] != styles["RigL"]["color"]
    assert plots.method_style("scratch (pruned mask) s=0.9")["color"] == \
        styles["scratch (pruned mask)"]["color"]


def test_method_style_deterministic_across_processes():
    labels = ["RigL lr=0.1", "scratch+ s=0.9 seed=2 [abcd1234]", "my-method", "SET+ x"]
    here = [plots.method_style(lb) for lb in labels]
    code = ("import json, sys; from sparseflow.plots import method_style; "
            f"print(json.dumps([method_style(x) for x in {labels!r}]))")
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout
        import json
        assert json.loads(out) == here
    assert plots.method_style("my-method") == plots.method_style("my-method")


def test_unknown_labels_get_distinct_colours_in_one_figure():
    labels = [f"init{i}" for i in range(6)]
    styles = plots._figure_styles(labels)
    assert len({s["color"] for s in styles.values()}) == 6
    assert plots._figure_styles(list(reversed(labels))) == styles  # order does not matter


def test_no_two_labels_of_a_figure_look_the_same():
    labels = [f"{m} s=0.9 seed={i} [abcdef{i:02d}]" for m in ("scratch", "scratch+", "RigL")
              for i in range(12)] + ["scratch", "scratch+", "RigL"]
    styles = plots._figure_styles(labels)
    looks = {(s["color"], s["marker"], s["linestyle"]) for s in styles.values()}
    assert len(looks) == len(labels)
    assert all(styles[lb]["color"] == plots.method_style(lb)["color"] for lb in labels)
    for lb in labels:  # a "+" stays dashed-like, its method solid-like
        dashed = styles[lb]["linestyle"] in ("--", ":")
        assert dashed == lb.split(" ")[0].endswith("+")


# -- paths ---------------------------------------------------------------------------------------
def test_figure_paths(tmp_path):
    assert plots.figure_paths(tmp_path / "a.svg") == [tmp_path / "a.svg"]
    assert [p.name for p in plots.figure_paths(tmp_path / "acc_s0.9")] == \
        ["acc_s0.9.pdf", "acc_s0.9.svg", "acc_s0.9.png"]
    with pytest.raises(ValueError, match="png or .svg"):
        plots.figure_paths(tmp_path / "a.jpg")
    assert plots.check_figure_path("x.pdf").suffix == ".pdf"
    with pytest.raises(ValueError, match="png or .svg"):
        plots.check_figure_path("x.jpg")


def test_save_figure_set_and_save_figure(tmp_path):
    fig, ax = plots.new_figure()
    ax.plot([0, 1], [0, 1])
    ax.set_title("A line")
    paths = plots.save_figure_set(fig, tmp_path / "sub" / "line")
    assert [p.name for p in paths] == ["line.pdf", "line.svg", "line.png"]
    check_files(paths, texts=["A line"])
    one = plots.save_figure(fig, tmp_path / "one.png")
    check_files([one])
    again = plots.save_figure_set(fig, tmp_path / "again.svg")  # a known suffix is dropped
    assert [p.name for p in again] == ["again.pdf", "again.svg", "again.png"]
    for a, b in zip(paths, again, strict=True):  # no dates: the same figure, the same bytes
        assert a.read_bytes() == b.read_bytes()


# -- new figures ---------------------------------------------------------------------------------
def test_plot_series_set_symlog_places_step_zero(tmp_path):
    stem = tmp_path / "grad"
    fig = plots.plot_series(series(), stem, xlabel="training step", ylabel="gradient norm",
                            title="Gradient norm during training", xscale="symlog",
                            events=events())
    check_set(stem, texts=["Gradient norm during training", "training step", "gradient norm"])
    assert legends_outside(fig) == 1
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"
    assert ax.xaxis.get_transform().linthresh == 1.0
    assert 0 in {ln.get_label(): ln for ln in ax.get_lines()}["scratch"].get_xdata()
    px = ax.transData.transform(np.column_stack([[0, 1, 2, 5, 10], np.ones(5)]))[:, 0]
    x0, x1 = ax.get_window_extent().intervalx
    assert np.all(np.isfinite(px)) and np.all(np.diff(px) > 0)
    assert x0 <= px[0] <= x1  # step 0 inside the axes
    # linear on [0, 1]: 0 -> 1 is as wide as 1 -> 10 (one decade)
    assert px[1] - px[0] == pytest.approx(px[4] - px[1], rel=1e-6)
    assert_not_joined(ax, 3)


def test_plot_series_log_drops_step_zero_and_says_so(tmp_path):
    path = tmp_path / "grad.svg"
    fig = plots.plot_series(series(), path, xlabel="training step", ylabel="gradient norm",
                            title="Gradient norm", xscale="log", yscale="log", events=events())
    ax = fig.axes[0]
    assert ax.get_xlabel() == "training step (step 0 not shown)"
    assert all(min(ln.get_xdata(), default=1) > 0 for ln in ax.get_lines())
    check_files([path], texts=["training step (step 0 not shown)", "Gradient norm"])
    assert [p.name for p in tmp_path.iterdir()] == ["grad.svg"]  # one file for a suffix


def test_plot_series_single_series_has_no_legend(tmp_path):
    fig = plots.plot_series({"dense": Series([1, 2], [3, 4])}, tmp_path / "a.png",
                            xlabel="x", ylabel="y", title="One curve")
    assert legends_outside(fig) == 0


def test_plot_series_rejects_bad_scale(tmp_path):
    with pytest.raises(ValueError, match="xscale"):
        plots.plot_series(series(), tmp_path / "a.png", xlabel="x", ylabel="y", title="t",
                          xscale="weird")
    with pytest.raises(ValueError, match="one value per point"):
        Series([1, 2], [1])


def test_plot_series_long_labels_go_below(tmp_path):
    long = {f"scratch+ s=0.9 seed={i} [abcdef{i:02d}]": Series([1, 2], [i, i + 1])
            for i in range(4)}
    fig = plots.plot_series(long, tmp_path / "a.png", xlabel="x", ylabel="y",
                            title="Many runs")
    assert legends_outside(fig) == 1 and fig.legends  # a figure legend below the axes
    assert fig.get_size_inches()[0] == pytest.approx(plots.WIDTH)


def test_plot_errorbars(tmp_path):
    groups = {m: Series([0.8, 0.9, 0.95], [0.9 - i / 100, 0.88, 0.8],
                        [0.88 - i / 100, 0.86, 0.77], [0.92 - i / 100, 0.9, 0.83])
              for i, m in enumerate(["scratch", "lottery", "RigL"])}
    stem = tmp_path / "acc"
    fig = plots.plot_errorbars(groups, stem, xlabel="sparsity", ylabel="test accuracy",
                               title="Test accuracy over seeds")
    check_set(stem, texts=["Test accuracy over seeds", "sparsity", "test accuracy"])
    assert legends_outside(fig) == 1
    ax = fig.axes[0]
    xs = [c.lines[0].get_xdata() for c in ax.containers]
    assert len(xs) == 3
    firsts = sorted(x[0] for x in xs)
    assert firsts[0] < firsts[1] < firsts[2] and firsts[2] - firsts[0] < 0.05  # jittered
    colors = {c.lines[0].get_color() for c in ax.containers}
    assert colors == {plots.method_style(m)["color"] for m in groups}


def test_plot_event_changes(tmp_path):
    deltas = {"scratch": ([100, 200, 300], [0.1, -0.2, 0.05]),
              "RigL": ([100, 200, 300], [0.3, 0.1, -0.1])}
    ylabel = "change of ||g||_2 at a mask update (after - before)"
    path = tmp_path / "delta.pdf"
    fig = plots.plot_event_changes(deltas, path, ylabel=ylabel,
                                   title="Gradient norm across mask updates")
    check_files([path])
    assert legends_outside(fig) == 1
    ax = fig.axes[0]
    assert_not_joined(ax, 6)
    assert any(list(ln.get_ydata()) == [0, 0] for ln in ax.get_lines())  # the zero line
    stem = tmp_path / "delta"
    plots.plot_event_changes(deltas, stem, ylabel=ylabel, title="Gradient norm changes")
    check_set(stem, texts=["Gradient norm changes", "training step of the mask update",
                           ylabel])


def test_plot_paper_comparison(tmp_path):
    ours = {"scratch": Series([0.8, 0.9], [0.9, 0.85]), "RigL": Series([0.8, 0.9], [0.92, 0.9])}
    paper = {"scratch": Series([0.8, 0.9, 0.95], [0.91, 0.86, 0.7]),
             "RigL": Series([0.8, 0.9, 0.95], [0.93, 0.91, 0.8])}
    stem = tmp_path / "repro"
    fig = plots.plot_paper_comparison(ours, paper, stem, xlabel="sparsity",
                                      ylabel="test accuracy", title="Reproduction of Table 2")
    check_set(stem, texts=["Reproduction of Table 2", "this run", "paper (reported)",
                           "sparsity", "test accuracy"])
    assert legends_outside(fig) == 1
    left, right = fig.axes[:2]
    assert left.get_xlim() == right.get_xlim() and left.get_ylim() == right.get_ylim()
    assert left.get_title() == "this run" and right.get_title() == "paper (reported)"
    for ax in (left, right):
        colors = {ln.get_label(): ln.get_color() for ln in ax.get_lines()}
        assert colors["scratch"] == plots.method_style("scratch")["color"]


# -- the existing figures ------------------------------------------------------------------------
def test_plot_lines_styled_with_legend_outside(tmp_path):
    fig = plots.plot_lines({"scratch": ([0, 1, 10], [1, 2, 3]), "lottery": ([0, 1, 10], [3, 2, 1])},
                           tmp_path / "l.pdf", xlabel="step", ylabel="loss", logx=True,
                           vlines=[5])
    check_files([tmp_path / "l.pdf"])
    assert legends_outside(fig) == 1
    ax = fig.axes[0]
    assert ax.get_title() == "loss vs step" and ax.get_xscale() == "symlog"


def test_plot_path_says_alpha_in_words(tmp_path):
    stem = tmp_path / "path"
    fig = plots.plot_path([0, 0.5, 1], [1, 2, 1], stem, accuracy=[0.9, 0.5, 0.9])
    xlabel = "interpolation coefficient alpha (0 = first solution, 1 = second)"
    check_set(stem, texts=[xlabel, "loss", "accuracy"])
    assert fig.axes[0].get_xlabel() == xlabel and fig.axes[0].get_title()
    assert legends_outside(fig) == 1


def test_plot_signal_and_mds_write_pdf(tmp_path):
    rows = [{"init": i, "sparsity": s, "std_mean": m * (1 - s), "std_min": 0.5 * m * (1 - s),
             "std_max": 1.5 * m * (1 - s)} for i, m in (("dense", 1.0), ("sparse", 2.0))
            for s in (0.0, 0.5, 0.9)]
    fig = plots.plot_signal(rows, tmp_path / "signal.pdf")
    check_files([tmp_path / "signal.pdf"])
    assert legends_outside(fig) == 1 and fig.axes[0].get_title()
    z = np.zeros((3, 3))
    c = Comparison(labels=["scratch", "lottery", "RigL"], l2=z, cosine=z, disagreement=z, kl=z,
                   sym_kl=z, accuracy=[0.9] * 3, jaccard=None, l2_to_init=[None] * 3,
                   cosine_to_init=[None] * 3, mds=np.array([[0, 0], [1, 0], [0, 1.0]]))
    plots.plot_mds(c, tmp_path / "mds")
    check_set(tmp_path / "mds", texts=["scratch", "lottery", "RigL", "MDS coordinate 1"])


def test_paper_values_figure_marks_ours_and_the_papers(tmp_path):
    from sparseflow.plots import plot_paper_values

    fig = plot_paper_values({"scratch": 0.05, "scratch+": 0.9, "RigL+": 2.0},
                            {"scratch": 0.04, "scratch+": 1.1, "RigL+": 2.5}, tmp_path / "v",
                            ylabel="mean ||g||_2", title="Early gradient norm", yscale="log")
    for suffix in (".pdf", ".svg", ".png"):
        assert (tmp_path / f"v{suffix}").stat().st_size > 0
    ax = fig.axes[0]
    filled = [ln for ln in ax.lines if ln.get_markerfacecolor() != "white"]
    hollow = [ln for ln in ax.lines if ln.get_markerfacecolor() == "white"]
    assert len(filled) == 3 and len(hollow) == 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["scratch", "scratch+", "RigL+"]
