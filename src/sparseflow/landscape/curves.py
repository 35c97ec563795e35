"""Curves between two solutions (Garipov et al. 2018): their points and their evaluation.

docs/science.md section 6 and the setup of section 9.3.

Curves
------
With fixed endpoints w1, w2 and one trainable control point theta, t in [0, 1]:

* quadratic Bezier:  phi(t) = (1 - t)^2 w1 + 2 t (1 - t) theta + t^2 w2;
* polygonal chain:   phi(t) = 2 (t theta + (0.5 - t) w1)            for t <= 0.5,
                     phi(t) = 2 ((t - 0.5) w2 + (1 - t) theta)      for t >  0.5,

so phi(0) = w1, phi(1) = w2, and the chain passes through theta at t = 0.5.

A state on the curve (``curve_state``) takes phi(t) for the parameters, from the endpoints'
parameters and the control point theta (with masks, the endpoints projected onto them:
``where(M, w, 0)``), and interpolates the buffers linearly. ``evaluate_curve`` gives loss and
accuracy along the curve, re-estimating the BatchNorm statistics at every t (``bn_reset``,
``landscape/evaluation.py``). The control point is trained by ``fit_curve``
(``landscape/curve_fit.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn
from tqdm import tqdm

from sparseflow.sparsity import check_masks

from .evaluation import bn_modules, evaluate_state
from .paths import as_dict, interpolate_states

__all__ = [
    "CURVE_KINDS",
    "bezier_point",
    "curve_coefficients",
    "curve_point",
    "curve_state",
    "evaluate_curve",
    "polychain_point",
]

CURVE_KINDS: tuple[str, ...] = ("bezier", "polychain")
"""Curve families of ``fit_curve``."""

T = TypeVar("T", Tensor, float)


# --- points on a curve -----------------------------------------------------------------------


def _combine(coefs: Sequence[float], points: Sequence[object]) -> object:
    """sum_i c_i p_i, for tensors/floats or key-by-key for mappings of tensors."""
    first = points[0]
    if isinstance(first, Mapping):
        return {k: sum(c * p[k] for c, p in zip(coefs, points, strict=True)) for k in first}
    return sum(c * p for c, p in zip(coefs, points, strict=True))


def bezier_point(w1: T, theta: T, w2: T, t: float) -> T:
    """Quadratic Bezier: phi(t) = (1 - t)^2 w1 + 2 t (1 - t) theta + t^2 w2.

    Works on tensors, floats, or dicts of tensors (key by key, keys of ``w1``).
    """
    t = float(t)
    return _combine(((1.0 - t) ** 2, 2.0 * t * (1.0 - t), t * t), (w1, theta, w2))  # type: ignore[return-value]


def polychain_point(w1: T, theta: T, w2: T, t: float) -> T:
    """Polygonal chain w1 -> theta -> w2 (theta at t = 0.5).

    phi(t) = 2 (t theta + (0.5 - t) w1) for t <= 0.5 and 2 ((t - 0.5) w2 + (1 - t) theta)
    for t > 0.5. Works on tensors, floats, or dicts of tensors.
    """
    t = float(t)
    if t <= 0.5:
        return _combine((2.0 * t, 2.0 * (0.5 - t)), (theta, w1))  # type: ignore[return-value]
    return _combine((2.0 * (t - 0.5), 2.0 * (1.0 - t)), (w2, theta))  # type: ignore[return-value]


def curve_point(kind: str, w1: T, theta: T, w2: T, t: float) -> T:
    """phi(t) of the curve family ``kind`` ("bezier" or "polychain")."""
    if kind == "bezier":
        return bezier_point(w1, theta, w2, t)
    if kind == "polychain":
        return polychain_point(w1, theta, w2, t)
    raise ValueError(f"unknown curve kind {kind!r}; choose one of {', '.join(CURVE_KINDS)}")


def curve_coefficients(kind: str, t: float) -> tuple[float, float, float]:
    """``(c1, c_theta, c2)`` with phi(t) = c1 w1 + c_theta theta + c2 w2.

    Bezier: ((1 - t)^2, 2 t (1 - t), t^2); polygonal chain: (1 - 2t, 2t, 0) for t <= 0.5 and
    (0, 2 (1 - t), 2t - 1) for t > 0.5. d phi / d theta = c_theta.
    """
    t = float(t)
    if kind == "bezier":
        return (1.0 - t) ** 2, 2.0 * t * (1.0 - t), t * t
    if kind == "polychain":
        if t <= 0.5:
            return 2.0 * (0.5 - t), 2.0 * t, 0.0
        return 0.0, 2.0 * (1.0 - t), 2.0 * (t - 0.5)
    raise ValueError(f"unknown curve kind {kind!r}; choose one of {', '.join(CURVE_KINDS)}")


# --- helpers ---------------------------------------------------------------------------------


def _param_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def endpoint_params(
    model: nn.Module, state: Mapping[str, Tensor], which: str
) -> dict[str, Tensor]:
    missing = [n for n in _param_names(model) if n not in state]
    if missing:
        raise ValueError(f"state_{which} lacks parameters {missing[:5]}")
    out = {}
    for name, p in model.named_parameters():
        v = state[name]
        if v.shape != p.shape:
            raise ValueError(
                f"state_{which}[{name!r}] has shape {tuple(v.shape)}, the model {tuple(p.shape)}"
            )
        out[name] = v.detach().to(dtype=p.dtype).clone()
    return out


def buffers(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The state's buffers (the model's own where missing), as fresh copies."""
    return {n: state.get(n, b).detach().clone() for n, b in model.named_buffers()}


