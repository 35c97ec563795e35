"""Dynamic sparse training: SET, RigL and the RigL-inverted control (docs/science.md section 3).

Every ``update_every`` steps up to the step ``t_end``, each layer drops the
``floor(alpha_t * n_active)`` active weights of smallest |w| (``sparsity.floor_count``: a
product within float noise of an integer counts as that integer, so 0.29 of 100 is 29) and
grows as many among the positions inactive after the drop
(just-dropped ones included, as in the RigL paper; ``exclude_dropped=True`` leaves them out).
The methods differ only in the grow score: uniform random (SET), |dL/dW| of the dense gradient
(RigL), -|dL/dW| (RigL inverted). Grown weights start at exactly zero with their optimiser state
reset. Drop fraction schedules: ``cosine`` alpha (1 + cos(pi t / t_end)) / 2, ``constant``
alpha, ``lr`` alpha * lr_t / lr_0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sparseflow.methods.base import GradFn, Sparsifier, check_choice, check_int
from sparseflow.methods.calls import fill_doc, named_errors
from sparseflow.sparsity import (
    MaskSet,
    Pattern,
    drop_and_grow,
    floor_count,
    step_at,
    topk_indices,
    topk_mask,
)
from sparseflow.sparsity.pattern_updates import atom_mask

DROP_SCHEDULES = ("cosine", "constant", "lr")
T_END_FRACTION = 0.75  # the RigL paper's T_end: 75% of training

DYNAMIC_OPTIONS_DOC = """\
model : nn.Module
    Any module with materialised parameters.
optimizer : torch.optim.Optimizer
    Any torch optimiser over the model's parameters.
t_end : int, optional
    The optimiser step of the last mask update (an int >= 1); no topology change after it,
    and the ``cosine`` schedule reaches 0 there.
total_steps : int, optional
    The number of optimiser steps of training: with ``t_end=None``,
    ``t_end = max(1, round(0.75 * total_steps))`` (the RigL paper's T_end; halves to even, as
    the run config rounds step fractions). Pass one of ``t_end`` and ``total_steps``;
    ``t_end`` wins when both are given.
update_every : int, default 100
    Steps between mask updates (dT).
drop_fraction : float, default 0.3
    alpha, in [0, 1]: ``floor(alpha_t * n_active)`` active weights per layer are dropped and
    as many grown at an update.
drop_schedule : {"cosine", "constant", "lr"}, default "cosine"
    alpha_t: ``alpha (1 + cos(pi t / t_end)) / 2``, ``alpha``, or ``alpha lr_t / lr_0``.
exclude_dropped : bool, default False
    Do not regrow the weights dropped at the same update.
"""

GRAD_FN_DOC = """\
grad_fn : callable, optional
    ``grad_fn() -> {name: dL/dW}``, the dense gradients that score growth (default: those of
    the training batch at the update step); see ``methods.make_grad_fn``.
