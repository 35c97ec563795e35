"""A preset before it runs: every run it would train (its sources too), its data, its cost.

``reproduce(..., dry_run=True)`` (``sparseflow reproduce PAPER --dry-run``) calls
:func:`dry_run`: the runs of the preset's ``plan(scale, setting)`` and the source runs the
sweep adds for them (``sweep/plan.py``: the pruning run of a lottery ticket or of
``sparse.mask=pruned``), each with its config's key fields, whether the store already holds it,
and its estimated cost (``studies/cost.py``); the analyses the preset runs after training; and
whether each dataset is here (``data/availability.py``). Nothing is trained, downloaded or
written. :func:`check_data` is the check ``reproduce`` makes before it schedules anything.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparseflow import typed
from sparseflow.config import Config, run_id
from sparseflow.data.availability import DatasetStatus, dataset_status, ensure_dataset
from sparseflow.errors import UserError
from sparseflow.studies import cost

if TYPE_CHECKING:
    from sparseflow.sweep.plan import PlannedRun

#: analyses listed one per line in the text (the rest are counted)
ANALYSES_SHOWN = 12
#: the columns every run shows itself (not repeated among its settings)
COLUMNS = ("method", "model", "dataset", "sparsity", "seed")


def planned_runs(configs: Sequence[Config]) -> list[PlannedRun]:
    """The runs a sweep of ``configs`` trains, sources first, each once
    (:class:`~sparseflow.sweep.plan.PlannedRun`: ``point`` False for a source only)."""
    from sparseflow.sweep.plan import plan

    return plan(list(configs))


def _data_keys(configs: Sequence[Config]) -> dict[tuple[str, str | None, bool], None]:
    return dict.fromkeys((str(c.dataset), c.data.root, c.data.download) for c in configs)


def data_status(configs: Sequence[Config]) -> list[DatasetStatus]:
    """Whether each dataset of ``configs`` (per data root and download setting) is here;
    reads and writes nothing."""
    return [dataset_status(name, root=root, download=download)
            for name, root, download in _data_keys(configs)]


def check_data(configs: Sequence[Config], what: str) -> None:
    """Before anything is scheduled: every dataset of ``configs`` is here, or downloaded now
    (when downloading is on); else a one-line :class:`UserError` that says nothing was
    trained, names the dataset, where it was looked for and how to provide it."""
    for name, root, download in _data_keys(configs):
        try:
            ensure_dataset(name, root=root, download=download)
        except UserError as e:
            raise UserError(f"{what}: nothing was trained: {e}") from None


def settings_of(points: Sequence[Config], configs: Sequence[Config]
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The non-default fields shared by every one of the preset's own runs (``points``), and
    per config of ``configs`` (sources too) the fields where it differs from those: its own
    non-default fields, and a shared field it leaves at its default (a source run's init)."""
    default = typed.leaf_values(Config())
    each = [typed.non_default(c) for c in points] or [{}]
    shared = {k: v for k, v in each[0].items()
              if all(k in d and d[k] == v for d in each[1:])}
    varied = []
    for c in configs:
        own = typed.non_default(c)
        row = {k: v for k, v in own.items()
               if k not in COLUMNS and (k not in shared or shared[k] != v)}
        row.update({k: default[k] for k in shared if k not in own and k not in COLUMNS})
        varied.append(row)
    return shared, varied


def _failing(cfg: Config) -> dict[str, Any]:
    """The row of a run whose cost cannot be estimated (it cannot train): zero costs."""
    zero = dict.fromkeys(("epochs", "steps", "n_train", "forward_macs", "train_flops",
                          "eval_flops", "flow_flops", "other_flops", "total_flops",
                          "cpu_seconds", "gpu_seconds"), 0)
    return {"run_id": run_id(cfg), "method": cfg.method, "model": cfg.model,
            "dataset": str(cfg.dataset), "sparsity": cfg.sparsity, "seed": cfg.seed,
            "batch": cfg.train.batch_size, **zero, "probe": {}}


