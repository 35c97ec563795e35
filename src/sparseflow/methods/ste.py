"""STE and SR-STE: magnitude masks of dense weights trained with the straight-through gradient.

Both keep dense weights W, run the network on W * M with M = pattern_topk(|W|, k_l) (top-k
per layer under the pattern, recomputed every ``update_every`` steps; every step by default)
and update W with the gradient of the masked weights (:mod:`sparseflow.methods.shadow`):

- STE: ``W <- W - lr * dL/d(W * M)`` (the straight-through estimator of Bengio et al. 2013
  applied to magnitude masking);
- SR-STE (Zhou et al. 2021): ``W <- W - lr * (dL/d(W * M) + lambda_W * (1 - M) * W)``, a decay
  of the masked weights only ("sparse-refined"), lambda_W = 2e-4 by default.

Both are usually run with ``pattern="2:4"`` (sparsity 0.5) and work under every pattern.
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
from sparseflow.sparsity import MaskSet, Pattern
from sparseflow.typed import field

SRSTE_DECAY = 2e-4  # lambda_W of Zhou et al. 2021 (their code's default decay)

DECAY_DOC = """\
decay : float, default 2e-4
    lambda_W >= 0, the weight of the sparse-refined term lambda_W * (1 - M) * W added to the
    gradient of the dense weights (0: plain STE).
"""


@fill_doc(shadow=SHADOW_OPTIONS_DOC, notes=SHADOW_NOTES)
class STE(ShadowSparsifier):
    """Magnitude masking with the straight-through estimator (STE).

    Dense weights W; the network runs on W * M with ``M = pattern_topk(|W|, k_l, pattern)``
    recomputed every ``update_every`` steps; the optimiser updates W with the gradient of the
    masked weights as if the mask were the identity::

        W <- W - lr * dL/d(W * M)          (SGD; any optimiser sees g = dL/d(W * M))

    so a masked weight keeps learning and re-enters the mask when |W| grows past the layer's
    k-th largest. The straight-through estimator is Bengio, Leonard & Courville 2013
    ("Estimating or Propagating Gradients Through Stochastic Neurons for Conditional
    Computation"); with magnitude masks it is the STE baseline of Zhou et al. 2021
    ("Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch", ICLR).

    Parameters
    ----------
    %(shadow)s
    %(target)s
    %(common)s

    Notes
    -----
    %(notes)s
    """

    name = "ste"


@fill_doc(shadow=SHADOW_OPTIONS_DOC, decay=DECAY_DOC, notes=SHADOW_NOTES)
class SRSTE(ShadowSparsifier):
    """Sparse-refined straight-through estimator (SR-STE; Zhou et al. 2021).

    As :class:`STE`, with the masked weights decayed: the gradient of the dense weights is::

        g_W = dL/d(W * M) + lambda_W * (1 - M) * W

    (``decay`` = lambda_W, 2e-4 by default), which shrinks the pruned weights so that the
    mask stops flipping between near-equal weights. Zhou et al. 2021, "Learning N:M
    Fine-grained Structured Sparse Neural Networks From Scratch" (ICLR); lambda_W = 2e-4 is
    their code's default ``decay``, and they recompute the N:M mask at every forward pass
    (``update_every=1`` here).

    Parameters
    ----------
    %(shadow)s
    %(decay)s
    %(target)s
    %(common)s

    Notes
    -----
    %(notes)s
    """

    name = "sr_ste"

    @named_errors
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        update_every: int = 1,
        decay: float = SRSTE_DECAY,
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
        if (isinstance(decay, bool) or not isinstance(decay, int | float)
                or not math.isfinite(decay) or decay < 0):
            raise ValueError(f"decay: expected a finite float >= 0, got {decay!r}")
        self.decay = float(decay)
        super().__init__(
            model, optimizer, update_every=update_every, sparsity=sparsity,
            distribution=distribution, masks=masks, include=include, exclude=exclude,
            dense_first=dense_first, dense_last=dense_last, init=init, init_opts=init_opts,
            masking=masking, execution=execution, pattern=pattern, seed=seed,
        )

    def adjust_grad(self, name: str, weight: torch.Tensor, grad: torch.Tensor) -> None:
        """g <- g + lambda_W * (1 - M) * W."""
        if self.decay:
            grad.add_(weight.masked_fill(self.masks[name], 0.0), alpha=self.decay)


# -- options (the sparse.* config keys) --------------------------------------------------------
@dataclass
class STEOptions(Options):
    """STE and SR-STE: how often the mask follows the dense weights."""

    ste_update_every: int = field(
        1, low=1, help="ste/sr_ste: steps between recomputations of the mask as the top-k "
        "|W| of the dense weights (1: every step, as in SR-STE's code)."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        return {"update_every": opts.ste_update_every}


@dataclass
class SRSTEOptions(STEOptions):
    """SR-STE: the decay of the masked weights."""

    srste_decay: float = field(
        SRSTE_DECAY, low=0.0, help="sr_ste: lambda_W, the sparse-refined term lambda_W * "
        "(1 - M) * W added to the dense weights' gradient (Zhou et al. 2021: 2e-4)."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        return {**STEOptions.arguments(opts, ctx), "decay": opts.srste_decay}
