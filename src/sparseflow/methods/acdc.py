"""AC/DC (Peste et al. 2021): alternating compressed / decompressed training
(docs/science.md section 3).

Training starts with a dense warm-up of W steps. Then sparse (compressed) and dense
(decompressed) phases of P steps alternate: a sparse phase starts at W + 2kP with the mask
of the largest |w| at that step at the target sparsity (kept fixed through the phase), the
following dense phase makes every weight trainable again (the pruned ones restart from 0 with
reset optimiser state). The last phases are a dense one up to F = T - L and a final sparse
(fine-tuning) phase of L steps from F to the end, so training ends at the target sparsity. A
sparse phase W + 2kP is started only while a dense phase of P steps still fits before F
(``W + 2kP + 2P <= F``), so the final compression always follows a dense phase of at least P
steps (of up to 2P + the rest): with the paper's ImageNet schedule (W = 10, P = 5, L = 15 of
100 epochs) the sparse phases start at 10, 20, ..., 70 and 85, the dense ones at 15, ..., 75,
as in the authors' configs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparseflow.methods.base import Sparsifier, check_int
from sparseflow.methods.calls import fill_doc, named_errors
from sparseflow.methods.granet import resolve_scope
from sparseflow.methods.options import BuildContext, Options
from sparseflow.methods.pruning import magnitude_masks
from sparseflow.sparsity import MaskSet, Pattern, pattern_topk, step_at
from sparseflow.typed import field

#: the paper's ImageNet schedule as fractions of its 100 epochs (IST-DASLab/ACDC configs:
#: dense warm-up 10 epochs, 5-epoch phases, final sparse phase 85-100); CIFAR-100 (200
#: epochs): warm-up 10, phases of 20, final 170-200 (0.05, 0.1, 0.15)
ACDC_WARMUP = 0.1
ACDC_PHASE = 0.05
ACDC_FINAL = 0.15

ACDC_OPTIONS_DOC = """\
total_steps : int
    T, the number of optimiser steps of training; the final sparse phase ends there.
warmup_steps : int, optional
    W, the dense warm-up (>= 1): the first sparse phase starts after step W; default
    ``sparsity.step_at(0.1, total_steps)``.
phase_steps : int, optional
    P, the length of each sparse and dense phase (>= 1); default
    ``sparsity.step_at(0.05, total_steps)``.
final_steps : int, optional
    L, the length of the final sparse phase (>= 1; W + L <= T), which starts after step
    F = T - L; default ``sparsity.step_at(0.15, total_steps)``.
scope : {"global", "layer"}, optional
    Compression by one magnitude threshold over all layers (the paper; the default without
    a pattern) or per layer with the distribution's exact counts (the default, and the only
    choice, under a structured pattern).
