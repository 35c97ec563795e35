"""Study tables from run summaries: the gradient-flow correlation table and SC-SDC p-values.

Inputs are plain run summaries (dicts from the store) with their configs, so the same functions
serve the CLI, the report and the paper reproductions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sparseflow.analysis.stats import correlations, one_sided_tests

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
