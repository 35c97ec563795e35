"""Study tables from run summaries: groups of seeds with confidence intervals, the
gradient-flow correlation table and SC-SDC p-values; tables written as CSV and LaTeX.

Inputs are plain run summaries (dicts from the store) with their configs, so the same functions
serve the CLI, the report and the paper reproductions. A table is ``(header, rows)``: a list of
column names and lists of cells (str, int, float or None for a blank), which
:func:`write_table` writes as ``.csv`` (for re-analysis) and ``.tex`` (for a paper).
"""

from __future__ import annotations

import csv
import math
import numbers
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sparseflow.analysis.groups import RunGroup
from sparseflow.analysis.stats import correlations, one_sided_tests, summarize
from sparseflow.flow.signal import by_init
from sparseflow.landscape.compare import Comparison

#: summary keys of the gradient-flow measures (means over the 11 evenly spaced points)
FLOW_MEASURES = ("grad_l1_mean11", "grad_l2_mean11", "egf_l1_mean11", "egf_l2_mean11",
                 "grad_w_l1_mean11", "grad_w_l2_mean11", "egf_all_l1_mean11",
                 "egf_all_l2_mean11")
#: their names in tables: ``||g||_p`` and ``EGF_p`` are the historical pair (all parameters
#: vs Linear/Conv weights); ``||g_w||_p`` is the norm over the weights, ``EGF_all_p`` EGF over
#: every parameter tensor (docs/science.md section 4)
MEASURE_NAMES = {"grad_l1_mean11": "||g||_1", "grad_l2_mean11": "||g||_2",
                 "egf_l1_mean11": "EGF_1", "egf_l2_mean11": "EGF_2",
                 "grad_w_l1_mean11": "||g_w||_1", "grad_w_l2_mean11": "||g_w||_2",
                 "egf_all_l1_mean11": "EGF_all_1", "egf_all_l2_mean11": "EGF_all_2"}
#: the measures over one set of parameters: (gradient norms, EGFs), p = 1, 2. ``weights``:
#: the Linear/Conv weight tensors, masked (the set Tessera et al. define EGF over); ``all``:
#: every trainable parameter tensor (weights, biases, BatchNorm, learnable activations)
PARAMETER_SETS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "weights": (("||g_w||_1", "||g_w||_2"), ("EGF_1", "EGF_2")),
    "all": (("||g||_1", "||g||_2"), ("EGF_all_1", "EGF_all_2")),
}
POOLED = "pooled"


def correlation_table(runs: Sequence[Mapping[str, Any]],
                      is_sparse: Callable[[Mapping[str, Any]], bool],
                      by: Callable[[Mapping[str, Any]], str] | None = None
                      ) -> list[dict[str, Any]]:
    """Kendall tau and Spearman rho (p-values) of each flow measure with test accuracy and test
    loss, separately for sparse and dense runs (Tessera et al. 2021's correlation table).

    ``runs`` are dicts with ``summary`` and ``config``; finished runs only. Every row has
    ``stratum``: ``"pooled"`` over all runs of the group, and with ``by`` (a run -> stratum
    name, e.g. ``"depth=2"``) also one row per stratum, in order of first appearance.
    """
    rows = []
    for group in ("sparse", "dense"):
        members = [r for r in runs if (r.get("status") == "finished")
                   and (is_sparse(r) == (group == "sparse"))]
        strata: dict[str, list[Mapping[str, Any]]] = {POOLED: members}
        if by is not None:
            for r in members:
                strata.setdefault(by(r), []).append(r)
        for stratum, rs in strata.items():
            for m in FLOW_MEASURES:
                xs = [r["summary"].get(m) for r in rs]
                for target in ("test_accuracy", "test_loss"):
                    ys = [r["summary"].get(target) for r in rs]
                    ok = [(x, y) for x, y in zip(xs, ys, strict=True)
                          if x is not None and y is not None]
                    c = correlations([p[0] for p in ok], [p[1] for p in ok])
                    rows.append({"group": group, "measure": MEASURE_NAMES[m], "target": target,
                                 "stratum": stratum, **c})
    return rows


