"""Sweep files: a base config plus axes, expanded into runs named by their content hash.

A sweep file is YAML (read with ``yaml.safe_load``)::

    name: lr-vs-sparsity          # optional; default: the file's stem
    base:                         # optional; nested sections or dotted keys
      dataset: fashion_mnist
      train.duration: 20ep
    grid:                         # optional; the cartesian product of these axes
      method: [set, rigl]
      sparsity: [0.8, 0.9]
    zip:                          # optional; lists of equal length, walked together
      optim.lr: [0.1, 0.05]
      optim.schedule: [cosine, constant]
    seeds: 3                      # optional; an int n (seeds 0..n-1) or a list of seeds
    scsdc:                        # optional; SC-SDC pairs (docs/science.md section 5)
      sparse_width: 256           # every point becomes, per depth and dense width, a wide
      dense_widths: [26, 77, 128] # sparse MLP (distribution=scsdc, init=matched) and its
      depths: [1, 2, 4]           # narrow dense partner with the same per-layer counts

Every point is ``base`` overridden by one grid combination, one zip row and one seed; it is
validated like ``sparseflow run --set ...`` and named by :func:`~sparseflow.config.
run_id`, so points that are the same run are kept once, a finished run is never trained again
and an interrupted sweep started again completes only what is missing.

Some methods need other runs first (``method=lottery``, ``method=static`` with
``sparse.mask=pruned``): :mod:`sparseflow.sweep.plan` orders them with the rules the run itself
uses (:mod:`sparseflow.training.lineage`).
"""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparseflow import typed
from sparseflow.config import Config, config_from_dict, run_id
from sparseflow.errors import ConfigError, UserError

SWEEP_KEYS = ("name", "base", "grid", "zip", "seeds", "scsdc")
MAX_SEEDS = 10_000  # a count beyond this is a typo, not a study
SCSDC_KEYS = ("sparse_width", "dense_widths", "depths")
STATUS_KEYS = ("done", "running", "interrupted", "failed", "diverged", "pending")
_STORE_TO_SWEEP = {"finished": "done", "running": "running", "interrupted": "interrupted",
                   "failed": "failed", "diverged": "diverged"}


@dataclass
class Sweep:
    """A parsed sweep file (see the module docstring for the format).

    ``base`` holds dotted keys; ``grid`` and ``zip`` map dotted config fields to their values;
    ``seeds`` is empty when the file has no seed axis (the base's seed is used).
    """

    name: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    zip: dict[str, list[Any]]
    seeds: list[int]
    path: Path
    scsdc: dict[str, Any] | None = None

    @property
    def size(self) -> int:
        """Number of points before duplicates are removed."""
        n = 1
        for values in self.grid.values():
            n *= len(values)
        if self.zip:
            n *= len(next(iter(self.zip.values())))
        if self.scsdc:
            n *= 2 * len(self.scsdc["dense_widths"]) * len(self.scsdc["depths"])
        return n * max(1, len(self.seeds))


def _suggest(key: str, valid: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest valid field, matching the whole key or its tail."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not close:
        tails = {v.rsplit(".", 1)[-1]: v for v in valid}
        hit = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(tails), n=1, cutoff=0.6)
        close = [tails[hit[0]]] if hit else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def _axes(path: Path, section: str, raw: Any, valid: list[str]) -> dict[str, list[Any]]:
    """Validated ``{dotted field: [values]}`` of the ``grid`` or ``zip`` section."""
    if raw is None or raw == {}:
        raise ConfigError(f"{path}: {section} is empty (give at least one axis, or leave the "
                          f"{section} section out)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {section}: expected a mapping of config fields to lists of "
                          f"values, got {type(raw).__name__}")
    flat = {typed.canonical(Config, str(k)): v for k, v in typed.flatten(raw).items()}
    out: dict[str, list[Any]] = {}
    for key, values in flat.items():
        if not isinstance(key, str) or not typed.is_field(Config, key):
            raise ConfigError(f"{path}: {section} axis {key!r} is not a config field"
                              f"{_suggest(str(key), valid)}")
        if not isinstance(values, list):
            raise ConfigError(f"{path}: {section} axis {key!r}: expected a list of values, got "
                              f"{values!r}")
        if not values:
            raise ConfigError(f"{path}: {section} axis {key!r} has no values (empty grid: the "
                              "sweep would have no runs)")
        out[key] = values
    return out


