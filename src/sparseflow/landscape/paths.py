"""Linear interpolation between two solutions: loss/accuracy along the path and its barrier.

docs/science.md section 6 and the setups of sections 9.1 and 9.3.

Path
----
For two states (``state_dict``-like mappings of parameters *and* buffers) A and B,

    theta(alpha) = (1 - alpha) * theta_A + alpha * theta_B

for every floating tensor (parameters and floating buffers such as BatchNorm running
statistics), evaluated with ``torch.lerp`` (exact when A == B); integer buffers
(``num_batches_tracked``) are taken from A. At ``alpha == 0`` the result is exactly A and
at ``alpha == 1`` exactly B (copies, bit for bit), so the endpoints of a path reproduce
the endpoints' own losses exactly. With a mask (see
``combine_masks``) every masked weight is then projected onto the sparse subspace,
``theta_l <- where(M_l, theta_l, 0)`` (an exact +0.0 outside the mask), also at the endpoints.

Barrier
-------
With L_A = L(theta(0)) and L_B = L(theta(1)),

    barrier = max_{alpha in [0, 1]} L(theta(alpha)) - ((1 - alpha) L_A + alpha L_B),

the maximum taken over the requested alphas in [0, 1] together with the endpoints, whose
own term is 0, so ``barrier >= 0``; alphas outside [0, 1] are evaluated for plots only.
``monotone`` says the loss never increases along alpha in [0, 1] (endpoints included).

BatchNorm
---------
Interpolated running statistics do not describe the interpolated network, so by default
the statistics are re-estimated at every point (``bn_reset=True``) on ``bn_x`` (default:
the evaluation inputs), as ``evaluate_state`` of ``landscape/evaluation.py`` does it
(Garipov et al. 2018): on copies of the buffers, so the model object is never changed by
``linear_path``.

Everything runs through ``torch.func.functional_call``, so any ``nn.Module`` works.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm import tqdm

from sparseflow.sparsity import check_masks

from .evaluation import bn_modules, evaluate_state

__all__ = [
    "MASK_RULES",
    "PathResult",
    "combine_masks",
    "interpolate_states",
    "linear_path",
]

MASK_RULES: tuple[str, ...] = ("shared", "union", "intersection", "a", "b")
"""Rules of ``combine_masks``."""

MaskLike = Mapping[str, Tensor]


# --- masks ---------------------------------------------------------------------------------


def as_dict(masks: MaskLike | None) -> dict[str, Tensor] | None:
    """A plain ``{name: bool tensor}`` from a dict or a ``sparsity.MaskSet`` (or None)."""
    if masks is None:
        return None
    return {name: masks[name].to(torch.bool) for name in masks}


def combine_masks(
    mask_a: MaskLike | None, mask_b: MaskLike | None, rule: str = "shared"
) -> dict[str, Tensor] | None:
    """Combine the masks of two sparse solutions into the one mask of the path between them.

    Rules (per weight, elementwise): ``"shared"`` — the masks must be equal and that mask is
    returned (``ValueError`` naming the first differing weight otherwise); ``"union"`` —
    M_A | M_B; ``"intersection"`` — M_A & M_B; ``"a"`` / ``"b"`` — one side's mask.

    ``None`` means dense. Both None gives None (a dense path). When one side is None, or a
    weight is masked on one side only, the missing mask is read as all-ones: ``"union"`` is
    then all-ones for that weight, ``"intersection"`` the other side's mask, and
    ``"shared"`` an error unless the other side's mask is all-ones too. Masks may be dicts
    of bool tensors or ``sparsity.MaskSet``; the result is a new dict (bool tensors).
    """
    if rule not in MASK_RULES:
        raise ValueError(f"unknown mask rule {rule!r}; choose one of {', '.join(MASK_RULES)}")
    a, b = as_dict(mask_a), as_dict(mask_b)
    if a is None and b is None:
        return None
    a = {} if a is None else a
    b = {} if b is None else b
    out: dict[str, Tensor] = {}
    for name in [*a, *(n for n in b if n not in a)]:
        ma = a.get(name)
        mb = b.get(name)
        ma = torch.ones_like(mb) if ma is None else ma
        mb = torch.ones_like(ma) if mb is None else mb
        if ma.shape != mb.shape:
            raise ValueError(
                f"mask shapes differ for {name!r}: {tuple(ma.shape)} vs {tuple(mb.shape)}"
            )
        if rule == "shared":
            if not torch.equal(ma, mb):
                diff = int((ma != mb).sum())
                raise ValueError(
                    f"masks differ at {name!r} ({diff} positions); rule 'shared' needs equal "
                    "masks (use 'union' or 'intersection')"
                )
            out[name] = ma.clone()
        elif rule == "union":
            out[name] = ma | mb
        elif rule == "intersection":
            out[name] = ma & mb
        else:
            out[name] = (ma if rule == "a" else mb).clone()
    return out


def _apply_masks(state: dict[str, Tensor], masks: Mapping[str, Tensor]) -> None:
    """``state[name] <- where(M, state[name], 0)`` for every masked name (exact +0.0)."""
    for name, m in masks.items():
        v = state[name]
        zero = torch.zeros((), dtype=v.dtype, device=v.device)
        state[name] = torch.where(m.to(v.device), v, zero)


# --- interpolation -------------------------------------------------------------------------


def interpolate_states(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    alpha: float,
    masks: MaskLike | None = None,
) -> dict[str, Tensor]:
    """theta(alpha) = (1 - alpha) * theta_A + alpha * theta_B, then projected onto the mask.

    Computed as ``torch.lerp`` (theta_A + alpha (theta_B - theta_A) for alpha < 0.5,
    theta_B - (1 - alpha)(theta_B - theta_A) otherwise): the same value up to rounding, and
    exact when A == B (interpolating a solution with itself gives the solution at every
    alpha). Applies to every floating tensor (parameters and floating buffers); non-floating
    tensors (``num_batches_tracked``) are copied from A. ``alpha == 0`` returns exact copies
    of A and ``alpha == 1`` exact copies of B, every tensor included (no arithmetic, so no
    rounding). With
    ``masks`` (``{name: bool tensor}``, e.g. from ``combine_masks``) each masked tensor is
    then ``where(M, theta, 0)``: exactly +0.0 outside the mask, at every alpha.
    Both states must have the same keys and shapes; the result is new tensors, detached.
    """
    if set(state_a) != set(state_b):
        only_a = sorted(set(state_a) - set(state_b))
        only_b = sorted(set(state_b) - set(state_a))
        raise ValueError(f"states have different keys: only in A {only_a}, only in B {only_b}")
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha}")
    out: dict[str, Tensor] = {}
    for name, ta in state_a.items():
        tb = state_b[name]
        if ta.shape != tb.shape:
            raise ValueError(
                f"{name!r} has shape {tuple(ta.shape)} in A and {tuple(tb.shape)} in B"
            )
        ta = ta.detach()
        tb = tb.detach().to(ta.device)
        if alpha == 0.0:
            out[name] = ta.clone()
        elif alpha == 1.0:
            out[name] = tb.clone()
        elif not ta.is_floating_point():
            out[name] = ta.clone()
        else:
            out[name] = torch.lerp(ta, tb.to(ta.dtype), alpha)
    m = as_dict(masks)
    if m:
        _apply_masks(out, check_masks(m, out, "interpolate_states: masks", subset=True,
                                      against="tensor of the state"))
    return out


# --- the linear path -----------------------------------------------------------------------


@dataclass
class PathResult:
    """Loss and accuracy along theta(alpha), with the barrier and monotonicity on [0, 1]."""

    alphas: list[float]
    loss: list[float]
    accuracy: list[float]
    barrier: float
    barrier_alpha: float
    monotone: bool
    loss_a: float
    loss_b: float

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly dict of the fields."""
        return dict(self.__dict__)


