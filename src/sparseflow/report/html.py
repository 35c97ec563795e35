"""A self-contained HTML report of runs: tables, figures embedded as data URIs, no network.

``build_report(root, run_ids, out)`` gathers the runs' summaries and stored metrics, draws what
applies to them (accuracy vs sparsity per method with the spread over seeds, gradient norm and
EGF over training, the change of the gradient norm at mask updates) and embeds the figures of
the analyses recorded for those runs (interpolations, curves, comparisons, signal propagation).
Every figure is also written as PNG and SVG, every table as CSV, beside the HTML file. Jinja2
renders with autoescaping on, so run names and config strings are HTML-escaped.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sparseflow.analysis.catalog import method_label
from sparseflow.errors import UserError
from sparseflow.plots import plot_lines
from sparseflow.store.database import Store, effective_status
from sparseflow.store.paths import store_path

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: sans-serif; margin: 2em; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td.l, th.l { text-align: left; }
figure { display: inline-block; margin: 0.5em; } img { max-width: 32em; }
figcaption { font-size: 0.85em; color: #555; }
td.sig { background: #c8efc8; font-weight: bold; } td.nonsig { background: #f6d5d5; }
</style></head><body>
<h1>{{ title }}</h1>
<p>{{ runs|length }} runs from <code>{{ root }}</code>.</p>
{% for section in sections %}
<h2>{{ section.title }}</h2>
{% if section.text %}<p>{{ section.text }}</p>{% endif %}
{% for table in section.tables %}
<table><tr>{% for h in table.header %}
<th class="{{ 'l' if loop.first else '' }}">{{ h }}</th>{% endfor %}</tr>
{% for row in table.rows %}{% set rowloop = loop %}<tr>{% for c in row %}
<td class="{{ 'l' if loop.first else '' }} {{ table.classes[rowloop.index0][loop.index0] }}">\
{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endfor %}
{% for fig in section.figures %}
<figure><img alt="{{ fig.caption }}" src="data:image/png;base64,{{ fig.data }}">
<figcaption>{{ fig.caption }}</figcaption></figure>
{% endfor %}
{% endfor %}
</body></html>
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.4f}"
    return "-" if v is None else str(v)


class _Report:
    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self.sections: list[dict[str, Any]] = []

    def section(self, title: str, text: str = "") -> dict[str, Any]:
        s = {"title": title, "text": text, "tables": [], "figures": []}
        self.sections.append(s)
        return s

    def table(self, section: dict[str, Any], name: str, header: list[str],
              rows: list[list[Any]], classes: list[list[str]] | None = None) -> None:
        cells = [[_fmt(c) for c in r] for r in rows]
        section["tables"].append({"header": header, "rows": cells,
                                  "classes": classes or [[""] * len(r) for r in rows]})
        with open(self.outdir / f"{name}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(cells)

    def figure(self, section: dict[str, Any], name: str, caption: str, draw: Any) -> None:
        png = self.outdir / f"{name}.png"
        try:
            draw(png)
            draw(self.outdir / f"{name}.svg")
        except ImportError:
            return  # matplotlib missing: the tables still tell the story
        self.embed(section, png, caption)

    def embed(self, section: dict[str, Any], png: Path, caption: str) -> None:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        section["figures"].append({"data": data, "caption": caption})


def _series(store: Store, rid: str, name: str) -> tuple[list[int], list[float]]:
    pts = [(s, v) for s, v in store.series(rid, name) if v is not None and math.isfinite(v)]
    return [p[0] for p in pts], [p[1] for p in pts]


def _label(run: dict[str, Any]) -> str:
    """The run's name when it has one, else what it is: ``scratch+ s=0.9 seed=0``."""
    if run.get("name"):
        return str(run["name"])
    cfg = run.get("config") or {}
    sp = "" if run["method"] in ("dense", "small_dense") else f" s={cfg.get('sparsity')}"
    return f"{method_label(cfg)}{sp} seed={run['seed']} [{run['run_id'][:8]}]"


