"""Runs grouped the way a researcher pools them: same numbers-changing config, any seed.

A run's config has three kinds of fields. The ``seed`` is what repeats of one experiment
differ by. Fields declared with ``hash=False`` (``threads``, ``device``, ``sparse.execution``,
``flow.every``, ...; see :mod:`sparseflow.typed`) do not change the trained numbers: the run id
(:func:`sparseflow.typed.content_hash`) leaves them out, and so does the group key. Every other
field names the experiment: two finished runs whose configs agree on all of them are seeds of
one group, and the groups of one call are told apart by the fields on which they differ
(:attr:`RunGroup.varying`), written shortly in their labels (``RigL s=0.9 lr=0.1``).

The rule is the run id's: a field counts when its metadata says ``hash`` (the default), a
renamed field's former name is read as its current one, and a key the config class does not
know (an option of a method registered elsewhere) counts, to be safe. Configs are stored
dicts (:meth:`sparseflow.store.database.Store.list_runs`), read without validation, so a run
whose dataset, model or data folder is not on this machine still groups.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sparseflow import typed
from sparseflow.analysis.catalog import method_label
from sparseflow.config import Config

SEED = "seed"
"""The field repeats of one experiment differ by."""

#: how a varying field is written in a label: ``s=0.9`` for the sparsity
SHORT_NAMES = {"sparsity": "s"}
#: fields whose value alone says what it is (``adam``, ``erk``, ``tanh``, ``cosine``)
BARE_FIELDS = ("optim.name", "distribution", "arch.activation", "optim.schedule")


@dataclass
class RunGroup:
    """Finished runs that differ only by seed (and fields that do not change the numbers).

    ``key``: :func:`group_key` of their configs; ``runs``: the run dicts in the order given;
    ``n``: ``len(runs)``; ``config``: the first run's nested config without ``seed`` (its
    ``hash=False`` fields, e.g. ``threads``, are the first run's); ``varying``: ``{dotted
    field: this group's value}`` of the fields that differ between the groups of one
    :func:`group_runs` call; ``label``: unique among them (see :func:`group_runs`).
    """

    key: str
    runs: list[Mapping[str, Any]]
    n: int
    config: dict[str, Any]
    varying: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def method(self) -> str:
        """The config's ``method``."""
        return str(self.config.get("method", "?"))

    @property
    def sparsity(self) -> float | None:
        """The config's sparsity; None for ``method=dense``, which has no mask (a
        ``small_dense`` run keeps it: its width is set to match that sparsity's count)."""
        if self.method == "dense":
            return None
        value = self.config.get("sparsity")
        return None if value is None else float(value)

    def values(self, metric: str) -> list[float]:
        """``summary[metric]`` of every run that has it (None and missing left out)."""
        out = []
        for run in self.runs:
            v = (run.get("summary") or {}).get(metric)
            if v is not None:
                out.append(float(v))
        return out


@dataclass(frozen=True)
class _Fields:
    leaves: dict[str, bool]  # leaf field -> whether it names the run (metadata ``hash``)
    mappings: dict[str, bool]  # mapping field (model_args, ...) -> the same
    defaults: dict[str, Any]  # flat key -> default value
    order: dict[str, int]  # field -> position in the config


@cache
def _fields() -> _Fields:
    """What :class:`~sparseflow.config.Config`'s field metadata says, read once."""
    leaves: dict[str, bool] = {}
    mappings: dict[str, bool] = {}
    order: dict[str, int] = {}
    for i, (name, f, tp) in enumerate(typed.iter_fields(Config)):
        hashed = bool(f.metadata.get("hash", True))
        (mappings if typing.get_origin(tp) is dict else leaves)[name] = hashed
        order[name] = i
    defaults = typed.flatten(typed.to_dict(Config()))
    return _Fields(leaves, mappings, defaults, order)


def _changes_numbers(key: str) -> bool:
    """Whether dotted ``key`` (a leaf or an entry of a mapping field) names the experiment:
    not the seed, not a ``hash=False`` field; an unknown key counts."""
    if key == SEED:
        return False
    meta = _fields()
    if key in meta.leaves:
        return meta.leaves[key]
    for name, hashed in meta.mappings.items():
        if key.startswith(name + "."):
            return hashed
    return True


def _numbers_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """``{dotted field: value}`` of every field that changes the numbers, defaults filled in
    for fields the stored config lacks (configs stored before a field was added)."""
    defaults = _fields().defaults
    stored = {typed.canonical(Config, k): v for k, v in typed.flatten(config).items()}
    merged = {**defaults, **stored}
    return {k: v for k, v in merged.items() if _changes_numbers(k)}


def _comparable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def group_key(config: Mapping[str, Any]) -> str:
    """The canonical JSON (sorted keys, no spaces) of the config's fields that change the
    numbers: every field except ``seed`` and those declared ``hash=False``, and (as in the run
    id) only where the value differs from the default, so a config stored before a field
    existed keys as its default. Runs with equal keys are repeats of one experiment."""
    defaults = _fields().defaults
    named = {k: v for k, v in _numbers_fields(config).items()
             if k not in defaults or _comparable(v) != _comparable(defaults[k])}
    return _comparable(named)


