"""Analyses of stored runs, as the CLI's ``sparseflow analyze ...`` runs them.

Each function loads what it needs from the store, calls the pure functions of ``flow/`` (or
``landscape/``), writes its results back (metrics of the run, or files under
``ROOT/analyses/``) and returns a JSON-ready dict.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from sparseflow.errors import UserError
from sparseflow.experiment.endpoints import dataset_for, resolve_endpoint
from sparseflow.experiment.run import store_path
from sparseflow.experiment.store import Store


def _user(e: ValueError, what: str) -> UserError:
    return UserError(f"{what}: {str(e).splitlines()[0]}")


def hessian_of_run(root: str | Path, spec: str, *, top_k: int = 5, include_biases: bool = False,
                   per_layer: bool = True, samples: int = 50, seed: int = 0,
                   batch_size: int | None = None) -> dict[str, Any]:
    """Hessian spectrum of a run's checkpoint on its held-out batch, restricted to active weights.

    Stores ``hessian/*`` metrics at the checkpoint's step and returns them with the per-layer
    reports.
    """
    from sparseflow.flow.hessian import hessian_report

    with Store(store_path(root)) as store:
        cache: dict[str, Any] = {}
        ep = resolve_endpoint(spec, store, cache)
        data = dataset_for(ep.config, cache)
        if not data.heldout:
            raise UserError(f"run {ep.run_id} has no held-out batch (data.heldout=0)")
        x, y = data.heldout[0]
        ep.model.train()
        try:
            rep = hessian_report(ep.model, ep.masks, x, y, top_k=top_k,
                                 include_biases=include_biases, per_layer=per_layer,
                                 hutchinson_samples=samples, seed=seed, batch_size=batch_size)
        except ValueError as e:
            raise _user(e, "analyze hessian") from None
        metrics: dict[str, float] = {"hessian/gHg": rep.gHg, "hessian/gHg_over_gg":
                                     rep.gHg_over_gg, "hessian/trace": rep.trace,
                                     "hessian/trace_std": rep.trace_std,
                                     "hessian/n_active": rep.n_active}
        metrics.update({f"hessian/top{i + 1}": v for i, v in enumerate(rep.top)})
        metrics.update({f"hessian/bottom{i + 1}": v for i, v in enumerate(rep.bottom)})
        layers = {}
        for name, r in rep.per_layer.items():
            metrics[f"hessian/top1/{name}"] = r.top[0] if r.top else float("nan")
            metrics[f"hessian/bottom1/{name}"] = r.bottom[0] if r.bottom else float("nan")
            metrics[f"hessian/trace/{name}"] = r.trace
            layers[name] = {"top": r.top, "bottom": r.bottom, "gHg": r.gHg, "trace": r.trace,
                            "n_active": r.n_active}
        store.log_metrics(ep.run_id, ep.step, metrics)
    return {"run_id": ep.run_id, "step": ep.step, "top": rep.top, "bottom": rep.bottom,
            "gHg": rep.gHg, "gHg_over_gg": rep.gHg_over_gg, "trace": rep.trace,
            "trace_std": rep.trace_std, "n_active": rep.n_active, "converged": rep.converged,
            "per_layer": layers}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def signal_study(root: str | Path, model: str, sparsities: str, inits: str, *,
                 masks: str = "heterogeneous", repeats: int = 3, batch: int = 500,
                 seed: int = 0, input_shape: tuple[int, ...] = (1, 28, 28),
                 out: str | Path | None = None) -> dict[str, Any]:
    """The signal-propagation experiment: table (CSV), figure (PNG, SVG) and JSON rows."""
    from sparseflow.flow.signal import format_table, parse_range, plot_signal, signal_propagation

    try:
        grid = parse_range(sparsities)
        init_list = [i.strip() for i in inits.split(",") if i.strip()]
        rows = signal_propagation(model, grid, init_list, input_shape=input_shape,
                                  masks=masks, repeats=repeats, batch=batch, seed=seed)
    except ValueError as e:
        raise _user(e, "analyze signal") from None
    outdir = Path(out) if out else Path(root) / "analyses" / f"signal-{model}"
    outdir.mkdir(parents=True, exist_ok=True)
    with open(outdir / "signal.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _write_atomic(outdir / "signal.json", json.dumps(rows, indent=1))
    figures = []
    try:
        for suffix in ("png", "svg"):
            plot_signal(rows, outdir / f"signal.{suffix}")
            figures.append(str(outdir / f"signal.{suffix}"))
    except ImportError:
        pass  # matplotlib is the 'analysis' extra; the table is still written
    return {"model": model, "rows": rows, "table": format_table(rows), "dir": str(outdir),
            "figures": figures}
