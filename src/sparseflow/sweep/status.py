"""What a sweep's runs are doing, read from the store: done, running, failed, pending."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparseflow.config import Config
from sparseflow.store.database import Store, effective_status
from sparseflow.store.paths import store_path
from sparseflow.sweep.plan import as_configs, plan
from sparseflow.sweep.spec import Sweep

STATUS_KEYS = ("done", "running", "interrupted", "failed", "diverged", "pending")
_STORE_TO_SWEEP = {"finished": "done", "running": "running", "interrupted": "interrupted",
                   "failed": "failed", "diverged": "diverged"}


def stored_runs(root: str | Path, rids: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Stored rows by run id (all, or only ``rids``); empty when there is no store yet (and
    none is created)."""
    path = store_path(root)
    if not path.exists():
        return {}
    with Store(path, readonly=True) as st:  # a read-only root can be read
        if rids is None:
            return {r["run_id"]: r for r in st.list_runs()}
        return {rid: row for rid in rids if (row := st.get_run(rid)) is not None}


def sweep_status(sweep: Sweep | list[Config], root: str | Path) -> dict[str, list[str]]:
    """Run ids of the sweep (its points and their source runs) by state: done, running,
    interrupted, failed, diverged, pending (not in the store yet).

    ``running`` rows whose client process is gone count as ``interrupted``
    (:func:`~sparseflow.store.database.effective_status`).
    """
    runs = plan(as_configs(sweep))
    stored = stored_runs(root, [r.run_id for r in runs])
    out: dict[str, list[str]] = {k: [] for k in STATUS_KEYS}
    for r in runs:
        row = stored.get(r.run_id)
        state = "pending" if row is None else _STORE_TO_SWEEP.get(effective_status(row),
                                                                  "pending")
        out[state].append(r.run_id)
    return out


def status_table(sweep: Sweep | list[Config], root: str | Path) -> str:
    """A count line and one row per run of the sweep: id, role, method, sparsity, seed, state,
    test accuracy."""
    runs = plan(as_configs(sweep))
    stored = stored_runs(root, [r.run_id for r in runs])
    status = sweep_status(sweep, root)
    state_of = {rid: k for k, ids in status.items() for rid in ids}
    name = sweep.name if isinstance(sweep, Sweep) else "sweep"
    counts = ", ".join(f"{len(status[k])} {k}" for k in STATUS_KEYS if status[k])
    lines = [f"{name}: {len(runs)} runs ({counts})"]
    head = f"{'run id':12s}  {'role':6s}  {'method':13s}  {'sparsity':>8s}  {'seed':>4s}  " \
           f"{'status':12s}  {'test acc':>8s}"
    lines += [head, "-" * len(head)]
    for r in runs:
        row = stored.get(r.run_id) or {}
        summ = row.get("summary") or {}
        state = state_of[r.run_id]
        if state == "diverged" and summ.get("diverged_step") is not None:
            state = f"diverged@{summ['diverged_step']}"
        acc = summ.get("test_accuracy")
        c = r.config
        sp = "-" if c.method == "dense" else f"{c.sparsity:.3f}"
        lines.append(f"{r.run_id:12s}  {'point' if r.point else 'source':6s}  {c.method:13s}  "
                     f"{sp:>8s}  {c.seed:>4d}  {state:12s}  "
                     f"{'-' if acc is None else f'{acc:.4f}':>8s}")
    return "\n".join(lines)
