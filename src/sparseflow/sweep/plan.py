"""The training order of a sweep: every run its points need, source runs first, each once."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from sparseflow.config import Config, run_id
from sparseflow.sweep.spec import Sweep, expand, load_sweep
from sparseflow.training.lineage import direct_sources, merge_checkpoints, source_configs


@dataclass
class PlannedRun:
    """One run of a sweep: its config, the run ids it needs first, and whether it is a point
    of the sweep (else only a source of one)."""

    run_id: str
    config: Config
    needs: list[str]
    point: bool


def plan(configs: list[Config]) -> list[PlannedRun]:
    """Every run the configs need (sources first), each once, in a valid training order."""
    runs: dict[str, PlannedRun] = {}
    for cfg in configs:
        for c in [*source_configs(cfg), cfg]:
            rid = run_id(c)
            if rid in runs:
                merge_checkpoints(runs[rid].config, c)
                runs[rid].point = runs[rid].point or c is cfg
                continue
            needs = list(dict.fromkeys(run_id(s) for s in direct_sources(c)))
            runs[rid] = PlannedRun(rid, copy.deepcopy(c), needs, c is cfg)
    return list(runs.values())


def as_configs(sweep_or_configs: Sweep | str | Path | list[Config]) -> list[Config]:
    """Configs of a sweep, a sweep file, or a list of configs (kept as given, deduplicated)."""
    if isinstance(sweep_or_configs, str | Path):
        sweep_or_configs = load_sweep(sweep_or_configs)
    if isinstance(sweep_or_configs, Sweep):
        return expand(sweep_or_configs)
    out: dict[str, Config] = {}
    for c in sweep_or_configs:
        if not isinstance(c, Config):
            raise TypeError(f"expected Config objects, got {type(c).__name__}")
        out.setdefault(run_id(c), c)
    return list(out.values())
