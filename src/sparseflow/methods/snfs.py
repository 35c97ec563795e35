"""Sparse momentum / SNFS (Dettmers & Zettlemoyer 2019): prune by magnitude, redistribute the
pruned count across layers by their mean momentum, regrow where the momentum is largest.

Dettmers & Zettlemoyer, "Sparse Networks from Scratch: Faster Training without Losing
Performance", arXiv:1907.04840 (2019); code: github.com/TimDettmers/sparse_learning
(``sparselearning/core.py``). The momentum is an exponentially smoothed *dense* gradient kept by
the sparsifier (float32, every position of every sparsified weight), so the method needs the
dense gradient at every step; the per-layer active counts move between layers while their total
stays the target (docs/science.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from sparseflow.methods.base import as_pattern
from sparseflow.methods.calls import fill_doc, named_errors
from sparseflow.methods.dynamic import SET
from sparseflow.methods.options import BuildContext, DynamicOptions
from sparseflow.sparsity import MaskSet, Pattern, floor_count, step_at, topk_indices, topk_mask
from sparseflow.typed import field

SNFS_OPTIONS_DOC = """\
model : nn.Module
    Any module with materialised parameters.
optimizer : torch.optim.Optimizer
    Any torch optimiser over the model's parameters.
t_end : int, optional
    The optimiser step of the last mask update (an int >= 1); the ``cosine`` prune rate
    reaches 0 there.
