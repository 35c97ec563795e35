"""Sparse-training methods: each says when the topology changes and which scores drop and grow.

Training-loop methods are :class:`Sparsifier` subclasses (one call of ``step()`` per optimiser
step); ``dense``, ``small_dense`` and ``lottery`` are set up by the experiment layer from other
runs (see ``sparseflow.training.sparsifier``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sparseflow.methods.base import Sparsifier, keep_top, make_grad_fn
from sparseflow.methods.dynamic import SET, RigL, RigLInverted
from sparseflow.methods.pruning import (
    GradualPruning,
    OneShotPruning,
    magnitude_masks,
    zhu_gupta_sparsity,
)

Static = Sparsifier
PAI_METHODS = ("snip", "grasp", "synflow")
METHODS: tuple[str, ...] = (
    "dense", "static", "small_dense", "oneshot", "gradual", "lottery", "set", "rigl",
    "rigl_inverted", *PAI_METHODS,
)
SPARSIFIERS: dict[str, type[Sparsifier]] = {
    "static": Sparsifier, "set": SET, "rigl": RigL, "rigl_inverted": RigLInverted,
    "gradual": GradualPruning, "oneshot": OneShotPruning,
}


def method_names() -> list[str]:
    """Names accepted by the ``method`` config field."""
    return list(METHODS)


def sparsify(method: str, model: nn.Module, optimizer: torch.optim.Optimizer,
             **kwargs: Any) -> Sparsifier:
    """Attach the sparse-training ``method`` to ``model`` and ``optimizer``.

    ``snip``/``grasp``/``synflow`` choose the mask at initialisation (pass ``batch=(x, y)`` for
    snip/grasp, ``input_shape=`` for synflow, optionally ``scope="layer"|"global"``) and then
    train it statically. Every other keyword goes to the method's class.
    """
    if method in PAI_METHODS:
        return pruned_at_init(method, model, optimizer, **kwargs)
    if method not in SPARSIFIERS:
        raise ValueError(f"method: unknown sparsifier {method!r}; valid: "
                         f"{', '.join([*SPARSIFIERS, *PAI_METHODS])}")
    return SPARSIFIERS[method](model, optimizer, **kwargs)


def pruned_at_init(method: str, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                   sparsity: float = 0.9, distribution: str = "erk", scope: str = "global",
                   batch: tuple[torch.Tensor, torch.Tensor] | None = None,
                   input_shape: tuple[int, ...] | None = None, iterations: int = 100,
                   **kwargs: Any) -> Sparsifier:
    """Static training on the mask chosen at init by SNIP, GraSP or SynFlow.

    ``scope="global"`` keeps the ``(1 - sparsity)`` fraction of highest scores over all layers
    (as the papers do); ``scope="layer"`` keeps the distribution's count per layer.
    """
    from sparseflow.methods.pai import prune_at_init
    from sparseflow.sparsity import layer_counts, select_weights

    sel = {k: kwargs[k] for k in ("include", "exclude", "dense_first", "dense_last")
           if k in kwargs}
    params = select_weights(model, **sel)
    if scope == "layer":
        counts: dict[str, int] | int = layer_counts(
            {n: tuple(p.shape) for n, p in params.items()}, sparsity, distribution)
    else:
        counts = math.floor((1.0 - sparsity) * sum(p.numel() for p in params.values()) + 0.5)
    x, y = batch if batch is not None else (None, None)
    masks = prune_at_init(method, model, params, counts, x=x, y=y, input_shape=input_shape,
                          scope=scope, iterations=iterations)
    s = Sparsifier(model, optimizer, sparsity=sparsity, distribution=distribution,
                   masks=masks, **kwargs)
    s.name = method
    return s


def static(model: nn.Module, optimizer: torch.optim.Optimizer, **kwargs: Any) -> Sparsifier:
    """Static sparse training (see :class:`Sparsifier` for the options)."""
    return Sparsifier(model, optimizer, **kwargs)


def set_training(model: nn.Module, optimizer: torch.optim.Optimizer, **kwargs: Any) -> SET:
    """SET (see :class:`SET`); ``t_end`` is required."""
    return SET(model, optimizer, **kwargs)


def rigl(model: nn.Module, optimizer: torch.optim.Optimizer, **kwargs: Any) -> RigL:
    """RigL (see :class:`RigL`); ``t_end`` is required."""
    return RigL(model, optimizer, **kwargs)


def gradual(model: nn.Module, optimizer: torch.optim.Optimizer, **kwargs: Any
            ) -> GradualPruning:
    """Gradual magnitude pruning (see :class:`GradualPruning`)."""
    return GradualPruning(model, optimizer, **kwargs)


__all__ = [
    "METHODS", "SET", "GradualPruning", "OneShotPruning", "RigL", "RigLInverted", "Sparsifier",
    "Static", "gradual", "keep_top", "magnitude_masks", "make_grad_fn", "method_names",
    "pruned_at_init", "rigl", "set_training", "sparsify", "static", "zhu_gupta_sparsity",
]