def _seeds(path: Path, raw: Any) -> list[int]:
    if raw is None:
        return []
    if isinstance(raw, bool):
        raise ConfigError(f"{path}: seeds: expected a count or a list of seeds, got {raw!r}")
    if isinstance(raw, int):
        if raw < 1:
            raise ConfigError(f"{path}: seeds: {raw} gives no runs (empty grid); expected a "
                              "count >= 1 or a list of seeds")
        if raw > MAX_SEEDS:
            raise ConfigError(f"{path}: seeds: {raw} seeds; at most {MAX_SEEDS}")
        return list(range(raw))
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: seeds: expected a count or a list of seeds, got {raw!r}")
    if not raw:
        raise ConfigError(f"{path}: seeds: the list is empty (empty grid: the sweep would have "
                          "no runs)")
    for s in raw:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"{path}: seeds: {s!r} is not a non-negative integer")
    return list(dict.fromkeys(raw))


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; every error is a one-line ConfigError naming the file."""
    p = Path(path)
    data = typed.read_yaml(p, "sweep file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping with keys {', '.join(SWEEP_KEYS)} at the top "
                          "level")
    for key in data:
        if key not in SWEEP_KEYS:
            hint = difflib.get_close_matches(str(key), SWEEP_KEYS, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{p}: unknown sweep key {key!r}{extra}; expected "
                              f"{', '.join(SWEEP_KEYS)}")
    name = data.get("name", p.stem)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{p}: name: expected a non-empty string, got {name!r}")
    valid = typed.leaf_names(Config)

    base_raw = data.get("base") or {}
    if not isinstance(base_raw, dict):
        raise ConfigError(f"{p}: base: expected a mapping of config fields, got "
                          f"{type(base_raw).__name__}")
    base = {typed.canonical(Config, str(k)): v for k, v in typed.flatten(base_raw).items()}
    for key in base:
        if not typed.is_field(Config, key):
            raise ConfigError(f"{p}: base: {key!r} is not a config field{_suggest(key, valid)}")
    try:
        config_from_dict(typed.unflatten(base))
    except ConfigError as e:
        raise ConfigError(f"{p}: base: {e}") from None

    grid = _axes(p, "grid", data["grid"], valid) if "grid" in data else {}
    zipped = _axes(p, "zip", data["zip"], valid) if "zip" in data else {}
    lengths = {k: len(v) for k, v in zipped.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ConfigError(f"{p}: zip: every list must have the same length ({detail})")
    both = sorted(set(grid) & set(zipped))
    if both:
        raise ConfigError(f"{p}: {both[0]!r} is both a grid and a zip axis")
    seeds = _seeds(p, data.get("seeds"))
    if seeds and ("seed" in grid or "seed" in zipped):
        raise ConfigError(f"{p}: seeds and a 'seed' axis both set the seed; keep one")
    scsdc = _scsdc(p, data["scsdc"]) if "scsdc" in data else None
    return Sweep(name=name, base=base, grid=grid, zip=zipped, seeds=seeds, path=p, scsdc=scsdc)


def _scsdc(path: Path, raw: Any) -> dict[str, Any]:
    """Validate the ``scsdc`` section: sparse_width (int), dense_widths and depths (int lists)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: scsdc: expected a mapping with {', '.join(SCSDC_KEYS)}")
    for key in raw:
        if key not in SCSDC_KEYS:
            raise ConfigError(f"{path}: scsdc: unknown key {key!r}; expected "
                              f"{', '.join(SCSDC_KEYS)}")
    ws = raw.get("sparse_width")
    if isinstance(ws, bool) or not isinstance(ws, int) or ws < 1:
        raise ConfigError(f"{path}: scsdc.sparse_width: expected a positive integer, got {ws!r}")
    out: dict[str, Any] = {"sparse_width": ws}
    for key in ("dense_widths", "depths"):
        vals = raw.get(key)
        if not isinstance(vals, list) or not vals or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in vals):
            raise ConfigError(f"{path}: scsdc.{key}: expected a non-empty list of positive "
                              f"integers, got {vals!r}")
        out[key] = list(dict.fromkeys(vals))
    too_wide = [w for w in out["dense_widths"] if w > ws]
    if too_wide:
        raise ConfigError(f"{path}: scsdc.dense_widths: {too_wide[0]} is wider than "
                          f"sparse_width {ws}")
    return out


