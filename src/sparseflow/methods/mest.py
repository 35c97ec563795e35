"""MEST: Memory-Economic Sparse Training (Yuan et al. 2021), the elastic-mutation variant.

Yuan et al., "MEST: Accurate and Fast Memory-Economic Sparse Training Framework on the Edge",
NeurIPS 2021 (arXiv:2110.14032; code: github.com/boone891214/MEST). Dynamic sparse training
like SET, with two changes (docs/science.md):

- the drop score of an active weight is its magnitude plus its gradient,
  ``s = |w_t| + lambda |dL/dw|`` (the gradient of the training batch of the update step, taken
  before the optimiser step: the paper's dL(W_{t-1})/dW_{t-1}; only the active weights'
  gradients enter the score, read through the dense-gradient capture of the update steps);
- the growth is uniformly random among the inactive positions (the paper's "mutation", no
  dense gradient), and the mutation ratio decays and then stops ("elastic mutation"): by
  default ``alpha = 0.2`` until 3/4 of the mutation window, ``alpha / 2`` after it, and no
  update after ``t_end`` (the authors' CIFAR scripts: 20% of the active weights, 10% from
  epoch 90, none from epoch 120 of 160; ``t_end`` = 75% of training).

The soft-memory-bound variant (MEST+EM&S: grow first, train, prune back) is not implemented.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparseflow.methods.base import check_choice, check_int
from sparseflow.methods.calls import fill_doc, named_errors
from sparseflow.methods.dynamic import DROP_SCHEDULES, SET
from sparseflow.methods.options import BuildContext, DynamicOptions
from sparseflow.sparsity import (
    MaskSet,
    Pattern,
    step_at,
)
from sparseflow.typed import field

MEST_SCHEDULES = ("step", *DROP_SCHEDULES)
DECAY_AT = 0.75  # the step schedule halves alpha at 3/4 of [0, t_end] (epoch 90 of 120)
LAMBDA = 0.5

MEST_OPTIONS_DOC = """\
model : nn.Module
    Any module with materialised parameters.
optimizer : torch.optim.Optimizer
    Any torch optimiser over the model's parameters.
t_end : int, optional
    The optimiser step of the last mask update (an int >= 1): mutation stops after it.
