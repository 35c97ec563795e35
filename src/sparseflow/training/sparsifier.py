"""The sparse method inside a run: built from the method registry, stepped by a callback.

:func:`build_sparsifier` asks the registry (:mod:`sparseflow.methods.registry`) for the
method's factory and option classes, gets the masks or weights its sources provide
(:mod:`sparseflow.training.lineage`) and attaches it to the model and optimiser;
:class:`SparsifierCallback` steps it after every optimiser step and logs its telemetry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparseflow.config import Config
from sparseflow.data import Dataset
from sparseflow.errors import ConfigError, UserError
from sparseflow.methods import Sparsifier
from sparseflow.methods.options import BuildContext, SelectionOptions, SparseInitOptions
from sparseflow.methods.registry import method_spec
from sparseflow.sparsity import layer_counts, select_weights
from sparseflow.training.callbacks import Callback
from sparseflow.training.lineage import Executor, inherited

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
        summary.update(self.sparsifier.summary(trainer.module))  # the eager, unwrapped model

    def state_dict(self) -> dict[str, Any]:
        return self.sparsifier.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sparsifier.load_state_dict(state)


def selection(cfg: Config) -> dict[str, Any]:
    """Which weights the run sparsifies (``sparsity.select_weights`` keywords)."""
    return SelectionOptions.selection(cfg.sparse)


def heldout_sizes(cfg: Config) -> tuple[int, ...]:
    """The held-out batches to carve: one for measurement, more where the method needs them
    (RigL's growth batch with ``sparse.grow_batch=heldout``)."""
    if not cfg.data.heldout:
        return ()
    return (cfg.data.heldout,) * method_spec(cfg.method).heldout_batches(cfg.sparse)


def _common(cfg: Config) -> dict[str, Any]:
    """The keyword arguments every sparsifier takes, from the run's config."""
    opts = SparseInitOptions.init_opts(cfg.sparse) if cfg.init == "sparse" else None
    return {**selection(cfg), "sparsity": cfg.sparsity, "distribution": cfg.distribution,
            "init": cfg.init, "init_opts": opts, "masking": cfg.sparse.masking,
            "execution": cfg.sparse.execution,
            "pattern": method_spec(cfg.method).pattern_of(cfg.sparse), "seed": cfg.seed}


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
    chosen = select_weights(full, **selection(cfg))
    counts = layer_counts({n: tuple(p.shape) for n, p in chosen.items()}, cfg.sparsity,
                          cfg.distribution)
    target = sum(counts.values()) + sum(p.numel() for n, p in all_weights.items()
                                        if n not in chosen)
    return list(shrink(cfg.model, data.input_shape, data.num_classes, target, widths=a.widths,
                       **opts))


def build_sparsifier(cfg: Config, model: nn.Module, optimizer: torch.optim.Optimizer,
                     data: Dataset, total_steps: int, steps_per_epoch: int, execute: Executor,
                     root: Path) -> tuple[Sparsifier | None, dict[str, Any]]:
    """The sparsifier of ``cfg.method`` (None for dense training) and summary info.

    The masks come from the SC-SDC counts for ``distribution=scsdc``, else from what the
    method inherits from other runs (:func:`~sparseflow.training.lineage.inherited`: the
    masks ``sparse.mask`` names, or a lottery ticket whose weights are rewound here). A
    ValueError of the layers below (an impossible distribution, a bad layer name) becomes a
    one-line ConfigError naming the method.
    """
    spec = method_spec(cfg.method)
    if spec.factory is None:
        return None, {}
    try:
        common = _common(cfg)
        info: dict[str, Any] = {}
        params = select_weights(model, **selection(cfg))
        if cfg.distribution == "scsdc":
            from sparseflow.training.scsdc import scsdc_masks

            g = torch.Generator().manual_seed(cfg.seed)
            masks = scsdc_masks(cfg, model, data.input_shape, data.num_classes, g)
            common.update(distribution="uniform",
                          init="keep" if cfg.init == "matched" else cfg.init)
        else:
            masks, info = inherited(cfg, model, params, execute, root, steps_per_epoch)
        ctx = BuildContext(model=model, total_steps=total_steps, input_shape=data.input_shape,
                           heldout=data.heldout, selection=selection(cfg), masks=masks)
        return spec.build(model, optimizer, cfg.sparse, ctx, **common), info
    except ValueError as e:
        if isinstance(e, UserError):
            raise
        raise ConfigError(f"method={cfg.method}: {e}") from None
