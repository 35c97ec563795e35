"""Magnitude pruning during training: gradual (Zhu & Gupta 2018) and one-shot.

Gradual: at steps ``t_begin, t_begin + every, ..., t_end`` the target sparsity is
``s_t = s_f + (s_i - s_f) (1 - p)^3`` with ``p = clip((t - t_begin) / (t_end - t_begin), 0, 1)``;
each layer keeps its largest |w| among the weights still active (``scope="layer"``: per-layer
counts from the distribution, uniform by default as in the papers' TF-MOT runs) or one threshold
over all layers (``scope="global"``). Pruned weights never come back. One-shot pruning is the
same with ``t_begin = t_end``: train dense, prune once, fine-tune.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sparseflow.methods.base import Sparsifier, as_pattern, check_choice, keep_top
from sparseflow.methods.calls import fill_doc, named_errors
from sparseflow.sparsity import (
    DISTRIBUTIONS,
    MaskSet,
    Pattern,
    achievable_count,
    kept_count,
    layer_counts,
    pattern_topk,
    schedule_pattern,
    topk_mask,
)

SCOPES = ("layer", "global")


def zhu_gupta_sparsity(step: int, s_init: float, s_final: float, t_begin: int, t_end: int
                       ) -> float:
    """s_t = s_f + (s_i - s_f) (1 - p)^3, p = clip((t - t_begin) / (t_end - t_begin), 0, 1)."""
    if t_end <= t_begin:
        p = 1.0 if step >= t_end else 0.0
    else:
        p = min(1.0, max(0.0, (step - t_begin) / (t_end - t_begin)))
    return s_final + (s_init - s_final) * (1.0 - p) ** 3


def magnitude_masks(
    params: Mapping[str, torch.Tensor],
    sparsity: float,
    *,
    scope: str = "layer",
    distribution: str = "uniform",
    within: Mapping[str, torch.Tensor] | None = None,
    pattern: Pattern | None = None,
) -> dict[str, torch.Tensor]:
    """Masks keeping the largest |w|: per layer (counts of ``distribution``) or globally.

    Per layer, each count is rounded on its own (``layer_counts(..., exact_total=False)``), so
    a schedule of rising sparsity never asks a layer for more weights than it still has; the
    total is within one weight per layer of ``(1 - sparsity) * total``.

    ``within`` restricts the choice to currently active positions (pruning never regrows).
    Ties go to the lower index (layer order, then flat index, for the global scope).

    Under a structured ``pattern`` (layer scope only) each layer keeps the largest |w| the
    pattern allows (``sparsity.pattern_topk``, count rounded by ``achievable_count``); N:M
    steps through n_t:M (``sparsity.schedule_pattern``), dense until n_t < M.
    """
    check_choice("scope", scope, SCOPES)
    if pattern is not None and pattern.structured:
        if scope != "layer":
            raise ValueError(f"scope: pattern {pattern} needs the layer scope, got {scope!r}")
        return _pattern_magnitude_masks(params, sparsity, distribution, within, pattern)
    eligible = {n: (within[n] if within is not None else torch.ones_like(p, dtype=torch.bool))
                for n, p in params.items()}
    if scope == "layer":
        # each layer rounded on its own: counts never rise as the sparsity rises
        counts = layer_counts({n: tuple(p.shape) for n, p in params.items()}, sparsity,
                              distribution, exact_total=False)
        return {n: keep_top(p.detach().abs(), eligible[n], min(counts[n], int(eligible[n].sum())))
                for n, p in params.items()}
    total = sum(p.numel() for p in params.values())
    k = min(kept_count(1.0 - sparsity, total), sum(int(e.sum()) for e in eligible.values()))
    flat = torch.cat([torch.where(eligible[n], p.detach().abs().float().reshape_as(p),
                                  torch.tensor(float("-inf"), device=p.device)).reshape(-1)
                      for n, p in params.items()])
    keep = topk_mask(flat, k)
    out, i = {}, 0
    for n, p in params.items():
        out[n] = keep[i : i + p.numel()].view(p.shape)
        i += p.numel()
    return out


def _pattern_magnitude_masks(params: Mapping[str, torch.Tensor], sparsity: float,
                             distribution: str, within: Mapping[str, torch.Tensor] | None,
                             pattern: Pattern) -> dict[str, torch.Tensor]:
    """``magnitude_masks`` under a structured pattern (see there)."""
    counts = layer_counts({n: tuple(p.shape) for n, p in params.items()}, sparsity,
                          distribution, exact_total=False)
    out = {}
    for n, p in params.items():
        scores = p.detach().abs().to(torch.float64)
        if within is not None:
            scores = scores.masked_fill(~within[n], float("-inf"))
        step_pattern = schedule_pattern(pattern, counts[n] / p.numel())
        if step_pattern is None:  # N:M still at M:M
            out[n] = (torch.ones_like(p, dtype=torch.bool) if within is None
                      else within[n].clone())
            continue
        k = achievable_count(p.shape, counts[n], step_pattern)
        out[n] = pattern_topk(scores, k, step_pattern)
    return out


@fill_doc
class GradualPruning(Sparsifier):
    """Gradual magnitude pruning (Zhu & Gupta 2018) from ``initial_sparsity`` to ``sparsity``.

    Trains from the dense init; at steps ``t_begin, t_begin + every, ...`` and at ``t_end``
    the masks keep the largest |w| among the active weights at the cubic schedule's sparsity.

    Parameters
    ----------
    model : nn.Module
        Any module with materialised parameters.
    optimizer : torch.optim.Optimizer
        Any torch optimiser over the model's parameters.
    sparsity : float
        The final sparsity s_f, in [0, 1).
    t_begin : int
        The optimiser step of the first pruning update (>= 0; 0 prunes before step 1).
    t_end : int
        The optimiser step of the last pruning update (>= t_begin).
    every : int, default 100
        Steps between pruning updates.
    initial_sparsity : float, default 0.0
        s_i, the sparsity before t_begin, in [0, sparsity].
    scope : {"layer", "global"}, default "layer"
        Per-layer counts of ``distribution``, or one magnitude threshold over all layers.
    distribution : {"uniform", "er", "erk"}, default "uniform"
        How each pruning target is split over the layers (``scope="layer"``).
    %(common)s
    """

    name = "gradual"

    @named_errors
    def __init__(
        self,
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
        execution: str = "masked",
        pattern: str | Pattern = "unstructured",
        seed: int = 0,
    ) -> None:
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity: {sparsity!r} is out of range [0, 1)")
        check_choice("scope", scope, SCOPES)
        check_choice("distribution", distribution, DISTRIBUTIONS)
        if as_pattern(pattern).structured and scope != "layer":
            raise ValueError(f"scope: pattern {pattern} needs scope='layer' (one magnitude "
                             f"threshold over all layers cannot keep it), got {scope!r}")
        if every < 1:
            raise ValueError(f"every: expected >= 1, got {every}")
        if t_end < t_begin or t_begin < 0:
            raise ValueError(f"pruning steps: expected 0 <= t_begin <= t_end, got "
                             f"{t_begin}, {t_end}")
        if not 0.0 <= initial_sparsity <= sparsity:
            raise ValueError(f"initial_sparsity: {initial_sparsity!r} must be in [0, sparsity]")
        self.final_sparsity = sparsity
        self.initial_sparsity = initial_sparsity
        self.t_begin, self.t_end, self.every = int(t_begin), int(t_end), int(every)
        self.scope = scope
        super().__init__(
            model, optimizer, sparsity=sparsity, distribution=distribution, masks=masks,
            include=include, exclude=exclude, dense_first=dense_first, dense_last=dense_last,
            init=init, init_opts=init_opts, masking=masking, execution=execution,
            pattern=pattern, seed=seed,
        )

    def initial_masks(self) -> MaskSet:
        """Magnitude masks at the schedule's sparsity before step 1 (dense when that is 0).

        ``due`` is asked from step 1 on, so a schedule that starts at step 0 is applied here.
        """
        s0 = self.target(0) if self.t_begin == 0 else self.initial_sparsity
        if s0 == 0.0:
            return MaskSet.dense(self.params)
        return MaskSet(self.params, magnitude_masks(
            self.params, s0, scope=self.scope, distribution=self.distribution,
            pattern=self.pattern))

    def due(self, step: int) -> bool:
        """At t_begin, t_begin + every, ... and at t_end."""
        if step < self.t_begin or step > self.t_end:
            return False
        return (step - self.t_begin) % self.every == 0 or step == self.t_end

    def target(self, step: int) -> float:
        """Sparsity of the cubic schedule at ``step``."""
        return zhu_gupta_sparsity(step, self.initial_sparsity, self.final_sparsity,
                                  self.t_begin, self.t_end)

    def update(self, step: int) -> dict[str, float]:
        """Prune to the schedule's sparsity by magnitude among the active weights."""
        s_t = self.target(step)
        new = magnitude_masks(self.params, s_t, scope=self.scope,
                              distribution=self.distribution, within=self.masks.masks,
                              pattern=self.pattern)
        for name, m in new.items():
            self.replace_mask(name, m)
        return {"target_sparsity": s_t}


@fill_doc
class OneShotPruning(GradualPruning):
    """Train dense, prune once by magnitude at step ``t_prune``, fine-tune the rest.

    Gradual pruning with ``t_begin = t_end = t_prune`` and ``initial_sparsity = 0``.

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
    """

    name = "oneshot"

    @named_errors
    def __init__(
        self,
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
        execution: str = "masked",
        pattern: str | Pattern = "unstructured",
        seed: int = 0,
    ) -> None:
        super().__init__(
            model, optimizer, sparsity=sparsity, t_begin=t_prune, t_end=t_prune, every=1,
            scope=scope, distribution=distribution, masks=masks, include=include,
            exclude=exclude, dense_first=dense_first, dense_last=dense_last, init=init,
            init_opts=init_opts, masking=masking, execution=execution, pattern=pattern, seed=seed,
        )
