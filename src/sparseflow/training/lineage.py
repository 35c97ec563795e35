"""Source runs: the runs a run reads before it trains, named by config, in one place.

A method declares which runs it reads (:meth:`~sparseflow.methods.registry.MethodSpec.sources`:
the ``pruned`` gradual-pruning run, the ``dense`` run, or the ``previous_round`` of an IMP
ticket); this module turns each into the :class:`~sparseflow.config.Config` of that run,
lists a run's sources transitively for sweeps, and reads what the run needs from a finished
source (masks, rewound weights). Both ``sparseflow run`` (which trains a missing source first)
and sweeps (which schedule sources before their dependents) use these functions, so the two
always agree on which run is whose source.

A source of the ``pruned`` or ``dense`` role has the same data, model, optimiser, schedule and
layer selection as its dependent, method-neutral settings otherwise (dense init, the default
distribution) and the seed ``sparse.source_seed``; it is trained once and then shared by every
scratch run and ticket derived from it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparseflow.config import Config, Duration, SparseConfig, run_id
from sparseflow.errors import ConfigError, UserError
from sparseflow.methods import magnitude_masks
from sparseflow.methods.options import (
    GradualOptions,
    LotteryOptions,
    SelectionOptions,
    Source,
    StaticOptions,
)
from sparseflow.methods.registry import method_spec
from sparseflow.sparsity import MaskSet, check_masks
from sparseflow.store.checkpoint import list_checkpoints, load_checkpoint
from sparseflow.store.database import Store
from sparseflow.store.paths import store_path

Executor = Callable[[Config], dict[str, Any]]

#: sparse options a ``pruned``/``dense`` source keeps from its dependent: the layer selection
#: and the pruning schedule (the pruning run must prune the same way)
_KEPT = tuple(f.name for cls in (SelectionOptions, GradualOptions)
              for f in dataclasses.fields(cls))


def source_config(cfg: Config, source: Source) -> Config:
    """The config of the run ``source`` of run ``cfg`` (see the module docstring)."""
    sp = cfg.sparse
    if source.role == "previous_round":
        prev = copy.deepcopy(cfg)
        prev.seed = sp.source_seed
        prev.sparsity = cfg.sparsity if source.sparsity is None else source.sparsity
        prev.sparse = dataclasses.replace(sp, **dict(source.changes))
        return prev
    method = {"pruned": "gradual", "dense": "dense"}.get(source.role)
    if method is None:
        raise ValueError(f"source role: unknown {source.role!r}; valid: pruned, dense, "
                         "previous_round")
    keep = {} if method == "dense" else {f: getattr(sp, f) for f in _KEPT}
    src = copy.deepcopy(cfg)
    src.method = method
    src.seed = sp.source_seed
    src.init = "dense"
    src.distribution = Config().distribution
    src.sparsity = Config().sparsity if method == "dense" else cfg.sparsity
    src.sparse = dataclasses.replace(SparseConfig(), **keep)
    rewind = Duration.parse(sp.rewind, "sparse.rewind")
    if rewind.unit == "it" and rewind.amount:
        src.train.checkpoint_steps = sorted({*src.train.checkpoint_steps, rewind.amount})
    return src


def direct_sources(cfg: Config) -> list[Config]:
    """The configs of the runs ``cfg`` reads directly, in the order the method lists them."""
    spec = method_spec(cfg.method)
    return [source_config(cfg, s) for s in spec.sources(cfg.sparse, cfg.sparsity)]


def source_configs(cfg: Config) -> list[Config]:
    """Every run ``cfg`` depends on, transitively (an IMP chain), each before its dependents.

    Duplicates (the same run id) are kept once; ``cfg`` itself is not included.
    """
    order: dict[str, Config] = {}
    own = run_id(cfg)

    def visit(c: Config, stack: tuple[str, ...]) -> None:
        for src in direct_sources(c):
            rid = run_id(src)
            if rid in stack:
                raise UserError(f"run {rid} depends on itself through its sources")
            if rid not in order:
                visit(src, (*stack, rid))
                order[rid] = src
            else:
                merge_checkpoints(order[rid], src)

    visit(cfg, (own,))
    order.pop(own, None)
    return list(order.values())


def merge_checkpoints(kept: Config, other: Config) -> None:
    """Give ``kept`` the extra checkpoint steps ``other`` asks for (the same run, needed by
    several dependents with different rewind points)."""
    kept.train.checkpoint_steps = sorted({*kept.train.checkpoint_steps,
                                          *other.train.checkpoint_steps})


# -- reading what a run needs from its sources -------------------------------------------------
def _final_state(summary: dict[str, Any]) -> dict[str, Any]:
    return load_checkpoint(summary["checkpoint"])


def _masks_of(ckpt: dict[str, Any], where: str) -> dict[str, torch.Tensor]:
    try:
        return ckpt["callbacks"]["sparsifier"]["masks"]
    except KeyError:
        raise UserError(f"{where}: checkpoint holds no masks (not a sparse run)") from None


def _rewind_state(summary: dict[str, Any], rewind: Duration, steps_per_epoch: int
                  ) -> dict[str, torch.Tensor]:
    ckdir = Path(summary["checkpoint"]).parent
    step = rewind.steps(steps_per_epoch)
    ckpts = list_checkpoints(ckdir)
    if step not in ckpts:
        raise UserError(
            f"sparse.rewind: source run {summary['run_id']} has no checkpoint at step {step} "
            f"(it has {sorted(ckpts)[:8]}); retrain it with train.checkpoint_steps={step}"
        )
    return load_checkpoint(ckpts[step])["model"]


def _checkpoint_of_run(root: Path, how: str) -> Path:
    """The final checkpoint of the finished run ``how`` (an id or a unique prefix)."""
    with Store(store_path(root)) as st:
        ids = st.find_runs(how)
        run = st.get_run(ids[0]) if len(ids) == 1 else None
    if run is None or not (run.get("summary") or {}).get("checkpoint"):
        raise ConfigError(
            f"sparse.mask: {how!r} is neither random, pruned, a checkpoint file nor a "
            "finished run id"
        )
    return Path(run["summary"]["checkpoint"])


def resolve_masks(cfg: Config, params: dict[str, torch.Tensor], execute: Executor,
                  root: Path) -> dict[str, torch.Tensor] | None:
    """The masks ``sparse.mask`` names (None: a random mask of the distribution): the final
    masks of the ``pruned`` source, of a finished run, or of a checkpoint file."""
    how = cfg.sparse.mask
    if how == "random":
        return None
    if how == "pruned":
        (src,) = direct_sources(cfg)
        summary = execute(src)
        masks = _masks_of(_final_state(summary), f"run {summary['run_id']}")
    else:
        path = Path(how)
        if not path.is_file():
            path = _checkpoint_of_run(root, how)
        masks = _masks_of(load_checkpoint(path), str(path))
    missing = [n for n in params if n not in masks]
    if missing:
        raise ConfigError(f"sparse.mask: the loaded masks have no layer {missing[0]!r}")
    try:
        return check_masks({n: masks[n] for n in params}, params, "sparse.mask",
                           against="model layer")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def lottery_ticket(cfg: Config, model: nn.Module, params: dict[str, torch.Tensor],
                   execute: Executor, steps_per_epoch: int
                   ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(masks, info) of the ticket; the model's weights are set to the rewound ones.

    ``ticket=gradual``: the final masks of the pruning run, its weights at ``sparse.rewind``.
    ``ticket=imp``, round R: the final weights of round R-1 (round 0: the dense run) pruned by
    magnitude within round R-1's mask, weights rewound on the dense run.
    """
    sp = cfg.sparse
    rewind = Duration.parse(sp.rewind, "sparse.rewind")
    sources = direct_sources(cfg)
    if sp.ticket == "gradual":
        (src_cfg,) = sources
        src = execute(src_cfg)
        masks = _masks_of(_final_state(src), f"run {src['run_id']}")
        weights = _rewind_state(src, rewind, steps_per_epoch)
    else:
        dense_cfg, pruned_cfg = sources[0], sources[-1]
        src = execute(pruned_cfg)
        state = _final_state(src)
        within = state.get("callbacks", {}).get("sparsifier", {}).get("masks")
        final_w = {n: state["model"][n] for n in params}
        masks = magnitude_masks(final_w, cfg.sparsity, scope=sp.prune_scope,
                                distribution="uniform", within=within)
        weights = _rewind_state(execute(dense_cfg), rewind, steps_per_epoch)
    missing = model.load_state_dict(weights, strict=False)
    if missing.missing_keys or missing.unexpected_keys:
        raise ConfigError("lottery: the source run's model does not match this model")
    return masks, {"ticket_source": src["run_id"]}


def inherited(cfg: Config, model: nn.Module, params: dict[str, torch.Tensor],
              execute: Executor, root: Path, steps_per_epoch: int
              ) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any]]:
    """(masks, summary info) that run ``cfg`` takes from other runs before it trains.

    Decided by the method's option classes, not its name: a method with
    :class:`~sparseflow.methods.options.LotteryOptions` gets a ticket (its weights rewound
    here), one with :class:`~sparseflow.methods.options.StaticOptions` the masks
    ``sparse.mask`` names (shuffled within each layer with ``sparse.shuffle_mask``, seeded by
    the run's seed); any other method: nothing (None: it draws its own).
    """
    options = method_spec(cfg.method).options
    if any(issubclass(c, LotteryOptions) for c in options):
        return lottery_ticket(cfg, model, params, execute, steps_per_epoch)
    if any(issubclass(c, StaticOptions) for c in options):
        masks = resolve_masks(cfg, params, execute, root)
        if masks is not None and cfg.sparse.shuffle_mask:
            g = torch.Generator().manual_seed(cfg.seed)
            masks = MaskSet(params, masks).shuffled(g).masks
        return masks, {}
    return None, {}
