"""Plain-text output for people: run summaries, the run list, one run's history, and the
results of the analyses, each as a string (the CLI prints them; nothing here prints)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SUMMARY_KEYS = ("run_id", "status", "method", "dataset", "model", "seed", "steps",
                "test_accuracy", "test_loss", "train_loss", "wall_seconds", "checkpoint")
EVAL_METRICS = ("test_accuracy", "test_loss", "train_loss", "train_accuracy")


def _value(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else f"{v}"


def summary_text(summary: Mapping[str, Any]) -> str:
    """``summary:`` and one ``key value`` line per scalar entry, the usual keys first."""
    keys = [k for k in SUMMARY_KEYS if k in summary]
    keys += [k for k, v in summary.items() if k not in SUMMARY_KEYS
             and not isinstance(v, dict | list)]
    return "\n".join(["summary:", *(f"  {k:14s} {_value(summary[k])}" for k in keys)])


def runs_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per stored run, with what tells runs apart: id, name, what the run is
    (``scratch+``, ``lottery``, ...), status, model on dataset, sparsity, distribution,
    duration, seed, test accuracy and tags."""
    from sparseflow.analysis.catalog import run_fields

    head = (f"{'run_id':12s}  {'name':16s}  {'label':14s}  {'status':11s}  {'model/data':22s}  "
            f"{'sparsity':>8s}  {'dist':7s}  {'duration':8s}  {'seed':>4s}  {'test_acc':>8s}  "
            "tags")
    lines = [head]
    for r in rows:
        f = run_fields(r)
        acc, sp = f["test_accuracy"], f["sparsity"]
        data = f"{f.get('model') or ''}/{f.get('dataset') or ''}"
        lines.append(
            f"{f['run_id']:12s}  {(f['name'] or '-')[:16]:16s}  {f['label'][:14]:14s}  "
            f"{f['status'] or '':11s}  {data[:22]:22s}  "
            f"{'-' if sp is None else f'{sp:.3f}':>8s}  {f['distribution'] or '-':7s}  "
            f"{f['duration'] or '':8s}  {f['seed']!s:>4s}  "
            f"{'-' if acc is None else f'{acc:.4f}':>8s}  {','.join(f['tags'])}")
    return "\n".join(lines)


def run_text(run: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]]) -> str:
    """One run: its config (YAML), summary, evaluation history and the other metric names."""
    import yaml

    out = [f"run {run['run_id']}  status {run['status']}",
           yaml.safe_dump({"config": run["config"]}, sort_keys=False).rstrip("\n")]
    if run.get("summary"):
        out.append(summary_text(run["summary"]))
    by_step: dict[int, dict[str, float]] = {}
    for m in metrics:
        if m["name"] in EVAL_METRICS:
            by_step.setdefault(m["step"], {})[m["name"]] = m["value"]
    if by_step:
        out.append(f"{'step':>8s} {'train_loss':>10s} {'train_acc':>9s} {'test_loss':>9s} "
                   f"{'test_acc':>8s}")
        for step, v in sorted(by_step.items()):
            cell = {k: "" if v.get(k) is None else f"{v[k]:.4f}" for k in EVAL_METRICS}
            out.append(f"{step:8d} {cell['train_loss']:>10s} {cell['train_accuracy']:>9s} "
                       f"{cell['test_loss']:>9s} {cell['test_accuracy']:>8s}")
    others = sorted({m["name"] for m in metrics} - set(EVAL_METRICS))
    if others:
        out.append(f"other metrics ({len(others)}): {', '.join(others[:20])}"
                   + (" ..." if len(others) > 20 else ""))
    return "\n".join(out)


def table_text(res: Mapping[str, Any]) -> str:
    """An analysis that produced a text table, and where its files are."""
    return f"{res['table']}\nwritten to {res['dir']}"


def interpolation_text(res: Mapping[str, Any]) -> str:
    """Loss and accuracy along a linear path, its barrier and whether it is monotone."""
    lines = [f"{res['a']} -> {res['b']} on {res['split']} (mask {res['mask']})",
             f"{'alpha':>7s} {'loss':>9s} {'acc':>7s}"]
    lines += [f"{al:7.3f} {lo:9.4f} {ac:7.4f}"
              for al, lo, ac in zip(res["alphas"], res["loss"], res["accuracy"], strict=True)]
    lines.append(f"barrier {res['barrier']:.4f} at alpha {res['barrier_alpha']:.3f}; "
                 f"monotone: {res['monotone']}; written to {res['dir']}")
    return "\n".join(lines)


def curve_text(res: Mapping[str, Any]) -> str:
    """Loss along a fitted curve beside the straight line between the same endpoints."""
    lines = [f"{res['kind']} curve in the {res['subspace']} subspace, {res['a']} -> {res['b']}",
             f"{'t':>6s} {'curve loss':>10s} {'line loss':>10s}"]
    lines += [f"{t:6.3f} {lc:10.4f} {ll:10.4f}"
              for t, lc, ll in zip(res["ts"], res["loss"], res["linear_loss"], strict=True)]
    lines.append(f"max loss: curve {res['max_loss']:.4f} (t={res['max_t']:.2f}), "
                 f"line {res['linear_max_loss']:.4f}; written to {res['dir']}")
    return "\n".join(lines)


def hessian_text(res: Mapping[str, Any]) -> str:
    """Extreme eigenvalues, g^T H g and the trace, whole model and per layer."""
    lines = [f"run {res['run_id']} step {res['step']}: {res['n_active']} active weights",
             "top eigenvalues:    " + "  ".join(f"{v:.5g}" for v in res["top"]),
             "bottom eigenvalues: " + "  ".join(f"{v:.5g}" for v in res["bottom"]),
             f"g^T H g {res['gHg']:.5g}   g^T H g / g^T g {res['gHg_over_gg']:.5g}   "
             f"trace {res['trace']:.5g} +- {res['trace_std']:.2g}"]
    if res["per_layer"]:
        lines.append(f"{'layer':32s} {'active':>8s} {'top1':>10s} {'bottom1':>10s} "
                     f"{'trace':>10s}")
        for name, r in res["per_layer"].items():
            top = r["top"][0] if r["top"] else float("nan")
            bot = r["bottom"][0] if r["bottom"] else float("nan")
            lines.append(f"{name:32s} {r['n_active']:8d} {top:10.4g} {bot:10.4g} "
                         f"{r['trace']:10.4g}")
    return "\n".join(lines)


def claims_text(res: Mapping[str, Any]) -> str:
    """A reproduction: each claim's verdict and what was measured."""
    lines = [f"{res['paper']} at {res['scale']} scale"]
    for c in res["claims"]:
        lines += [f"claim {c['number']}: {c['verdict'].upper()}: {c['text']}",
                  f"    {c['measured']}"]
        if c.get("effect") is not None:
            low, high = c.get("ci_low"), c.get("ci_high")
            ci = (f"95% CI [{low:+.4g}, {high:+.4g}]" if low is not None and high is not None
                  and low == low and high == high else "no interval")
            lines.append(f"    effect {c['effect']:+.4g}, {ci}, n={c.get('n')}; "
                         f"{c.get('rule', '')}")
    lines.append(f"written to {res['dir']}" + (f"; report {res['report']}" if res["report"]
                                               else ""))
    return "\n".join(lines)
