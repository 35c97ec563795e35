"""GraNet (Liu et al. 2021): gradual magnitude pruning with zero-cost neuroregeneration
(docs/science.md section 3).

Gradual magnitude pruning on the cubic schedule of Zhu & Gupta (2018), from an initial
sparsity s_i (0: dense-to-sparse; e.g. 0.5 from a random mask of the distribution:
sparse-to-sparse) to the target s_f,

    s_t = s_f + (s_i - s_f) (1 - p)^3,   p = clip((t - t_0) / (t_f - t_0), 0, 1),

at every ``every``-th step t in [t_0, t_f] (and at t_f). Right after each pruning step,
*neuroregeneration*: each layer drops the ``floor(r_t * n_active)`` active weights of smallest
|w| and regrows as many where the dense gradient |dL/dW| is largest (RigL's rule, just-dropped
and just-pruned positions included), with the regeneration fraction cosine-decayed over
training,

    r_t = r_min + (r_0 - r_min) (1 + cos(pi min(t, T) / T)) / 2.

Regeneration keeps each layer's count, so the counts follow the pruning schedule; as in the
authors' code it also runs at the update steps after t_f (up to ``regrow_end``, by default the
end of training), where GraNet is RigL with that schedule. Grown weights start at exactly zero
with their optimiser state reset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparseflow.methods.base import GradFn, as_pattern, check_choice, check_int
from sparseflow.methods.calls import fill_doc, named_errors
from sparseflow.methods.dynamic import GRAD_FN_DOC, RigL
from sparseflow.methods.options import BuildContext, Options
from sparseflow.methods.pruning import SCOPES, magnitude_masks, zhu_gupta_sparsity
from sparseflow.sparsity import MaskSet, Pattern, layer_counts, round_half_even, step_at
from sparseflow.typed import field

#: the authors' defaults (VITA-Group/GraNet, CIFAR scripts: 160 epochs, pruning from epoch 0
#: to epoch 110, an update every 1000 iterations, death rate 0.5 cosine-annealed to 0.005)
GRANET_END = 110 / 160
GRANET_EVERY = 1000
GRANET_REGROW = 0.5
GRANET_REGROW_MIN = 0.005

GRANET_OPTIONS_DOC = """\
total_steps : int
    The number of optimiser steps of training T: the period of the cosine of r_t, and the
    default of ``t_end`` and ``regrow_end``.
t_begin : int, default 0
    t_0, the step at which the cubic schedule starts (s_i until then); no update before it.
