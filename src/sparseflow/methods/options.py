"""Each method's own options: typed dataclasses whose fields are the ``sparse.*`` config keys.

A method's options live here, beside the method, not in one shared bag: the registry
(:mod:`sparseflow.methods.registry`) says which option classes a method reads, the run config's
``sparse`` section is the union of the registered classes' fields (one flat
``--set sparse.x=...`` surface), and each class turns its fields into the keyword arguments of
the method's constructor (:meth:`arguments`), says how many held-out batches the method needs
(:meth:`heldout_batches`) and which other runs it reads first (:meth:`sources`).

The methods below are called on the option class with any object that holds its fields (an
instance of the class, or the config's whole ``sparse`` section), e.g.
``RigLOptions.arguments(cfg.sparse, context)``.

Fractions of training become steps with :func:`sparseflow.sparsity.step_at`
(``max(1, round(f * total))``, halves to even).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparseflow.sparsity import DISTRIBUTIONS, step_at
from sparseflow.typed import field


@dataclass
class BuildContext:
    """What a method needs from the run besides its options.

    ``masks``: the masks its sources or ``sparse.mask`` gave (None: draw a random mask);
    ``heldout``: the run's fixed held-out batches (the first measures gradient flow);
    ``selection``: which weights are sparsified (``sparsity.select_weights`` keywords).
    """

    model: nn.Module
    total_steps: int
    input_shape: tuple[int, ...]
    heldout: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()
    selection: Mapping[str, Any] | None = None
    masks: Mapping[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class Source:
    """A run that a method reads before it trains.

    ``role``: ``pruned`` (the gradual magnitude-pruning run of the same setting, whose final
    masks and early checkpoints are read), ``dense`` (the dense run of the same setting) or
    ``previous_round`` (the same run one round earlier, e.g. iterative magnitude pruning);
    ``sparsity`` and ``changes`` (sparse options) are what differ for ``previous_round``.
    """

    role: str
    sparsity: float | None = None
    changes: tuple[tuple[str, Any], ...] = ()


class Options:
    """Base of the option classes: no arguments, one held-out batch, no sources."""

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        """Keyword arguments of the method's constructor from these options."""
        return {}

    @classmethod
    def heldout_batches(cls, opts: Any) -> int:
        """Fixed held-out batches the method needs (the first also measures gradient flow)."""
        return 1

    @classmethod
    def sources(cls, opts: Any, sparsity: float) -> list[Source]:
        """Runs the method reads before it trains, in the order they must be trained."""
        return []


# -- options every sparse method shares -----------------------------------------------------
@dataclass
class SelectionOptions(Options):
    """Which Linear/Conv weights are sparsified (``sparsity.select_weights``)."""

    layers: list[str] = field(
        default_factory=list, help="Weights to sparsify (names or fnmatch patterns); empty: "
        "every Linear/Conv weight."
    )
    dense_first: bool = field(False, help="Keep the first sparsifiable layer dense.")
    dense_last: bool = field(False, help="Keep the last sparsifiable layer dense.")

    @classmethod
    def selection(cls, opts: Any) -> dict[str, Any]:
        """Keywords of ``sparsity.select_weights``."""
        return {"include": list(opts.layers) or None, "dense_first": opts.dense_first,
                "dense_last": opts.dense_last}


@dataclass
class SparseInitOptions(Options):
    """Options of the sparsity-aware init (``init=sparse``, docs/science.md section 2)."""

    init_mode: str = field(
        "fan_in", choices=("fan_in", "fan_out", "fan_avg"), help="init=sparse: fan used."
    )
    init_distribution: str = field(
        "normal", choices=("normal", "uniform"), help="init=sparse: distribution."
    )
    init_gain2: float = field(
        2.0, low=0.0, low_open=True, help="init=sparse: variance gain^2 / fan (2 = He/ReLU)."
    )

    @classmethod
    def init_opts(cls, opts: Any) -> dict[str, Any]:
        """Keywords of ``sparsity.initialize_`` for the sparse init."""
        return {"mode": opts.init_mode, "distribution": opts.init_distribution,
                "gain2": opts.init_gain2}


