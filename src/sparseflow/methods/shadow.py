"""Straight-through sparse training: dense weights behind a mask recomputed from them.

The straight-through methods (STE, SR-STE, Top-KAST; :mod:`sparseflow.methods.ste`,
:mod:`sparseflow.methods.topkast`) train *dense* weights W and run the network on the masked
weights W * M, with M the top-k |W| of each layer under the pattern; the gradient of the masked
weights, dL/d(W * M), is taken as the gradient of W (the straight-through estimator, Bengio et
al. 2013), so a pruned weight keeps learning and re-enters the mask when its magnitude grows.

Layout, so that every analysis of the toolkit sees the sparse network: between optimiser steps
the model's parameter P holds the masked weights (P = W * M: gradient norms, the Hessian,
checkpoints and interpolation see the sparse network, and masked weights are zero after
``optimizer.step(); sparsifier.step()``), and the sparsifier keeps the dense values of the
masked positions in a *shadow* tensor S (S = W * (1 - M), zero at active positions):

1. before the optimiser step (a step pre-hook): P <- where(M, P, S), the dense weights, and the
   method adjusts the gradient (:meth:`ShadowSparsifier.adjust_grad`; it is *not* masked);
2. the optimiser updates the dense weights (its state covers every dense weight);
3. after the step (a step post-hook): positions the method freezes get their value back
   (:meth:`ShadowSparsifier.frozen`), S <- W * (1 - M), P <- W * M;
4. ``sparsifier.step()``, every ``update_every`` steps: M <- pattern_topk(|W|, k_l) per layer
   with the layer's count k_l, optimiser state *not* reset (the dense weights keep their
   momentum), grown/dropped counts recorded for the churn and ever-active telemetry.

``state_dict()`` holds S, so a resumed run continues bit-exactly. Only ``execution="masked"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sparseflow.methods.base import Sparsifier, check_int
from sparseflow.methods.calls import fill_doc, named_errors
from sparseflow.sparsity import MaskSet, Pattern, pattern_topk, select_weights

SHADOW_OPTIONS_DOC = """\
model : nn.Module
    Any module with materialised parameters.
optimizer : torch.optim.Optimizer
    Any torch optimiser over the model's parameters; it updates the dense weights.
update_every : int, default 1
    Steps between recomputations of the mask from the dense weights (1: after every step).