def scsdc_pair(overrides: dict[str, Any], depth: int, sparse_width: int, dense_width: int
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dotted overrides of the sparse and the dense network of one SC-SDC pair."""
    common = {**overrides, "model": "mlp", "arch.depth": depth, "arch.widths": None}
    sparse = {**common, "method": "static", "distribution": "scsdc", "init": "matched",
              "arch.width": sparse_width, "sparse.dense_width": dense_width}
    dense = {**common, "method": "dense", "arch.width": dense_width}
    return sparse, dense


def scsdc_cells(sweep: Sweep) -> list[tuple[tuple[Any, ...], str, Config]]:
    """(cell, "sparse" | "dense", config) of every run of an SC-SDC sweep; the cell is the point
    without its seed plus (depth, dense width), so a cell's runs differ only by seed."""
    if not sweep.scsdc:
        raise UserError(f"{sweep.path}: not an SC-SDC sweep (no 'scsdc' section)")
    out = []
    base = typed.unflatten(sweep.base)
    for over in _base_points(sweep):
        key = tuple(sorted((k, str(v)) for k, v in over.items() if k != "seed"))
        for depth in sweep.scsdc["depths"]:
            for wd in sweep.scsdc["dense_widths"]:
                pair = scsdc_pair(over, depth, sweep.scsdc["sparse_width"], wd)
                for kind, o in zip(("sparse", "dense"), pair, strict=True):
                    cfg = config_from_dict(typed.merge(base, o))
                    out.append(((*key, ("depth", str(depth)), ("dense_width", str(wd))),
                                kind, cfg))
    return out


def points(sweep: Sweep) -> list[dict[str, Any]]:
    """The dotted overrides of every point: grid product x zip rows x seeds, in that order; an
    SC-SDC sweep turns each into its sparse/dense pairs per depth and dense width."""
    base_points = _base_points(sweep)
    if not sweep.scsdc:
        return base_points
    sc = sweep.scsdc
    return [o for p in base_points for d in sc["depths"] for wd in sc["dense_widths"]
            for o in scsdc_pair(p, d, sc["sparse_width"], wd)]


def _base_points(sweep: Sweep) -> list[dict[str, Any]]:
    grid_rows = [dict(zip(sweep.grid, combo, strict=True))
                 for combo in itertools.product(*sweep.grid.values())]
    n_zip = len(next(iter(sweep.zip.values()))) if sweep.zip else 0
    zip_rows = ([{k: v[i] for k, v in sweep.zip.items()} for i in range(n_zip)]
                if sweep.zip else [{}])
    seed_rows = [{"seed": s} for s in sweep.seeds] or [{}]
    return [{**g, **z, **s} for g in grid_rows for z in zip_rows for s in seed_rows]


def expand(sweep: Sweep) -> list[Config]:
    """Validated configs of every point, duplicates (the same run id) removed, order stable."""
    out: dict[str, Config] = {}
    base = typed.unflatten(sweep.base)
    for overrides in points(sweep):
        try:
            cfg = config_from_dict(typed.merge(base, overrides))
        except ConfigError as e:
            where = ", ".join(f"{k}={v}" for k, v in overrides.items())
            raise ConfigError(f"{sweep.path}: point {where}: {e}") from None
        out.setdefault(run_id(cfg), cfg)
    if not out:
        raise ConfigError(f"{sweep.path}: the sweep has no points (empty grid)")
    return list(out.values())