def format_correlations(rows: Sequence[Mapping[str, Any]]) -> str:
    """The correlation table as text: tau (p) per measure, group and target; one block per
    stratum when the rows have strata besides ``pooled``."""
    cols = [(g, t) for g in ("sparse", "dense") for t in ("test_loss", "test_accuracy")]
    head = f"{'measure':10s}" + "".join(f"{g + ' ' + t.split('_')[1]:>24s}" for g, t in cols)
    lines = [head, "(Kendall tau, p; Spearman rho in the JSON)"]
    by = {(r["group"], r["target"], r["measure"], r.get("stratum", POOLED)): r for r in rows}
    strata = list(dict.fromkeys(r.get("stratum", POOLED) for r in rows))
    for stratum in strata:
        if strata != [POOLED]:
            lines.append(f"-- {stratum}")
        for m in MEASURE_NAMES.values():
            cells = []
            for g, t in cols:
                r = by.get((g, t, m, stratum))
                cells.append("-" if r is None or r["n"] < 3 else
                             f"{r['kendall_tau']:+.3f} (p {r['kendall_p']:.3f}) n={r['n']}")
            lines.append(f"{m:10s}" + "".join(f"{c:>24s}" for c in cells))
    return "\n".join(lines)


def scsdc_table(pairs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One-sided tests of H1: acc(sparse) > acc(dense) per SC-SDC cell.

    ``pairs`` items: ``{"cell": hashable description, "kind": "sparse"|"dense",
    "accuracy": float | None}``; returns one row per cell with both p-values and the means.
    """
    acc: dict[Any, dict[str, list[float]]] = defaultdict(lambda: {"sparse": [], "dense": []})
    for p in pairs:
        if p.get("accuracy") is not None:
            acc[p["cell"]][p["kind"]].append(float(p["accuracy"]))
    rows = []
    for cell, v in acc.items():
        rows.append({"cell": cell, **one_sided_tests(v["sparse"], v["dense"])})
    return rows


def signal_table(rows: Sequence[Mapping]) -> str:
    """Plain-text table: one line per sparsity, one column per init, cells = std_mean.

    Values in ``%.3e``; a missing (init, sparsity) cell is ``-``.
    """
    groups = by_init(rows)
    inits = list(groups)
    levels = sorted({float(r["sparsity"]) for r in rows})
    cell = {(str(r["init"]), float(r["sparsity"])): float(r["std_mean"]) for r in rows}
    width = max([10, *(len(i) for i in inits)])
    lines = ["sparsity" + "".join(f"  {i:>{width}}" for i in inits)]
    for s in levels:
        vals = [f"{cell[(i, s)]:.3e}" if (i, s) in cell else "-" for i in inits]
        lines.append(f"{s:8.4f}" + "".join(f"  {v:>{width}}" for v in vals))
    return "\n".join(lines)


def _matrix_block(title: str, labels: Sequence[str], m: np.ndarray, fmt: str) -> list[str]:
    width = max(10, *(len(s) for s in labels))
    lines = [title, " " * width + "".join(f"  {s:>{width}}" for s in labels)]
    for label, row in zip(labels, m, strict=True):
        lines.append(f"{label:<{width}}" + "".join(f"  {format(v, fmt):>{width}}" for v in row))
    return lines


def _opt(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def comparison_table(c: Comparison, top: int = 5) -> str:
    """Plain-text report of a :class:`Comparison`.

    Blocks: pairwise disagreement, L2 distance, KL(row || column), Jaccard (when masks were
    given); one line per model with accuracy, L2 and cosine distance to init (``-`` when no
    init); the ``top`` best ensembles by accuracy (ties: smaller, then lexicographically
    first subsets) and the ensemble of all models.
    """
    labels = c.labels
    lines = _matrix_block("disagreement", labels, c.disagreement, ".4f")
    lines += [""] + _matrix_block("L2 distance", labels, c.l2, ".4g")
    lines += [""] + _matrix_block("KL(row || column)", labels, c.kl, ".4g")
    if c.jaccard is not None:
        lines += [""] + _matrix_block("mask Jaccard (pooled)", labels, c.jaccard, ".4f")
    width = max(10, *(len(s) for s in labels))
    lines += ["", f"{'model':<{width}}  {'accuracy':>10}  {'L2 to init':>12}  {'cos to init':>12}"]
    for i, label in enumerate(labels):
        lines.append(
            f"{label:<{width}}  {c.accuracy[i]:>10.4f}  {_opt(c.l2_to_init[i], '.4g'):>12}"
            f"  {_opt(c.cosine_to_init[i], '.4g'):>12}"
        )
    if c.ensembles:
        ranked = sorted(c.ensembles.items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))
        lines += ["", "best ensembles (mean of softmax probabilities)"]
        for subset, acc in ranked[:top]:
            lines.append(f"  {acc:.4f}  " + " + ".join(labels[i] for i in subset))
        everyone = tuple(range(len(labels)))
        if everyone in c.ensembles:
            lines.append(f"all {len(labels)} models: {c.ensembles[everyone]:.4f}")
    return "\n".join(lines)


# -- groups of seeds and table files ------------------------------------------------------
Cell = str | int | float | None


def group_table(groups: Sequence[RunGroup], metric: str, *, sparsity: bool = True,
                level: float = 0.95) -> tuple[list[str], list[list[Cell]]]:
    """One row per group (:func:`~sparseflow.analysis.groups.group_runs`) of ``summary[metric]``
    over its runs: label, sparsity (None, a blank, for ``method=dense``; left out with
    ``sparsity=False``), n, mean, sample std, the ``level`` Student-t interval of the mean
    (mean -+ t_{n-1,(1+level)/2} * std / sqrt(n), :func:`~sparseflow.analysis.stats.summarize`),
    min and max. n counts the runs that have the metric; a group with none is left out. Std
    and interval are NaN for n = 1.
    """
    pct = f"{100 * level:g}%"
    header = ["label", *(["sparsity"] if sparsity else []), "n", "mean", "std",
              f"{pct} CI low", f"{pct} CI high", "min", "max"]
    rows: list[list[Cell]] = []
    for g in groups:
        values = g.values(metric)
        if not values:
            continue
        s = summarize(values, level)
        rows.append([g.label, *([g.sparsity] if sparsity else []), s.n, s.mean, s.std,
                     s.ci_low, s.ci_high, min(values), max(values)])
    return header, rows


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                  "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    r"""``text`` safe in LaTeX text mode: ``& % $ # _ { }`` get a backslash, ``~ ^ \`` become
    ``\textasciitilde{}``, ``\textasciicircum{}``, ``\textbackslash{}`` (one pass, so no
    escape is escaped again)."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def _plain(value: Any) -> Cell:
    """A numpy scalar as the Python int or float it holds; other cells as they are."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _latex_cell(value: Cell) -> str:
    r"""4 significant digits (``#.4g``: trailing zeros kept), ``--`` for NaN, blank for None,
    exponents as ``\times 10^{k}``; strings escaped."""
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "--"
        if math.isinf(value):
            return "$\\infty$" if value > 0 else "$-\\infty$"
        text = format(value, "#.4g")
        if "e" in text:
            mantissa, exponent = text.split("e")
            return f"${mantissa.rstrip('.')} \\times 10^{{{int(exponent)}}}$"
        return text.rstrip(".")
    return latex_escape(str(value))


def _csv_cell(value: Cell) -> str:
    """Floats as ``repr`` (the shortest text that reads back to the same float, ``nan`` for
    NaN), None as blank, the rest as ``str``."""
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def latex_table(header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``): a column is ``r`` when its
    cells are numbers or blanks, else ``l``; ``\\toprule``, the header, ``\\midrule``, the
    rows, ``\\bottomrule``. Cells as :func:`write_table` says."""
    align = []
    for j in range(len(header)):
        cells = [row[j] for row in rows if row[j] is not None]
        align.append("r" if cells and all(_is_number(c) for c in cells) else "l")
    lines = [f"\\begin{{tabular}}{{{' '.join(align)}}}", "\\toprule",
             " & ".join(latex_escape(h) for h in header) + " \\\\", "\\midrule"]
    lines += [" & ".join(_latex_cell(c) for c in row) + " \\\\" for row in rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _md_cell(v: Cell) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "--" if v != v else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """A Markdown table of ``rows`` (floats to 4 significant digits, NaN as ``--``)."""
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(header: Sequence[str], rows: Sequence[Sequence[Cell]], stem: Path
                ) -> list[Path]:
    """Write ``<stem>.csv`` and ``<stem>.tex`` (the suffix is appended to the whole name, so
    ``acc_s0.9`` gives ``acc_s0.9.csv``); returns both paths, folders made as needed.

    CSV (``csv`` module): floats as ``repr`` (they read back with ``float()`` to the same
    value; NaN as ``nan``), blanks empty. LaTeX (:func:`latex_table`): a booktabs ``tabular``
    with numbers to 4 significant digits, NaN as ``--`` and every text cell escaped
    (:func:`latex_escape`).
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if any(len(row) != len(header) for row in rows):
        raise ValueError(f"write_table: every row needs {len(header)} cells")
    csv_path = stem.with_name(stem.name + ".csv")
    tex_path = stem.with_name(stem.name + ".tex")
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(list(header))
        w.writerows([_csv_cell(c) for c in row] for row in rows)
    tex_path.write_text(latex_table(header, rows), encoding="utf-8")
    return [csv_path, tex_path]