@dataclass
class MaskingOptions(Options):
    """How masked weights are kept at zero around the optimiser step, and how layers run."""

    masking: str = field(
        "auto", choices=("auto", "grads", "weights", "both"), hash=False,
        help="How masked weights stay zero: zero their gradients before the step, zero the "
        "weights after it, or both; auto = gradients only where that is exact (torch's SGD, "
        "Adam, AdamW, RMSprop, Adagrad...). The trained numbers are the same.",
    )
    execution: str = field(
        "masked", choices=("masked", "sparse", "auto"), hash=False,
        help="How sparsified Linear layers run: masked (dense weights with zeros), sparse "
        "(the non-zero values are the parameter, CSR kernels: memory and time scale with the "
        "non-zeros) or auto (sparse where predicted faster from shape and density). The same "
        "training up to float32 rounding (docs/science.md section 16).",
    )


@dataclass
class PatternOptions(Options):
    """Which masks a layer may have (``sparsity.patterns``, docs/science.md section 17)."""

    pattern: str = field(
        "unstructured", help="Sparsity pattern every method keeps: unstructured, N:M (e.g. "
        "2:4: every group of M consecutive inputs holds N active; fixes sparsity = 1 - N/M), "
        "block:BxB (whole B x B blocks), unit (whole output units / filters) or fan_in (every "
        "unit the same number of active inputs)."
    )


COMMON_OPTIONS: tuple[type[Options], ...] = (SelectionOptions, SparseInitOptions, MaskingOptions,
                                             PatternOptions)


# -- method families ---------------------------------------------------------------------
@dataclass
class SourceOptions(Options):
    """The seed of the runs a method reads (the pruning run of a scratch mask or a ticket)."""

    source_seed: int = field(
        1000, low=0, help="Seed of the pruning run that provides masks/weights (mask=pruned, "
        "lottery). Kept apart from the usual run seeds so that a scratch run never starts from "
        "the pruning run's own init (which would make it the lottery ticket)."
    )