def _analysis_costs(entries: Sequence[dict[str, Any]], probe: bool) -> list[dict[str, Any]]:
    """Each analysis (``kind``, ``label``, ``config``, ``points`` evaluations of ``examples``
    examples, None: the training set; ``epochs`` of fitting on the training set) with its
    estimated cost (``studies/cost.py``)."""
    from sparseflow.studies.cost import analysis_cost, run_info

    out = []
    for a in entries:
        n_train = run_info(a["config"]).n_train
        examples = a.get("examples") or n_train
        est = analysis_cost(a["config"], forward_examples=a.get("points", 1) * examples,
                            train_examples=a.get("epochs", 0) * n_train, probe=probe)
        out.append({"kind": a["kind"], "label": a["label"], "run_id": run_id(a["config"]),
                    **est})
    return out


def dry_run(paper: str, scale: str, configs: Sequence[Config], root: str | Path, *,
            setting: Sequence[str] = (), command: str = "", probe: bool = True,
            analyses: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The dry run of a preset whose own runs are ``configs``: every run with its sources
    (``runs``: id, role, status in the store, key fields, varied settings, estimated cost),
    the settings all runs share (``shared``), the ``analyses`` (the preset's
    ``analysis_plan``; none when it lists none) with their cost, the ``data`` status,
    the ``total`` and the cost model's ``assumptions``. Reads the store if there is one;
    trains, downloads and writes nothing."""
    from sparseflow.sweep.status import stored_runs

    t0 = time.perf_counter()
    before = cost.probe_seconds()
    planned = planned_runs(configs)
    stored = stored_runs(root, [p.run_id for p in planned])
    shared, varied = settings_of([p.config for p in planned if p.point],
                               [p.config for p in planned])
    users = {p.run_id: sum(p.run_id in q.needs for q in planned) for p in planned}
    runs = []
    for p, extra in zip(planned, varied, strict=True):
        status = (stored.get(p.run_id) or {}).get("status", "to train")
        row = {"role": "run" if p.point else "source", "needed_by": users[p.run_id],
               "needs": p.needs, "status": "to train" if status != "finished" else "finished",
               "settings": extra, "problem": ""}
        try:
            runs.append({**cost.run_cost(p.config, probe=probe).as_dict(), **row})
        except UserError as e:  # a run that cannot train (its data is too small, ...)
            runs.append({**_failing(p.config), **row, "status": "fails", "problem": str(e)})
    analyses = analyses or []
    failing = {r["run_id"] for r in runs if r["problem"]}
    costed = _analysis_costs([a for a in analyses if run_id(a["config"]) not in failing],
                             probe)
    todo = [r for r in runs if r["status"] == "to train"]

    def hours(rows: Sequence[dict[str, Any]], key: str) -> float:
        return sum(r[key] for r in rows) / 3600

    total = {"runs": len(runs), "preset_runs": sum(r["role"] == "run" for r in runs),
             "source_runs": sum(r["role"] == "source" for r in runs),
             "to_train": len(todo), "epochs": sum(r["epochs"] for r in runs),
             "steps": sum(r["steps"] for r in runs),
             "flops": sum(r["total_flops"] for r in runs) + sum(a["flops"] for a in costed),
             "cpu_hours": hours(runs, "cpu_seconds") + hours(costed, "cpu_seconds"),
             "gpu_hours": hours(runs, "gpu_seconds") + hours(costed, "gpu_seconds"),
             "cpu_hours_to_train": hours(todo, "cpu_seconds"),
             "gpu_hours_to_train": hours(todo, "gpu_seconds"),
             "analyses": len(costed),
             "analysis_cpu_hours": hours(costed, "cpu_seconds"),
             "analysis_gpu_hours": hours(costed, "gpu_seconds")}
    probe_seconds = cost.probe_seconds() - before
    return {"paper": paper, "scale": scale, "setting": list(setting), "dry_run": True,
            "command": command, "shared": shared, "runs": runs, "analyses": costed,
            "data": [vars(s) | {"ok": s.ok} for s in data_status([p.config for p in planned])],
            "total": total, "assumptions": cost.assumptions(),
            "probe": {"on": probe, "threads": cost.PROBE_THREADS,
                      "seconds": round(probe_seconds, 2),
                      "architectures": len({r["probe"]["architecture"] for r in runs
                                            if r["probe"]})},
            "seconds": round(time.perf_counter() - t0, 2)}


def _num(x: float) -> str:
    """A short number: 3 significant digits, thousands grouped."""
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _value(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def dry_run_text(res: dict[str, Any]) -> str:
    """The dry run as text: a header, the data, one line per run, the analyses, the total and
    what the estimate assumes."""
    t = res["total"]
    lines = [f"{res['paper']} at {res['scale']} scale: DRY RUN (nothing is trained, "
             "downloaded or written)", f"command: {res['command']}",
             "setting: " + (" ".join(res["setting"]) or "the preset's own"),
             "shared by every run: " + " ".join(f"{k}={_value(v)}"
                                                for k, v in res["shared"].items())]
    for d in res["data"]:
        lines.append(("data: " if d["ok"] else "data: MISSING: ") + d["message"])
    sources = f"{t['source_runs']} source run" + ("s" if t["source_runs"] != 1 else "")
    lines += ["", f"runs ({t['runs']}: {t['preset_runs']} of the preset, {sources} they need; "
              f"{t['to_train']} to train); costs are ESTIMATES:",
              f"{'run id':12}  {'role':6}  {'status':9}  {'method':13}  {'model':8}  "
              f"{'dataset':13}  {'sparsity':>8}  {'seed':>4}  {'epochs':>6}  {'steps':>9}  "
              f"{'GFLOP/ex':>8}  {'CPU h':>8}  {'GPU h':>7}  settings"]
    for r in res["runs"]:
        extra = " ".join(f"{k}={_value(v)}" for k, v in r["settings"].items())
        if r["role"] == "source":
            extra = (extra + " " if extra else "") + f"(source of {r['needed_by']} runs)"
        lines.append(
            f"{r['run_id']:12}  {r['role']:6}  {r['status']:9}  {r['method']:13}  "
            f"{str(r['model'])[:8]:8}  {str(r['dataset'])[:13]:13}  {r['sparsity']:8g}  "
            f"{r['seed']:4d}  {r['epochs']:6g}  {r['steps']:9,d}  "
            f"{2 * r['forward_macs'] / 1e9:8.3g}  {_num(r['cpu_seconds'] / 3600):>8}  "
            f"{_num(r['gpu_seconds'] / 3600):>7}  {extra}")
    bad = [r for r in res["runs"] if r["problem"]]
    if bad:
        lines += ["", f"runs that cannot train ({len(bad)}; not costed):"]
        lines += [f"  {r['run_id']} ({r['method']}): {r['problem']}" for r in bad]
    if res["analyses"]:
        lines += ["", f"analyses after training ({t['analyses']}: "
                  f"{_num(t['analysis_cpu_hours'])} CPU h, {_num(t['analysis_gpu_hours'])} "
                  "GPU h; ESTIMATES):"]
        shown = res["analyses"][:ANALYSES_SHOWN]
        lines += [f"  {a['label']}: {_num(a['cpu_seconds'] / 3600)} CPU h, "
                  f"{_num(a['gpu_seconds'] / 3600)} GPU h" for a in shown]
        if len(res["analyses"]) > len(shown):
            lines.append(f"  ... and {len(res['analyses']) - len(shown)} more (--json lists "
                         "them all)")
    else:
        lines += ["", "analyses after training: none that compute (they read the store)"]
    p = res["probe"]
    lines += ["", f"total: {t['runs']} runs, {_num(t['epochs'])} epochs, {t['steps']:,d} steps, "
              f"{t['flops']:.3g} FLOP; estimated {_num(t['cpu_hours'])} CPU core-hours on "
              f"this machine (one thread per run, as a sweep's workers train; wall time on N "
              f"workers about this / N) and {_num(t['gpu_hours'])} hours on one GPU; to "
              f"train now: {t['to_train']} runs, {_num(t['cpu_hours_to_train'])} CPU h, "
              f"{_num(t['gpu_hours_to_train'])} GPU h",
              "estimate: " + "; ".join(f"{k}: {v}" for k, v in res["assumptions"].items()),
              (f"probe: {p['architectures']} architectures timed in {p['seconds']:g} s "
               f"({p['threads']} thread)" if p["on"] else
               f"probe: off (CPU at an assumed {cost.ASSUMED_CPU_FLOPS / 1e9:g} GFLOP/s)")]
    missing = [d["name"] for d in res["data"] if not d["ok"]]
    if missing:
        lines.append(f"data missing: {', '.join(missing)} (see the data lines above; "
                     "reproduce stops before training when it cannot get them)")
    return "\n".join(lines)