total_steps : int, optional
    The number of optimiser steps of training: with ``t_end=None``,
    ``t_end = max(1, round(0.75 * total_steps))`` (the authors' stop at epoch 120 of 160).
update_every : int, default 100
    Steps between mask updates (the authors: every 5 epochs).
drop_fraction : float, default 0.2
    The mutation ratio alpha, in [0, 1]: ``floor(alpha_t * n_active)`` active weights per
    layer are dropped and as many grown at an update.
drop_schedule : {"step", "cosine", "constant", "lr"}, default "step"
    alpha_t: ``step`` is alpha before ``decay_at`` and alpha / 2 from it on (the authors'
    20% -> 10%); ``cosine``, ``constant``, ``lr`` as in :class:`~sparseflow.methods.SET`.
decay_at : int, optional
    The step from which the ``step`` schedule halves alpha (an int >= 1; default
    ``max(1, round(0.75 * t_end))``).
lam : float, default 0.5
    lambda >= 0 of the drop score ``|w| + lambda |dL/dw|``; 0 drops by magnitude alone (and
    then needs no gradient).
exclude_dropped : bool, default False
    Do not regrow the weights dropped at the same update.
"""


@fill_doc(mest=MEST_OPTIONS_DOC)
class MEST(SET):
    """MEST+EM (Yuan et al. 2021): drop the smallest ``|w| + lambda |dL/dw|``, grow at random,
    with a decaying mutation ratio that stops at ``t_end``.

    Every ``update_every`` steps up to and including ``t_end``, each layer drops the
    ``k = floor(alpha_t * n_active)`` active weights of smallest score

    .. math:: s_i = |w_i| + \\lambda \\, |\\partial L / \\partial w_i|,

    where w are the weights after the optimiser step of the update step t and the gradient is
    that of step t's training batch (taken before the step, at W_{t-1}: the paper's
    ``|w_tau| + |lambda dL(W_{tau-1}, D)/dW_{tau-1}|``), and grows k positions chosen
    uniformly at random among those inactive after the drop (just-dropped ones included unless
    ``exclude_dropped``). Grown weights start at exactly zero with their optimiser state reset.
    The ``step`` schedule (default) is the elastic mutation of the authors' code:
    ``alpha_t = alpha`` for ``t < decay_at``, ``alpha / 2`` for ``decay_at <= t <= t_end``,
    no update after ``t_end``.

    Only the active weights' gradients enter the score; they come through the dense-gradient
    capture of the update step (``needs_dense_grads`` and ``dense_grads()``, as RigL's), so
    ``execution="sparse"`` works too. Under a structured ``pattern`` the update is
    ``sparsity.drop_and_grow`` with drop score s (atom sums) and random grow scores: every
    N:M group / fan-in row regrows what it lost, so the pattern holds.

    Parameters
    ----------
    %(mest)s
    %(target)s
    %(common)s

    Notes
    -----
    Differences from the paper: updates every ``update_every`` optimiser steps instead of
    every 5 epochs (and none at step 0), the layers' counts follow ``distribution`` (the
    authors' scripts use one sparsity for every layer), and lambda's default 0.5 is the
    ``--sp-lmd`` default of later copies of the authors' ``prune_utils`` (the MEST
    repository's own copy defaults to 0, i.e. magnitude only). MEST+EM&S (the soft memory
    bound) is not implemented.
    """

    name = "mest"

    @named_errors
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        t_end: int | None = None,
        total_steps: int | None = None,
        update_every: int = 100,
        drop_fraction: float = 0.2,
        drop_schedule: str = "step",
        decay_at: int | None = None,
        lam: float = LAMBDA,
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
        check_choice("drop_schedule", drop_schedule, MEST_SCHEDULES)
        decay_at = (None if decay_at is None
                    else check_int("decay_at", decay_at, meaning="an optimiser step"))
        if (isinstance(lam, bool) or not isinstance(lam, int | float)
                or not math.isfinite(lam) or lam < 0):
            raise ValueError(f"lam: expected a finite number >= 0, got {lam!r}")
        super().__init__(
            model, optimizer, t_end=t_end, total_steps=total_steps, update_every=update_every,
            drop_fraction=drop_fraction,
            drop_schedule="constant" if drop_schedule == "step" else drop_schedule,
            exclude_dropped=exclude_dropped, sparsity=sparsity, distribution=distribution,
            masks=masks, include=include, exclude=exclude, dense_first=dense_first,
            dense_last=dense_last, init=init, init_opts=init_opts, masking=masking,
            execution=execution, pattern=pattern, seed=seed,
        )
        self.drop_schedule = drop_schedule
        self.decay_at = decay_at if decay_at is not None else step_at(DECAY_AT, self.t_end)
        self.lam = float(lam)
        self._grads: dict[str, torch.Tensor] | None = None
        self._sync_grad_masking()

    # -- schedule ---------------------------------------------------------------------------
    def drop_fraction_at(self, step: int) -> float:
        """alpha_t: ``step``: alpha before ``decay_at``, alpha / 2 from it on; else SET's."""
        if self.drop_schedule == "step":
            return self.drop_fraction if step < self.decay_at else 0.5 * self.drop_fraction
        return super().drop_fraction_at(step)

    # -- the gradient of the update step ----------------------------------------------------
    def needs_dense_grads(self, step: int) -> bool:
        """The training batch's gradient enters the drop score at an update step (none is
        needed with ``lam=0``)."""
        return self.lam != 0.0 and self.due(step)

    def _pre_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not self.needs_dense_grads(self.step_count + 1):
            return
        grads = self.dense_grads()
        missing = [n for n, g in grads.items() if g is None]
        if missing:
            raise ValueError(
                f"mest: no gradient for {missing[0]!r} at an update step; call "
                "loss.backward() before optimizer.step()"
            )
        self._grads = {n: g.detach().clone() for n, g in grads.items() if g is not None}

    def drop_scores(self, name: str, weight: torch.Tensor,
                    index: torch.Tensor | None = None) -> torch.Tensor:
        """``|w| + lambda |dL/dw|`` in float32, of the flat positions ``index`` (1-d) or of the
        whole layer (weight-shaped)."""
        w = weight.detach()
        g = self._grads[name] if self.lam != 0.0 and self._grads is not None else None
        if index is not None:
            w = w.reshape(-1)[index]
            g = None if g is None else g.reshape(-1)[index.to(g.device)]
        score = w.abs().to(torch.float32)
        if g is not None:
            score = score + self.lam * g.abs().to(device=score.device, dtype=torch.float32)
        return score

    # -- the update -------------------------------------------------------------------------
    def update(self, step: int) -> dict[str, float]:
        """SET's update (:meth:`SET.update`, under a pattern ``drop_and_grow``) with
        :meth:`drop_scores` ``|w| + lambda |g|`` and uniform random growth."""
        if self.lam != 0.0 and self._grads is None:
            raise ValueError(
                "mest: no gradient of the update step; call sparsifier.step() right after "
                "optimizer.step() (and loss.backward() before it)"
            )
        try:
            return super().update(step)
        finally:
            self._grads = None


@dataclass
class MestOptions(DynamicOptions):
    """MEST: the drop score's lambda and the elastic mutation ratio (with ``update_every``,
    ``update_end`` and ``exclude_dropped`` of SET/RigL)."""

    mest_lambda: float = field(
        LAMBDA, low=0.0, help="mest: lambda of the drop score |w| + lambda |dL/dw| (0: by "
        "magnitude alone)."
    )
    mest_mutation: float = field(
        0.2, low=0.0, high=1.0, help="mest: initial mutation ratio, the fraction of each "
        "layer's active weights dropped and regrown at random at an update (the authors' 0.2; "
        "MEST's own key, as sparse.drop_fraction's default 0.3 is RigL's)."
    )
    mest_schedule: str = field(
        "step", choices=MEST_SCHEDULES, help="mest: mutation-ratio schedule; step halves it "
        "at sparse.mest_decay_at (the authors' 20% -> 10%), the others as "
        "sparse.drop_schedule."
    )
    mest_decay_at: float = field(
        DECAY_AT, low=0.0, high=1.0, low_open=True, help="mest: with mest_schedule=step, the "
        "mutation ratio halves from this fraction of the mutation window [0, t_end] on "
        "(0.75: epoch 90 of the authors' 120)."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        t_end = step_at(opts.update_end, ctx.total_steps)
        return {"t_end": t_end, "update_every": opts.update_every,
                "drop_fraction": opts.mest_mutation, "drop_schedule": opts.mest_schedule,
                "decay_at": step_at(opts.mest_decay_at, t_end), "lam": opts.mest_lambda,
                "exclude_dropped": opts.exclude_dropped}
