"""Finding runs in a store: what a run is (its label), filters by config field and tag, sorting.

A stored run is a row with its config; researchers tell runs apart by what they are
(scratch vs scratch+ vs lottery, sparsity, distribution, duration, seed) and by the names and
tags they gave them, not by 12-character hashes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sparseflow import typed
from sparseflow.errors import ConfigError

#: the words for each method in tables and legends
METHOD_WORDS = {
    "dense": "dense", "static": "scratch", "small_dense": "small dense",
    "oneshot": "one-shot pruned", "gradual": "pruned", "lottery": "lottery", "set": "SET",
    "rigl": "RigL", "rigl_inverted": "RigL inverted", "snip": "SNIP", "grasp": "GraSP",
    "synflow": "SynFlow",
}
#: the columns ``runs list`` shows and sorts by, besides any config field
COLUMNS = ("run_id", "name", "label", "status", "sparsity", "distribution", "duration", "seed",
           "test_accuracy", "started", "tags")


def method_label(config: Mapping[str, Any]) -> str:
    """What a run is, in words: ``scratch``, ``scratch+`` (sparsity-aware init), ``scratch+
    (pruned mask)``, ``lottery``, ``pruned``, ``RigL+``, ... (a method registered by a user
    keeps its own name)."""
    method = str(config.get("method", "?"))
    word = METHOD_WORDS.get(method, method)
    sparse = config.get("sparse") or {}
    where = ""
    if method == "static" and sparse.get("mask", "random") != "random":
        word, where = ("scratch", " (pruned mask)") if sparse.get("mask") == "pruned" else \
            ("static", " (loaded mask)")
    if config.get("init") == "sparse":
        word += "+"
    return word + where


def run_fields(run: Mapping[str, Any]) -> dict[str, Any]:
    """The values a run is listed, filtered and sorted by: the columns of :data:`COLUMNS`
    and every dotted config field."""
    cfg = run.get("config") or {}
    summary = run.get("summary") or {}
    dense = cfg.get("method") in ("dense", "small_dense")
    fields = typed.flatten(cfg)
    fields.update({
        "run_id": run["run_id"], "name": run.get("name"), "label": method_label(cfg),
        "status": run.get("status"), "sparsity": None if dense else cfg.get("sparsity"),
        "distribution": None if dense else cfg.get("distribution"),
        "duration": (cfg.get("train") or {}).get("duration"), "seed": cfg.get("seed"),
        "test_accuracy": summary.get("test_accuracy"), "started": run.get("started"),
        "tags": list(run.get("tags") or []),
    })
    return fields


def parse_where(items: Sequence[str], config_class: type) -> dict[str, Any]:
    """``["method=rigl", "sparsity=0.9"]`` as ``{dotted field: value}`` of ``config_class``
    (values read as YAML, as ``--set`` reads them; a renamed field's former name is accepted);
    a key that is no config field is a one-line ConfigError."""
    valid = typed.leaf_names(config_class)
    out: dict[str, Any] = {}
    for item in items:
        key, value = typed.parse_override(item)
        key = typed.canonical(config_class, key)
        if key not in valid:
            raise typed._unknown_key(key, list(valid))
        out[key] = value
    return out


def _matches(have: Any, want: Any) -> bool:
    if isinstance(have, int | float) and isinstance(want, int | float):
        return float(have) == float(want)
    return have == want or str(have) == str(want)


def filter_runs(runs: Sequence[Mapping[str, Any]], where: Mapping[str, Any] | None = None,
                tags: Sequence[str] = ()) -> list[Mapping[str, Any]]:
    """The runs whose config has every ``where`` value and that carry every tag in ``tags``."""
    out = []
    for run in runs:
        fields = run_fields(run)
        if all(_matches(fields.get(k), v) for k, v in (where or {}).items()) and \
                set(tags) <= set(fields["tags"]):
            out.append(run)
    return out


def sort_runs(runs: Sequence[Mapping[str, Any]], key: str, valid: Sequence[str]
              ) -> list[Mapping[str, Any]]:
    """``runs`` ordered by a column or config field (``-key``: descending); missing values
    last either way."""
    name = key.removeprefix("-")
    if name not in COLUMNS and name not in valid:
        raise ConfigError(f"--sort: unknown column or config field {name!r}; columns: "
                          f"{', '.join(COLUMNS)} or any config field")
    values = [(run_fields(r).get(name), r) for r in runs]  # each run's fields made once
    present = [(v, r) for v, r in values if v is not None]
    missing = [r for v, r in values if v is None]

    def order(item: tuple[Any, Mapping[str, Any]]) -> tuple[int, Any]:
        v = item[0]
        return (0, v) if isinstance(v, int | float) else (1, str(v))

    ordered = sorted(present, key=order, reverse=key.startswith("-"))
    return [r for _, r in ordered] + missing
