"""Your own models and datasets by reference: ``package.module:function``.

A config may name an importable callable instead of a registered model or dataset
(``model=mypkg.nets:wide_mlp``); the run id hashes the reference and its arguments, and sweep
workers and ``analyze`` import the same function (the module must be importable there too:
installed, or on ``PYTHONPATH``). docs/models.md gives each factory's contract.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sparseflow.errors import ConfigError


def is_reference(name: str) -> bool:
    """Whether ``name`` is a ``module:function`` reference rather than a registered name."""
    return ":" in name


def load_factory(ref: str, field: str) -> Callable[..., Any]:
    """The callable ``ref`` (``package.module:function``, the function may be dotted:
    ``module:Class.method``); a one-line ConfigError names ``field`` when it cannot be had."""
    module, _, attr = ref.partition(":")
    if not module or not attr or not all(p.isidentifier() for p in module.split(".")) \
            or not all(p.isidentifier() for p in attr.split(".")):
        raise ConfigError(f"{field}: expected package.module:function, got {ref!r}")
    try:
        obj: Any = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's module
        raise ConfigError(f"{field}: cannot import {module!r} ({type(e).__name__}: "
                          f"{' '.join(str(e).split())})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{field}: module {module!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{field}: {ref!r} is not callable")
    return obj