"""

SHADOW_NOTES = """\
The model's parameters hold the masked weights W * M between steps; the dense values of the
masked positions are kept by the sparsifier (``shadow``, :meth:`dense_weights`) and written
back just before each optimiser step. ``init`` sets the dense weights too: ``dense``/``keep``
keep the model's values, ``liu`` scales the whole dense tensor by 1/sqrt(d_l), ``sparse`` draws
the active ones and starts the masked ones at 0. Without ``masks`` the first mask is the top-k
|W| of the initial weights. ``masking`` is accepted for a uniform signature and unused (the
method keeps masked weights zero itself); ``execution`` must be ``"masked"``. With the
training loop's decoupled weight decay (``optim.weight_decay`` with a non-AdamW optimiser,
applied to the parameters before the step) the masked dense weights get the same decay.
"""


@fill_doc(shadow=SHADOW_OPTIONS_DOC, notes=SHADOW_NOTES)
class ShadowSparsifier(Sparsifier):
    """Dense weights behind a magnitude mask, trained with the straight-through gradient.

    The base of STE, SR-STE and Top-KAST (module docstring): every ``update_every`` steps
    each layer's mask becomes ``M = pattern_topk(|W|, k_l, pattern)`` of its dense weights W,
    k_l the layer's count (the distribution's under the pattern, or the given masks'); the
    optimiser updates W with dL/d(W * M) as the gradient of W. A method changes the gradient
    (:meth:`adjust_grad`), the positions the step may not change (:meth:`frozen`) or the
    selection (:meth:`update`).

    Parameters
    ----------
    %(shadow)s
    %(target)s
    %(common)s

    Notes
    -----
    %(notes)s
    """

    name = "shadow"
    manages_weights = True

    @named_errors
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        update_every: int = 1,
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
        if execution != "masked":
            raise ValueError(f"execution: {self.name} keeps dense weights behind the mask; only "
                             f"'masked' is supported, got {execution!r}")
        self.update_every = check_int("update_every", update_every)
        # the dense weights before the init masks them (the base masks them in place)
        chosen = select_weights(model, include=include, exclude=exclude,
                                dense_first=dense_first, dense_last=dense_last)
        dense0 = {n: p.detach().clone() for n, p in chosen.items()}
        super().__init__(
            model, optimizer, sparsity=sparsity, distribution=distribution, masks=masks,
            include=include, exclude=exclude, dense_first=dense_first, dense_last=dense_last,
            init=init, init_opts=init_opts, masking=masking, execution=execution,
            pattern=pattern, seed=seed,
        )
        self.counts = self.masks.nnz()
        self.shadow = {n: self._initial_shadow(n, dense0[n], init) for n in self.params}
        self._handles.append(optimizer.register_step_post_hook(self._post_step))

    def _initial_shadow(self, name: str, dense: torch.Tensor, init: str) -> torch.Tensor:
        """S at the masked positions: the dense weights as the init left them unmasked."""
        p, m = self.params[name], self.masks[name]
        if init == "sparse":  # the sparse init draws the active weights only
            return torch.zeros_like(p.detach())
        if init == "liu":  # the scale of sparsity.liu_scale_, on the whole dense tensor
            d = int(m.sum()) / m.numel()
            dense = dense * (1.0 / math.sqrt(d) if d > 0 else 0.0)
        return dense.to(p.dtype).masked_fill(m, 0.0)

    # -- what a method overrides -----------------------------------------------------------
    def initial_masks(self) -> MaskSet:
        """The top-k |W| of the initial (dense) weights under the pattern, with the
        distribution's exact per-layer counts."""
        counts = self.layer_counts()
        masks = {n: pattern_topk(p.detach().abs(), counts[n], self.pattern).to(p.device)
                 for n, p in self.params.items()}
        return MaskSet(self.params, masks)

    def due(self, step: int) -> bool:
        """Every ``update_every`` steps, for the whole of training."""
        return step % self.update_every == 0

    def adjust_grad(self, name: str, weight: torch.Tensor, grad: torch.Tensor) -> None:
        """Change, in place, the gradient ``grad`` of the dense weights ``weight`` of layer
        ``name`` before the optimiser step. STE: nothing (the straight-through gradient)."""

    def frozen(self, name: str) -> torch.Tensor | None:
        """Bool mask of the positions of layer ``name`` that the optimiser step may not change
        (they get their value back after it; masked positions only), or None."""
        return None

    def select(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """The new mask of layer ``name``: the top-k |W| of its dense weights under the
        pattern (ties to the lower index)."""
        return pattern_topk(weight.abs(), self.counts[name], self.pattern).to(weight.device)

    def update(self, step: int) -> dict[str, float]:
        """Recompute every layer's mask from the magnitudes of its dense weights."""
        with torch.no_grad():
            for name in self.params:
                w = self.dense_weight(name)
                self.install(name, w, self.select(name, w))
        return {}

    # -- the dense weights -----------------------------------------------------------------
    def dense_weight(self, name: str) -> torch.Tensor:
        """The dense weights W of layer ``name`` (a new tensor): where(M, P, S)."""
        p = self.params[name].detach()
        return torch.where(self.masks[name], p, self.shadow[name])

    def dense_weights(self) -> dict[str, torch.Tensor]:
        """``{name: W}``: the dense weights of every sparsified layer (new tensors)."""
        return {n: self.dense_weight(n) for n in self.params}

    def install(self, name: str, weight: torch.Tensor, new: torch.Tensor) -> None:
        """Make ``new`` the mask of layer ``name`` with dense weights ``weight``: P <- W * M,
        S <- W * (1 - M), optimiser state kept; grown/dropped recorded for the telemetry."""
        old = self.masks[name]
        if torch.equal(old, new):
            return
        changed = old ^ new
        grown = int(torch.count_nonzero(changed & new))
        self._record_change(name, grown, int(torch.count_nonzero(changed)) - grown)
        self.masks.set_mask(name, new)
        self.ever_active[name] |= new
        with torch.no_grad():
            self.shadow[name].copy_(weight.masked_fill(new, 0.0))
            self.params[name].copy_(weight.masked_fill(~new, 0.0))

    # -- the optimiser step ----------------------------------------------------------------
    def _decoupled_factors(self, opt: torch.optim.Optimizer) -> dict[int, float]:
        """``{id(param): 1 - lr * wd}`` of the decay that sparseflow's training loop applies
        to the parameters before this step (``training.optim.decoupled_decay_``: param groups
        with ``decoupled_wd`` > 0, not AdamW, parameters with a gradient). It reached the masked
        weights as zeros; the shadow gets it here."""
        if isinstance(opt, torch.optim.AdamW):
            return {}
        out: dict[int, float] = {}
        for group in opt.param_groups:
            wd = group.get("decoupled_wd", 0.0)
            if wd > 0:
                out.update({id(p): 1.0 - group["lr"] * wd for p in group["params"]
                            if p.grad is not None})
        return out

    def _pre_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """The dense weights into the parameters (P <- where(M, P, S)); the method's gradient."""
        factors = self._decoupled_factors(opt)
        with torch.no_grad():
            for name, p in self.params.items():
                m, s = self.masks[name], self.shadow[name]
                f = factors.get(id(p))
                if f is not None:
                    fz = self.frozen(name)
                    s.copy_(s * f if fz is None else torch.where(fz, s, s * f))
                p.copy_(torch.where(m, p, s))
                if p.grad is not None:
                    self.adjust_grad(name, p.detach(), p.grad)

    def _post_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Frozen positions restored; S <- W * (1 - M), P <- W * M with the current mask."""
        with torch.no_grad():
            for name, p in self.params.items():
                m, s = self.masks[name], self.shadow[name]
                fz = self.frozen(name)
                if fz is not None:
                    p.copy_(torch.where(fz, s, p))
                s.copy_(p.masked_fill(m, 0.0))
                p.masked_fill_(~m, 0.0)

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The base's state plus the shadow (dense values at masked positions; CPU)."""
        out = super().state_dict()
        out["shadow"] = {n: s.detach().cpu().clone() for n, s in self.shadow.items()}
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`: masks, counters and the shadow."""
        saved = state.get("shadow")
        if saved is None or set(saved) != set(self.shadow):
            raise ValueError(f"load_state_dict: the state has no shadow for the layers "
                             f"{sorted(self.shadow)} (saved by another method?)")
        for name, s in self.shadow.items():
            if tuple(saved[name].shape) != tuple(s.shape):
                raise ValueError(f"load_state_dict: shadow of {name!r} has shape "
                                 f"{tuple(saved[name].shape)}, expected {tuple(s.shape)}")
        super().load_state_dict(state)
        with torch.no_grad():
            for name, s in self.shadow.items():
                s.copy_(saved[name])
        self.counts = self.masks.nnz()
