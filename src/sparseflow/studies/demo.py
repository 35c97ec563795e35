"""The README's main job: a short default study with every part of sparseflow in it.

LeNet-300-100 on Fashion-MNIST at 90% sparsity: dense, scratch (static on the pruned mask),
scratch+ (the same with the sparsity-aware init), SET, RigL, gradual pruning and its lottery
ticket, with gradient flow measured; then the linear paths lottery -> pruned and scratch ->
pruned, and the HTML report. A few minutes on a 2-core machine (5 epochs per run by default).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparseflow.config import load_config, run_id
from sparseflow.store.database import Store
from sparseflow.store.paths import store_path

METHODS = {
    "dense": ["method=dense"],
    "scratch": ["method=static", "sparse.mask=pruned"],
    "scratch+": ["method=static", "sparse.mask=pruned", "init=sparse"],
    "SET": ["method=set"],
    "RigL": ["method=rigl"],
    "lottery": ["method=lottery"],
}


def default_study(root: str | Path, *, epochs: int = 5, workers: int | None = None,
                  progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the study (resumable), interpolate, write the report; returns paths and numbers."""
    from sparseflow.analysis.runs import interpolate_runs
    from sparseflow.report.html import build_report
    from sparseflow.sweep.client import run_sweep

    root = Path(root)
    base = ["model=lenet300", "dataset=fashion_mnist", "sparsity=0.9",
            f"train.duration={epochs}ep"]
    cfgs = {name: load_config(None, base + over) for name, over in METHODS.items()}
    run_sweep(list(cfgs.values()), root, workers=workers, progress=progress, echo=echo)
    with Store(store_path(root)) as store:
        runs = {name: store.get_run(run_id(c)) for name, c in cfgs.items()}
        pruned = runs["lottery"]["summary"]["ticket_source"]
        runs["gradual"] = store.get_run(pruned)
    paths = {name: interpolate_runs(root, run_id(cfgs[name]), pruned, alphas="0:1:11")
             for name in ("lottery", "scratch")}
    ids = [r["run_id"] for r in runs.values()]
    report = build_report(root, ids, root / "report" / "default-study.html",
                          title="sparseflow default study: LeNet-300-100, Fashion-MNIST, 90%")
    accuracy = {name: (r.get("summary") or {}).get("test_accuracy") for name, r in runs.items()}
    barriers = {name: p["barrier"] for name, p in paths.items()}
    return {"report": str(report), "accuracy": accuracy, "barrier_to_pruned": barriers}
