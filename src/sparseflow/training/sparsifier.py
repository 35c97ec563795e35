"""Sparse methods inside a run: the sparsifier callback, mask sources, lottery tickets, small dense.

Runs that depend on other runs name them by config, not by hand: ``sparse.mask=pruned`` and
``method=lottery`` use the gradual-pruning run with the same data, model, optimiser, schedule and
sparsity (seed ``sparse.source_seed``); the source is trained first if the store lacks it, and is
then shared by every scratch run and ticket derived from it. IMP tickets chain: round r's source
is round r-1, round 0 is the dense run.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparseflow.config import Config, Duration, SparseConfig
from sparseflow.data import Dataset
from sparseflow.errors import ConfigError, UserError
from sparseflow.methods import (
    PAI_METHODS,
    SET,
    GradualPruning,
    OneShotPruning,
    RigL,
    RigLInverted,
    Sparsifier,
    magnitude_masks,
    make_grad_fn,
    pruned_at_init,
)
from sparseflow.sparsity import layer_counts, select_weights
from sparseflow.store.checkpoint import list_checkpoints, load_checkpoint
from sparseflow.training.callbacks import Callback

TOPOLOGY = "topology/"


class SparsifierCallback(Callback):
    """Calls ``sparsifier.step()`` after every optimiser step and logs topology telemetry."""

    name = "sparsifier"

    def __init__(self, sparsifier: Sparsifier) -> None:
        self.sparsifier = sparsifier
        # called with ("before" | "after", trainer) around every mask update (flow measurement)
        self.listeners: list[Callable[[str, Any], None]] = []

    def on_train_start(self, trainer: Any) -> None:
        if trainer.step == 0:
            trainer.log(0, {TOPOLOGY + k: v for k, v in self.sparsifier.telemetry().items()})

    def after_step(self, trainer: Any) -> None:
        s = self.sparsifier
        due = bool(self.listeners) and s.due(s.step_count + 1)
        if due:
            for listener in self.listeners:
                listener("before", trainer)
        stats = s.step()
        if stats:
            trainer.log(trainer.step, {TOPOLOGY + k: v for k, v in stats.items()})
        if due:
            for listener in self.listeners:
                listener("after", trainer)

    def on_train_end(self, trainer: Any, summary: dict[str, Any]) -> None:
        summary.update(self.sparsifier.summary(trainer.model))

    def state_dict(self) -> dict[str, Any]:
        return self.sparsifier.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sparsifier.load_state_dict(state)


def _selection(cfg: Config) -> dict[str, Any]:
    s = cfg.sparse
    return {"include": list(s.layers) or None, "dense_first": s.dense_first,
            "dense_last": s.dense_last}


def _common(cfg: Config) -> dict[str, Any]:
    s = cfg.sparse
    opts = {"mode": s.init_mode, "distribution": s.init_distribution, "gain2": s.init_gain2}
    return {**_selection(cfg), "sparsity": cfg.sparsity, "distribution": cfg.distribution,
            "init": cfg.init, "init_opts": opts if cfg.init == "sparse" else None,
            "masking": s.masking, "seed": cfg.seed}


def _frac_step(fraction: float, total: int) -> int:
    return max(1, round(fraction * total))


# -- source runs ---------------------------------------------------------------------------
Executor = Callable[[Config], dict[str, Any]]


def _base_source(cfg: Config, method: str, *, sparsity: float | None = None) -> Config:
    """The config of a source run: same data/model/optimiser/schedule, method-neutral fields."""
    sp = cfg.sparse
    keep = {f: getattr(sp, f) for f in ("layers", "dense_first", "dense_last", "prune_begin",
                                        "prune_end", "prune_every", "prune_scope",
                                        "prune_distribution", "initial_sparsity")}
    src = copy.deepcopy(cfg)
    src.method = method
    src.seed = sp.source_seed
    src.init = "dense"
    src.distribution = Config().distribution
    src.sparsity = cfg.sparsity if sparsity is None else sparsity
    if method == "dense":
        src.sparsity = Config().sparsity
        keep = {}
    src.sparse = dataclasses.replace(SparseConfig(), **keep)
    rewind = Duration.parse(cfg.sparse.rewind, "sparse.rewind")
    if rewind.unit == "it" and rewind.amount:
        src.train.checkpoint_steps = sorted({*src.train.checkpoint_steps, rewind.amount})
    return src


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


def _imp_round_sparsity(final: float, rounds: int, r: int) -> float:
    """Sparsity after round r of R when each round keeps the same fraction."""
    return 1.0 - (1.0 - final) ** (r / rounds)


def resolve_masks(cfg: Config, params: dict[str, torch.Tensor], execute: Executor,
                  root: Path) -> dict[str, torch.Tensor] | None:
    """The masks ``sparse.mask`` names (None: a random mask of the distribution)."""
    how = cfg.sparse.mask
    if how == "random":
        return None
    if how == "pruned":
        summary = execute(_base_source(cfg, "gradual"))
        masks = _masks_of(_final_state(summary), f"run {summary['run_id']}")
    else:
        path = Path(how)
        if not path.is_file():
            from sparseflow.store.database import Store
            from sparseflow.store.paths import store_path

            with Store(store_path(root)) as st:
                ids = st.find_runs(how)
                run = st.get_run(ids[0]) if len(ids) == 1 else None
            if run is None or not (run.get("summary") or {}).get("checkpoint"):
                raise ConfigError(
                    f"sparse.mask: {how!r} is neither random, pruned, a checkpoint file nor a "
                    "finished run id"
                )
            path = Path(run["summary"]["checkpoint"])
        masks = _masks_of(load_checkpoint(path), str(path))
    for name, p in params.items():
        if name not in masks:
            raise ConfigError(f"sparse.mask: the loaded masks have no layer {name!r}")
        if tuple(masks[name].shape) != tuple(p.shape):
            raise ConfigError(
                f"sparse.mask: layer {name!r} has shape {tuple(masks[name].shape)} in the "
                f"loaded masks but {tuple(p.shape)} in the model"
            )
    return {n: masks[n] for n in params}


def lottery_ticket(cfg: Config, model: nn.Module, params: dict[str, torch.Tensor],
                   execute: Executor, steps_per_epoch: int
                   ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(masks, info) of the ticket; the model's weights are set to the rewound ones."""
    sp = cfg.sparse
    rewind = Duration.parse(sp.rewind, "sparse.rewind")
    if sp.ticket == "gradual":
        src = execute(_base_source(cfg, "gradual"))
        masks = _masks_of(_final_state(src), f"run {src['run_id']}")
        weights = _rewind_state(src, rewind, steps_per_epoch)
        info = {"ticket_source": src["run_id"]}
    else:
        # round R prunes the weights of round R-1 (round 0: the dense run) within its mask
        r = sp.rounds
        prev = _imp_round_sparsity(cfg.sparsity, r, r - 1) if r > 1 else None
        if r == 1:
            src_cfg = _base_source(cfg, "dense")
        else:
            src_cfg = copy.deepcopy(cfg)
            src_cfg.seed = sp.source_seed
            src_cfg.sparsity = prev
            src_cfg.sparse = dataclasses.replace(sp, rounds=r - 1)
        src = execute(src_cfg)
        state = _final_state(src)
        within = state.get("callbacks", {}).get("sparsifier", {}).get("masks")
        final_w = {n: state["model"][n] for n in params}
        masks = magnitude_masks(final_w, cfg.sparsity, scope=sp.prune_scope,
                                distribution="uniform", within=within)
        root_cfg = _base_source(cfg, "dense")
        weights = _rewind_state(execute(root_cfg), rewind, steps_per_epoch)
        info = {"ticket_source": src["run_id"]}
    missing = model.load_state_dict(weights, strict=False)
    if missing.missing_keys or missing.unexpected_keys:
        raise ConfigError("lottery: the source run's model does not match this model")
    return masks, info