t_end : int, optional
    t_f, the step of the last pruning update (>= t_begin, >= 1); default
    ``sparsity.step_at(110 / 160, total_steps)`` (the authors' CIFAR runs).
every : int, default 1000
    Delta T, steps between updates: pruning and neuroregeneration at every multiple of
    ``every`` in [t_begin, max(t_end, regrow_end)], and at t_end.
initial_sparsity : float, default 0.0
    s_i, in [0, sparsity]: 0 starts dense (dense-to-sparse), more from a random mask with the
    distribution's counts at s_i (sparse-to-sparse; the paper uses 0.5 from ERK).
regrow_fraction : float, default 0.5
    r_0, in [0, 1]: the fraction of each layer's active weights dropped by magnitude and
    regrown by gradient after a pruning step (0: plain gradual magnitude pruning).
regrow_min : float, default 0.005
    r_min, in [0, regrow_fraction]: the value the cosine of r_t decays to at step T.
regrow_end : int, optional
    The last step with neuroregeneration (default ``total_steps``: at every update, as the
    authors' code; ``t_end``: only at the pruning steps).
scope : {"global", "layer"}, optional
    Pruning by one magnitude threshold over all layers (the paper's GraNet; the default
    without a pattern) or per layer with the distribution's counts (close to the authors'
    ``GraNet_uniform`` with ``distribution="uniform"``; the default, and the only choice,
    under a structured pattern). Neuroregeneration is per layer either way.
"""


@dataclass
class GraNetOptions(Options):
    """GraNet: the pruning schedule's window and interval, and the neuroregeneration."""

    granet_begin: float = field(
        0.0, low=0.0, high=1.0, help="granet: t_0, start of the gradual pruning, as a fraction "
        "of training (paper: 0)."
    )
    granet_end: float = field(
        GRANET_END, low=0.0, high=1.0, low_open=True, help="granet: t_f, the last pruning "
        "step, as a fraction of training (paper: epoch 110 of 160 on CIFAR, 30 of 100 on "
        "ImageNet)."
    )
    granet_every: int = field(
        GRANET_EVERY, low=1, help="granet: Delta T, steps between pruning + neuroregeneration "
        "updates (paper: 1000 on CIFAR, 4000 on ImageNet)."
    )
    granet_initial_sparsity: float = field(
        0.0, low=0.0, high=1.0, high_open=True, help="granet: s_i, the sparsity at t_0: 0 "
        "dense-to-sparse, > 0 sparse-to-sparse from a random mask of the distribution "
        "(paper: 0 or 0.5)."
    )
    granet_regrow: float = field(
        GRANET_REGROW, low=0.0, high=1.0, help="granet: r_0, the fraction of each layer's "
        "active weights dropped by magnitude and regrown by gradient at an update "
        "(cosine-decayed; 0: plain gradual magnitude pruning)."
    )
    granet_regrow_min: float = field(
        GRANET_REGROW_MIN, low=0.0, high=1.0, help="granet: r_min, the value the cosine of "
        "the regeneration fraction reaches at the end of training (<= granet_regrow)."
    )
    granet_regrow_end: float = field(
        1.0, low=0.0, high=1.0, low_open=True, help="granet: last neuroregeneration step, as "
        "a fraction of training (1: every update to the end, as the authors' code; "
        "granet_end: only at the pruning steps)."
    )
    granet_scope: str = field(
        "auto", choices=("auto", "global", "layer"), help="granet: pruning by one magnitude "
        "threshold over all layers (global, the paper) or per layer with the distribution's "
        "counts; auto: global, or layer under a structured sparse.pattern."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        total = ctx.total_steps
        # t_0 is a schedule origin, not an update step: 0 stays 0 (step_at would give 1)
        begin = round_half_even(opts.granet_begin * total) if opts.granet_begin > 0 else 0
        return {"total_steps": total, "t_begin": begin,
                "t_end": step_at(opts.granet_end, total), "every": opts.granet_every,
                "initial_sparsity": opts.granet_initial_sparsity,
                "regrow_fraction": opts.granet_regrow, "regrow_min": opts.granet_regrow_min,
                "regrow_end": step_at(opts.granet_regrow_end, total),
                "scope": None if opts.granet_scope == "auto" else opts.granet_scope}


def resolve_scope(scope: str | None, pattern: str | Pattern) -> str:
    """``scope``, or ``global`` (``layer`` under a structured pattern) when None; ValueError
    for ``global`` with a structured pattern (one threshold over all layers cannot keep it)."""
    structured = as_pattern(pattern).structured
    if scope is None:
        return "layer" if structured else "global"
    check_choice("scope", scope, SCOPES)
    if structured and scope != "layer":
        raise ValueError(f"scope: pattern {pattern} needs scope='layer' (one magnitude "
                         f"threshold over all layers cannot keep it), got {scope!r}")
    return scope


@fill_doc(granet=GRANET_OPTIONS_DOC, grad_fn=GRAD_FN_DOC)
class GraNet(RigL):
    """GraNet (Liu, Chen, Chen, Atashgahi, Yin, Kou, Shen, Pechenizkiy, Wang, Mocanu 2021,
    "Sparse Training via Boosting Pruning Plasticity with Neuroregeneration", NeurIPS):
    gradual magnitude pruning with zero-cost neuroregeneration.

    At every ``every``-th step t from ``t_begin`` (and at ``t_end``):

    1. pruning (t <= t_end): the masks keep the largest |w| among the active weights at the
       cubic schedule's sparsity ``s_t = s_f + (s_i - s_f) (1 - p)^3``,
       ``p = clip((t - t_begin) / (t_end - t_begin), 0, 1)``: one threshold over all layers
       (``scope="global"``, ``K_t = round_half_up((1 - s_t) sum numel)`` kept) or per layer
       (``magnitude_masks``: the distribution's counts, each rounded on its own);
    2. neuroregeneration (t <= regrow_end): each layer drops its
       ``k = floor(r_t * n_active)`` active weights of smallest |w| and grows the k inactive
       positions of largest |dL/dW| (the dense gradient of the training batch, captured before
       the optimiser masks it, as RigL; or ``grad_fn()``), with
       ``r_t = r_min + (r_0 - r_min) (1 + cos(pi min(t, T) / T)) / 2``. Grown weights are 0
       with reset optimiser state; the layer keeps its count.

    Under a structured pattern the pruning keeps the pattern (``magnitude_masks(...,
    pattern=)``: N:M walks n_t:M down to N:M with uniform counts) and the regeneration drops
    atoms over the layer and regrows per group (``sparsity.drop_and_grow``).

    Parameters
    ----------
    model : nn.Module
        Any module with materialised parameters.
    optimizer : torch.optim.Optimizer
        Any torch optimiser over the model's parameters.
    %(granet)s
    %(grad_fn)s
    %(target)s
    %(common)s

    Notes
    -----
    Defaults from the authors' code (VITA-Group/GraNet): Delta T = 1000 iterations, pruning
    from epoch 0 to 110 of 160 (CIFAR; ImageNet: 0 to 30 of 100, Delta T = 4000), r_0 = 0.5
    cosine-annealed over the whole training to 0.005, global magnitude pruning, s_i = 0 or
    0.5 from an ERK mask. Differences: the regeneration drops ``floor`` (the authors'
    ``ceil``) of ``r_t * n_active``; a just-dropped weight that is regrown restarts at zero
    (the authors' keeps its value).
    """

    name = "granet"

    @named_errors
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        t_begin: int = 0,
        t_end: int | None = None,
        every: int = GRANET_EVERY,
        initial_sparsity: float = 0.0,
        regrow_fraction: float = GRANET_REGROW,
        regrow_min: float = GRANET_REGROW_MIN,
        regrow_end: int | None = None,
        scope: str | None = None,
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
        total = check_int("total_steps", total_steps, 1)
        t_begin = check_int("t_begin", t_begin, 0)
        t_end = step_at(GRANET_END, total) if t_end is None else check_int("t_end", t_end, 1)
        if t_end < t_begin:
            raise ValueError(f"t_end: the last pruning step {t_end} is before t_begin "
                             f"{t_begin}")
        every = check_int("every", every, 1)
        regrow_end = total if regrow_end is None else check_int("regrow_end", regrow_end, 1)
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity: {sparsity!r} is out of range [0, 1)")
        if not 0.0 <= initial_sparsity <= sparsity:
            raise ValueError(f"initial_sparsity: {initial_sparsity!r} must be in [0, "
                             f"sparsity={sparsity}]")
        if not 0.0 <= regrow_fraction <= 1.0:
            raise ValueError(f"regrow_fraction: {regrow_fraction!r} is out of range [0, 1]")
        if not 0.0 <= regrow_min <= regrow_fraction:
            raise ValueError(f"regrow_min: {regrow_min!r} must be in [0, regrow_fraction="
                             f"{regrow_fraction}]")
        self.scope = resolve_scope(scope, pattern)
        self.total_steps = total
        self.t_begin, self.every, self.regrow_end = t_begin, every, regrow_end
        self.initial_sparsity, self.final_sparsity = float(initial_sparsity), float(sparsity)
        self.regrow_fraction, self.regrow_min = float(regrow_fraction), float(regrow_min)
        super().__init__(
            model, optimizer, t_end=t_end, update_every=every, drop_fraction=regrow_fraction,
            drop_schedule="cosine", exclude_dropped=False, grad_fn=grad_fn, sparsity=sparsity,
            distribution=distribution, masks=masks, include=include, exclude=exclude,
            dense_first=dense_first, dense_last=dense_last, init=init, init_opts=init_opts,
            masking=masking, execution=execution, pattern=pattern, seed=seed,
        )  # SET's t_end (its last update) is t_f here; updates run to max(t_end, regrow_end)

    # -- schedules -----------------------------------------------------------------------------
    def target(self, step: int) -> float:
        """s_t of the cubic schedule (``zhu_gupta_sparsity``)."""
        return zhu_gupta_sparsity(step, self.initial_sparsity, self.final_sparsity,
                                  self.t_begin, self.t_end)

    def regrow_fraction_at(self, step: int) -> float:
        """r_t = r_min + (r_0 - r_min) (1 + cos(pi min(t, T) / T)) / 2."""
        t = min(step, self.total_steps)
        cos = 0.5 * (1.0 + math.cos(math.pi * t / self.total_steps))
        return self.regrow_min + (self.regrow_fraction - self.regrow_min) * cos

    def drop_fraction_at(self, step: int) -> float:
        """The neuroregeneration fraction r_t (:meth:`regrow_fraction_at`)."""
        return self.regrow_fraction_at(step)

    def due(self, step: int) -> bool:
        """Every ``every`` steps in [t_begin, max(t_end, regrow_end)], and at t_end."""
        if step < self.t_begin:
            return False
        if step == self.t_end:
            return True
        return step % self.every == 0 and step <= max(self.t_end, self.regrow_end)

    def regrows_at(self, step: int) -> bool:
        """Whether the update at ``step`` regenerates (up to ``regrow_end``, r_0 > 0)."""
        return self.regrow_fraction > 0.0 and step <= self.regrow_end

    def needs_dense_grads(self, step: int) -> bool:
        """The training batch's dense gradient scores the regrowth at a regenerating update."""
        return self.grad_fn is None and self.due(step) and self.regrows_at(step)

    # -- masks ---------------------------------------------------------------------------------
    def _pruning_distribution(self) -> str:
        # N:M walks every layer through n_t:M together (pattern_counts ignores it too)
        return "uniform" if self.pattern.kind == "nm" else self.distribution

    def initial_masks(self) -> MaskSet:
        """Dense when s_i = 0; else random with the distribution's exact counts at s_i (under
        a structured pattern: uniform over the masks it allows, with the counts of the pruning
        rule, so that pruning never has to grow a layer)."""
        s_i = self.initial_sparsity
        if s_i == 0.0:
            return MaskSet.dense(self.params)
        if not self.pattern.structured:
            counts = layer_counts(self.shapes, s_i, self.distribution)
            return MaskSet.random(self.params, counts, self.generator)
        scores = {n: torch.rand(self.shapes[n], generator=self.generator, dtype=torch.float64)
                  for n in self.params}
        masks = magnitude_masks(scores, s_i, scope="layer",
                                distribution=self._pruning_distribution(), pattern=self.pattern)
        return MaskSet(self.params, {n: m.to(self.params[n].device) for n, m in masks.items()})

    def prune(self, step: int) -> float:
        """Prune to s_t by magnitude among the active weights; returns s_t."""
        s_t = self.target(step)
        new = magnitude_masks(self.params, s_t, scope=self.scope,
                              distribution=self._pruning_distribution(),
                              within=self.masks.masks, pattern=self.pattern)
        for name, m in new.items():
            if not torch.equal(m, self.masks[name]):
                self.replace_mask(name, m)
        return s_t

    def update(self, step: int) -> dict[str, float]:
        """Pruning (up to t_end), then neuroregeneration (up to regrow_end)."""
        stats: dict[str, float] = {}
        if step <= self.t_end:
            stats["target_sparsity"] = self.prune(step)
        if self.regrows_at(step):
            stats["regrow_fraction"] = self.regrow_fraction_at(step)
            super().update(step)  # RigL's drop-and-grow with r_t; clears the dense gradients
        else:
            self._dense_grads = None
        return stats
