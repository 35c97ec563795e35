"""Analyses of stored runs, as the CLI's ``sparseflow analyze ...`` runs them.

Each function loads what it needs from the store, calls the pure functions of ``flow/`` (or
``landscape/``), writes its results back (metrics of the run, or files under
``ROOT/analyses/``) and returns a JSON-ready dict.

The analyses over the runs of a sweep (:func:`scsdc_results`, :func:`format_scsdc`,
:func:`correlate`, with the helpers ``_runs_of``, ``_sweep`` and ``_write_atomic`` they share
with ``analysis/methods.py``) are in ``analysis/sweeps.py`` and re-exported here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from sparseflow.analysis.endpoints import dataset_for, resolve_endpoint
from sparseflow.analysis.sweeps import (  # noqa: F401 (the unused ones: re-exported)
    _runs_of,
    _sweep,
    _write_atomic,
    correlate,
    format_scsdc,
    scsdc_results,
)
from sparseflow.errors import UserError
from sparseflow.store.database import Store
from sparseflow.store.paths import store_path


def _user(e: ValueError, what: str) -> UserError:
    return UserError(f"{what}: {str(e).splitlines()[0]}")


def hessian_of_run(root: str | Path, spec: str, *, top_k: int = 5, include_biases: bool = False,
                   per_layer: bool = True, samples: int = 50, seed: int = 0,
                   batch_size: int | None = None, progress: bool = False) -> dict[str, Any]:
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
                                 hutchinson_samples=samples, seed=seed, batch_size=batch_size,
                                 progress=progress)
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


def _figures(outdir: Path, stem: str, draw: Any) -> list[str]:
    """``draw(path)`` for STEM.png (300 dpi), STEM.svg and STEM.pdf; none when matplotlib (the
    'analysis' extra) is missing, since the tables are written anyway."""
    paths = []
    for suffix in ("png", "svg", "pdf"):
        path = outdir / f"{stem}.{suffix}"
        try:
            draw(path)
        except ImportError:
            return paths
        paths.append(str(path))
    return paths


def signal_study(root: str | Path, model: str, sparsities: str, inits: str, *,
                 masks: str = "heterogeneous", repeats: int = 3, batch: int = 500,
                 seed: int = 0, input_shape: tuple[int, ...] = (1, 28, 28),
                 out: str | Path | None = None) -> dict[str, Any]:
    """The signal-propagation experiment: table (CSV), figure (PNG, SVG) and JSON rows."""
    from sparseflow.analysis.tables import signal_table
    from sparseflow.flow.signal import signal_propagation
    from sparseflow.grids import parse_grid
    from sparseflow.plots import plot_signal

    try:
        grid = parse_grid(sparsities, "sparsities")
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
    figures = _figures(outdir, "signal", lambda p: plot_signal(rows, p))
    return {"model": model, "rows": rows, "table": signal_table(rows), "dir": str(outdir),
            "figures": figures}


# -- loss landscape ----------------------------------------------------------------------------
def _same_setting(eps: list[Any]) -> None:
    """Every endpoint must share the dataset and the architecture (parameter names and shapes)."""
    a = eps[0]
    shapes_a = {n: tuple(p.shape) for n, p in a.model.named_parameters()}
    for b in eps[1:]:
        if b.config.dataset != a.config.dataset:
            raise UserError(f"endpoints use different datasets: {a.label} on "
                            f"{a.config.dataset}, {b.label} on {b.config.dataset}")
        shapes_b = {n: tuple(p.shape) for n, p in b.model.named_parameters()}
        if shapes_b != shapes_a:
            diff = next((n for n in shapes_a if shapes_b.get(n) != shapes_a[n]),
                        next(iter(set(shapes_b) - set(shapes_a)), "?"))
            raise UserError(f"endpoints have different architectures: {a.label} is "
                            f"{a.config.model}, {b.label} is {b.config.model} (first difference:"
                            f" {diff})")


def _load_endpoints(store: Store, specs: list[str]) -> tuple[list[Any], Any]:
    cache: dict[str, Any] = {}
    eps = [resolve_endpoint(s, store, cache) for s in specs]
    _same_setting(eps)
    return eps, dataset_for(eps[0].config, cache)


def _params(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


def _outdir(root: str | Path, kind: str, labels: list[str], out: str | Path | None) -> Path:
    d = Path(out) if out else Path(root) / "analyses" / "-".join(
        [kind, *[lbl.replace("@", "_") for lbl in labels]])
    d.mkdir(parents=True, exist_ok=True)
    return d


def _record(store: Store, eps: list[Any], name: str, path: Path) -> None:
    for ep in eps:
        store.add_artifact(ep.run_id, name, path, "analysis")


def interpolate_runs(root: str | Path, spec_a: str, spec_b: str, *,
                     alphas: str = "-0.2:1.2:29", split: str = "train", mask: str = "shared",
                     bn_reset: bool = True, batch_size: int = 1000,
                     examples: int | None = None, out: str | Path | None = None,
                     progress: bool = False) -> dict[str, Any]:
    """Loss and accuracy along theta(a) = (1 - a) theta_A + a theta_B; barrier and monotonicity.

    ``examples``: evaluate on the first N examples of the split (default: all of it).

    Written to ``result.json``, ``path.csv``, ``path.png``/``.svg`` under
    ``ROOT/analyses/interpolate-A-B`` and recorded as an artifact of both runs.
    """
    from sparseflow.grids import parse_grid
    from sparseflow.landscape.paths import combine_masks, linear_path
    from sparseflow.plots import plot_path

    with Store(store_path(root)) as store:
        try:
            grid = parse_grid(alphas, "alphas", increasing=True)
        except ValueError as e:
            raise _user(e, "--alphas") from None
        (a, b), data = _load_endpoints(store, [spec_a, spec_b])
        try:
            masks = combine_masks(a.masks, b.masks, mask)
        except ValueError as e:
            raise _user(e, "--mask") from None
        x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
        x, y = x[:examples], y[:examples]
        try:
            res = linear_path(a.model, _params(a.model), _params(b.model), x, y, grid,
                              masks=masks, bn_reset=bn_reset, bn_x=data.x_train,
                              batch_size=batch_size, progress=progress)
        except ValueError as e:
            raise _user(e, "analyze interpolate") from None
        outdir = _outdir(root, "interpolate", [a.label, b.label], out)
        result = {"a": a.label, "b": b.label, "a_run": a.run_id, "b_run": b.run_id,
                  "split": split, "mask": mask, "bn_reset": bn_reset, "examples": len(y),
                  "alphas": res.alphas, "loss": res.loss, "accuracy": res.accuracy,
                  "barrier": res.barrier, "barrier_alpha": res.barrier_alpha,
                  "monotone": res.monotone, "loss_a": res.loss_a, "loss_b": res.loss_b,
                  "dir": str(outdir)}
        _write_atomic(outdir / "result.json", json.dumps(result, indent=1))
        with open(outdir / "path.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["alpha", "loss", "accuracy"])
            w.writerows(zip(res.alphas, res.loss, res.accuracy, strict=True))
        title = f"{a.label} -> {b.label} ({split})"
        result["figures"] = _figures(outdir, "path", lambda p: plot_path(
            res.alphas, res.loss, p, accuracy=res.accuracy, title=title))
        _record(store, [a, b], f"interpolate/{a.label}->{b.label}", outdir / "result.json")
    return result


def curve_runs(root: str | Path, spec_a: str, spec_b: str, *, kind: str = "bezier",
               subspace: str = "sparse", epochs: int = 10, lr: float | None = None,
               batch_size: int = 128, seed: int = 0, points: int = 21,
               examples: int | None = None, out: str | Path | None = None,
               progress: bool = False) -> dict[str, Any]:
    """Fit a Bezier or polygonal-chain curve between two runs and compare it with the line.

    The curve is fitted on the whole training set and evaluated, like the line, on its first
    ``examples`` examples (default: all of them).
    """
    from sparseflow.landscape.curve_fit import fit_curve
    from sparseflow.landscape.paths import combine_masks, linear_path
    from sparseflow.plots import plot_lines

    with Store(store_path(root)) as store:
        (a, b), data = _load_endpoints(store, [spec_a, spec_b])
        try:
            masks = combine_masks(a.masks, b.masks, "shared" if subspace == "sparse" else "union")
        except ValueError as e:
            raise _user(e, "analyze curve") from None
        if subspace == "sparse" and masks is None:
            raise UserError("--subspace sparse needs sparse endpoints (these runs are dense)")
        x, y = data.x_train, data.y_train
        ex, ey = x[:examples], y[:examples]
        sa, sb = _params(a.model), _params(b.model)
        ts = [i / (points - 1) for i in range(points)]
        opts: dict[str, Any] = {} if lr is None else {"lr": lr}
        try:
            res = fit_curve(a.model, sa, sb, x, y, kind=kind, subspace=subspace, masks=masks,
                            epochs=epochs, batch_size=batch_size, seed=seed, eval_ts=ts,
                            eval_x=ex, eval_y=ey, progress=progress, **opts)
            line = linear_path(a.model, sa, sb, ex, ey, ts, masks=masks, bn_x=x)
        except ValueError as e:
            raise _user(e, "analyze curve") from None
        outdir = _outdir(root, f"curve-{kind}-{subspace}", [a.label, b.label], out)
        line_max = max(line.loss)
        result = {"a": a.label, "b": b.label, "a_run": a.run_id, "b_run": b.run_id,
                  "kind": kind, "subspace": subspace, "epochs": epochs, "examples": len(ey),
                  "ts": res.ts,
                  "loss": res.loss, "accuracy": res.accuracy, "max_loss": res.max_loss,
                  "max_t": res.max_t, "linear_loss": line.loss, "linear_max_loss": line_max,
                  "linear_barrier": line.barrier, "train_history": res.train_history,
                  "dir": str(outdir)}
        _write_atomic(outdir / "result.json", json.dumps(result, indent=1))
        series = {f"{kind} ({subspace})": (res.ts, res.loss), "linear": (line.alphas, line.loss)}
        result["figures"] = _figures(outdir, "curve", lambda p: plot_lines(
            series, p, xlabel="t", ylabel="train loss", title=f"{a.label} -> {b.label}"))
        _record(store, [a, b], f"curve/{kind}/{subspace}/{a.label}->{b.label}",
                outdir / "result.json")
    return result


def compare_runs(root: str | Path, specs: list[str], *, out: str | Path | None = None
                 ) -> dict[str, Any]:
    """Distances, disagreement, KL, ensembles, mask overlap and MDS of several solutions."""
    from sparseflow.analysis.tables import comparison_table
    from sparseflow.landscape.compare import compare_models
    from sparseflow.plots import plot_mds

    if len(specs) < 2:
        raise UserError("analyze compare: give at least two runs")
    with Store(store_path(root)) as store:
        eps, data = _load_endpoints(store, specs)
        inits = []
        for ep in eps:
            try:
                inits.append(resolve_endpoint(f"{ep.run_id}@0", store).model.state_dict())
            except UserError:
                inits.append(None)
        try:
            c = compare_models([e.model for e in eps], data.x_test, data.y_test,
                               labels=[e.label for e in eps], masks=[e.masks for e in eps],
                               inits=inits)
        except ValueError as e:
            raise _user(e, "analyze compare") from None
        outdir = _outdir(root, "compare", [e.label for e in eps[:4]], out)
        result = {"labels": c.labels, "runs": [e.run_id for e in eps],
                  "accuracy": c.accuracy, "l2": c.l2.tolist(), "cosine": c.cosine.tolist(),
                  "disagreement": c.disagreement.tolist(), "kl": c.kl.tolist(),
                  "sym_kl": c.sym_kl.tolist(),
                  "jaccard": None if c.jaccard is None else c.jaccard.tolist(),
                  "l2_to_init": c.l2_to_init, "cosine_to_init": c.cosine_to_init,
                  "mds": c.mds.tolist(),
                  "ensembles": {",".join(map(str, k)): v for k, v in c.ensembles.items()},
                  "dir": str(outdir)}
        _write_atomic(outdir / "result.json", json.dumps(result, indent=1))
        table = comparison_table(c)
        _write_atomic(outdir / "table.txt", table)
        result["figures"] = _figures(outdir, "mds", lambda p: plot_mds(c, p))
        result["table"] = table
        _record(store, eps, "compare/" + ",".join(e.label for e in eps), outdir / "result.json")
    return result