def path_barrier(
    alphas: Sequence[float], losses: Sequence[float], loss_a: float, loss_b: float
) -> tuple[float, float]:
    """``(barrier, alpha at the barrier)``: max_a L(a) - ((1-a) L_A + a L_B) on [0, 1].

    The endpoints (term 0) always count, so the barrier is >= 0; at ties the smallest alpha.
    """
    best, best_alpha = 0.0, 0.0
    for a, loss in sorted(zip(alphas, losses, strict=True)):
        if 0.0 <= a <= 1.0:
            excess = loss - ((1.0 - a) * loss_a + a * loss_b)
            if excess > best:
                best, best_alpha = excess, a
    return best, best_alpha


def is_monotone(
    alphas: Sequence[float],
    losses: Sequence[float],
    loss_a: float,
    loss_b: float,
    tol: float = 1e-6,
) -> bool:
    """Whether the loss never increases along alpha in [0, 1], endpoints included.

    Consecutive points (sorted by alpha) may rise by at most ``tol * max(1, |L|)``.
    """
    pts = sorted(
        [(0.0, loss_a), *((a, v) for a, v in zip(alphas, losses, strict=True) if 0 <= a <= 1),
         (1.0, loss_b)]
    )
    pairs = zip(pts[:-1], pts[1:], strict=True)
    return all(v1 - v0 <= tol * max(1.0, abs(v0)) for (_, v0), (_, v1) in pairs)


