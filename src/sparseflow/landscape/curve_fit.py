"""Fitting a curve between two solutions (Garipov et al. 2018) in the sparse or dense subspace.

docs/science.md section 6 and the setup of section 9.3. The curve families, phi(t) and the
evaluation along a curve are in ``landscape/curves.py``.

Training
--------
theta minimises E_{t ~ U[0, 1]} L(phi_theta(t)): each mini-batch draws one t and takes a
gradient step on the mini-batch loss at phi(t). The network is evaluated with
``torch.func.functional_call(model, {name: phi(t)} | buffers, x)``, so any ``nn.Module``
works with no curve copy of its layers, and the gradient reaches theta only (the endpoints
are constants). Only parameters form the curve; buffers are not trained: during training
the model runs in train mode (BatchNorm on batch statistics, updating *copies* of the
buffers), and at evaluation the BatchNorm statistics are re-estimated at every t
(``bn_reset``), as in Garipov et al.

Subspaces
---------
* ``"sparse"``: the curve stays in the masks' subspace. The endpoints' masked weights are
  projected onto the mask (``where(M, w, 0)``; a no-op for endpoints that already obey it),
  theta starts masked, its gradient is zeroed outside the mask before every step and its
  value after every step (multiplying by the 0/1 mask: theta starts at +0.0 there and a
  zeroed gradient keeps it +0.0 under SGD, Adam and weight decay), so theta's inactive
  coordinates are exactly 0.0 throughout and every phi(t) obeys the mask. ``masks=None``
  means a dense model (no constraint).
* ``"dense"``: theta is free in every coordinate; the endpoints (sparse or not) are used as
  given and phi(t) is not masked.

Optimiser: SGD with momentum 0.9 by default (``optimizer="adam"`` for Adam), constant
learning rate, optional (coupled) weight decay on theta. Batch order and the t samples come
from a ``torch.Generator`` seeded with ``seed``, and random layers (dropout) run under a
forked global RNG seeded with ``seed``: a fit is deterministic and leaves the global RNG
as it was. The model object (tensors, train/eval modes, momenta) is never changed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm import tqdm

from sparseflow.sparsity import check_masks

from .curves import (
    CURVE_KINDS,
    buffers,
    curve_coefficients,
    default_ts,
    endpoint_params,
    evaluate_curve,
    project,
)
from .paths import as_dict

__all__ = ["SUBSPACES", "CurveResult", "fit_curve"]

SUBSPACES: tuple[str, ...] = ("sparse", "dense")
"""Where the control point may live."""


def _train_point(
    kind: str, w1: Mapping[str, Tensor], theta: Mapping[str, Tensor], w2: Mapping[str, Tensor],
    t: float,
) -> dict[str, Tensor]:
    """phi(t) for training: the fixed part c1 w1 + c2 w2 without autograd, then one fused
    ``add`` with theta (3 elementwise ops per tensor forward, 1 backward)."""
    c1, ct, c2 = curve_coefficients(kind, t)
    with torch.no_grad():
        base = {n: torch.add(w1[n] * c1, w2[n], alpha=c2) for n in w1}
    return {n: torch.add(base[n], theta[n], alpha=ct) for n in w1}


# --- fitting ---------------------------------------------------------------------------------


@dataclass
class CurveResult:
    """A fitted curve: its evaluation at ``ts``, the training curve and the control point.

    ``max_loss`` is the maximum loss over the ts in [0, 1] and ``max_t`` where it occurs;
    ``train_history`` the mean training loss (at the sampled t) of each epoch; ``control``
    theta (detached), one tensor per parameter name.
    """

    ts: list[float]
    loss: list[float]
    accuracy: list[float]
    max_loss: float
    max_t: float
    train_history: list[float]
    control: dict[str, Tensor] = field(repr=False)
    subspace: str
    kind: str


def fit_curve(
    model: nn.Module,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    *,
    kind: str = "bezier",
    subspace: str = "sparse",
    masks: Mapping[str, Tensor] | None = None,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 0.01,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    init: str | Mapping[str, Tensor] = "midpoint",
    eval_ts: Sequence[float] | None = None,
    eval_x: Tensor | None = None,
    eval_y: Tensor | None = None,
    bn_reset: bool = True,
    bn_x: Tensor | None = None,
    eval_batch_size: int = 1000,
    progress: bool = False,
) -> CurveResult:
    """Fit the control point theta of a curve between the parameters of A and B.

    Minimises E_{t~U[0,1]} CE(f(x; phi_theta(t)), y) over theta with one t per mini-batch of
    ``(x, y)`` (``epochs`` passes in a seeded random order; a trailing batch of one example
    is dropped, BatchNorm cannot train on it). ``kind`` is ``"bezier"`` or ``"polychain"``;
    ``subspace`` ``"sparse"`` (theta and the path confined to ``masks``, inactive coordinates
    of theta exactly 0.0) or ``"dense"`` (theta free). ``init="midpoint"`` starts at
    theta = (w1 + w2) / 2 (masked in the sparse subspace); a mapping gives theta directly.
    ``optimizer`` ``"sgd"`` (momentum ``momentum``) or ``"adam"``, constant ``lr``.

    The fitted curve is then evaluated at ``eval_ts`` (default linspace(0, 1, 21)) on
    ``(eval_x, eval_y)`` (default the training data), re-estimating BatchNorm statistics at
    every t on ``bn_x`` (default the training inputs) when ``bn_reset``. The model object is
    left unchanged.
    """
    if kind not in CURVE_KINDS:
        raise ValueError(f"unknown curve kind {kind!r}; choose one of {', '.join(CURVE_KINDS)}")
    if subspace not in SUBSPACES:
        raise ValueError(f"unknown subspace {subspace!r}; choose one of {', '.join(SUBSPACES)}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"unknown optimizer {optimizer!r}; choose 'sgd' or 'adam'")
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and equally long, got {len(x)}, {len(y)}")

    w1 = endpoint_params(model, state_a, "a")
    w2 = endpoint_params(model, state_b, "b")
    m = check_masks(as_dict(masks) or {}, w1, "fit_curve: masks", subset=True)
    sparse = subspace == "sparse" and bool(m)
    if sparse:
        w1, w2 = project(w1, m), project(w2, m)

    if isinstance(init, str):
        if init != "midpoint":
            raise ValueError(f"unknown init {init!r}; use 'midpoint' or a dict of tensors")
        theta0 = {n: 0.5 * (w1[n] + w2[n]) for n in w1}
    else:
        missing = [n for n in w1 if n not in init]
        if missing:
            raise ValueError(f"init lacks parameters {missing[:5]}")
        theta0 = {n: init[n].detach().to(w1[n]).clone() for n in w1}
    if sparse:
        theta0 = project(theta0, m)
    theta = {n: v.detach().clone().requires_grad_(True) for n, v in theta0.items()}
    # sparse subspace: 0/1 factors of the masks, applied to theta's gradient and value
    masked = [theta[n] for n in m] if sparse else []
    factors = [mask.to(theta[n].dtype) for n, mask in m.items()] if sparse else []

    params = list(theta.values())
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)

    bufs = buffers(model, state_a)  # updated by train-mode BatchNorm; copies, never trained
    device = next(iter(w1.values())).device if w1 else torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    history: list[float] = []
    modes = {mod: mod.training for mod in model.modules()}
    cuda = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            model.train()
            bar = tqdm(range(epochs), desc=f"{kind} curve ({subspace})",
                       disable=None if progress else True)  # a bar only on a terminal
            for _ in bar:
                perm = torch.randperm(n, generator=gen)
                total, seen = 0.0, 0
                for start in range(0, n, batch_size):
                    idx = perm[start : start + batch_size]
                    if len(idx) < 2 and seen > 0:
                        continue
                    t = float(torch.rand((), generator=gen))
                    xb, yb = x[idx].to(device), y[idx].to(device)
                    phi = _train_point(kind, w1, theta, w2, t)
                    logits = functional_call(model, {**phi, **bufs}, (xb,))
                    loss = F.cross_entropy(logits, yb)
                    opt.zero_grad(set_to_none=False)
                    loss.backward()
                    if masked:
                        with torch.no_grad():
                            torch._foreach_mul_([p.grad for p in masked], factors)
                    opt.step()
                    if masked:  # a no-op in exact arithmetic; keeps +0.0 whatever the optimiser
                        with torch.no_grad():
                            torch._foreach_mul_(masked, factors)
                    total += float(loss.detach()) * len(idx)
                    seen += len(idx)
                history.append(total / max(seen, 1))
                bar.set_postfix(loss=f"{history[-1]:.4f}")
    finally:
        for mod, mode in modes.items():
            mod.training = mode

    control = {n: v.detach().clone() for n, v in theta.items()}
    ts = default_ts() if eval_ts is None else [float(t) for t in eval_ts]
    ex = x if eval_x is None else eval_x
    ey = y if eval_y is None else eval_y
    losses, accs = evaluate_curve(
        model,
        state_a,
        state_b,
        control,
        ex,
        ey,
        ts,
        kind=kind,
        masks=m if sparse else None,
        bn_reset=bn_reset,
        bn_x=x if bn_x is None else bn_x,
        batch_size=eval_batch_size,
        progress=progress,
    )
    inside = [(loss, t) for t, loss in zip(ts, losses, strict=True) if 0.0 <= t <= 1.0]
    if inside:
        max_loss, max_t = max(inside, key=lambda p: p[0])
    else:
        max_loss, max_t = math.nan, math.nan
    return CurveResult(
        ts=ts,
        loss=losses,
        accuracy=accs,
        max_loss=max_loss,
        max_t=max_t,
        train_history=history,
        control=control,
        subspace=subspace,
        kind=kind,
    )