def build_report(root: str | Path, run_ids: Sequence[str] | None = None,
                 out: str | Path | None = None, title: str = "sparseflow report",
                 sweep: Any = None) -> Path:
    """Write the HTML report of ``run_ids`` (all runs of the store when None); returns its path.

    With ``sweep`` (a Sweep or a sweep file), the report adds the sweep's correlation table and,
    for an SC-SDC sweep, its p-value table coloured by significance.
    """
    try:
        import jinja2
    except ImportError:
        raise UserError("the report needs jinja2 and matplotlib "
                        "(pip install 'sparseflow[analysis]')") from None
    root = Path(root)
    if not store_path(root).exists():
        raise UserError(f"{store_path(root)}: no run store here")
    out = Path(out) if out else root / "report" / "report.html"
    outdir = out.parent
    rep = _Report(outdir)
    with Store(store_path(root), readonly=True) as store:  # runs are only read
        ids = [store.resolve(r) for r in run_ids] if run_ids else \
            [r["run_id"] for r in store.list_runs()]
        if not ids:
            raise UserError(f"{store_path(root)}: no runs to report")
        try:  # only now, once the runs are known: bad input writes nothing
            outdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{outdir}: cannot write the report ({e.strerror or e}); "
                            "pass --out to write it elsewhere") from None
        runs = [store.get_run(r) for r in ids]
        for r in runs:
            r["status"] = effective_status(r)
        _runs_section(rep, runs)
        _accuracy_section(rep, runs)
        _flow_sections(rep, store, runs)
        _analysis_section(rep, store, ids)
    _signal_section(rep, root)
    if sweep is not None:
        _sweep_sections(rep, root, sweep)
    html = jinja2.Environment(autoescape=True).from_string(TEMPLATE).render(
        title=title, root=str(root), runs=runs, sections=rep.sections)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(html)
    os.replace(tmp, out)
    return out


def _runs_section(rep: _Report, runs: list[dict[str, Any]]) -> None:
    sec = rep.section("Runs")
    rows = []
    for r in runs:
        s, cfg = r.get("summary") or {}, r.get("config") or {}
        rows.append([r["run_id"], r.get("name") or "", method_label(cfg), cfg.get("model"),
                     cfg.get("dataset"),
                     s.get("sparsity", 0.0) if r["method"] != "dense" else 0.0, r["seed"],
                     r["status"], s.get("test_accuracy"), s.get("test_loss"),
                     s.get("egf_l2_mean11"), json.dumps(cfg.get("sparse", {}).get("mask"))])
    rep.table(sec, "runs", ["run", "name", "what", "model", "dataset", "sparsity", "seed",
                            "status",
                            "test acc", "test loss", "EGF_2 (mean of 11)", "mask"], rows)


def _accuracy_section(rep: _Report, runs: list[dict[str, Any]]) -> None:
    groups: dict[tuple[str, float], list[float]] = defaultdict(list)
    for r in runs:
        s = r.get("summary") or {}
        if r["status"] == "finished" and s.get("test_accuracy") is not None:
            sp = 0.0 if r["method"] in ("dense", "small_dense") else \
                float((r.get("config") or {}).get("sparsity", 0.0))
            init = "+" if (r.get("config") or {}).get("init") == "sparse" else ""
            groups[(r["method"] + init, sp)].append(float(s["test_accuracy"]))
    if not groups:
        return
    sec = rep.section("Accuracy", "Test accuracy per method and sparsity, mean and spread over "
                      "seeds.")
    rows = [[m, sp, len(v), statistics.mean(v), statistics.pstdev(v), min(v), max(v)]
            for (m, sp), v in sorted(groups.items())]
    rep.table(sec, "accuracy", ["method", "sparsity", "runs", "mean", "std", "min", "max"], rows)
    by_method: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (m, sp), v in sorted(groups.items()):
        by_method[m].append((sp, statistics.mean(v)))
    if any(len(v) > 1 for v in by_method.values()):
        series = {m: ([p[0] for p in v], [p[1] for p in v]) for m, v in by_method.items()}
        rep.figure(sec, "accuracy_vs_sparsity", "test accuracy vs sparsity (mean over seeds)",
                   lambda p: plot_lines(series, p, xlabel="sparsity", ylabel="test accuracy"))