def linear_path(
    model: nn.Module,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    alphas: Sequence[float],
    *,
    masks: MaskLike | None = None,
    bn_reset: bool = True,
    bn_x: Tensor | None = None,
    batch_size: int = 1000,
    tol: float = 1e-6,
    progress: bool = False,
) -> PathResult:
    """Evaluate theta(alpha) = (1 - alpha) theta_A + alpha theta_B on ``(x, y)`` at ``alphas``.

    ``masks`` is the path's mask (``combine_masks``); each point is projected onto it.
    With ``bn_reset`` (default) and BatchNorm layers, running statistics are re-estimated
    at every point on ``bn_x`` (default ``x``); without it the interpolated statistics are
    used. L_A and L_B are the losses at alpha 0 and 1 (taken from the list when present,
    computed otherwise); the barrier is max over alpha in [0, 1] of
    L(theta(alpha)) - ((1 - alpha) L_A + alpha L_B) (>= 0, see ``path_barrier``) and
    ``monotone`` allows rises of ``tol * max(1, |L|)`` (see ``is_monotone``). Results keep
    the order of ``alphas``. The model object is not changed.
    """
    alphas = [float(a) for a in alphas]
    if not alphas:
        raise ValueError("alphas is empty")
    if not all(math.isfinite(a) for a in alphas):
        raise ValueError(f"alphas must be finite, got {alphas}")
    m = as_dict(masks)
    if bn_reset and bn_modules(model):
        bn_x = x if bn_x is None else bn_x
    else:
        bn_x = None

    def evaluate(alpha: float) -> tuple[float, float]:
        theta = interpolate_states(state_a, state_b, alpha, m)
        return evaluate_state(model, theta, x, y, batch_size=batch_size, bn_x=bn_x)

    cache: dict[float, tuple[float, float]] = {}
    for a in tqdm(alphas, desc="linear path", disable=None if progress else True,
                  leave=False):
        if a not in cache:
            cache[a] = evaluate(a)
    for a in (0.0, 1.0):
        if a not in cache:
            cache[a] = evaluate(a)
    loss = [cache[a][0] for a in alphas]
    acc = [cache[a][1] for a in alphas]
    loss_a, loss_b = cache[0.0][0], cache[1.0][0]
    barrier, barrier_alpha = path_barrier(alphas, loss, loss_a, loss_b)
    return PathResult(
        alphas=alphas,
        loss=loss,
        accuracy=acc,
        barrier=barrier,
        barrier_alpha=barrier_alpha,
        monotone=is_monotone(alphas, loss, loss_a, loss_b, tol),
        loss_a=loss_a,
        loss_b=loss_b,
    )
