"""Typed, validated, hashable configuration trees built from dataclasses.

A config is a tree of dataclasses. Each leaf field may carry metadata made with :func:`field`:
``help`` (shown by ``--help``), ``choices``, ``low``/``high`` (inclusive range, or exclusive with
``low_open``/``high_open``; an integer without ``high`` must still fit a signed 64-bit integer,
:data:`INT_MAX`, a float must be finite and a string not empty), ``hash`` (whether the field
names the run; paths and devices do not) and ``former_name`` (the name a renamed field had:
still accepted on input, and used in the run hash, so runs stored under the old name keep their
ids). Values come from YAML
(``yaml.safe_load``) and ``--set a.b=value`` overrides; every error names the dotted field and
what was expected, and an unknown key suggests the nearest valid one.

(Kept whole past ~400 lines: one mechanism, field metadata -> coercion and range checks -> the
tree and its dotted keys -> hash and help rows, whose parts call one another; the YAML reading
(~45 lines) is its only separable part, and as a module of its own it would be a new layer
unit.)
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from sparseflow.errors import ConfigError

_MISSING = dataclasses.MISSING

INT_MAX = 2**63 - 1
"""The largest integer any field takes: SQLite's INTEGER and torch's ``long`` hold no more."""


def field(
    default: Any = _MISSING,
    *,
    help: str = "",
    choices: tuple[str, ...] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    hash: bool = True,
    former_name: str | None = None,
    default_factory: Any = _MISSING,
) -> Any:
    """A dataclass field with validation metadata (see module docstring)."""
    meta = {
        "help": help,
        "choices": choices,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "hash": hash,
        "former_name": former_name,
    }
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _leaves(cls: type) -> tuple[tuple[str, dataclasses.Field, Any], ...]:
    """(dotted name, field, type) of every leaf of ``cls``, computed once per class (resolving
    the type hints costs ~0.5 ms per class; a run id needs them hundreds of times). A method
    registered later builds a new config class, so the cache never goes stale."""
    out: list[tuple[str, dataclasses.Field, Any]] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_section(tp):
            out += [(f"{f.name}.{name}", g, t) for name, g, t in _leaves(tp)]
        else:
            out.append((f.name, f, tp))
    return tuple(out)


def iter_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """Yield (dotted name, field, type) for every leaf field of a config class."""
    for name, f, tp in _leaves(cls):
        yield f"{prefix}{name}", f, tp


def leaf_names(cls: type) -> list[str]:
    """All dotted leaf names of a config class."""
    return [n for n, _, _ in iter_fields(cls)]


def _former(name: str, f: dataclasses.Field) -> str | None:
    old = f.metadata.get("former_name")
    return f"{name.rsplit('.', 1)[0]}.{old}" if old and "." in name else old


def former_names(cls: type) -> dict[str, str]:
    """``{former dotted name: current dotted name}`` of the renamed leaf fields."""
    return {old: name for name, f, _ in iter_fields(cls) if (old := _former(name, f))}


def canonical(cls: type, key: str) -> str:
    """``key`` with a former field name replaced by the field's current name."""
    return former_names(cls).get(key, key)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _plain(name: str, value: Any) -> Any:
    """``value`` if it is a YAML scalar or a list of them, else a ConfigError naming ``name``."""
    if isinstance(value, list | tuple):
        return [_plain(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise ConfigError(f"{name}: expected a number, string, true/false, null or a list of them, "
                      f"got {value!r}")


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert ``value`` to type ``tp`` or raise a ConfigError naming the field."""
    origin = typing.get_origin(tp)
    if origin is dict:  # a free mapping (e.g. a model factory's keyword arguments)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping of names to values, got {value!r}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k.isidentifier():
                raise ConfigError(f"{name}: {k!r} is not a valid argument name")
            out[k] = _plain(f"{name}.{k}", v)
        return out
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(name, a, value)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:  # X or null: X's own error says more
            raise errors[0]
        raise ConfigError(f"{name}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        (inner, *_rest) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):  # "1,2,3" from the command line
            value = [v for v in value.split(",") if v.strip()]
            value = [load_yaml(v) for v in value]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]  # "--set arch.widths=300": a list of one
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected {_type_name(tp)}, got {value!r}")
        items = [_coerce(f"{name}[{i}]", inner, v) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            number = float(number)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, bool) or value is None or isinstance(value, list | dict):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        if not str(value).strip():
            raise ConfigError(f"{name}: expected a non-empty string, got {value!r}")
        return str(value)
    raise ConfigError(f"{name}: unsupported type {tp!r}")


def _bound(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) >= 1e6 else f"{x:g}"


def _check_range(name: str, f: dataclasses.Field, value: Any) -> None:
    m = f.metadata
    if value is None:
        return
    values = value if isinstance(value, list | tuple) else [value]
    for v in values:
        if m.get("choices") and v not in m["choices"]:
            close = difflib.get_close_matches(str(v), m["choices"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{name}: {v!r} is not one of {', '.join(m['choices'])}{hint}"
            )
        lo, hi = m.get("low"), m.get("high")
        if isinstance(v, int) and not isinstance(v, bool) and hi is None:
            hi = INT_MAX  # every integer must fit where it goes (SQLite, torch)
        if isinstance(v, int | float) and not isinstance(v, bool):
            bad_lo = lo is not None and (v <= lo if m.get("low_open") else v < lo)
            bad_hi = hi is not None and (v >= hi if m.get("high_open") else v > hi)
            if bad_lo or bad_hi:
                left = "(" if m.get("low_open") or lo is None else "["
                right = ")" if m.get("high_open") or hi is None else "]"
                lo_s = "-inf" if lo is None else _bound(lo)
                hi_s = "inf" if hi is None else _bound(hi)
                raise ConfigError(f"{name}: {v!r} is out of range {left}{lo_s}, {hi_s}{right}")


def _unknown_key(key: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not close:  # try matching the last component, e.g. "lr" -> "optim.lr"
        tails = {v.rsplit(".", 1)[-1]: v for v in valid}
        hit = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(tails), n=1, cutoff=0.6)
        close = [tails[hit[0]]] if hit else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


class YamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without YAML 1.1's base-60 numbers: ``2:4`` (an N:M pattern) and
    ``1:30`` stay strings instead of becoming the integers 124 and 90."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if not (tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
                    and ":[0-5]?[0-9]" in regexp.pattern)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:int", r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)
        |[-+]?0x[0-9a-fA-F_]+)$""", list("-+0123456789")),
    ("tag:yaml.org,2002:float", r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
        |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
     list("-+0123456789.")),
):
    YamlLoader.add_implicit_resolver(_tag, re.compile(_pattern, re.X),
                                     _first)