def small_dense_widths(cfg: Config, data: Dataset) -> list[int]:
    """Hidden widths of the dense model with as many weights as the sparse one would keep."""
    from sparseflow.models import build_model
    from sparseflow.models.sizing import small_dense_widths as shrink

    a = cfg.arch
    opts = {"depth": a.depth, "width": a.width, "activation": a.activation,
            "batchnorm": a.batchnorm, "skip": a.skip}
    with torch.device("meta"):
        full = build_model(cfg.model, data.input_shape, data.num_classes, widths=a.widths, **opts)
    all_weights = select_weights(full)
    chosen = select_weights(full, **_selection(cfg))
    counts = layer_counts({n: tuple(p.shape) for n, p in chosen.items()}, cfg.sparsity,
                          cfg.distribution)
    target = sum(counts.values()) + sum(p.numel() for n, p in all_weights.items()
                                        if n not in chosen)
    return list(shrink(cfg.model, data.input_shape, data.num_classes, target, widths=a.widths,
                       **opts))


def build_sparsifier(cfg: Config, model: nn.Module, optimizer: torch.optim.Optimizer,
                     data: Dataset, total_steps: int, steps_per_epoch: int, execute: Executor,
                     root: Path) -> tuple[Sparsifier | None, dict[str, Any]]:
    """The sparsifier of ``cfg.method`` (None for dense and small dense) and summary info.

    A ValueError of the layers below (an impossible distribution, a bad layer name) becomes a
    one-line ConfigError naming the method.
    """
    try:
        return _build_sparsifier(cfg, model, optimizer, data, total_steps, steps_per_epoch,
                                 execute, root)
    except ValueError as e:
        if isinstance(e, UserError):
            raise
        raise ConfigError(f"method={cfg.method}: {e}") from None


