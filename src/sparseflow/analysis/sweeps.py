"""Analyses over the runs of a sweep, as ``sparseflow scsdc`` and ``sparseflow analyze
correlate`` run them: per SC-SDC cell the p-values of sparse against dense
(:func:`scsdc_results`, :func:`format_scsdc`), and the correlations of the gradient-flow
measures with the test accuracy and loss (:func:`correlate`).

Each reads the sweep's runs from the store (``_runs_of``; pending runs included) and writes its
table under ``ROOT/analyses/`` (``_write_atomic``); ``analysis/methods.py``, the method
comparison of a sweep, uses the same helpers. ``analysis/runs.py`` imports these names from here
and re-exports them.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from sparseflow.store.database import Store
from sparseflow.store.paths import store_path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _runs_of(root: str | Path, configs: list[Any]) -> list[dict[str, Any]]:
    from sparseflow.config import run_id

    out = []
    with Store(store_path(root)) as store:
        for cfg in configs:
            run = store.get_run(run_id(cfg)) or {"status": "pending", "summary": {}}
            out.append({**run, "config": cfg, "summary": run.get("summary") or {}})
    return out


def _sweep(sweep_or_file: Any) -> Any:
    from sparseflow.sweep.spec import Sweep, load_sweep

    return sweep_or_file if isinstance(sweep_or_file, Sweep) else load_sweep(sweep_or_file)


def scsdc_results(root: str | Path, sweep_file: Any, *, out: str | Path | None = None
                  ) -> dict[str, Any]:
    """Per SC-SDC cell, one-sided p-values of H1: acc(sparse) > acc(dense) over seeds.

    Returns ``rows`` (one per cell with a finished run: its axes, n, means, Welch and
    Mann-Whitney statistics), ``runs`` (every run of the sweep: its cell's axes, ``kind``,
    ``seed``, ``status`` and ``accuracy``, None unless finished; for intervals over seeds and
    for counting diverged runs), ``dir`` and ``pending``.
    """
    from sparseflow.analysis.tables import scsdc_table
    from sparseflow.sweep.spec import scsdc_cells

    sweep = _sweep(sweep_file)
    cells = scsdc_cells(sweep)
    runs = _runs_of(root, [c for _, _, c in cells])
    pairs = [{"cell": cell, "kind": kind, "seed": cfg.seed, "status": r.get("status"),
              "accuracy": r["summary"].get("test_accuracy")
              if r.get("status") == "finished" else None}
             for (cell, kind, cfg), r in zip(cells, runs, strict=True)]
    rows = scsdc_table(pairs)
    table = [{**dict(r["cell"]), **{k: v for k, v in r.items() if k != "cell"}} for r in rows]
    outdir = Path(out) if out else Path(root) / "analyses" / f"scsdc-{sweep.name}"
    outdir.mkdir(parents=True, exist_ok=True)
    _write_atomic(outdir / "scsdc.json", json.dumps(table, indent=1))
    if table:
        with open(outdir / "scsdc.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)
    return {"sweep": sweep.name, "rows": table, "dir": str(outdir),
            "runs": [{**dict(p["cell"]), **{k: p[k] for k in ("kind", "seed", "status",
                                                             "accuracy")}} for p in pairs],
            "pending": sum(1 for r in runs if r.get("status") != "finished")}


def format_scsdc(rows: list[dict[str, Any]]) -> str:
    """Text table of SC-SDC p-values (p < 0.05 marked with *)."""
    if not rows:
        return "no finished runs yet"
    axes = [k for k in rows[0] if k not in ("n_sparse", "n_dense", "mean_sparse", "mean_dense",
                                            "welch_t", "welch_p", "mwu_u", "mwu_p")]
    head = "  ".join(f"{a:>12s}" for a in axes)
    lines = [f"{head}  {'acc sparse':>10s} {'acc dense':>10s} {'p Welch':>9s} {'p MWU':>9s}"]
    for r in rows:
        def p(v: float) -> str:
            return "     -   " if v != v else f"{v:8.3f}{'*' if v < 0.05 else ' '}"
        lines.append("  ".join(f"{str(r[a]):>12s}" for a in axes)
                     + f"  {r['mean_sparse']:10.4f} {r['mean_dense']:10.4f} {p(r['welch_p'])}"
                     f" {p(r['mwu_p'])}")
    lines.append("H1: accuracy(sparse) > accuracy(dense), one-sided over seeds; * p < 0.05")
    return "\n".join(lines)


def correlate(root: str | Path, sweep_file: Any, *, out: str | Path | None = None,
              by: str | None = None) -> dict[str, Any]:
    """Kendall/Spearman of each gradient-flow measure (mean over 11 points) with test accuracy
    and loss, separately for the sweep's sparse and dense runs.

    ``sweep_file``: a sweep (file or ``Sweep``) or a list of them, whose runs are pooled (a run
    in two of them counts once). ``by``: a dotted config key (e.g. ``arch.depth``) whose values
    split the runs into strata, each correlated on its own besides the pooled rows. Returns
    ``rows`` (:func:`~sparseflow.analysis.tables.correlation_table`), ``table`` (text), ``dir``
    and ``runs``: per finished run its ``run_id``, ``group`` (sparse/dense), ``stratum`` and
    the summary values of every measure and target (for resampling runs).
    """
    from sparseflow import typed
    from sparseflow.analysis.tables import (
        FLOW_MEASURES,
        MEASURE_NAMES,
        POOLED,
        correlation_table,
        format_correlations,
    )
    from sparseflow.config import run_id
    from sparseflow.sweep.spec import expand

    sweeps = [_sweep(s) for s in (sweep_file if isinstance(sweep_file, list | tuple)
                                  else [sweep_file])]
    configs = list({run_id(c): c for s in sweeps for c in expand(s)}.values())
    runs = _runs_of(root, configs)

    def stratum(r: dict[str, Any]) -> str:
        if by is None:
            return POOLED
        return f"{by.rsplit('.', 1)[-1]}={typed.flatten(typed.to_dict(r['config'])).get(by)}"

    def is_sparse(r: dict[str, Any]) -> bool:
        return r["config"].method != "dense"

    rows = correlation_table(runs, is_sparse, stratum if by else None)
    name = "+".join(s.name for s in sweeps)
    outdir = Path(out) if out else Path(root) / "analyses" / f"correlate-{name}"
    outdir.mkdir(parents=True, exist_ok=True)
    _write_atomic(outdir / "correlations.json", json.dumps(rows, indent=1))
    points = [{"run_id": run_id(r["config"]), "group": "sparse" if is_sparse(r) else "dense",
               "stratum": stratum(r),
               **{MEASURE_NAMES[m]: r["summary"].get(m) for m in FLOW_MEASURES},
               **{t: r["summary"].get(t) for t in ("test_accuracy", "test_loss")}}
              for r in runs if r.get("status") == "finished"]
    return {"sweep": name, "rows": rows, "table": format_correlations(rows),
            "dir": str(outdir), "runs": points}