def project(params: dict[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Masked parameters set to exactly +0.0 outside their mask (a new dict)."""
    out = dict(params)
    for name, m in masks.items():
        out[name] = params[name].masked_fill(~m, 0.0)
    return out


def default_ts(n: int = 21) -> list[float]:
    return [i / (n - 1) for i in range(n)]


def curve_state(
    model: nn.Module,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    control: Mapping[str, Tensor],
    t: float,
    *,
    kind: str = "bezier",
    masks: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The full state (parameters and buffers) of the curve at ``t``, detached.

    Parameters are phi(t) from the endpoints' parameters and ``control``; with ``masks``
    (the sparse subspace) the endpoints are first projected onto the masks. Buffers are
    interpolated linearly, ``(1 - t) b_A + t b_B`` (``interpolate_states``); re-estimate
    BatchNorm statistics for the point rather than trusting them (``evaluate_curve``).
    """
    w1 = endpoint_params(model, state_a, "a")
    w2 = endpoint_params(model, state_b, "b")
    m = check_masks(as_dict(masks) or {}, w1, "curve_state: masks", subset=True)
    if m:
        w1, w2 = project(w1, m), project(w2, m)
    theta = {n: control[n].detach().to(w1[n]) for n in w1}
    with torch.no_grad():
        params = curve_point(kind, w1, theta, w2, t)
    bufs_a, bufs_b = buffers(model, state_a), buffers(model, state_b)
    return {**params, **interpolate_states(bufs_a, bufs_b, t)}


def evaluate_curve(
    model: nn.Module,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    control: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    ts: Sequence[float] | None = None,
    *,
    kind: str = "bezier",
    masks: Mapping[str, Tensor] | None = None,
    bn_reset: bool = True,
    bn_x: Tensor | None = None,
    batch_size: int = 1000,
    progress: bool = False,
) -> tuple[list[float], list[float]]:
    """``(losses, accuracies)`` of the curve's points phi(t) on ``(x, y)`` for t in ``ts``.

    ``ts`` defaults to linspace(0, 1, 21). With ``bn_reset`` and BatchNorm layers the
    running statistics are re-estimated at every t on ``bn_x`` (default ``x``); otherwise
    the buffers are interpolated linearly between the endpoints (``curve_state``).
    ``masks`` projects the endpoints onto the sparse subspace, as ``fit_curve`` does there.
    """
    ts = default_ts() if ts is None else [float(t) for t in ts]
    use_bn = bn_reset and bool(bn_modules(model))
    bx = (x if bn_x is None else bn_x) if use_bn else None
    losses, accs = [], []
    for t in tqdm(ts, desc="curve eval", disable=None if progress else True,
                  leave=False):
        st = curve_state(model, state_a, state_b, control, t, kind=kind, masks=masks)
        loss, acc = evaluate_state(model, st, x, y, batch_size=batch_size, bn_x=bx)
        losses.append(loss)
        accs.append(acc)
    return losses, accs
