"""SRigL (Lasby et al. 2023): RigL under a constant fan-in, with neuron ablation
(docs/science.md section 18).

Every update drops the ``floor(alpha_t * n_active)`` active weights of smallest |w| over the
layer (as RigL), then every output unit regrows to the layer's fan-in K by the largest
|dL/dW| among its inactive inputs (``sparsity.drop_and_grow`` with one group per unit), so
every unit keeps exactly K active inputs.

Neuron ablation (the paper's gamma_sal): the *salient* weights of a layer are the n_keep
largest |w| and the n_drop largest |dL/dW| over the whole layer (what RigL would keep plus
what it would grow). A unit with fewer than ``ceil(gamma_sal * K)`` salient weights is ablated
for this update (no active input); the layer's budget is shared by the other units, whose
fan-in becomes K' = min(fan_in, floor(count / active units)) (the authors' rule, so the
layer may hold up to ``active units - 1`` fewer weights than its budget). The last sparsified
layer (the classifier) is never ablated. An ablated unit can come back at a later update when
its gradients make it salient again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparseflow.methods.base import GradFn, as_pattern
from sparseflow.methods.calls import fill_doc, named_errors
from sparseflow.methods.dynamic import DYNAMIC_OPTIONS_DOC, GRAD_FN_DOC, RigL
from sparseflow.methods.options import BuildContext, RigLOptions
from sparseflow.sparsity import MaskSet, Pattern, floor_count, topk_mask
from sparseflow.sparsity.patterns import matrix_view
from sparseflow.typed import field

FAN_IN = Pattern("fan_in")


def salient_per_unit(weight: torch.Tensor, grad: torch.Tensor, n_keep: int, n_grow: int
                     ) -> torch.Tensor:
    """Salient weights per output unit: the ``n_keep`` largest |w| of the layer together with
    its ``n_grow`` largest |g| (the union; ties to the lower index in the (out, fan_in) matrix
    view), counted per row."""
    w = matrix_view(weight.detach()).abs().to(torch.float64)
    g = matrix_view(grad.detach()).abs().to(torch.float64)
    salient = topk_mask(w, n_keep) | topk_mask(g, n_grow)
    return salient.sum(dim=1)


@dataclass
class SRigLOptions(RigLOptions):
    """SRigL: neuron ablation (its pattern, ``fan_in``, is registered with the method)."""

    srigl_ablation: float = field(
        0.3, low=0.0, high=1.0, help="srigl: gamma_sal, a unit with fewer salient weights than "
        "this fraction of the fan-in is ablated at an update (0: never)."
    )
    srigl_ablate_last: bool = field(False, help="srigl: let the classifier layer lose units.")

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        out = RigLOptions.arguments(opts, ctx)
        out.update(ablation=opts.srigl_ablation, ablate_last=opts.srigl_ablate_last)
        return out


@fill_doc(dynamic=DYNAMIC_OPTIONS_DOC, grad_fn=GRAD_FN_DOC)
class SRigL(RigL):
    """SRigL (Lasby, Golubeva, Evci, Nica, Ioannou 2023, "Dynamic Sparse Training with
    Structured Sparsity"): RigL whose every output unit keeps the same fan-in, with neuron
    ablation.

    Parameters
    ----------
    %(dynamic)s
    %(grad_fn)s
    ablation : float, default 0.3
        gamma_sal: a unit with fewer than ``ceil(gamma_sal * K)`` salient weights (K: the
        layer's fan-in) is ablated at an update; 0 turns ablation off.
    ablate_last : bool, default False
        Whether the last sparsified layer (the classifier) may lose units.
    %(target)s
    %(common)s

    Notes
    -----
    ``pattern`` must be ``fan_in`` (the default here); the realised sparsity is the
    distribution's rounded to a whole fan-in per unit (``sparsity.achievable_count``).
    """

    name = "srigl"
    empty_units = True  # ablated units have no input; the others share one fan-in

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
        ablation: float = 0.3,
        ablate_last: bool = False,
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
        pattern: str | Pattern = "fan_in",
        seed: int = 0,
    ) -> None:
        if as_pattern(pattern) != FAN_IN:
            raise ValueError(f"pattern: SRigL keeps a constant fan-in (pattern='fan_in'), got "
                             f"{pattern!r}")
        if not 0.0 <= ablation <= 1.0:
            raise ValueError(f"ablation: {ablation!r} is out of range [0, 1]")
        super().__init__(
            model, optimizer, t_end=t_end, total_steps=total_steps, update_every=update_every,
            drop_fraction=drop_fraction, drop_schedule=drop_schedule,
            exclude_dropped=exclude_dropped, grad_fn=grad_fn, sparsity=sparsity,
            distribution=distribution, masks=masks, include=include, exclude=exclude,
            dense_first=dense_first, dense_last=dense_last, init=init, init_opts=init_opts,
            masking=masking, execution=execution, pattern=FAN_IN, seed=seed,
        )
        self.ablation = float(ablation)
        self.ablate_last = bool(ablate_last)
        self.budget = {n: int(m.sum()) for n, m in self.masks.masks.items()}

    def unit_targets(self, name: str, weight: torch.Tensor, alpha: float) -> torch.Tensor:
        """Per-unit fan-in after this update: 0 for ablated units, K' for the others."""
        mask = self.masks[name]
        rows = weight.shape[0]
        cols = weight.numel() // rows
        per = matrix_view(mask).sum(dim=1)
        live = per[per > 0]
        k_now = int(live[0]) if live.numel() else 0
        budget = self.budget[name]
        ablated = torch.zeros(rows, dtype=torch.bool)
        last = name == list(self.params)[-1]
        if self.ablation > 0 and k_now and (self.ablate_last or not last):
            n_active = int(per.sum())
            n_drop = floor_count(alpha, n_active)
            assert self._dense_grads is not None
            salient = salient_per_unit(weight, self._dense_grads[name], n_active - n_drop,
                                       n_drop).cpu()
            ablated = salient < math.ceil(self.ablation * k_now)
            if bool(ablated.all()):  # keep the unit with the most salient weights
                ablated[int(torch.argmax(salient))] = False
        live_units = rows - int(ablated.sum())
        fan_in = min(cols, budget // live_units)
        targets = torch.full((rows,), fan_in, dtype=torch.long)
        targets[ablated] = 0
        return targets

    def update(self, step: int) -> dict[str, float]:
        """RigL's drop and grow per unit to the post-ablation fan-in (module docstring)."""
        try:
            alpha = self.drop_fraction_at(step)
            self.prepare_scores()
            ablated = 0
            for name, p in self.params.items():
                targets = self.unit_targets(name, p, alpha)
                ablated += int((targets == 0).sum())
                self.update_under_pattern(name, p, alpha, targets=targets)
            return {"drop_fraction": alpha, "ablated_units": float(ablated)}
        finally:
            self._dense_grads = None
