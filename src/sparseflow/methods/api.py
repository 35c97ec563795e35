"""The public factories of the training-loop methods: one call attaches a method to a model
and its optimiser, with every option in the signature.

``static``, ``set_training``, ``rigl``, ``rigl_inverted``, ``gradual`` and ``oneshot`` here;
``snip``, ``grasp`` and ``synflow`` in :mod:`sparseflow.methods.at_init`;
:func:`sparseflow.methods.registry.sparsify` picks one by name. A bad argument raises a one-line
``ValueError`` that starts with the call the user made, e.g.
``rigl(): drop_fraction: 1.5 is out of range [0, 1]``
(:class:`~sparseflow.methods.base.ArgumentError`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sparseflow.methods.base import (
    GradFn,
    Sparsifier,
    fill_doc,
    named_call,
)
from sparseflow.methods.dynamic import (
    DYNAMIC_OPTIONS_DOC,
    GRAD_FN_DOC,
    SET,
    RigL,
    RigLInverted,
)
from sparseflow.methods.pruning import (
    GradualPruning,
    OneShotPruning,
)
from sparseflow.sparsity import MaskSet


@fill_doc
def static(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    sparsity: float = 0.9,
    distribution: str = "erk",
    masks: MaskSet | Mapping[str, torch.Tensor] | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    dense_first: bool = False,
    dense_last: bool = False,
    init: str = "dense",
    init_opts: Mapping[str, Any] | None = None,
    masking: str = "auto",
    seed: int = 0,
) -> Sparsifier:
    """Static sparse training: a mask fixed before training (:class:`Sparsifier`).

    Parameters
    ----------
    model : nn.Module
        Any module with materialised parameters.
    optimizer : torch.optim.Optimizer
        Any torch optimiser over the model's parameters.
    %(target)s
    %(common)s

    Returns
    -------
    Sparsifier
        Call its ``step()`` after every ``optimizer.step()``.
    """
    with named_call("static()"):
        return Sparsifier(
            model, optimizer, sparsity=sparsity, distribution=distribution, masks=masks,
            include=include, exclude=exclude, dense_first=dense_first, dense_last=dense_last,
            init=init, init_opts=init_opts, masking=masking, seed=seed,
        )


@fill_doc(dynamic=DYNAMIC_OPTIONS_DOC, grad_fn=GRAD_FN_DOC)
def set_training(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    t_end: int | None = None,
    total_steps: int | None = None,
    update_every: int = 100,
    drop_fraction: float = 0.3,
    drop_schedule: str = "cosine",
    exclude_dropped: bool = False,
    sparsity: float = 0.9,
    distribution: str = "erk",
    masks: MaskSet | Mapping[str, torch.Tensor] | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    dense_first: bool = False,
    dense_last: bool = False,
    init: str = "dense",
    init_opts: Mapping[str, Any] | None = None,
    masking: str = "auto",
    seed: int = 0,
) -> SET:
    """SET (Mocanu et al. 2018): drop the smallest |w|, grow at random (:class:`SET`).

    Parameters
    ----------
    %(dynamic)s
    %(target)s
    %(common)s

    Returns
    -------
    SET
        Call its ``step()`` after every ``optimizer.step()``.
    """
    with named_call("set_training()"):
        return SET(
            model, optimizer, t_end=t_end, total_steps=total_steps, update_every=update_every,
            drop_fraction=drop_fraction, drop_schedule=drop_schedule,
            exclude_dropped=exclude_dropped, sparsity=sparsity, distribution=distribution,
            masks=masks, include=include, exclude=exclude, dense_first=dense_first,
            dense_last=dense_last, init=init, init_opts=init_opts, masking=masking, seed=seed,
        )


@fill_doc(dynamic=DYNAMIC_OPTIONS_DOC, grad_fn=GRAD_FN_DOC)
def rigl(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    t_end: int | None = None,
    total_steps: int | None = None,
    update_every: int = 100,
    drop_fraction: float = 0.3,
    drop_schedule: str = "cosine",
    exclude_dropped: bool = False,
    grad_fn: GradFn | None = None,
    sparsity: float = 0.9,
    distribution: str = "erk",
    masks: MaskSet | Mapping[str, torch.Tensor] | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    dense_first: bool = False,
    dense_last: bool = False,
    init: str = "dense",
    init_opts: Mapping[str, Any] | None = None,
    masking: str = "auto",
    seed: int = 0,
) -> RigL:
    """RigL (Evci et al. 2020): drop the smallest |w|, grow the largest |dL/dW| (:class:`RigL`).

    Parameters
    ----------
    %(dynamic)s
    %(grad_fn)s
    %(target)s
    %(common)s

    Returns
    -------
    RigL
        Call its ``step()`` after every ``optimizer.step()``.
    """
    with named_call("rigl()"):
        return RigL(
            model, optimizer, t_end=t_end, total_steps=total_steps, update_every=update_every,
            drop_fraction=drop_fraction, drop_schedule=drop_schedule,
            exclude_dropped=exclude_dropped, grad_fn=grad_fn, sparsity=sparsity,
            distribution=distribution, masks=masks, include=include, exclude=exclude,
            dense_first=dense_first, dense_last=dense_last, init=init, init_opts=init_opts,
            masking=masking, seed=seed,
        )


@fill_doc(dynamic=DYNAMIC_OPTIONS_DOC, grad_fn=GRAD_FN_DOC)
def rigl_inverted(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    t_end: int | None = None,
    total_steps: int | None = None,
    update_every: int = 100,
    drop_fraction: float = 0.3,
    drop_schedule: str = "cosine",
    exclude_dropped: bool = False,
    grad_fn: GradFn | None = None,
    sparsity: float = 0.9,
    distribution: str = "erk",
    masks: MaskSet | Mapping[str, torch.Tensor] | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    dense_first: bool = False,
    dense_last: bool = False,
    init: str = "dense",
    init_opts: Mapping[str, Any] | None = None,
    masking: str = "auto",
    seed: int = 0,
) -> RigLInverted:
    """RigL inverted, the control of Evci et al. 2022: grow the *smallest* |dL/dW|.

    Parameters
    ----------
    %(dynamic)s
    %(grad_fn)s
    %(target)s
    %(common)s

    Returns
    -------
    RigLInverted
        Call its ``step()`` after every ``optimizer.step()``.
    """
    with named_call("rigl_inverted()"):
        return RigLInverted(
            model, optimizer, t_end=t_end, total_steps=total_steps, update_every=update_every,
            drop_fraction=drop_fraction, drop_schedule=drop_schedule,
            exclude_dropped=exclude_dropped, grad_fn=grad_fn, sparsity=sparsity,
            distribution=distribution, masks=masks, include=include, exclude=exclude,
            dense_first=dense_first, dense_last=dense_last, init=init, init_opts=init_opts,
            masking=masking, seed=seed,
        )


@fill_doc
def gradual(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    sparsity: float,
    t_begin: int,
    t_end: int,
    every: int = 100,
    initial_sparsity: float = 0.0,
    scope: str = "layer",
    distribution: str = "uniform",
    masks: MaskSet | Mapping[str, torch.Tensor] | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    dense_first: bool = False,
    dense_last: bool = False,
    init: str = "dense",
    init_opts: Mapping[str, Any] | None = None,
    masking: str = "auto",
    seed: int = 0,
) -> GradualPruning:
    """Gradual magnitude pruning (Zhu & Gupta 2018; :class:`GradualPruning`).

    s_t = s_f + (s_i - s_f) (1 - p)^3, p = clip((t - t_begin) / (t_end - t_begin), 0, 1),
    applied at steps t_begin, t_begin + every, ... and t_end by keeping the largest |w|.

    Parameters
    ----------
    model : nn.Module
        Any module with materialised parameters.
    optimizer : torch.optim.Optimizer
        Any torch optimiser over the model's parameters.
    sparsity : float
        The final sparsity s_f, in [0, 1).
    t_begin : int
        The optimiser step of the first pruning update (>= 0).
    t_end : int
        The optimiser step of the last pruning update (>= t_begin).
    every : int, default 100
        Steps between pruning updates.
    initial_sparsity : float, default 0.0
        s_i, in [0, sparsity].
    scope : {"layer", "global"}, default "layer"
        Per-layer counts of ``distribution``, or one magnitude threshold over all layers.
    distribution : {"uniform", "er", "erk"}, default "uniform"
        How each pruning target is split over the layers (``scope="layer"``).
    %(common)s

    Returns
    -------
    GradualPruning
        Call its ``step()`` after every ``optimizer.step()``.
    """
    with named_call("gradual()"):
        return GradualPruning(
            model, optimizer, sparsity=sparsity, t_begin=t_begin, t_end=t_end, every=every,
            initial_sparsity=initial_sparsity, scope=scope, distribution=distribution,
            masks=masks, include=include, exclude=exclude, dense_first=dense_first,
            dense_last=dense_last, init=init, init_opts=init_opts, masking=masking, seed=seed,
        )


@fill_doc
def oneshot(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    sparsity: float,
    t_prune: int,
    scope: str = "layer",
    distribution: str = "uniform",
    masks: MaskSet | Mapping[str, torch.Tensor] | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    dense_first: bool = False,
    dense_last: bool = False,
    init: str = "dense",
    init_opts: Mapping[str, Any] | None = None,
    masking: str = "auto",
    seed: int = 0,
) -> OneShotPruning:
    """One-shot magnitude pruning: train dense, prune once at ``t_prune``, fine-tune.

    Parameters
    ----------
    model : nn.Module
        Any module with materialised parameters.
    optimizer : torch.optim.Optimizer
        Any torch optimiser over the model's parameters.
    sparsity : float
        The sparsity after pruning, in [0, 1).
    t_prune : int
        The optimiser step after which the weights are pruned (>= 0).
    scope : {"layer", "global"}, default "layer"
        Per-layer counts of ``distribution``, or one magnitude threshold over all layers.
    distribution : {"uniform", "er", "erk"}, default "uniform"
        How the sparsity is split over the layers (``scope="layer"``).
    %(common)s

    Returns
    -------
    OneShotPruning
        Call its ``step()`` after every ``optimizer.step()``.
    """
    with named_call("oneshot()"):
        return OneShotPruning(
            model, optimizer, sparsity=sparsity, t_prune=t_prune, scope=scope,
            distribution=distribution, masks=masks, include=include, exclude=exclude,
            dense_first=dense_first, dense_last=dense_last, init=init, init_opts=init_opts,
            masking=masking, seed=seed,
        )