total_steps : int, optional
    The number of optimiser steps of training: with ``t_end=None``,
    ``t_end = max(1, round(0.75 * total_steps))`` (as SET/RigL; ``t_end=total_steps`` is the
    paper's decay over the whole of training).
update_every : int, default 100
    Steps between mask updates (the paper: the end of every epoch).
drop_fraction : float, default 0.5
    The prune rate p, in [0, 1]: ``floor(p_t * n_active)`` active weights per layer are
    pruned at an update (the paper's 0.5).
drop_schedule : {"cosine", "constant", "lr"}, default "cosine"
    p_t: ``p (1 + cos(pi t / t_end)) / 2`` (the paper's cosine decay), ``p``, or
    ``p lr_t / lr_0``.
momentum : float, default 0.9
    beta in [0, 1) of the momentum ``M_t = beta M_{t-1} + (1 - beta) dL/dW_t`` (the paper's
    0.9).
"""


def redistribute(total: int, shares: Sequence[float], caps: Sequence[int]) -> list[int]:
    """Integer counts ``g_l`` with ``sum g_l = total``, ``0 <= g_l <= caps[l]`` and g
    proportional to ``shares`` where no cap binds (SNFS's regrowth per layer).

    Water-filling, exact in rationals: ``x_l = min(caps[l], c * shares[l])`` with c such that
    ``sum x_l = total`` (found by capping the layers whose proportional part exceeds their cap
    and sharing the rest among the others, again and again); then ``g_l = floor(x_l)`` plus one
    for the ``total - sum floor(x_l)`` largest fractional parts (ties to the lower index).
    Shares that are not positive count as 0; when every layer with room has share 0 the rest
    goes in proportion to the room. ValueError when ``total`` exceeds ``sum(caps)``.
    """
    n = len(shares)
    if len(caps) != n:
        raise ValueError(f"caps: expected {n} counts, got {len(caps)}")
    if total < 0 or total > sum(max(0, c) for c in caps):
        raise ValueError(f"total: {total} outside [0, {sum(max(0, c) for c in caps)}]")
    weight = [Fraction(s) if s > 0 and math.isfinite(s) else Fraction(0) for s in shares]
    x = [Fraction(0)] * n
    full = [c <= 0 for c in caps]
    remaining = Fraction(total)
    while remaining > 0:
        open_ = [i for i in range(n) if not full[i]]
        w = {i: weight[i] for i in open_}
        if sum(w.values()) == 0:  # no share left: by room
            w = {i: Fraction(caps[i]) for i in open_}
        wsum = sum(w.values())
        over = [i for i in open_ if remaining * w[i] / wsum > caps[i]]
        if not over:
            for i in open_:
                x[i] = remaining * w[i] / wsum
            break
        for i in over:
            x[i], full[i] = Fraction(caps[i]), True
            remaining -= caps[i]
    out = [math.floor(v) for v in x]
    left = total - sum(out)
    order = sorted((i for i in range(n) if out[i] < caps[i]), key=lambda i: (out[i] - x[i], i))
    for i in order[:left]:
        out[i] += 1
    return out


@fill_doc(snfs=SNFS_OPTIONS_DOC)
class SNFS(SET):
    """Sparse momentum (SNFS; Dettmers & Zettlemoyer 2019): magnitude pruning, momentum-driven
    redistribution across layers and momentum growth.

    At every optimiser step (up to ``t_end``) the sparsifier updates its momentum, an
    exponentially smoothed *dense* gradient (every position, active or not), in float32:

    .. math:: M_t = \\beta M_{t-1} + (1 - \\beta) \\, \\partial L_t / \\partial W, \\quad M_0 = 0.

    Every ``update_every`` steps up to and including ``t_end`` (the paper: every epoch):

    1. each layer l with ``n_l`` active weights prunes ``k_l = floor(p_t n_l)`` of smallest
       |w| (at most ``n_l - 1``: a layer keeps a weight); ``p_t`` is the cosine-decayed prune
       rate ``p (1 + cos(pi t / t_end)) / 2``;
    2. the total ``R = sum_l k_l`` is redistributed in proportion to each layer's mean
       momentum magnitude over its active weights (before pruning),
       ``mu_l = mean_{i active} |M_{l,i}|``, ``g_l ~ R mu_l / sum_j mu_j``, capped at the
       positions free after the prune (``numel_l - n_l + k_l``: a layer can become fully dense,
       never more); what a cap cuts off goes to the other layers in proportion to their
       ``mu`` (:func:`redistribute`, integer counts summing to R exactly);
    3. each layer grows ``g_l`` weights at its inactive positions (just-pruned ones included)
       of largest ``|M|``; grown weights start at exactly zero with their optimiser state
       reset.

    The per-layer counts change at every update while their total stays the target
    ``sum_l n_l`` (the distribution sets only the initial counts). With every ``mu_l = 0``
    (no gradient seen) each layer regrows its own ``k_l``.

    Parameters
    ----------
    %(snfs)s
    %(target)s
    %(common)s

    Notes
    -----
    The dense gradient is read at every step up to ``t_end`` (gradient masking waits for the
    optimiser step, layers held sparse compute it in backward), as the paper's method needs:
    SNFS is not a memory-economic method. Under ``execution="sparse"`` it works through
    ``dense_grads()``. A structured ``pattern`` raises: the pattern fixes each layer's count
    (N:M) or its granularity, and SNFS moves counts across layers.

    Differences from the paper and its code: updates every ``update_every`` steps instead of
    every epoch; the momentum is the sparsifier's own EMA (the code reads the optimiser's
    buffer: SGD's momentum, Adam's ``m / sqrt(v)``), which any optimiser can use; counts are
    ``floor`` (the code: ``ceil``); the cap lets a layer become fully dense and redistributes
    the excess by momentum share (the code caps regrowth at 99% of the free positions, spreads
    the excess evenly and lowers the prune rate of nearly dense layers, density > 0.8, to at
    most their sparsity); the cosine reaches 0 at ``t_end``, by default 75% of training as for
    SET/RigL (the code: 0.005 at the end of training; ``t_end=total_steps`` decays over all of
    it).
    """

    name = "snfs"

    @named_errors
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        t_end: int | None = None,
        total_steps: int | None = None,
        update_every: int = 100,
        drop_fraction: float = 0.5,
        drop_schedule: str = "cosine",
        momentum: float = 0.9,
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
        pat = as_pattern(pattern)
        if pat.structured:
            raise ValueError(f"pattern: SNFS redistributes active counts across layers, which "
                             f"pattern {pat} forbids; use pattern=unstructured")
        if (isinstance(momentum, bool) or not isinstance(momentum, int | float)
                or not 0.0 <= momentum < 1.0):
            raise ValueError(f"momentum: {momentum!r} is out of range [0, 1)")
        super().__init__(
            model, optimizer, t_end=t_end, total_steps=total_steps, update_every=update_every,
            drop_fraction=drop_fraction, drop_schedule=drop_schedule, exclude_dropped=False,
            sparsity=sparsity, distribution=distribution, masks=masks, include=include,
            exclude=exclude, dense_first=dense_first, dense_last=dense_last, init=init,
            init_opts=init_opts, masking=masking, execution=execution, pattern=pat, seed=seed,
        )
        self.momentum = float(momentum)
        self._momentum = {n: torch.zeros(self.shapes[n], dtype=torch.float32, device=p.device)
                          for n, p in self.params.items()}
        self._sync_grad_masking()

    # -- the momentum -----------------------------------------------------------------------
    def needs_dense_grads(self, step: int) -> bool:
        """Every step up to ``t_end``: the momentum smooths the dense gradient of every step
        (after the last update nothing reads it, and it is left as it is)."""
        return step <= self.t_end

    def _pre_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """``M <- beta M + (1 - beta) g`` with the unmasked gradient g of this step (a layer
        without a gradient keeps its M)."""
        if not self.needs_dense_grads(self.step_count + 1):
            return
        beta = self.momentum
        for name, g in self.dense_grads().items():
            if g is not None:
                m = self._momentum[name]
                m.mul_(beta).add_(g.detach().to(device=m.device, dtype=torch.float32),
                                  alpha=1.0 - beta)

    def momentum_of(self, name: str) -> torch.Tensor:
        """The momentum M of layer ``name`` (float32, the weight's shape; read only)."""
        return self._momentum[name]

    # -- the update -------------------------------------------------------------------------
    def update(self, step: int) -> dict[str, float]:
        """Prune ``floor(p_t n_l)`` smallest |w| per layer, redistribute the total by mean
        momentum magnitude, grow each layer's share at its largest inactive |M|."""
        rate = self.drop_fraction_at(step)
        plans = []
        for name, p in self.params.items():
            active = self.masks[name].reshape(-1).nonzero().squeeze(1)
            n = active.numel()
            m_abs = self._momentum[name].reshape(-1).abs()
            mu = float(m_abs[active.to(m_abs.device)].double().mean()) if n else 0.0
            k = min(floor_count(rate, n), max(0, n - 1))
            keep = topk_mask(p.detach().reshape(-1)[active].abs(), n - k)
            plans.append((name, active, keep, k, mu, m_abs))
        pruned = [k for _, _, _, k, _, _ in plans]
        shares = [mu for _, _, _, _, mu, _ in plans]
        if not any(s > 0 and math.isfinite(s) for s in shares):
            shares = [float(k) for k in pruned]  # no momentum yet: every layer its own
        caps = [self.masks[name].numel() - (active.numel() - k)
                for name, active, _, k, _, _ in plans]
        grow = redistribute(sum(pruned), shares, caps)
        moved = 0
        for (name, active, keep, k, _, m_abs), g in zip(plans, grow, strict=True):
            moved += max(0, g - k)
            if k == 0 and g == 0:
                continue
            scores = m_abs.index_fill(0, active[keep].to(m_abs.device), float("-inf"))
            grown = topk_indices(scores, g).to(active.device)
            self.replace_positions(name, active[~keep], grown)
        return {"drop_fraction": rate, "redistributed": float(moved)}

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The base state plus the momentum of every layer (float32, on the CPU)."""
        out = super().state_dict()
        out["momentum"] = {n: m.detach().cpu().clone() for n, m in self._momentum.items()}
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`, momentum included (exact resume)."""
        momentum = state.get("momentum")
        if not isinstance(momentum, Mapping) or set(momentum) != set(self._momentum):
            raise ValueError("state: expected the momentum of every sparsified layer (a state "
                             "of snfs' state_dict)")
        for name, m in momentum.items():
            if tuple(m.shape) != self.shapes[name]:
                raise ValueError(f"state: momentum of {name!r} has shape {tuple(m.shape)}, "
                                 f"expected {self.shapes[name]}")
        super().load_state_dict(state)
        for name, m in momentum.items():
            self._momentum[name].copy_(m.to(torch.float32))


@dataclass
class SnfsOptions(DynamicOptions):
    """SNFS: the prune rate and the momentum (with ``update_every``, ``update_end`` and
    ``drop_schedule`` of SET/RigL)."""

    snfs_prune_rate: float = field(
        0.5, low=0.0, high=1.0, help="snfs: initial prune rate p, the fraction of each layer's "
        "active weights pruned at an update (the paper's 0.5; SNFS's own key, as "
        "sparse.drop_fraction's default 0.3 is RigL's); decays by sparse.drop_schedule."
    )
    snfs_momentum: float = field(
        0.9, low=0.0, high=1.0, high_open=True, help="snfs: beta of the momentum M = beta M + "
        "(1 - beta) dL/dW, the smoothed dense gradient that redistributes and grows weights."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        return {"t_end": step_at(opts.update_end, ctx.total_steps),
                "update_every": opts.update_every, "drop_fraction": opts.snfs_prune_rate,
                "drop_schedule": opts.drop_schedule, "momentum": opts.snfs_momentum}
