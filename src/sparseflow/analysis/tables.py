"""Study tables from run summaries: the gradient-flow correlation table and SC-SDC p-values.

Inputs are plain run summaries (dicts from the store) with their configs, so the same functions
serve the CLI, the report and the paper reproductions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from sparseflow.analysis.stats import correlations, one_sided_tests
from sparseflow.flow.signal import by_init
from sparseflow.landscape.compare import Comparison

FLOW_MEASURES = ("grad_l1_mean11", "grad_l2_mean11", "egf_l1_mean11", "egf_l2_mean11")
MEASURE_NAMES = {"grad_l1_mean11": "||g||_1", "grad_l2_mean11": "||g||_2",
                 "egf_l1_mean11": "EGF_1", "egf_l2_mean11": "EGF_2"}


def correlation_table(runs: Sequence[Mapping[str, Any]],
                      is_sparse: Callable[[Mapping[str, Any]], bool]) -> list[dict[str, Any]]:
    """Kendall tau and Spearman rho (p-values) of each flow measure with test accuracy and test
    loss, separately for sparse and dense runs (Tessera et al. 2021's correlation table).

    ``runs`` are dicts with ``summary`` and ``config``; finished runs only.
    """
    rows = []
    for group in ("sparse", "dense"):
        members = [r for r in runs if (r.get("status") == "finished")
                   and (is_sparse(r) == (group == "sparse"))]
        for m in FLOW_MEASURES:
            xs = [r["summary"].get(m) for r in members]
            for target in ("test_accuracy", "test_loss"):
                ys = [r["summary"].get(target) for r in members]
                ok = [(x, y) for x, y in zip(xs, ys, strict=True)
                      if x is not None and y is not None]
                c = correlations([p[0] for p in ok], [p[1] for p in ok])
                rows.append({"group": group, "measure": MEASURE_NAMES[m], "target": target, **c})
    return rows


def format_correlations(rows: Sequence[Mapping[str, Any]]) -> str:
    """The correlation table as text: |tau| (p) per measure, group and target."""
    cols = [(g, t) for g in ("sparse", "dense") for t in ("test_loss", "test_accuracy")]
    head = f"{'measure':10s}" + "".join(f"{g + ' ' + t.split('_')[1]:>24s}" for g, t in cols)
    lines = [head, "(Kendall tau, p; Spearman rho in the JSON)"]
    by = {(r["group"], r["target"], r["measure"]): r for r in rows}
    for m in MEASURE_NAMES.values():
        cells = []
        for g, t in cols:
            r = by.get((g, t, m))
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
