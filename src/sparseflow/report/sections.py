"""The sections of a report: runs, accuracy over seeds, gradient flow, analyses, sweeps.

Runs are pooled as a researcher pools them (:func:`sparseflow.analysis.groups.group_runs`: the
same config but the seed), named by what they are (``scratch+``, ``RigL``, ``lottery``, a
user-given name), drawn with one colour and marker per method in every figure
(:func:`sparseflow.plots.method_style`), with 95% confidence intervals over seeds wherever seeds
are pooled. Every figure is written as PDF, SVG and a 300-dpi PNG (the PNG is embedded), every
table as CSV and LaTeX (booktabs).
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sparseflow.analysis.catalog import method_label
from sparseflow.analysis.groups import RunGroup, group_runs
from sparseflow.analysis.stats import summarize
from sparseflow.analysis.tables import group_table, write_table
from sparseflow.report.output import ReportOutput
from sparseflow.store.database import Store

CI_NOTE = "bars and bands: 95% confidence interval of the mean over seeds (Student t)"


def fmt(v: Any) -> str:
    """A table cell: floats with 4 decimals, NaN / None as a dash."""
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.4f}"
    return "-" if v is None else str(v)


class Report:
    """The sections being built, and where their files are staged."""

    def __init__(self, out: ReportOutput) -> None:
        self.out = out
        self.sections: list[dict[str, Any]] = []

    def section(self, title: str, text: str = "") -> dict[str, Any]:
        """A new section (title in words, an optional paragraph)."""
        s: dict[str, Any] = {"title": title, "text": text, "tables": [], "figures": []}
        self.sections.append(s)
        return s

    def table(self, section: dict[str, Any], name: str, header: Sequence[str],
              rows: Sequence[Sequence[Any]], classes: list[list[str]] | None = None) -> None:
        """Show a table and write it as ``tables/NAME.csv`` and ``.tex``."""
        section["tables"].append({
            "header": list(header), "rows": [[fmt(c) for c in r] for r in rows],
            "classes": classes or [[""] * len(r) for r in rows]})
        write_table(header, [list(r) for r in rows], self.out.path(f"tables/{name}"))

    def figure(self, section: dict[str, Any], name: str, caption: str,
               draw: Callable[[Path], Any]) -> None:
        """``draw(stem)`` writes ``figures/NAME.{pdf,svg,png}``; the PNG is embedded."""
        stem = self.out.path(f"figures/{name}")
        try:
            draw(stem)
        except ImportError:
            return  # matplotlib missing: the tables still tell the story
        self.embed(section, stem.with_suffix(".png"), caption)

    def embed(self, section: dict[str, Any], png: Path, caption: str) -> None:
        """Embed a PNG (a data URI: the report needs no other file to show)."""
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        section["figures"].append({"data": data, "caption": caption})


def run_word(run: Mapping[str, Any]) -> str:
    """What a run is, in words: its name, else its method label and sparsity."""
    if run.get("name"):
        return str(run["name"])
    cfg = run.get("config") or {}
    if cfg.get("method") in ("dense", None):
        return method_label(cfg)
    return f"{method_label(cfg)} s={cfg.get('sparsity')}"


def group_of(groups: Sequence[RunGroup]) -> dict[str, RunGroup]:
    """``{run_id: its group}``."""
    return {r["run_id"]: g for g in groups for r in g.runs}


# -- runs ---------------------------------------------------------------------------------------
def runs_section(rep: Report, runs: list[dict[str, Any]], groups: Sequence[RunGroup]) -> None:
    """One row per run: its id, name, what it is, setting, seed, status and results."""
    sec = rep.section("Runs")
    label = {rid: g.label for rid, g in group_of(groups).items()}
    rows = []
    for r in runs:
        s, cfg = r.get("summary") or {}, r.get("config") or {}
        dense = r["method"] in ("dense", "small_dense")
        mask = (cfg.get("sparse") or {}).get("mask") if r["method"] in ("static",) else None
        rows.append([r["run_id"], r.get("name") or "", label.get(r["run_id"], method_label(cfg)),
                     cfg.get("model"), cfg.get("dataset"),
                     None if dense else s.get("sparsity", cfg.get("sparsity")), r["seed"],
                     r["status"], s.get("test_accuracy"), s.get("test_loss"),
                     s.get("egf_l2_mean11"), mask])
    rep.table(sec, "runs", ["run", "name", "what", "model", "dataset", "sparsity", "seed",
                            "status", "test acc", "test loss", "EGF_2 (mean of 11)", "mask"],
              rows)


# -- accuracy ------------------------------------------------------------------------------------
def _without_sparsity(label: str) -> str:
    return re.sub(r"\s*\bs=[0-9.e-]+", "", label).strip() or label


def accuracy_section(rep: Report, groups: Sequence[RunGroup]) -> None:
    """Test accuracy per group: mean, sample std, 95% CI, n; accuracy vs sparsity figure."""
    header, rows = group_table(groups, "test_accuracy")
    if not rows:
        return
    sec = rep.section("Accuracy", "Test accuracy of runs that share every setting but the seed: "
                      "mean, sample standard deviation and 95% confidence interval over seeds "
                      "(n seeds; one seed has no spread).")
    rep.table(sec, "accuracy", header, rows)
    points: dict[str, list[tuple[float, Any]]] = {}
    for g in groups:
        values = g.values("test_accuracy")
        if values:
            x = 0.0 if g.sparsity is None else g.sparsity
            points.setdefault(_without_sparsity(g.label), []).append((x, summarize(values)))
    if not any(len(v) > 1 for v in points.values()) and not any(
            s.n > 1 for v in points.values() for _, s in v):
        return
    from sparseflow.plots import Series, plot_errorbars

    series = {}
    for label, pts in points.items():
        pts.sort(key=lambda p: p[0])
        ys = [s.mean for _, s in pts]
        lo = [s.ci_low if s.n > 1 else s.mean for _, s in pts]
        hi = [s.ci_high if s.n > 1 else s.mean for _, s in pts]
        series[label] = Series([x for x, _ in pts], ys, lo, hi)
    rep.figure(sec, "accuracy_vs_sparsity", f"Test accuracy against sparsity ({CI_NOTE}; "
               "dense at sparsity 0)",
               lambda p: plot_errorbars(series, p, xlabel="sparsity", ylabel="test accuracy",
                                        title="Test accuracy against sparsity"))


# -- gradient flow -------------------------------------------------------------------------------
def _pooled(store: Store, group: RunGroup, metric: str, ranges: list | None = None
            ) -> tuple[list[float], list[Any]]:
    """Steps measured in every run of ``group`` and the summary over runs at each (and, into
    ``ranges``, the (min, max) over runs at each)."""
    per_run = []
    for r in group.runs:
        pts = {s: v for s, v in store.series(r["run_id"], metric)
               if v is not None and math.isfinite(v)}
        if pts:
            per_run.append(pts)
    if not per_run:
        return [], []
    steps = sorted(set.intersection(*(set(p) for p in per_run)))
    if ranges is not None:
        ranges.extend((min(p[s] for p in per_run), max(p[s] for p in per_run)) for s in steps)
    return [float(s) for s in steps], [summarize([p[s] for p in per_run]) for s in steps]


def _series(steps: list[float], stats: list[Any], ranges: list[tuple[float, float]]) -> Any:
    """Mean over seeds with the range over seeds as its band (on a log axis a t-interval of
    three seeds can reach below zero)."""
    from sparseflow.plots import Series

    pooled = any(s.n > 1 for s in stats)
    return Series(steps, [s.mean for s in stats],
                  [lo for lo, _ in ranges] if pooled else None,
                  [hi for _, hi in ranges] if pooled else None)


def flow_section(rep: Report, store: Store, groups: Sequence[RunGroup]) -> None:
    """Gradient norm and EGF over training (symlog steps, mask updates as separate markers)
    and the change at each mask update."""
    from sparseflow.plots import EventMarks

    curves: dict[str, dict[str, Any]] = {"flow/grad_l2": {}, "flow/egf_l2": {}}
    events: dict[str, dict[str, Any]] = {"grad_l2": {}, "egf_l2": {}}
    deltas: dict[str, tuple[list[float], list[float]]] = {}
    for g in groups:
        for metric in curves:
            ranges: list[tuple[float, float]] = []
            steps, stats = _pooled(store, g, metric, ranges)
            if steps:
                curves[metric][g.label] = _series(steps, stats, ranges)
        for m in events:
            xb, before = _pooled(store, g, f"flow_update/before/{m}")
            xa, after = _pooled(store, g, f"flow_update/after/{m}")
            if xb and len(xb) == len(xa):
                events[m][g.label] = EventMarks(xb, [s.mean for s in before], xa,
                                                [s.mean for s in after])
        xd, delta = _pooled(store, g, "flow_update/delta/grad_l2")
        if xd:
            deltas[g.label] = (xd, [s.mean for s in delta])
    if not any(curves.values()) and not deltas:
        return
    from sparseflow.plots import plot_event_changes, plot_series

    sec = rep.section("Gradient flow", "Measured on each run's fixed held-out batch without the "
                      "regularisation term (the masked gradient), at step 0, at steps 1, 2, 5, "
                      "10, ... and every flow.every steps; mean over seeds, the band their "
                      "range. "
                      "Open / filled markers: just before / after a mask update.")
    for metric, m, name, ylabel, what in (
            ("flow/grad_l2", "grad_l2", "grad_norm", "gradient norm ||g||_2", "Gradient norm"),
            ("flow/egf_l2", "egf_l2", "egf", "EGF_2 (mean layer gradient norm)",
             "Effective gradient flow")):
        if curves[metric]:
            series, marks = curves[metric], events[m] or None
            rep.figure(sec, name, f"{what} over training (symlog step axis: step 0 shown)",
                       lambda p, s=series, e=marks, y=ylabel, w=what: plot_series(
                           s, p, xlabel="training step", ylabel=y, xscale="symlog",
                           yscale="log", events=e, title=f"{w} during training"))
    if deltas:
        rep.figure(sec, "mask_update_change", "Change of the gradient norm at each mask update "
                   "(after - before; mean over seeds)",
                   lambda p: plot_event_changes(
                       deltas, p, ylabel="change of ||g||_2 (after - before)",
                       title="Gradient norm change at mask updates"))
        rows = [[label, len(ys), sum(ys) / len(ys), ys[0]] for label, (_, ys) in deltas.items()]
        rep.table(sec, "mask_update_change", ["runs", "updates measured",
                                              "mean change of ||g||_2", "first change"], rows)


# -- analyses ------------------------------------------------------------------------------------
def _endpoint_word(label: str, run_id: str | None, runs: Mapping[str, Mapping[str, Any]],
                   groups: Mapping[str, RunGroup]) -> str:
    """``scratch+``, ``lottery at step 0``...: an analysis endpoint in words."""
    run = runs.get(run_id or "")
    if run is None:
        return label
    word = groups[run_id].label if run_id in groups else run_word(run)
    step = label.rpartition("@")[2] if "@" in label else ""
    final = (run.get("summary") or {}).get("steps")
    if step.isdigit() and int(step) != final:
        word += " at init" if int(step) == 0 else f" at step {int(step)}"
    return word


def analysis_section(rep: Report, store: Store, runs: list[dict[str, Any]],
                     groups: Sequence[RunGroup]) -> None:
    """Interpolations redrawn with titles in words; curves and comparisons embedded."""
    by_id = {r["run_id"]: r for r in runs}
    gof = group_of(groups)
    seen: set[str] = set()
    found = []
    for r in runs:
        for art in store.artifacts(r["run_id"], "analysis"):
            if art["path"] not in seen:
                seen.add(art["path"])
                found.append(art)
    if not found:
        return
    sec = rep.section("Analyses", "Linear paths, curves and comparisons recorded for these runs "
                      "(sparseflow analyze ...). A barrier is the largest loss on the path above "
                      "the straight line between its endpoints' losses.")
    rows = []
    for i, art in enumerate(found):
        path = Path(art["path"])
        try:
            res = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        a = _endpoint_word(str(res.get("a", "")), res.get("a_run"), by_id, gof)
        b = _endpoint_word(str(res.get("b", "")), res.get("b_run"), by_id, gof)
        name = f"{a} -> {b}" if res.get("a") else art["name"]
        words = []
        if "barrier" in res:
            words.append(f"barrier {fmt(res['barrier'])}")
        if "monotone" in res:  # "never increases from the first solution to the second"
            words.append("the loss never rises going from the first to the second"
                         if res["monotone"] else "the loss rises somewhere going from the first "
                         "to the second")
        for k in ("max_loss", "linear_max_loss", "subspace"):
            if k in res:
                words.append(f"{k.replace('_', ' ')} {fmt(res[k])}")
        rows.append([name, "; ".join(words)])
        if "alphas" in res and "loss" in res:
            from sparseflow.plots import plot_path

            title = f"Linear path {a} -> {b}"
            rep.figure(sec, f"path_{i}", f"{title} ({res.get('split', 'test')} split)",
                       lambda p, r=res, t=title: plot_path(r["alphas"], r["loss"], p,
                                                           accuracy=r.get("accuracy"), title=t))
        else:
            for png in sorted(path.parent.glob("*.png")):
                rep.embed(sec, png, f"{name}: {png.stem}")
    rep.table(sec, "analyses", ["analysis", "result"], rows)


def signal_section(rep: Report, root: Path) -> None:
    """Signal-propagation studies found under ROOT/analyses (sparseflow analyze signal)."""
    pngs = sorted((root / "analyses").glob("signal-*/signal.png"))
    if not pngs:
        return
    sec = rep.section("Signal propagation", "Standard deviation of the network output at "
                      "initialisation under N(0, 1) inputs, against sparsity, per "
                      "initialisation.")
    for png in pngs:
        rep.embed(sec, png, png.parent.name)


def sweep_sections(rep: Report, root: Path, sweep: Any) -> None:
    """A sweep's correlation table and, for an SC-SDC sweep, its p-value table."""
    from sparseflow.analysis.runs import correlate, scsdc_results
    from sparseflow.sweep.spec import Sweep, load_sweep

    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    corr = correlate(root, sweep)["rows"]
    sec = rep.section("Gradient flow vs performance", "Kendall tau (two-sided p) between each "
                      "measure, averaged over 11 evenly spaced points, and the test metrics.")
    rows = [[r["group"], r["measure"], r["target"], r["n"], r["kendall_tau"], r["kendall_p"],
             r["spearman_rho"], r["spearman_p"]] for r in corr]
    rep.table(sec, "correlations", ["runs", "measure", "target", "n", "Kendall tau", "p",
                                    "Spearman rho", "p"], rows)
    if not sweep.scsdc:
        return
    table = scsdc_results(root, sweep)["rows"]
    if not table:
        return
    sec = rep.section("SC-SDC", "One-sided tests of H1: accuracy(sparse) > accuracy(dense) over "
                      "seeds; green p < 0.05, red p > 0.5.")
    skip = ("n_sparse", "n_dense", "mean_sparse", "mean_dense", "welch_t", "welch_p", "mwu_u",
            "mwu_p")
    axes = [k for k in table[0] if k not in skip]
    rows, classes = [], []
    for r in table:
        rows.append([*(r[a] for a in axes), r["mean_sparse"], r["mean_dense"], r["welch_p"],
                     r["mwu_p"]])
        classes.append([""] * (len(axes) + 2) + [significance(r["welch_p"]),
                                                 significance(r["mwu_p"])])
    rep.table(sec, "scsdc", [*axes, "acc sparse", "acc dense", "p Welch", "p MWU"], rows,
              classes)


def significance(p: float) -> str:
    """The cell class of a p-value: ``sig`` below 0.05, ``nonsig`` above 0.5."""
    if p != p:
        return ""
    return "sig" if p < 0.05 else ("nonsig" if p > 0.5 else "")


def groups_of(runs: Sequence[Mapping[str, Any]]) -> list[RunGroup]:
    """The finished runs pooled over seeds (:func:`group_runs`)."""
    return group_runs([r for r in runs if r.get("status") == "finished"])
