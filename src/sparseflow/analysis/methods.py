"""The method comparison of a sweep: per model, sparsity and method, the test accuracy over
seeds with its interval, the gradient norm early in training, the change of the gradient norm
at mask updates and the ITOP rate (docs/science.md sections 4, 17 and 18).

``sparseflow analyze methods FILE`` runs :func:`method_comparison` on the finished runs of a
sweep file (e.g. ``studies/methods_fmnist.yaml``) and writes ``methods.md``, ``methods.csv``
and ``methods.tex``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sparseflow.analysis.stats import summarize
from sparseflow.analysis.tables import Cell, markdown_table, write_table
from sparseflow.store.database import Store
from sparseflow.store.paths import store_path

#: the columns of the comparison, after model / sparsity / method / pattern / n
COLUMNS = ("test acc", "95% CI low", "95% CI high", "early ||g||_2", "change at updates",
           "ITOP rate", "sparsity")


def series_mean(store: Store, rid: str, name: str, until: int, *, after: int = -1) -> float:
    """Mean of run ``rid``'s metric ``name`` at steps ``after < step <= until``; NaN when none
    was recorded."""
    vals = [v for s, v in store.series(rid, name) if after < s <= until and v is not None]
    return statistics.mean(vals) if vals else float("nan")


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if v == v]
    return statistics.mean(finite) if finite else float("nan")


def method_rows(runs: Sequence[Mapping[str, Any]], store: Store, early_fraction: float = 0.05
                ) -> tuple[list[str], list[list[Cell]]]:
    """One row per (model, sparsity, method, pattern) of finished runs (seeds pooled): n, the
    mean test accuracy with its 95% Student-t interval over seeds
    (:func:`~sparseflow.analysis.stats.summarize`), the mean ``flow/grad_l2`` over the first
    ``early_fraction`` of each run's steps (step 0 excluded; Evci et al. 2022's early gradient
    norm), the mean ``flow_update/delta/grad_l2`` over the run's measured mask updates (after -
    before on the same batch), the mean ITOP rate and the mean realised sparsity; NaN where a
    run measured nothing (a dense run has no updates)."""
    from sparseflow.config import run_id
    from sparseflow.methods.registry import method_spec

    cells: dict[tuple[str, float, str, str], dict[int, Mapping[str, Any]]] = {}
    for r in runs:
        if r.get("status") != "finished":
            continue
        cfg = r["config"]
        dense = method_spec(cfg.method).factory is None and cfg.method != "small_dense"
        sparsity = 0.0 if dense else float(cfg.sparsity)
        key = (cfg.model, sparsity, cfg.method, method_spec(cfg.method).pattern_of(cfg.sparse))
        # one run per seed: a dense run listed under several sparsities is the same training
        cells.setdefault(key, {}).setdefault(int(cfg.seed), r)
    header = ["model", "sparsity target", "method", "pattern", "n", *COLUMNS]
    rows: list[list[Cell]] = []
    for (model, sparsity, method, pattern), by_seed in sorted(cells.items()):
        group = list(by_seed.values())
        acc = [float(r["summary"]["test_accuracy"]) for r in group]
        s = summarize(acc)
        early, change = [], []
        for r in group:
            rid = run_id(r["config"])
            steps = int(r["summary"].get("steps", 0))
            early.append(series_mean(store, rid, "flow/grad_l2",
                                     max(1, math.ceil(early_fraction * steps)), after=0))
            change.append(series_mean(store, rid, "flow_update/delta/grad_l2", steps))
        itop = _mean([float(r["summary"].get("itop_rate", float("nan"))) for r in group])
        realised = _mean([float(r["summary"].get("sparsity", 0.0)) for r in group])
        rows.append([model, sparsity or None, method, pattern, s.n,
                     s.mean, s.ci_low, s.ci_high, _mean(early), _mean(change), itop, realised])
    return header, rows


def method_comparison(root: str | Path, sweep_file: Any, *, early_fraction: float = 0.05,
                      out: str | Path | None = None) -> dict[str, Any]:
    """:func:`method_rows` over the runs of a sweep; writes ``methods.md``, ``.csv`` and
    ``.tex`` under ``out`` (default ``ROOT/analyses/methods-<sweep name>``). Returns
    ``header``, ``rows``, ``table`` (Markdown), ``dir`` and ``pending`` (runs not finished)."""
    from sparseflow.analysis.sweeps import _runs_of, _sweep, _write_atomic
    from sparseflow.config import run_id
    from sparseflow.sweep.spec import expand

    sweep = _sweep(sweep_file)
    configs = list({run_id(c): c for c in expand(sweep)}.values())
    runs = _runs_of(root, configs)
    with Store(store_path(root)) as store:
        header, rows = method_rows(runs, store, early_fraction)
    outdir = Path(out) if out else Path(root) / "analyses" / f"methods-{sweep.name}"
    outdir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(header, rows)
    _write_atomic(outdir / "methods.md", table)
    write_table(header, rows, outdir / "methods")
    pending = sum(r.get("status") != "finished" for r in runs)
    return {"header": header, "rows": rows, "table": table, "dir": str(outdir),
            "pending": pending}