@dataclass
class StaticOptions(SourceOptions):
    """Static sparse training: where the fixed mask comes from."""

    mask: str = field(
        "random", help="static/scratch mask: 'random' (the distribution), 'pruned' (the final "
        "mask of the gradual-pruning run of the same settings, seed sparse.source_seed), a "
        "run id, or a checkpoint file."
    )
    shuffle_mask: bool = field(False, help="Shuffle a loaded mask within each layer.")
    dense_width: int | None = field(
        None, low=1, help="distribution=scsdc: width W_d of the dense partner MLP."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        return {"masks": ctx.masks}

    @classmethod
    def sources(cls, opts: Any, sparsity: float) -> list[Source]:
        return [Source("pruned")] if opts.mask == "pruned" else []


@dataclass
class DynamicOptions(Options):
    """SET and RigL: when and how much of the topology changes."""

    update_every: int = field(100, low=1, help="SET/RigL: steps between mask updates.")
    drop_fraction: float = field(0.3, low=0.0, high=1.0, help="SET/RigL: initial drop fraction.")
    drop_schedule: str = field(
        "cosine", choices=("cosine", "constant", "lr"), help="SET/RigL: drop-fraction schedule."
    )
    update_end: float = field(
        0.75, low=0.0, high=1.0, low_open=True, former_name="t_end",
        help="SET/RigL: last mask update, as a fraction of training (the step t_end = "
        "round(update_end * total steps) of the Python API; formerly sparse.t_end).",
    )
    exclude_dropped: bool = field(
        False, help="SET/RigL: just-dropped weights may not be regrown in the same update."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        return {"t_end": step_at(opts.update_end, ctx.total_steps),
                "update_every": opts.update_every, "drop_fraction": opts.drop_fraction,
                "drop_schedule": opts.drop_schedule, "exclude_dropped": opts.exclude_dropped}


@dataclass
class RigLOptions(DynamicOptions):
    """RigL: which batch's dense gradient scores the growth."""

    grow_batch: str = field(
        "train", choices=("train", "heldout"), help="RigL: dense gradient of the current "
        "training batch, or of a second fixed held-out batch (data.heldout examples)."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        from sparseflow.methods.base import make_grad_fn
        from sparseflow.sparsity import select_weights

        out = DynamicOptions.arguments(opts, ctx)
        out["grad_fn"] = None
        if opts.grow_batch == "heldout":
            if not ctx.heldout:
                raise ValueError("sparse.grow_batch=heldout needs data.heldout > 0")
            x, y = ctx.heldout[-1]
            params = select_weights(ctx.model, **(ctx.selection or {}))
            out["grad_fn"] = make_grad_fn(ctx.model, params, x, y)
        return out

    @classmethod
    def heldout_batches(cls, opts: Any) -> int:
        """A second batch for the growth scores when ``grow_batch=heldout`` (Evci et al. 2022
        use two separate batches)."""
        return 2 if opts.grow_batch == "heldout" else 1


@dataclass
class MagnitudeOptions(Options):
    """Magnitude pruning: one threshold per layer or one over all layers."""

    prune_scope: str = field(
        "layer", choices=("layer", "global"), help="gradual/oneshot/lottery(imp): magnitude "
        "per layer or one global threshold."
    )
    prune_distribution: str = field(
        "uniform", choices=DISTRIBUTIONS, help="gradual/oneshot: per-layer targets "
        "(scope=layer)."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        # pruning starts from the dense init; its distribution is the pruning targets'
        return {"scope": opts.prune_scope, "distribution": opts.prune_distribution,
                "init": "dense", "init_opts": None}


@dataclass
class GradualOptions(MagnitudeOptions):
    """Gradual magnitude pruning (Zhu & Gupta 2018): the cubic schedule's window."""

    prune_begin: float = field(
        0.25, low=0.0, high=1.0, help="gradual: first pruning step, fraction of training."
    )
    prune_end: float = field(
        0.6, low=0.0, high=1.0, help="gradual: last pruning step, fraction of training."
    )
    prune_every: int = field(100, low=1, help="gradual: steps between pruning steps.")
    initial_sparsity: float = field(
        0.0, low=0.0, high=1.0, high_open=True, help="gradual: sparsity at prune_begin."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        return {**MagnitudeOptions.arguments(opts, ctx),
                "t_begin": step_at(opts.prune_begin, ctx.total_steps),
                "t_end": step_at(opts.prune_end, ctx.total_steps), "every": opts.prune_every,
                "initial_sparsity": opts.initial_sparsity}


@dataclass
class OneShotOptions(MagnitudeOptions):
    """One-shot magnitude pruning: when to prune."""

    oneshot_at: float = field(
        0.5, low=0.0, high=1.0, help="oneshot: pruning step, as a fraction of training."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        return {**MagnitudeOptions.arguments(opts, ctx),
                "t_prune": step_at(opts.oneshot_at, ctx.total_steps)}


def imp_round_sparsity(final: float, rounds: int, r: int) -> float:
    """Sparsity after round r of R when each round keeps the same fraction:
    ``1 - (1 - final)^(r / R)``."""
    return 1.0 - (1.0 - final) ** (r / rounds)


@dataclass
class LotteryOptions(SourceOptions):
    """Lottery tickets: where the mask comes from and where the weights rewind to."""

    ticket: str = field(
        "gradual", choices=("gradual", "imp"), help="lottery: mask from the end of a gradual "
        "pruning run (Evci et al. 2022) or iterative magnitude pruning over sparse.rounds."
    )
    rounds: int = field(1, low=1, help="lottery with ticket=imp: rounds of train-prune-rewind.")
    rewind: str = field(
        "0it", help="lottery: rewind the weights to this step of the source run ('0it' = init)."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        # the run has set the weights to the rewound ones: masking only
        return {"masks": ctx.masks, "init": "keep", "init_opts": None}

    @classmethod
    def sources(cls, opts: Any, sparsity: float) -> list[Source]:
        """gradual: the pruning run; imp round R: the dense run (its rewind point) and
        round R-1 (whose final weights are pruned; round 0 is the dense run)."""
        if opts.ticket == "gradual":
            return [Source("pruned")]
        if opts.rounds == 1:
            return [Source("dense")]
        prev = imp_round_sparsity(sparsity, opts.rounds, opts.rounds - 1)
        return [Source("dense"),
                Source("previous_round", prev, (("rounds", opts.rounds - 1),))]


@dataclass
class PruneAtInitOptions(Options):
    """SNIP and GraSP: how the scores at init become a mask; scored on the first held-out batch."""

    pai_scope: str = field(
        "global", choices=("global", "layer"), help="snip/grasp/synflow: one global threshold "
        "or the distribution's count per layer."
    )

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        if not ctx.heldout:
            raise ValueError("scores weights on the held-out batch: set data.heldout > 0")
        dev = next(ctx.model.parameters()).device
        x, y = ctx.heldout[0]
        return {"scope": opts.pai_scope, "batch": (x.to(dev), y.to(dev))}


@dataclass
class SynFlowOptions(PruneAtInitOptions):
    """SynFlow: data-free, iterated scoring on an all-ones input of the data's shape."""

    synflow_iterations: int = field(100, low=1, high=100_000,
                                    help="synflow: pruning iterations.")

    @classmethod
    def arguments(cls, opts: Any, ctx: BuildContext) -> dict[str, Any]:
        return {"scope": opts.pai_scope, "input_shape": ctx.input_shape,
                "iterations": opts.synflow_iterations}
