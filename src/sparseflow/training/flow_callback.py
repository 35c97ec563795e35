"""Gradient-flow measurement during training (docs/science.md section 4).

On the fixed held-out batch (``data.heldout`` examples never trained on), without the
regularisation term: at step 0, at steps 1, 2, 5, 10, 20, 50, ... up to ``flow.early`` (the
start of training on a log axis: the papers' Figure 4 is about the first 2000 steps), every
``flow.every`` steps, at ``flow.points`` evenly spaced
points of training (the 11 points over which Tessera et al. average EGF), and just before and
after every k-th mask update (``flow.around_updates``; 1 = every update). Metrics land in the
store as ``flow/<measure>`` per step (per layer as
``flow/grad_l2/<layer>``) and ``flow_update/{before,after,delta}/<measure>`` at mask updates;
the summary gets the means over the evenly spaced points (``egf_l1_mean11`` ...).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from sparseflow.flow.norms import gradient_flow
from sparseflow.training.callbacks import Callback
from sparseflow.training.sparsifier import SparsifierCallback

#: measures averaged over the evenly spaced points into the summary (``<measure>_mean11``):
#: the plain gradient norm and EGF, each over all parameters and over the weights only
#: (docs/science.md section 4; claim 6 compares them over the same set)
SUMMARY_MEASURES = ("grad_l1", "grad_l2", "egf_l1", "egf_l2", "grad_w_l1", "grad_w_l2",
                    "egf_all_l1", "egf_all_l2")
UPDATE_MEASURES = ("grad_l1", "grad_l2", "egf_l1", "egf_l2", "loss")


def log_spaced_steps(limit: int) -> list[int]:
    """Steps 1, 2, 5, 10, 20, 50, ... (1-2-5 per decade) up to ``limit`` inclusive."""
    out, decade = [], 1
    while decade <= limit:
        out += [m * decade for m in (1, 2, 5) if m * decade <= limit]
        decade *= 10
    return out


def evenly_spaced_steps(total: int, points: int) -> list[int]:
    """``points`` steps from 0 to ``total`` inclusive, evenly spaced (rounded)."""
    if points <= 1:
        return [total]
    return sorted({round(i * total / (points - 1)) for i in range(points)})


class FlowCallback(Callback):
    """Measures gradient norms and EGF on a fixed batch while training."""

    name = "flow"

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, every: int, total_steps: int,
                 points: int = 11, early: int = 0, around_updates: int = 1,
                 per_layer: bool = True, per_active: bool = False, mode: str = "train") -> None:
        self.x, self.y = x, y
        self.every = every
        self.points = evenly_spaced_steps(total_steps, points)
        self.early = set(log_spaced_steps(min(early, total_steps)))
        self.n_points = points  # names the summary keys even when short runs merge points
        self.around_updates = around_updates
        self.per_layer, self.per_active, self.mode = per_layer, per_active, mode
        self.at_points: dict[int, dict[str, float]] = {}
        self._sparsifier: SparsifierCallback | None = None
        self._before: dict[str, float] = {}

    def _masks(self) -> dict[str, torch.Tensor] | None:
        return self._sparsifier.sparsifier.masks.masks if self._sparsifier else None

    def measure(self, trainer: Any, *, per_layer: bool | None = None) -> dict[str, float]:
        """The measures on the held-out batch for the model as it is now."""
        module = trainer.module
        was = module.training
        module.train(self.mode == "train")
        sparsifier = self._sparsifier.sparsifier if self._sparsifier else None
        try:
            with sparsifier.dense() if sparsifier else contextlib.nullcontext():
                return gradient_flow(module, self._masks(), self.x, self.y,
                                     per_layer=self.per_layer if per_layer is None else per_layer,
                                     per_active=self.per_active)
        finally:
            module.train(was)

    def _record(self, trainer: Any) -> None:
        m = self.measure(trainer)
        trainer.log(trainer.step, {f"flow/{k}": v for k, v in m.items()})
        if trainer.step in self.points:
            self.at_points[trainer.step] = {k: m[k] for k in SUMMARY_MEASURES}

    def _due(self, step: int) -> bool:
        return (step in self.points or step in self.early
                or (self.every > 0 and step % self.every == 0))

    def on_train_start(self, trainer: Any) -> None:
        self._sparsifier = next((c for c in trainer.callbacks
                                 if isinstance(c, SparsifierCallback)), None)
        if self._sparsifier is not None and self.around_updates > 0:
            self._sparsifier.listeners.append(self._on_update)
        if trainer.step == 0:
            self._record(trainer)

    def after_step(self, trainer: Any) -> None:
        if self._due(trainer.step):
            self._record(trainer)

    def _on_update(self, phase: str, trainer: Any) -> None:
        assert self._sparsifier is not None
        done = self._sparsifier.sparsifier.updates  # updates completed so far
        index = done if phase == "before" else done - 1
        if index % self.around_updates:
            return
        m = self.measure(trainer, per_layer=False)
        vals = {k: m[k] for k in UPDATE_MEASURES}
        rows = {f"flow_update/{phase}/{k}": v for k, v in vals.items()}
        if phase == "before":
            self._before = vals
        else:
            rows.update({f"flow_update/delta/{k}": v - self._before[k] for k, v in vals.items()
                         if k in self._before})
        trainer.log(trainer.step, rows)

    def on_train_end(self, trainer: Any, summary: dict[str, Any]) -> None:
        if not self.at_points:
            return
        for k in SUMMARY_MEASURES:
            vals = [v[k] for v in self.at_points.values() if k in v]
            if len(vals) == len(self.at_points):  # a run resumed from before a measure existed
                summary[f"{k}_mean{self.n_points}"] = sum(vals) / len(vals)

    def state_dict(self) -> dict[str, Any]:
        return {"at_points": {int(s): dict(v) for s, v in self.at_points.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.at_points = {int(s): dict(v) for s, v in state.get("at_points", {}).items()}
