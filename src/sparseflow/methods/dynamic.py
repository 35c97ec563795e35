"""Dynamic sparse training: SET, RigL and the RigL-inverted control (science.md section 3).

Every ``update_every`` steps up to ``t_end``, each layer drops the ``floor(alpha_t * n_active)``
active weights of smallest |w| and grows as many among the positions inactive after the drop
(just-dropped ones included, as in the RigL paper; ``exclude_dropped=True`` leaves them out).
The methods differ only in the grow score: uniform random (SET), |dL/dW| of the dense gradient
(RigL), -|dL/dW| (RigL inverted). Grown weights start at exactly zero with their optimiser state
reset. Drop fraction schedules: ``cosine`` alpha (1 + cos(pi t / t_end)) / 2, ``constant``
alpha, ``lr`` alpha * lr_t / lr_0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sparseflow.methods.base import GradFn, Sparsifier, check_choice
from sparseflow.sparsity import topk_indices, topk_mask

DROP_SCHEDULES = ("cosine", "constant", "lr")


class SET(Sparsifier):
    """Sparse Evolutionary Training (Mocanu et al. 2018): drop by magnitude, grow at random."""

    name = "set"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        t_end: int,
        update_every: int = 100,
        drop_fraction: float = 0.3,
        drop_schedule: str = "cosine",
        exclude_dropped: bool = False,
        **kwargs: Any,
    ) -> None:
        if update_every < 1:
            raise ValueError(f"update_every: expected >= 1, got {update_every}")
        if not 0.0 <= drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction: {drop_fraction!r} is out of range [0, 1]")
        check_choice("drop_schedule", drop_schedule, DROP_SCHEDULES)
        if t_end < 1:
            raise ValueError(f"t_end: expected a positive step, got {t_end}")
        super().__init__(model, optimizer, **kwargs)
        self.t_end = int(t_end)
        self.update_every = int(update_every)
        self.drop_fraction = float(drop_fraction)
        self.drop_schedule = drop_schedule
        self.exclude_dropped = exclude_dropped
        self.lr0 = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]

    def due(self, step: int) -> bool:
        """Every ``update_every`` steps, up to and including ``t_end``."""
        return step % self.update_every == 0 and step <= self.t_end

    def drop_fraction_at(self, step: int) -> float:
        """alpha_t of the drop schedule."""
        a = self.drop_fraction
        if self.drop_schedule == "constant":
            return a
        if self.drop_schedule == "cosine":
            return a * 0.5 * (1.0 + math.cos(math.pi * min(step, self.t_end) / self.t_end))
        lr0 = self.lr0[0]
        return a * self.optimizer.param_groups[0]["lr"] / lr0 if lr0 > 0 else 0.0

    def grow_scores(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """Score of each position for growth (higher grows first). SET: uniform random."""
        return torch.rand(weight.shape, generator=self.generator).to(weight.device)

    def prepare_scores(self) -> None:
        """Hook run once per update before the layers are scored."""

    def update(self, step: int) -> dict[str, float]:
        """Drop the smallest-magnitude active weights, grow by :meth:`grow_scores`.

        Per layer, on indices: the active positions A (one ``nonzero``), the n_active - k
        largest |w| over A kept (``topk_mask``: ties to the lower flat index), the rest
        dropped; grow scores with the blocked positions (kept ones, or every active one with
        ``exclude_dropped``) set to -inf, the k largest grown (``topk_indices``).
        """
        alpha = self.drop_fraction_at(step)
        self.prepare_scores()
        for name, p in self.params.items():
            active = self.masks[name].reshape(-1).nonzero().squeeze(1)
            n_active = active.numel()
            k = math.floor(alpha * n_active)
            if self.exclude_dropped:  # fewer free positions than drops: grow what fits
                k = min(k, p.numel() - n_active)
            if k == 0:
                continue
            keep = topk_mask(p.detach().reshape(-1)[active].abs(), n_active - k)
            blocked = active if self.exclude_dropped else active[keep]
            scores = self.grow_scores(name, p).detach().reshape(-1).float()
            scores = scores.index_fill(0, blocked.to(scores.device), float("-inf"))
            grow = topk_indices(scores, k).to(active.device)
            self.replace_positions(name, active[~keep], grow)
        return {"drop_fraction": alpha}


class RigL(SET):
    """Rigging the Lottery (Evci et al. 2020): grow where the dense gradient |dL/dW| is largest.

    The dense gradient comes from the training batch of the update step (captured before the
    optimiser masks it; ``grad_fn=None``) or from ``grad_fn()``, e.g. a fixed held-out batch
    (:func:`sparseflow.methods.base.make_grad_fn`), as in the Evci et al. 2022 code.
    """

    name = "rigl"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                 grad_fn: GradFn | None = None, **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        self.grad_fn = grad_fn
        self._dense_grads: dict[str, torch.Tensor] | None = None
        self._sync_grad_masking()

    def needs_dense_grads(self, step: int) -> bool:
        """The training batch's dense gradient is the grow score at an update step."""
        return self.grad_fn is None and self.due(step)

    def _pre_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.needs_dense_grads(self.step_count + 1):
            missing = [n for n, p in self.params.items() if p.grad is None]
            if missing:
                raise ValueError(
                    f"rigl: no gradient for {missing[0]!r} at an update step; call "
                    "loss.backward() before optimizer.step(), or pass grad_fn="
                )
            self._dense_grads = {n: p.grad.detach().clone() for n, p in self.params.items()}

    def prepare_scores(self) -> None:
        if self.grad_fn is not None:
            self._dense_grads = dict(self.grad_fn())
        if self._dense_grads is None:
            raise ValueError(
                "rigl: no dense gradient available; call sparsifier.step() right after "
                "optimizer.step(), or pass grad_fn= to compute it on a held-out batch"
            )
        # gradients of the training batch are already averaged over ranks by
        # DistributedDataParallel; grad_fn from make_grad_fn averages its own.

    def grow_scores(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        assert self._dense_grads is not None
        return self._dense_grads[name].abs()

    def update(self, step: int) -> dict[str, float]:
        try:
            return super().update(step)
        finally:
            self._dense_grads = None


class RigLInverted(RigL):
    """Control of Evci et al. 2022: grow where |dL/dW| is *smallest*."""

    name = "rigl_inverted"

    def grow_scores(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return -super().grow_scores(name, weight)