def _flow_sections(rep: _Report, store: Store, runs: list[dict[str, Any]]) -> None:
    curves = {m: {} for m in ("flow/grad_l2", "flow/egf_l2")}
    deltas = {}
    for r in runs:
        for m in curves:
            xs, ys = _series(store, r["run_id"], m)
            if xs:
                curves[m][_label(r)] = (xs, ys)
        xs, ys = _series(store, r["run_id"], "flow_update/delta/grad_l2")
        if xs:
            deltas[_label(r)] = (xs, ys)
    if not any(curves.values()) and not deltas:
        return
    sec = rep.section("Gradient flow", "Measured on each run's fixed held-out batch, without the "
                      "regularisation term (masked gradient).")
    for m, name, ylabel in (("flow/grad_l2", "grad_norm", "||g||_2"),
                            ("flow/egf_l2", "egf", "EGF_2")):
        if curves[m]:
            series = curves[m]
            rep.figure(sec, name, f"{ylabel} over training",
                       lambda p, s=series, y=ylabel: plot_lines(s, p, xlabel="step", ylabel=y,
                                                                logx=True, logy=True))
    if deltas:
        rep.figure(sec, "mask_update_delta", "change of ||g||_2 across mask updates",
                   lambda p: plot_lines(deltas, p, xlabel="step",
                                        ylabel="after - before", logx=True))
        rows = [[lbl, len(ys), statistics.mean(ys), ys[0]] for lbl, (_, ys) in deltas.items()]
        rep.table(sec, "mask_update_delta", ["run", "updates measured", "mean change",
                                             "first change"], rows)


def _analysis_section(rep: _Report, store: Store, ids: list[str]) -> None:
    seen: set[str] = set()
    found = []
    for rid in ids:
        for art in store.artifacts(rid, "analysis"):
            if art["path"] not in seen:
                seen.add(art["path"])
                found.append(art)
    if not found:
        return
    sec = rep.section("Analyses", "Interpolations, curves and comparisons recorded for these "
                      "runs (sparseflow analyze ...).")
    rows = []
    for art in found:
        path = Path(art["path"])
        try:
            res = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        summary = ", ".join(f"{k}={_fmt(res[k])}" for k in
                            ("barrier", "monotone", "max_loss", "linear_max_loss", "subspace")
                            if k in res)
        rows.append([art["name"], summary])
        for png in sorted(path.parent.glob("*.png")):
            rep.embed(sec, png, f"{art['name']}: {png.stem}")
    rep.table(sec, "analyses", ["analysis", "result"], rows)


def _signal_section(rep: _Report, root: Path) -> None:
    """Signal-propagation studies found under ROOT/analyses (sparseflow analyze signal)."""
    pngs = sorted((root / "analyses").glob("signal-*/signal.png"))
    if not pngs:
        return
    sec = rep.section("Signal propagation", "Std of the network output at initialisation under "
                      "N(0, 1) inputs, against sparsity, per initialisation.")
    for png in pngs:
        rep.embed(sec, png, png.parent.name)


def _sweep_sections(rep: _Report, root: Path, sweep: Any) -> None:
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
    if sweep.scsdc:
        table = scsdc_results(root, sweep)["rows"]
        if not table:
            return
        sec = rep.section("SC-SDC", "One-sided tests of H1: accuracy(sparse) > accuracy(dense) "
                          "over seeds; green p < 0.05, red p > 0.5.")
        axes = [k for k in table[0] if k not in ("n_sparse", "n_dense", "mean_sparse",
                                                 "mean_dense", "welch_t", "welch_p", "mwu_u",
                                                 "mwu_p")]
        rows, classes = [], []
        for r in table:
            rows.append([*(r[a] for a in axes), r["mean_sparse"], r["mean_dense"], r["welch_p"],
                         r["mwu_p"]])
            colour = [_significance(r["welch_p"]), _significance(r["mwu_p"])]
            classes.append([""] * (len(axes) + 2) + colour)
        rep.table(sec, "scsdc", [*axes, "acc sparse", "acc dense", "p Welch", "p MWU"], rows,
                  classes)


def _significance(p: float) -> str:
    if p != p:
        return ""
    return "sig" if p < 0.05 else ("nonsig" if p > 0.5 else "")