def _order(name: str) -> tuple[int, str]:
    order = _fields().order
    if name in order:
        return (order[name], name)
    for leaf, i in order.items():  # an entry of a mapping field sits at the field
        if name.startswith(leaf + "."):
            return (i, name)
    return (len(order), name)


def _format_value(value: Any) -> str:
    if value is None:
        return "default"
    if isinstance(value, float):
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    if isinstance(value, list | tuple):
        return ",".join(_format_value(v) for v in value)
    return str(value)


def short_field(name: str, value: Any) -> str:
    """A varying field as a label writes it: ``s=0.9`` for the sparsity, the bare value for
    the fields of :data:`BARE_FIELDS` (``adam``, ``erk``), else ``last component=value``
    (``lr=0.1``, ``duration=20ep``, ``hidden=256`` for ``model_args.hidden``); None reads
    ``default`` (the model's own choice)."""
    if name in BARE_FIELDS and isinstance(value, str):
        return value
    last = name.rsplit(".", 1)[-1]
    return f"{SHORT_NAMES.get(name, last)}={_format_value(value)}"


def _differing(groups: Sequence[RunGroup], values: Mapping[str, dict[str, Any]]) -> list[str]:
    """Dotted fields whose values are not all equal across ``groups``, in config order."""
    names = set().union(*(values[g.key] for g in groups)) if groups else set()
    out = [n for n in names
           if len({_comparable(values[g.key].get(n)) for g in groups}) > 1]
    return sorted(out, key=_order)


def _user_name(group: RunGroup) -> str | None:
    names = {run.get("name") for run in group.runs}
    if len(names) == 1:
        name = names.pop()
        if isinstance(name, str) and name.strip():
            return name.strip()
    return None


def group_runs(runs: Sequence[Mapping[str, Any]]) -> list[RunGroup]:
    """The finished runs (``status == "finished"``, or no status at all) grouped by
    :func:`group_key`, groups in order of their first run, runs in the order given.

    Each group gets ``varying``: its values of the fields (not the seed, not ``hash=False``
    fields) that differ between the groups returned; and a ``label``: the method in words
    (:func:`~sparseflow.analysis.catalog.method_label`, e.g. ``scratch+``, ``RigL``) followed
    by the fields that tell it from the other groups with the same words, written by
    :func:`short_field` (``RigL lr=0.1``); when every run of the group carries the same
    user-given ``name``, that name is the label. Labels are unique: groups that still share
    one get the further fields on which they differ, and finally ``#1``, ``#2``, ...
    """
    by_key: dict[str, RunGroup] = {}
    for run in runs:
        if run.get("status", "finished") != "finished":
            continue
        config = run.get("config") or {}
        key = group_key(config)
        if key not in by_key:
            shared = {k: v for k, v in config.items() if k != SEED}
            by_key[key] = RunGroup(key=key, runs=[], n=0, config=shared)
        group = by_key[key]
        group.runs.append(run)
        group.n = len(group.runs)
    groups = list(by_key.values())
    values = {g.key: _numbers_fields(g.config) for g in groups}
    varying = _differing(groups, values)
    for g in groups:
        g.varying = {name: values[g.key].get(name) for name in varying}
    _label(groups, values)
    return groups


def _label(groups: list[RunGroup], values: Mapping[str, dict[str, Any]]) -> None:
    """Fill in unique labels (see :func:`group_runs`)."""
    used: dict[str, list[str]] = {g.key: [] for g in groups}
    base: dict[str, str] = {}
    for g in groups:
        name = _user_name(g)
        base[g.key] = name if name is not None else method_label(g.config)
    words: dict[str, list[RunGroup]] = {}
    for g in groups:
        if _user_name(g) is None:
            words.setdefault(base[g.key], []).append(g)
    for same in words.values():  # the fields that tell apart groups of the same method words
        for name in _differing(same, values):
            for g in same:
                used[g.key].append(name)

    def text(g: RunGroup) -> str:
        parts = [base[g.key], *(short_field(n, values[g.key].get(n)) for n in used[g.key])]
        return " ".join(parts)

    for _ in range(len(groups) + 1):  # each pass adds fields to every colliding set
        clashes = _clashes(groups, text)
        if not clashes:
            break
        grew = False
        for clash in clashes:
            for name in _differing(clash, values):
                for g in clash:
                    if name not in used[g.key]:
                        used[g.key].append(name)
                        grew = True
        if not grew:
            break
    labels = {g.key: text(g) for g in groups}
    for clash in _clashes(groups, text):  # fields could not tell them apart: number them
        for k, g in enumerate(clash, 1):
            labels[g.key] = f"{labels[g.key]} #{k}"
    taken: set[str] = set()
    for g in groups:
        label, k = labels[g.key], 1
        while label in taken:  # a numbered label that met another group's label
            k += 1
            label = f"{labels[g.key]} #{k}"
        taken.add(label)
        g.label = label


def _clashes(groups: Sequence[RunGroup], text: Any) -> list[list[RunGroup]]:
    by: dict[str, list[RunGroup]] = {}
    for g in groups:
        by.setdefault(text(g), []).append(g)
    return [same for same in by.values() if len(same) > 1]
