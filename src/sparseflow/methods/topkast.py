"""Top-KAST (Jayakumar et al. 2020): a sparse forward set, a larger sparse backward set.

Dense weights theta (kept as in :mod:`sparseflow.methods.shadow`); per layer, recomputed every
``update_every`` steps from |theta|:

- forward set A = top-k |theta| at the target density D (the layer's count, under the pattern):
  the network runs on theta * A;
- backward set B = top-k |theta| at the larger backward density D_B (B contains A): only
  weights in B are updated, with the straight-through gradient dL/d(theta * A) and the
  exploration penalty's gradient; weights outside B keep their values (any optimiser: they are
  restored after the step) and can enter A again only by magnitude;
- exploration penalty L_p = (alpha / 2) * (sum_{i in A} theta_i^2 + sum_{i in B \\ A}
  theta_i^2 / D): an L2 penalty, 1/D times stronger on the weights that are explored but not
  used, so that a weight must clearly outgrow the active ones to enter A.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparseflow.methods.calls import fill_doc, named_errors
from sparseflow.methods.options import BuildContext, Options
from sparseflow.methods.shadow import SHADOW_NOTES, SHADOW_OPTIONS_DOC, ShadowSparsifier
from sparseflow.sparsity import MaskSet, Pattern, pattern_counts, pattern_topk, schedule_pattern
from sparseflow.typed import field

TOPKAST_PENALTY = 1e-4

TOPKAST_OPTIONS_DOC = """\
backward_sparsity : float, optional
    Sparsity 1 - D_B of the backward set B, in [0, sparsity]; default
    ``max(0, 1 - 2 * (1 - sparsity))``: B holds twice as many weights as A (90% forward, 80%
    backward sparsity). Per layer from the same distribution (N:M: the pattern n_B:M with
    n_B = clip(round(D_B * M), N, M); 0 or n_B = M: every weight is in B), and never smaller
    than A.