"""


@dataclass
class ACDCOptions(Options):
    """AC/DC: the lengths of the warm-up, of the phases and of the final sparse phase."""

    acdc_warmup: float = field(
        ACDC_WARMUP, low=0.0, high=1.0, low_open=True, help="acdc: dense warm-up, as a "
        "fraction of training (paper: 10 of 100 ImageNet epochs; 10 of 200 on CIFAR-100)."
    )
    acdc_phase: float = field(
        ACDC_PHASE, low=0.0, high=1.0, low_open=True, help="acdc: length of each sparse and "
        "dense phase, as a fraction of training (paper: 5 of 100 ImageNet epochs; 20 of 200 "
        "on CIFAR-100)."
    )
    acdc_final: float = field(
        ACDC_FINAL, low=0.0, high=1.0, low_open=True, help="acdc: the final sparse "
        "(fine-tuning) phase, as a fraction of training (paper: the last 15%)."
    )
    acdc_scope: str = field(
        "auto", choices=("auto", "global", "layer"), help="acdc: compression by one "
        "magnitude threshold over all layers (global, the paper) or per layer with the "
        "distribution's counts; auto: global, or layer under a structured sparse.pattern."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        total = ctx.total_steps
        return {"total_steps": total, "warmup_steps": step_at(opts.acdc_warmup, total),
                "phase_steps": step_at(opts.acdc_phase, total),
                "final_steps": step_at(opts.acdc_final, total),
                "scope": None if opts.acdc_scope == "auto" else opts.acdc_scope}


@fill_doc(acdc=ACDC_OPTIONS_DOC)
class ACDC(Sparsifier):
    """AC/DC (Peste, Iofinova, Vladu, Alistarh 2021, "AC/DC: Alternating Compressed/DeCompressed
    Training of Deep Neural Networks", NeurIPS): dense warm-up, alternating sparse and dense
    phases, a final sparse phase.

    With W = ``warmup_steps``, P = ``phase_steps``, F = T - ``final_steps``: after step t the
    phase is

    - dense for t < W (warm-up);
    - for W <= t < F, with c, o = divmod(t - W, 2P): sparse when o < P and
      W + 2cP + 2P <= F, dense otherwise (the last dense phase runs up to F);
    - sparse for t >= F.

    At the start of a sparse phase the mask keeps the largest |w|: the top
    ``K = round_half_up((1 - s) sum numel)`` over all layers (``scope="global"``) or per layer
    the distribution's exact counts under the pattern (``pattern_topk`` of |w|,
    ``scope="layer"``), fixed for the phase. A dense phase is an all-ones mask; the weights
    pruned before it restart from 0 with reset optimiser state. Telemetry of an update:
    ``sparsity`` (0 in a dense phase), ``phase`` (1 sparse, 0 dense), ``target_sparsity``.

    Parameters
    ----------
    model : nn.Module
        Any module with materialised parameters.
    optimizer : torch.optim.Optimizer
        Any torch optimiser over the model's parameters.
    %(acdc)s
    %(target)s
    %(common)s

    Notes
    -----
    Defaults: the paper's ImageNet schedule (IST-DASLab/ACDC configs, ResNet-50, 100 epochs:
    warm-up 10, phases of 5, dense 75-85, sparse 85-100) as fractions of training, and its
    global magnitude threshold (``UnstructuredMagnitudePruner``). ``masks`` replaces the
    dense mask of the warm-up.
    """

    name = "acdc"

    @named_errors
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        warmup_steps: int | None = None,
        phase_steps: int | None = None,
        final_steps: int | None = None,
        scope: str | None = None,
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
        total = check_int("total_steps", total_steps, 1)

        def steps(name: str, value: int | None, fraction: float) -> int:
            return step_at(fraction, total) if value is None else check_int(name, value, 1)

        self.total_steps = total
        self.warmup_steps = steps("warmup_steps", warmup_steps, ACDC_WARMUP)
        self.phase_steps = steps("phase_steps", phase_steps, ACDC_PHASE)
        self.final_steps = steps("final_steps", final_steps, ACDC_FINAL)
        if self.warmup_steps + self.final_steps > total:
            raise ValueError(f"final_steps: the warm-up ({self.warmup_steps}) and the final "
                             f"sparse phase ({self.final_steps}) exceed total_steps ({total})")
        self.final_start = total - self.final_steps
        self.scope = resolve_scope(scope, pattern)
        super().__init__(
            model, optimizer, sparsity=sparsity, distribution=distribution, masks=masks,
            include=include, exclude=exclude, dense_first=dense_first, dense_last=dense_last,
            init=init, init_opts=init_opts, masking=masking, execution=execution,
            pattern=pattern, seed=seed,
        )

    # -- the schedule --------------------------------------------------------------------------
    def _cycle(self, step: int) -> tuple[int, int, bool]:
        """(c, o, whole) for W <= step < F: cycle c, offset o in it, and whether the cycle's
        sparse phase and a whole dense phase after it fit before F."""
        w, p = self.warmup_steps, self.phase_steps
        c, o = divmod(step - w, 2 * p)
        return c, o, w + 2 * c * p + 2 * p <= self.final_start

    def phase_at(self, step: int) -> str:
        """The phase in effect after step ``step`` (``"dense"`` or ``"sparse"``; step 0:
        before training)."""
        if step >= self.final_start:
            return "sparse"
        if step < self.warmup_steps:
            return "dense"
        _, o, whole = self._cycle(step)
        return "sparse" if whole and o < self.phase_steps else "dense"

    def due(self, step: int) -> bool:
        """At every change of phase: W + 2kP (sparse), W + 2kP + P (dense), F (sparse)."""
        if step == self.final_start:
            return True
        if step < self.warmup_steps or step > self.final_start:
            return False
        _, o, whole = self._cycle(step)
        return whole and o in (0, self.phase_steps)

    # -- masks ---------------------------------------------------------------------------------
    def initial_masks(self) -> MaskSet:
        """All ones: the dense warm-up."""
        return MaskSet.dense(self.params)

    def compressed_masks(self) -> dict[str, torch.Tensor]:
        """The largest |w| at the target sparsity (global K, or per-layer counts under the
        pattern)."""
        if self.scope == "global":
            return magnitude_masks(self.params, self.sparsity_target, scope="global")
        counts = self.layer_counts()
        return {n: pattern_topk(p.detach().abs(), counts[n], self.pattern)
                for n, p in self.params.items()}

    def update(self, step: int) -> dict[str, float]:
        """Compress (sparse phase) or decompress (dense phase)."""
        if self.phase_at(step) == "sparse":
            for name, m in self.compressed_masks().items():
                self.replace_mask(name, m.to(self.masks[name].device))
            return {"phase": 1.0, "target_sparsity": self.sparsity_target}
        for name, old in self.masks.masks.items():
            if not bool(old.all()):
                self.replace_mask(name, torch.ones_like(old), zero=~old)
        return {"phase": 0.0, "target_sparsity": 0.0}