"""


def resolve_t_end(t_end: int | None, total_steps: int | None) -> int:
    """The step of the last mask update: ``t_end``, else 75% of ``total_steps``.

    ``t_end`` wins when both are given; with only ``total_steps`` it is the RigL paper's
    default ``T_end = 0.75 T`` as a step, ``sparsity.step_at(0.75, total_steps)`` =
    ``max(1, round(0.75 * total_steps))`` (the rule of the run config's ``sparse.update_end``).
    Both must be ints >= 1; neither raises a one-line ValueError.
    """
    total = None
    if total_steps is not None:
        total = check_int("total_steps", total_steps, meaning="the number of optimiser steps")
    if t_end is not None:
        return check_int("t_end", t_end, meaning="the optimiser step of the last mask update")
    if total is None:
        raise ValueError(
            "pass t_end= (the step of the last mask update) or total_steps= "
            f"(t_end is then {T_END_FRACTION:.0%} of it)"
        )
    return step_at(T_END_FRACTION, total)


@fill_doc(dynamic=DYNAMIC_OPTIONS_DOC)
class SET(Sparsifier):
    """Sparse Evolutionary Training (Mocanu et al. 2018): drop by magnitude, grow at random.

    Every ``update_every`` steps up to and including ``t_end``, each layer drops the
    ``floor(alpha_t * n_active)`` active weights of smallest |w| and grows as many, chosen
    uniformly at random among the positions inactive after the drop.

    Parameters
    ----------
    %(dynamic)s
    %(target)s
    %(common)s
    """

    name = "set"

    @named_errors
    def __init__(
        self,
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
        execution: str = "masked",
        pattern: str | Pattern = "unstructured",
        seed: int = 0,
    ) -> None:
        t_end = resolve_t_end(t_end, total_steps)
        if update_every < 1:
            raise ValueError(f"update_every: expected >= 1, got {update_every}")
        if not 0.0 <= drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction: {drop_fraction!r} is out of range [0, 1]")
        check_choice("drop_schedule", drop_schedule, DROP_SCHEDULES)
        super().__init__(
            model, optimizer, sparsity=sparsity, distribution=distribution, masks=masks,
            include=include, exclude=exclude, dense_first=dense_first, dense_last=dense_last,
            init=init, init_opts=init_opts, masking=masking, execution=execution,
            pattern=pattern, seed=seed,
        )
        self.t_end = t_end
        self.update_every = int(update_every)
        self.drop_fraction = float(drop_fraction)
        self.drop_schedule = drop_schedule
        self.exclude_dropped = exclude_dropped
        self.lr0 = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]

    def due(self, step: int) -> bool:
        """Every ``update_every`` steps, up to and including ``t_end``."""
        return step % self.update_every == 0 and step <= self.t_end

    def drop_fraction_at(self, step: int) -> float:
        """alpha_t of the drop schedule."""
        a = self.drop_fraction
        if self.drop_schedule == "constant":
            return a
        if self.drop_schedule == "cosine":
            return a * 0.5 * (1.0 + math.cos(math.pi * min(step, self.t_end) / self.t_end))
        lr0 = self.lr0[0]
        return a * self.optimizer.param_groups[0]["lr"] / lr0 if lr0 > 0 else 0.0

    def grow_scores(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """Score of each position for growth (higher grows first). SET: uniform random."""
        return torch.rand(weight.shape, generator=self.generator).to(weight.device)

    def prepare_scores(self) -> None:
        """Hook run once per update before the layers are scored."""

    def drop_scores(self, name: str, weight: torch.Tensor,
                    index: torch.Tensor | None = None) -> torch.Tensor:
        """Score of each position for keeping (lower drops first): |w|, of the flat positions
        ``index`` (1-d) or of the whole layer (weight-shaped). MEST adds its gradient term."""
        w = weight.detach()
        return (w.reshape(-1)[index] if index is not None else w).abs()

    def update(self, step: int) -> dict[str, float]:
        """Drop the smallest-magnitude active weights, grow by :meth:`grow_scores`.

        Per layer, on indices: the active positions A (one ``nonzero``), the n_active - k
        largest :meth:`drop_scores` (|w|) over A kept (``topk_mask``: ties to the lower flat
        index), the rest
        dropped; grow scores with the blocked positions (kept ones, or every active one with
        ``exclude_dropped``) set to -inf, the k largest grown (``topk_indices``).
        """
        alpha = self.drop_fraction_at(step)
        self.prepare_scores()
        if self.pattern.structured:
            for name, p in self.params.items():
                self.update_under_pattern(name, p, alpha)
            return {"drop_fraction": alpha}
        for name, p in self.params.items():
            active = self.masks[name].reshape(-1).nonzero().squeeze(1)
            n_active = active.numel()
            k = floor_count(alpha, n_active)
            if self.exclude_dropped:  # fewer free positions than drops: grow what fits
                k = min(k, p.numel() - n_active)
            if k == 0:
                continue
            keep = topk_mask(self.drop_scores(name, p, active), n_active - k)
            blocked = active if self.exclude_dropped else active[keep]
            scores = self.grow_scores(name, p).detach().reshape(-1).float()
            scores = scores.index_fill(0, blocked.to(scores.device), float("-inf"))
            grow = topk_indices(scores, k).to(active.device)
            self.replace_positions(name, active[~keep], grow)
        return {"drop_fraction": alpha}


    def update_under_pattern(self, name: str, p: torch.Tensor, alpha: float,
                             targets: torch.Tensor | None = None) -> None:
        """The update of one layer under a structured pattern (``sparsity.drop_and_grow``):
        drop the ``floor(alpha * active atoms)`` atoms of smallest |w| (summed over a block or
        a unit) over the layer, then every N:M group or unit (fan_in) regrows as many as it
        lost -- or to ``targets`` -- by :meth:`grow_scores` (whole blocks/units: the layer
        regrows as many atoms)."""
        mask = self.masks[name]
        n_atoms = int(atom_mask(mask, self.pattern).sum())
        k = floor_count(alpha, n_atoms)
        if k == 0 and targets is None:
            return
        new = drop_and_grow(mask, self.drop_scores(name, p), self.grow_scores(name, p).detach(),
                            k, self.pattern, targets=targets,
                            exclude_dropped=self.exclude_dropped)
        self.replace_mask(name, new, zero=new & ~mask)


@fill_doc(dynamic=DYNAMIC_OPTIONS_DOC, grad_fn=GRAD_FN_DOC)
class RigL(SET):
    """Rigging the Lottery (Evci et al. 2020): grow where the dense gradient |dL/dW| is largest.

    The dense gradient comes from the training batch of the update step (captured before the
    optimiser masks it; ``grad_fn=None``) or from ``grad_fn()``, e.g. a fixed held-out batch
    (:func:`sparseflow.methods.base.make_grad_fn`), as in the Evci et al. 2022 code.

    Parameters
    ----------
    %(dynamic)s
    %(grad_fn)s
    %(target)s
    %(common)s
    """

    name = "rigl"

    @named_errors
    def __init__(
        self,
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
        execution: str = "masked",
        pattern: str | Pattern = "unstructured",
        seed: int = 0,
    ) -> None:
        super().__init__(
            model, optimizer, t_end=t_end, total_steps=total_steps, update_every=update_every,
            drop_fraction=drop_fraction, drop_schedule=drop_schedule,
            exclude_dropped=exclude_dropped, sparsity=sparsity, distribution=distribution,
            masks=masks, include=include, exclude=exclude, dense_first=dense_first,
            dense_last=dense_last, init=init, init_opts=init_opts, masking=masking,
            execution=execution, pattern=pattern, seed=seed,
        )
        self.grad_fn = grad_fn
        self._dense_grads: dict[str, torch.Tensor] | None = None
        self._sync_grad_masking()

    def needs_dense_grads(self, step: int) -> bool:
        """The training batch's dense gradient is the grow score at an update step."""
        return self.grad_fn is None and self.due(step)

    def _pre_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.needs_dense_grads(self.step_count + 1):
            grads = self.dense_grads()
            missing = [n for n, g in grads.items() if g is None]
            if missing:
                raise ValueError(
                    f"rigl: no gradient for {missing[0]!r} at an update step; call "
                    "loss.backward() before optimizer.step(), or pass grad_fn="
                )
            self._dense_grads = {n: g.detach().clone() for n, g in grads.items()
                                 if g is not None}

    def prepare_scores(self) -> None:
        if self.grad_fn is not None:
            self._dense_grads = dict(self.grad_fn())
        if self._dense_grads is None:
            raise ValueError(
                "rigl: no dense gradient available; call sparsifier.step() right after "
                "optimizer.step(), or pass grad_fn= to compute it on a held-out batch"
            )
        # gradients of the training batch are already averaged over ranks by
        # DistributedDataParallel; grad_fn from make_grad_fn averages its own.

    def grow_scores(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        assert self._dense_grads is not None
        return self._dense_grads[name].abs()

    def update(self, step: int) -> dict[str, float]:
        try:
            return super().update(step)
        finally:
            self._dense_grads = None


@fill_doc(dynamic=DYNAMIC_OPTIONS_DOC, grad_fn=GRAD_FN_DOC)
class RigLInverted(RigL):
    """Control of Evci et al. 2022: grow where |dL/dW| is *smallest* (grow score -|dL/dW|).

    Parameters
    ----------
    %(dynamic)s
    %(grad_fn)s
    %(target)s
    %(common)s
    """

    name = "rigl_inverted"

    def grow_scores(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return -super().grow_scores(name, weight)