penalty : float, default 1e-4
    alpha >= 0 of the exploration penalty (alpha / 2) (sum_A theta^2 + sum_{B \\ A}
    theta^2 / D), D the layer's forward density; its gradient is added to the straight-through
    gradient (so it passes through momentum and Adam's moments). 0: no penalty.
"""


def default_backward_sparsity(sparsity: float) -> float:
    """``max(0, 1 - 2 (1 - sparsity))``: a backward set with twice the forward density."""
    return max(0.0, 1.0 - 2.0 * (1.0 - sparsity))


@fill_doc(shadow=SHADOW_OPTIONS_DOC, topkast=TOPKAST_OPTIONS_DOC, notes=SHADOW_NOTES)
class TopKAST(ShadowSparsifier):
    """Top-K Always Sparse Training (Top-KAST; Jayakumar et al. 2020).

    Dense weights theta; every ``update_every`` steps each layer recomputes its forward set
    ``A = pattern_topk(|theta|, k_l)`` (the mask: the network runs on theta * A) and its
    backward set ``B = pattern_topk(|theta|, k_B,l) | A`` at the backward density. The
    gradient of theta is::

        g_i = [dL/d(theta * A) + alpha * theta / c]_i   for i in B   (c = 1 on A, D on B \\ A)
        g_i = 0                                          outside B

    the straight-through gradient plus that of the exploration penalty (alpha / 2)
    (sum_A theta^2 + sum_{B \\ A} theta^2 / D), D the layer's forward density. Weights outside
    B keep their values whatever the optimiser (restored after the step), and their optimiser
    state restarts when they enter or leave B (an always-sparse implementation holds no state
    outside B). Jayakumar, Pascanu, Rae, Osindero & Elsen 2020, "Top-KAST: Top-K Always
    Sparse Training" (NeurIPS).

    Parameters
    ----------
    %(shadow)s
    %(topkast)s
    %(target)s
    %(common)s

    Notes
    -----
    %(notes)s
    The paper recomputes A and B at every step (``update_every=1``; its authors report no
    change with every 100 steps) and uses plain SGD. The penalty replaces weight decay on the
    sparsified weights in the paper: keep ``optim.l2`` at 0 to match it.
    """

    name = "topkast"

    @named_errors
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        update_every: int = 1,
        backward_sparsity: float | None = None,
        penalty: float = TOPKAST_PENALTY,
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
        if (isinstance(penalty, bool) or not isinstance(penalty, int | float)
                or not math.isfinite(penalty) or penalty < 0):
            raise ValueError(f"penalty: expected a finite float >= 0, got {penalty!r}")
        if backward_sparsity is None:
            backward_sparsity = default_backward_sparsity(sparsity)
        elif (isinstance(backward_sparsity, bool) or not isinstance(backward_sparsity, int | float)
              or not 0.0 <= backward_sparsity <= sparsity):
            raise ValueError(f"backward_sparsity: {backward_sparsity!r} is out of range "
                             f"[0, sparsity={sparsity!r}]")
        self.penalty = float(penalty)
        self.backward_sparsity = float(backward_sparsity)
        self.backward_masks: dict[str, torch.Tensor] = {}
        super().__init__(
            model, optimizer, update_every=update_every, sparsity=sparsity,
            distribution=distribution, masks=masks, include=include, exclude=exclude,
            dense_first=dense_first, dense_last=dense_last, init=init, init_opts=init_opts,
            masking=masking, execution=execution, pattern=pattern, seed=seed,
        )
        self.backward_pattern, self.backward_counts = self._backward_plan()
        # 1/D per layer: the penalty's factor on B \ A
        self.inverse_density = {n: m.numel() / max(1, self.counts[n])
                                for n, m in self.masks.masks.items()}
        self.backward_masks = {n: self.backward_set(n, self.dense_weight(n), self.masks[n])
                               for n in self.params}

    def _backward_plan(self) -> tuple[Pattern | None, dict[str, int]]:
        """The pattern and per-layer counts of B (pattern None: B is every weight)."""
        pat: Pattern | None = self.pattern
        numel = {n: math.prod(s) for n, s in self.shapes.items()}
        if pat is not None and pat.kind == "nm":
            pat = schedule_pattern(pat, 1.0 - self.backward_sparsity)
        if pat is None or self.backward_sparsity == 0.0:
            return None, numel
        counts = pattern_counts(self.shapes, self.backward_sparsity, self.distribution, pat)
        return pat, {n: max(c, self.counts[n]) for n, c in counts.items()}

    def backward_set(self, name: str, weight: torch.Tensor, forward: torch.Tensor
                     ) -> torch.Tensor:
        """B of layer ``name``: the top-k_B |theta| under the backward pattern, joined with the
        forward set ``forward``."""
        if self.backward_pattern is None or self.backward_counts[name] >= weight.numel():
            return torch.ones_like(forward)
        top = pattern_topk(weight.abs(), self.backward_counts[name], self.backward_pattern)
        return top.to(forward.device) | forward

    def adjust_grad(self, name: str, weight: torch.Tensor, grad: torch.Tensor) -> None:
        """g <- (g + alpha * theta * (1 on A, 1/D on B \\ A)) * B."""
        if self.penalty:
            pen = weight * self.penalty
            grad.add_(torch.where(self.masks[name], pen, pen * self.inverse_density[name]))
        grad.masked_fill_(~self.backward_masks[name], 0.0)

    def frozen(self, name: str) -> torch.Tensor | None:
        """The weights outside B: the step may not change them."""
        return ~self.backward_masks[name]

    def update(self, step: int) -> dict[str, float]:
        """Recompute A (the mask) and B from |theta|; optimiser state restarts where B
        changed (A's changes keep it, as in STE)."""
        with torch.no_grad():
            for name in self.params:
                w = self.dense_weight(name)
                forward = self.select(name, w)
                backward = self.backward_set(name, w, forward)
                changed = backward ^ self.backward_masks[name]
                if bool(changed.any()):
                    self._reset_state(name, changed)
                self.backward_masks[name] = backward
                self.install(name, w, forward)
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The shadow sparsifier's state plus the backward sets B."""
        out = super().state_dict()
        out["backward_masks"] = {n: b.cpu().clone() for n, b in self.backward_masks.items()}
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (masks, shadow and backward sets)."""
        saved = state.get("backward_masks")
        if saved is None or set(saved) != set(self.backward_masks):
            raise ValueError("load_state_dict: the state has no backward sets for the layers "
                             f"{sorted(self.backward_masks)} (saved by another method?)")
        super().load_state_dict(state)
        self.backward_masks = {n: saved[n].to(device=b.device, dtype=torch.bool).clone()
                               for n, b in self.backward_masks.items()}
        self.inverse_density = {n: m.numel() / max(1, self.counts[n])
                                for n, m in self.masks.masks.items()}


# -- options (the sparse.* config keys) --------------------------------------------------------
@dataclass
class TopKASTOptions(Options):
    """Top-KAST: the backward set, the exploration penalty and how often both follow theta."""

    topkast_backward_sparsity: float | None = field(
        None, low=0.0, high=1.0, high_open=True, help="topkast: sparsity of the backward set "
        "B (in [0, sparsity]); unset: 1 - 2 * (1 - sparsity), twice the forward density."
    )
    topkast_penalty: float = field(
        TOPKAST_PENALTY, low=0.0, help="topkast: alpha of the exploration penalty (alpha/2) "
        "(sum_A theta^2 + sum_{B-A} theta^2 / D)."
    )
    topkast_update_every: int = field(
        1, low=1, help="topkast: steps between recomputations of the forward and backward "
        "sets (the paper: every step)."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        return {"update_every": opts.topkast_update_every,
                "backward_sparsity": opts.topkast_backward_sparsity,
                "penalty": opts.topkast_penalty}
