"""Optimisers, weight decay (coupled L2 vs decoupled) and learning-rate schedules.

Coupled L2 (``optim.l2``) adds ``l2 * w`` to the gradient, so with Adam it is rescaled by the
second-moment estimate (the Adam+L2 setting of Tessera et al.). Decoupled weight decay
(``optim.weight_decay``) shrinks the weights after the gradient step, ``w <- w - lr_t * wd * w``
(Loshchilov & Hutter 2019: AdamW, and SGDW for the other optimisers). ``adamw`` is torch's AdamW,
whose decay is decoupled; the other optimisers get the same decoupled rule from
:func:`decoupled_decay_`. By default both apply to Linear/Conv weights only (the papers' Keras
``kernel_regularizer``); ``optim.decay_all`` extends them to every parameter.

Schedules are pure functions of the step (:func:`lr_factor`), so a resumed run needs no
scheduler state and reproduces the learning rate exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sparseflow.config import OptimConfig


def _is_decayed(module: nn.Module, name: str, decay_all: bool) -> bool:
    if decay_all:
        return True
    return name == "weight" and isinstance(module, nn.Linear | nn.modules.conv._ConvNd)


def param_groups(model: nn.Module, decay_all: bool = False) -> tuple[list, list]:
    """(decayed, not decayed) parameter lists; each parameter appears once."""
    decayed: list[nn.Parameter] = []
    other: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            (decayed if _is_decayed(module, name, decay_all) else other).append(p)
    return decayed, other


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.name`` with two groups: decayed weights and the rest.

    Each group records ``l2`` and ``decoupled_wd`` so the loop can apply them; torch's own
    ``weight_decay`` carries the coupled L2 for every optimiser except AdamW, where it carries
    the decoupled decay (torch's AdamW semantics).
    """
    decayed, other = param_groups(model, cfg.decay_all)
    groups = []
    for params, on in ((decayed, True), (other, False)):
        if not params:
            continue
        l2 = cfg.l2 if on else 0.0
        wd = cfg.weight_decay if on else 0.0
        torch_wd = wd if cfg.name == "adamw" else l2
        groups.append(
            {"params": params, "weight_decay": torch_wd, "l2": l2, "decoupled_wd": wd,
             "initial_lr": cfg.lr}
        )
    n = cfg.name
    if n in ("sgd", "momentum", "nesterov"):
        mom = 0.0 if n == "sgd" else cfg.momentum
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=mom, nesterov=n == "nesterov")
    if n == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    if n == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    if n == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps)
    if n == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr, eps=cfg.eps)
    raise ValueError(f"optim.name: unknown optimiser {n!r}")


def needs_manual_decay(optimizer: torch.optim.Optimizer) -> bool:
    """Whether :func:`decoupled_decay_` or :func:`coupled_l2_` has anything to do."""
    is_adamw = isinstance(optimizer, torch.optim.AdamW)
    for g in optimizer.param_groups:
        if not is_adamw and g.get("decoupled_wd", 0.0) > 0:
            return True
        if is_adamw and g.get("l2", 0.0) > 0:
            return True
    return False


@torch.no_grad()
def coupled_l2_(optimizer: torch.optim.Optimizer) -> None:
    """AdamW only: add ``l2 * w`` to the gradients (torch's AdamW has no coupled option)."""
    if not isinstance(optimizer, torch.optim.AdamW):
        return
    for g in optimizer.param_groups:
        if g.get("l2", 0.0) > 0:
            grads = [p.grad for p in g["params"] if p.grad is not None]
            params = [p for p in g["params"] if p.grad is not None]
            if grads:
                torch._foreach_add_(grads, params, alpha=g["l2"])


@torch.no_grad()
def decoupled_decay_(optimizer: torch.optim.Optimizer) -> None:
    """Non-AdamW optimisers: ``w <- w * (1 - lr_t * wd)`` before the step (SGDW/AdamW rule)."""
    if isinstance(optimizer, torch.optim.AdamW):
        return
    for g in optimizer.param_groups:
        wd = g.get("decoupled_wd", 0.0)
        if wd > 0:
            params = [p for p in g["params"] if p.grad is not None]
            if params:
                torch._foreach_mul_(params, 1.0 - g["lr"] * wd)


def lr_factor(step: int, total: int, schedule: str, warmup: int = 0,
              milestones: tuple[float, ...] | list[float] = (), gamma: float = 0.1) -> float:
    """Multiplier of the peak lr for the update at 0-based ``step`` of ``total``.

    warm-up: ``(step + 1) / warmup`` for ``step < warmup``; then with ``p = (step - warmup) /
    (total - warmup)``: constant 1; cosine ``(1 + cos(pi p)) / 2`` (to 0 at the end); linear
    ``1 - p``; step ``gamma ** #{m : step >= m * total}``.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    p = min(1.0, max(0.0, (step - warmup) / span))
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "linear":
        return 1.0 - p
    if schedule == "step":
        return gamma ** sum(1 for m in milestones if step >= m * total)
    raise ValueError(f"optim.schedule: unknown schedule {schedule!r}")


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's lr to its ``initial_lr`` times ``factor``."""
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * factor
