"""The method registry: one place maps a method name to everything a run needs to know of it.

For each name: the factory that attaches the method to a model and optimiser (a
:class:`~sparseflow.methods.base.Sparsifier` class or function; None for dense training), its
option classes (:mod:`sparseflow.methods.options`: together they are the method's part of the
``sparse`` config section), the held-out batches it needs and the runs it reads first (both
asked of the option classes). A new method is one class plus one :func:`register` line::

    register("rigl_inverted", RigLInverted, RigLOptions)

The run's ``sparse`` config section is made from the registered option classes when
``sparseflow.config`` is imported, so register a method of your own before that import to get
its options on the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sparseflow.methods.base import Sparsifier
from sparseflow.methods.dynamic import SET, RigL, RigLInverted
from sparseflow.methods.options import (
    COMMON_OPTIONS,
    BuildContext,
    DynamicOptions,
    GradualOptions,
    LotteryOptions,
    OneShotOptions,
    Options,
    PruneAtInitOptions,
    RigLOptions,
    Source,
    StaticOptions,
)
from sparseflow.methods.pruning import GradualPruning, OneShotPruning

Factory = Callable[..., Sparsifier]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    ``factory(model, optimizer, **kwargs)`` attaches it (None: dense training, no mask);
    ``options``: its option classes, whose :meth:`~Options.arguments` become the keyword
    arguments; ``narrows_model``: the method trains a dense model narrowed to the sparse one's
    non-zero count (small dense) instead of a mask.
    """

    name: str
    factory: Factory | None
    options: tuple[type[Options], ...] = ()
    narrows_model: bool = False

    def arguments(self, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        """The factory's keyword arguments from the ``sparse`` options, later classes winning."""
        out: dict[str, Any] = {}
        for cls in self.options:
            out.update(cls.arguments(opts, ctx))
        return out

    def heldout_batches(self, opts: Any) -> int:
        """Fixed held-out batches the method needs (at least the measurement batch)."""
        return max([1, *(cls.heldout_batches(opts) for cls in self.options)])

    def sources(self, opts: Any, sparsity: float) -> list[Source]:
        """Runs the method reads before it trains, in training order."""
        return [s for cls in self.options for s in cls.sources(opts, sparsity)]

    def build(self, model: Any, optimizer: Any, opts: Any, ctx: BuildContext,
              **common: Any) -> Sparsifier | None:
        """Attach the method: ``factory(model, optimizer, **common, **arguments)``."""
        if self.factory is None:
            return None
        return self.factory(model, optimizer, **{**common, **self.arguments(opts, ctx)})


METHODS: dict[str, MethodSpec] = {}


def register(name: str, factory: Factory | None, *options: type[Options],
             narrows_model: bool = False) -> MethodSpec:
    """Register method ``name``: its factory and its option classes (see the module doc)."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    spec = MethodSpec(name, factory, tuple(options), narrows_model)
    METHODS[name] = spec
    return spec


def method_spec(name: str) -> MethodSpec:
    """The registered method ``name``; a one-line ValueError lists the valid names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method: unknown method {name!r}; valid: "
                         f"{', '.join(METHODS)}") from None


def method_names() -> list[str]:
    """Names accepted by the ``method`` config field, in registration order."""
    return list(METHODS)


def option_classes() -> list[type[Options]]:
    """Every option class of the registered methods, common ones first, each once."""
    seen: dict[type[Options], None] = dict.fromkeys(COMMON_OPTIONS)
    for spec in METHODS.values():
        seen.update(dict.fromkeys(spec.options))
    return list(seen)


def _pruned_at_init(method: str) -> Factory:
    def factory(model: Any, optimizer: Any, **kwargs: Any) -> Sparsifier:
        from sparseflow.methods import pruned_at_init

        if method != "synflow" and kwargs.get("batch") is None:
            raise ValueError("scores weights on the held-out batch: set data.heldout > 0")
        return pruned_at_init(method, model, optimizer, **kwargs)

    factory.__name__ = method
    return factory


register("dense", None)
register("static", Sparsifier, StaticOptions)
register("small_dense", None, narrows_model=True)
register("oneshot", OneShotPruning, OneShotOptions)
register("gradual", GradualPruning, GradualOptions)
register("lottery", Sparsifier, LotteryOptions)
register("set", SET, DynamicOptions)
register("rigl", RigL, RigLOptions)
register("rigl_inverted", RigLInverted, RigLOptions)
register("snip", _pruned_at_init("snip"), PruneAtInitOptions)
register("grasp", _pruned_at_init("grasp"), PruneAtInitOptions)
register("synflow", _pruned_at_init("synflow"), PruneAtInitOptions)