def _build_sparsifier(cfg: Config, model: nn.Module, optimizer: torch.optim.Optimizer,
                      data: Dataset, total_steps: int, steps_per_epoch: int, execute: Executor,
                      root: Path) -> tuple[Sparsifier | None, dict[str, Any]]:
    m, sp = cfg.method, cfg.sparse
    if m in ("dense", "small_dense"):
        return None, {}
    common = _common(cfg)
    info: dict[str, Any] = {}
    if m == "static" and cfg.distribution == "scsdc":
        from sparseflow.training.scsdc import scsdc_masks

        g = torch.Generator().manual_seed(cfg.seed)
        masks = scsdc_masks(cfg, model, data.input_shape, data.num_classes, g)
        common.update(distribution="uniform", init="keep" if cfg.init == "matched" else cfg.init)
        if cfg.init != "sparse":
            common["init_opts"] = None
        return Sparsifier(model, optimizer, masks=masks, **common), info
    if m == "static":
        params = select_weights(model, **_selection(cfg))
        masks = resolve_masks(cfg, params, execute, root)
        if masks is not None and sp.shuffle_mask:
            g = torch.Generator().manual_seed(cfg.seed)
            masks = {n: mk.reshape(-1)[torch.randperm(mk.numel(), generator=g)].view(mk.shape)
                     for n, mk in masks.items()}
        return Sparsifier(model, optimizer, masks=masks, **common), info
    if m == "lottery":
        params = select_weights(model, **_selection(cfg))
        masks, info = lottery_ticket(cfg, model, params, execute, steps_per_epoch)
        common["init"], common["init_opts"] = "keep", None
        return Sparsifier(model, optimizer, masks=masks, **common), info
    if m in ("set", "rigl", "rigl_inverted"):
        dyn = {"t_end": _frac_step(sp.t_end, total_steps), "update_every": sp.update_every,
               "drop_fraction": sp.drop_fraction, "drop_schedule": sp.drop_schedule,
               "exclude_dropped": sp.exclude_dropped}
        if m == "set":
            return SET(model, optimizer, **dyn, **common), info
        cls = RigL if m == "rigl" else RigLInverted
        grad_fn = None
        if sp.grow_batch == "heldout":
            if not data.heldout:
                raise ConfigError("sparse.grow_batch=heldout needs data.heldout > 0")
            x, y = data.heldout[-1]
            grad_fn = make_grad_fn(model, select_weights(model, **_selection(cfg)), x, y)
        return cls(model, optimizer, grad_fn=grad_fn, **dyn, **common), info
    if m in ("gradual", "oneshot"):
        common.pop("distribution")
        common["init"] = "dense"
        common["init_opts"] = None
        prune = {"scope": sp.prune_scope, "distribution": sp.prune_distribution}
        if m == "gradual":
            return GradualPruning(
                model, optimizer, t_begin=_frac_step(sp.prune_begin, total_steps),
                t_end=_frac_step(sp.prune_end, total_steps), every=sp.prune_every,
                initial_sparsity=sp.initial_sparsity, **prune, **common), info
        return OneShotPruning(model, optimizer, t_prune=_frac_step(sp.oneshot_at, total_steps),
                              **prune, **common), info
    if m in PAI_METHODS:
        if not data.heldout and m != "synflow":
            raise ConfigError(f"method={m} scores weights on the held-out batch: set "
                              "data.heldout > 0")
        batch = data.heldout[0] if data.heldout else None
        dev = next(model.parameters()).device
        if batch is not None:
            batch = (batch[0].to(dev), batch[1].to(dev))
        return pruned_at_init(m, model, optimizer, scope=sp.pai_scope, batch=batch,
                              input_shape=data.input_shape,
                              iterations=sp.synflow_iterations, **common), info
    raise ConfigError(f"method: {m!r} is not available")