def load_yaml(text: str) -> Any:
    """``yaml.load`` with :class:`YamlLoader` (safe: plain data only, no base-60 numbers)."""
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path, what: str) -> Any:
    """``yaml.safe_load`` of a file (None for an empty one); errors name the file and the line."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: cannot read {what} (a folder, expected a YAML file)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: cannot read {what} (not UTF-8 text: byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read {what} ({e.strerror or e})") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}") from None
    except RecursionError:
        raise ConfigError(f"{p}: not valid YAML (nested too deeply)") from None


def from_dict(cls: type, data: Mapping[str, Any] | None, prefix: str = "") -> Any:
    """Build a config of class ``cls`` from a (possibly nested) mapping, validating every value."""
    data = dict(data or {})
    hints = _hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    valid = leaf_names(cls)
    kwargs: dict[str, Any] = {}
    renamed = {f.metadata["former_name"]: f.name for f in names.values()
               if f.metadata.get("former_name")}
    for key, value in data.items():
        if isinstance(key, str) and key in renamed:
            if renamed[key] in data:
                raise ConfigError(f"{prefix}{key}: renamed to {prefix}{renamed[key]}; give one")
            key = renamed[key]
        if not isinstance(key, str) or key not in names:
            raise _unknown_key(f"{prefix}{key}", [f"{prefix}{v}" for v in valid])
        f = names[key]
        tp = hints[key]
        dotted = f"{prefix}{key}"
        if _is_section(tp):
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise ConfigError(f"{dotted}: expected a section (mapping), got {value!r}")
            kwargs[key] = from_dict(tp, value, dotted + ".")
        else:
            v = _coerce(dotted, tp, value)
            _check_range(dotted, f, v)
            kwargs[key] = v
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-dict form of a config (lists for tuples), suitable for YAML/JSON."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out[f.name] = to_dict(v)
        elif isinstance(v, tuple):
            out[f.name] = list(v)
        else:
            out[f.name] = v
    return out


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested dict to dotted keys."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def unflatten(d: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten`."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        node = out
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{k}: {p!r} is a value, not a section")
        if isinstance(node.get(parts[-1]), dict) and not isinstance(v, Mapping):
            raise ConfigError(f"{k}: given both as a value and as a section of keys")
        node[parts[-1]] = v
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """Parse ``a.b=value``; the value is read as YAML (``0.9`` -> float, ``true`` -> bool)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, dict):  # "a: b" parsed as mapping; keep the text
        value = raw
    return key, value


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge dotted overrides into a nested dict (later wins)."""
    flat = flatten(base)
    for k, v in overrides.items():
        for existing in [e for e in flat if e.startswith(k + ".")]:
            del flat[existing]
        flat[k] = v
    return unflatten(flat)


def leaf_values(cfg: Any) -> dict[str, Any]:
    """``{dotted leaf name: value}`` of a config (a mapping field is one leaf, its dict)."""
    out: dict[str, Any] = {}
    for name, _, _ in iter_fields(type(cfg)):
        obj = cfg
        for part in name.split("."):
            obj = getattr(obj, part)
        out[name] = list(obj) if isinstance(obj, tuple) else obj
    return out


def is_field(cls: type, key: str) -> bool:
    """Whether dotted ``key`` names a leaf of ``cls`` or an entry of one of its mapping
    fields (``model_args.hidden``)."""
    if key in leaf_names(cls):
        return True
    return any(key.startswith(name + ".") and typing.get_origin(tp) is dict
               for name, _, tp in iter_fields(cls))


@functools.cache
def _default_values(cls: type) -> dict[str, Any]:
    """``leaf_values(cls())``, once per class (read only: compared, never handed out)."""
    return leaf_values(cls())


def non_default(cfg: Any, *, hashed_only: bool = True) -> dict[str, Any]:
    """Dotted fields whose value differs from the default (only those that name the run)."""
    cls = type(cfg)
    cur, ref = leaf_values(cfg), _default_values(cls)
    out = {}
    for name, f, _ in iter_fields(cls):
        if hashed_only and not f.metadata.get("hash", True):
            continue
        if cur[name] != ref[name]:
            out[name] = cur[name]
    return out


def content_hash(cfg: Any, length: int = 12) -> str:
    """Hex digest of the non-default, run-naming fields: the same config is the same run.

    A renamed field is hashed under its former name, so a rename never changes a run id."""
    old = {new: former for former, new in former_names(type(cfg)).items()}
    named = {old.get(k, k): v for k, v in non_default(cfg).items()}
    payload = json.dumps(named, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def describe(cls: type) -> list[tuple[str, str, str, str]]:
    """(dotted name, type, default, help) rows for documentation and ``--help``."""
    flat = leaf_values(cls())
    rows = []
    for name, f, tp in iter_fields(cls):
        h = f.metadata.get("help", "")
        if f.metadata.get("choices"):
            h += f" One of: {', '.join(f.metadata['choices'])}."
        rows.append((name, _type_name(tp), json.dumps(flat[name]), h.strip()))
    return rows
