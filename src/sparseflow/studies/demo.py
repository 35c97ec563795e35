"""The README's main job: a short default study with every part of sparseflow in it.

LeNet-300-100 on Fashion-MNIST at 90% sparsity: dense, scratch (static on the pruned mask),
scratch+ (the same with the sparsity-aware init), SET, RigL, gradual pruning and its lottery
ticket, with gradient flow measured; then the linear paths lottery -> pruned and scratch ->
pruned, and the HTML report (``ROOT/report/default-study/index.html``;
``default-study-DIGEST`` for a setting of one's own). A few minutes on a 2-core machine (5
epochs per run by default).

Any setting: ``default_study(root, overrides=["dataset=digits", "model=mlp"])`` (the CLI's
``--set KEY=VALUE`` and ``-c FILE``, read as ``sparseflow run`` reads them) runs the same study
with the user's settings over that base, for every run (``studies/setting.py``); the keys the
study varies itself (``VARIED``: the method, its mask and init) are refused. ``epochs`` is a
shortcut for ``train.duration``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sparseflow.config import run_id
from sparseflow.errors import ConfigError, UserError
from sparseflow.store.database import Store
from sparseflow.store.paths import store_path
from sparseflow.studies.setting import check_setting, parse_setting, study_config, varied_keys

METHODS = {
    "dense": ["method=dense"],
    "scratch": ["method=static", "sparse.mask=pruned"],
    "scratch+": ["method=static", "sparse.mask=pruned", "init=sparse"],
    "SET": ["method=set"],
    "RigL": ["method=rigl"],
    "lottery": ["method=lottery"],
}
#: the keys the study varies itself (a setting of one is refused) and why
VARIED = varied_keys(METHODS, "it compares " + ", ".join(METHODS))
DEFAULT_EPOCHS = 5


def default_study(root: str | Path, *, epochs: int | None = None,
                  overrides: Sequence[str] = (), config_file: str | Path | None = None,
                  workers: int | None = None, progress: bool = True,
                  echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the study (resumable), interpolate, write the report; returns paths and numbers.

    ``epochs`` (default 5) sets ``train.duration``; ``config_file`` (YAML) and ``overrides``
    (``KEY=VALUE``) are the user's setting over the base (LeNet-300-100, Fashion-MNIST, 90%),
    for every run; a key of ``VARIED``, a bad key or value, or ``epochs`` together with a
    ``train.duration`` setting is a ``ConfigError`` before anything trains. Returns
    ``report``, ``accuracy`` and ``barrier_to_pruned`` per method, and ``setting`` (the
    ``KEY=VALUE`` texts, empty for the base's own).
    """
    from sparseflow.analysis.runs import interpolate_runs
    from sparseflow.report.html import build_report
    from sparseflow.sweep.client import run_sweep

    root = Path(root)
    setting = parse_setting(config_file, overrides)
    check_setting(setting, VARIED, "demo")
    if epochs is not None and "train.duration" in setting.pairs:
        raise ConfigError("demo: give --epochs or train.duration, not both (--epochs N is "
                          "train.duration=Nep)")
    base = ["model=lenet300", "dataset=fashion_mnist", "sparsity=0.9",
            f"train.duration={epochs or DEFAULT_EPOCHS}ep"]
    cfgs = {name: study_config(base, setting, over) for name, over in METHODS.items()}
    run_sweep(list(cfgs.values()), root, workers=workers, progress=progress, echo=echo)
    with Store(store_path(root)) as store:
        runs = {name: store.get_run(run_id(c)) for name, c in cfgs.items()}
        for name in ("scratch", "lottery"):  # the paths need them
            status = (runs[name] or {}).get("status", "missing")
            if status != "finished":
                raise UserError(f"run {run_id(cfgs[name])} ({name}) did not finish: {status} "
                                f"(see 'sparseflow runs show {run_id(cfgs[name])}')")
        pruned = runs["lottery"]["summary"]["ticket_source"]
        runs["gradual"] = store.get_run(pruned)
    paths = {name: interpolate_runs(root, run_id(cfgs[name]), pruned, alphas="0:1:11")
             for name in ("lottery", "scratch")}
    ids = [r["run_id"] for r in runs.values()]
    if setting.pairs:
        c = cfgs["dense"]
        name = f"default-study-{setting.digest}"
        title = (f"sparseflow default study: {c.model}, {c.dataset}, {c.sparsity:.0%} "
                 f"({setting.describe()})")
    else:
        name = "default-study"
        title = "sparseflow default study: LeNet-300-100, Fashion-MNIST, 90%"
    report = build_report(root, ids, root / "report" / name, title=title)
    accuracy = {name: (r.get("summary") or {}).get("test_accuracy") for name, r in runs.items()}
    barriers = {name: p["barrier"] for name, p in paths.items()}
    return {"report": str(report), "accuracy": accuracy, "barrier_to_pruned": barriers,
            "setting": setting.items}
