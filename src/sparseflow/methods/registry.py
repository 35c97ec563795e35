"""The method registry: one place maps a method name to everything a run needs to know of it.

For each name: the factory that attaches the method to a model and optimiser (a
:class:`~sparseflow.methods.base.Sparsifier` class or function; None for dense training), its
option classes (:mod:`sparseflow.methods.options`: together they are the method's part of the
``sparse`` config section), the held-out batches it needs and the runs it reads first (both
asked of the option classes). A new method is one class plus one :func:`register` line::

    register("rigl_inverted", rigl_inverted, RigLOptions)

The run's ``sparse`` config section is made from the registered option classes when
``sparseflow.config`` is imported, so register a method of your own before that import to get
its options on the command line.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparseflow.methods.acdc import ACDCOptions
from sparseflow.methods.api import (
    acdc,
    gradual,
    granet,
    oneshot,
    rigl,
    rigl_inverted,
    set_training,
    sr_ste,
    srigl,
    static,
    ste,
    topkast,
)
from sparseflow.methods.at_init import grasp, snip, synflow
from sparseflow.methods.base import Sparsifier
from sparseflow.methods.calls import ArgumentError, named_call
from sparseflow.methods.granet import GraNetOptions
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
    SynFlowOptions,
)
from sparseflow.methods.srigl import SRigLOptions
from sparseflow.methods.ste import SRSTEOptions, STEOptions
from sparseflow.methods.topkast import TopKASTOptions

Factory = Callable[..., Sparsifier]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    ``factory(model, optimizer, **kwargs)`` attaches it (None: dense training, no mask);
    ``options``: its option classes, whose :meth:`~Options.arguments` become the keyword
    arguments; ``narrows_model``: the method trains a dense model narrowed to the sparse one's
    non-zero count (small dense) instead of a mask; ``pattern``: the sparsity pattern the
    method always keeps (SRigL: ``fan_in``), used when ``sparse.pattern`` is left at
    ``unstructured``.
    """

    name: str
    factory: Factory | None
    options: tuple[type[Options], ...] = ()
    narrows_model: bool = False
    pattern: str | None = None

    def pattern_of(self, opts: Any) -> str:
        """The pattern a run of this method keeps: ``sparse.pattern``, or the method's own
        when that is left at ``unstructured``."""
        given = str(getattr(opts, "pattern", "unstructured"))
        return self.pattern if self.pattern and given == "unstructured" else given

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
             narrows_model: bool = False, pattern: str | None = None) -> MethodSpec:
    """Register method ``name``: its factory, its option classes and (``pattern``) the sparsity
    pattern it always keeps (see the module doc)."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    spec = MethodSpec(name, factory, tuple(options), narrows_model, pattern)
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


def options_of(method: str) -> list[str]:
    """The keyword options of ``method``'s factory (its parameters after model, optimizer)."""
    factory = method_spec(method).factory
    if factory is None:
        return []
    params = inspect.signature(factory).parameters
    return [p for p in params if p not in ("model", "optimizer")]


def sparsify(method: str, model: nn.Module, optimizer: torch.optim.Optimizer,
             **options: Any) -> Sparsifier:
    """Attach the sparse-training ``method`` to ``model`` and ``optimizer``.

    Forwards ``options`` to the method's registered factory: ``static``,
    ``set`` (:func:`set_training`), ``rigl``, ``rigl_inverted``, ``gradual``, ``oneshot``,
    ``snip``, ``grasp``, ``synflow``, ``srigl``, ``ste``, ``sr_ste``, ``topkast``, ``granet``,
    ``mest``, ``snfs`` or ``acdc``; see each for its options and their defaults.

    Parameters
    ----------
    method : str
        A registered method with a factory (not ``dense``, ``small_dense``, ``lottery``).
    model : nn.Module
        Any module with materialised parameters.
    optimizer : torch.optim.Optimizer
        Any torch optimiser over the model's parameters.
    **options
        The factory's keyword options, e.g. ``sparsity=0.9, t_end=5000`` for ``rigl`` or
        ``batch=(x, y)`` for ``snip``.

    Returns
    -------
    Sparsifier
        Call its ``step()`` after every ``optimizer.step()``.

    Raises
    ------
    ValueError
        One line starting ``sparsify('<method>'):`` for an unknown method (listing the
        valid ones), an option the method does not take (naming it and listing the method's
        options) or a bad value.
    """
    call = f"sparsify({method!r})"
    # a method whose factory an earlier one already has (lottery: static) differs only in
    # what the run gives it (masks and weights of its sources): not attachable on its own
    first: dict[Factory, str] = {}
    for n, spec in METHODS.items():
        if spec.factory is not None:
            first.setdefault(spec.factory, n)
    attachable = list(first.values())
    if method not in attachable:
        raise ArgumentError(call, f"method: unknown {method!r}; valid: {', '.join(attachable)}")
    valid = options_of(method)
    bad = [k for k in options if k not in valid]
    if bad:
        hint = ""
        if "batch" in valid and {"x", "y"} & set(bad):
            hint = "; pass the batch as batch=(x, y)"
        raise ArgumentError(
            call, f"method {method!r} takes no option {bad[0]!r}{hint}; valid: {', '.join(valid)}"
        )
    with named_call(call):
        return METHODS[method].factory(model, optimizer, **options)


register("dense", None)
register("static", static, StaticOptions)
register("small_dense", None, narrows_model=True)
register("oneshot", oneshot, OneShotOptions)
register("gradual", gradual, GradualOptions)
register("lottery", static, LotteryOptions)
register("set", set_training, DynamicOptions)
register("rigl", rigl, RigLOptions)
register("rigl_inverted", rigl_inverted, RigLOptions)
register("snip", snip, PruneAtInitOptions)
register("grasp", grasp, PruneAtInitOptions)
register("synflow", synflow, SynFlowOptions)
register("srigl", srigl, SRigLOptions, pattern="fan_in")
register("granet", granet, GraNetOptions)
register("acdc", acdc, ACDCOptions)
register("ste", ste, STEOptions)
register("sr_ste", sr_ste, SRSTEOptions)
register("topkast", topkast, TopKASTOptions)

from sparseflow.methods.api import mest, snfs  # noqa: E402
from sparseflow.methods.mest import MestOptions  # noqa: E402
from sparseflow.methods.snfs import SnfsOptions  # noqa: E402

register("mest", mest, MestOptions)
register("snfs", snfs, SnfsOptions)
