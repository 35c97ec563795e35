"""Integer counts from fractions: one helper per rounding rule (docs/science.md section 14).

A count is a fraction of an integer: the weights a density keeps (``d * n``), the active
weights a drop fraction removes (``alpha * n_active``), the step at a fraction of training
(``f * total``). The product is computed in floating point, where decimal fractions are not
exact: ``0.29 * 100 == 28.999999999999996`` and ``1 - 0.9 == 0.09999999999999998``. Every
helper therefore first *snaps* the product x (:func:`snap`): when x lies within

    tol(x) = min(1e-9 * max(1, |x|), 1e-7)

of a multiple of 1/2, x becomes that multiple. Then it applies its rule:

- :func:`kept_count` / :func:`round_half_up`: nearest integer, halves up, ``floor(x + 1/2)``;
- :func:`floor_count`: ``floor(x)``;
- :func:`round_half_even` / :func:`step_at`: nearest integer, halves to even (Python's
  ``round``); ``step_at`` is at least 1.

Why this tolerance: for a fraction f = m / 10^6 (a decimal of at most 6 digits, or 1 minus
one) and an integer n, the exact product is a multiple of 10^-6, so it is either a multiple
of 1/2 or at least 5e-7 > 1e-7 away from one: snapping never moves an exact value across a
rounding boundary. The float error of the product is at most about 1.2e-16 * n + 1.1e-16 * |x|
(the fraction is off by at most 1.2e-16, also after ``1 - s``), which is below tol(x) for
every n up to about 8e8. So on such inputs every helper equals the rule applied to the exact
rational product (tests/test_sparsity_counts.py checks this with ``fractions.Fraction``).
Products further than tol(x) from a multiple of 1/2 are left as they are, so every other
result is the plain rule on the float product.
"""

from __future__ import annotations

import math

SNAP_RELATIVE = 1e-9
"""Relative tolerance of :func:`snap` (times ``max(1, |x|)``)."""
SNAP_ABSOLUTE = 1e-7
"""Cap of the tolerance: below the 5e-7 spacing of 6-digit decimals times integers from halves."""

__all__ = [
    "SNAP_ABSOLUTE",
    "SNAP_RELATIVE",
    "floor_count",
    "kept_count",
    "round_half_even",
    "round_half_up",
    "snap",
    "step_at",
]


def snap(x: float) -> float:
    """x moved onto the nearest multiple of 1/2 when within tol(x) of it, else x unchanged.

    tol(x) = min(1e-9 * max(1, |x|), 1e-7) (module docstring). Raises ValueError for a
    non-finite x.
    """
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"cannot count a non-finite amount, got {x}")
    half = round(2.0 * x) / 2.0
    tol = min(SNAP_RELATIVE * max(1.0, abs(x)), SNAP_ABSOLUTE)
    return half if abs(x - half) <= tol else x


def round_half_up(x: float) -> int:
    """Nearest integer to ``snap(x)``, halves rounded up: ``floor(snap(x) + 1/2)``."""
    return math.floor(snap(x) + 0.5)


def round_half_even(x: float) -> int:
    """Nearest integer to ``snap(x)``, halves rounded to even (Python's ``round``)."""
    return round(snap(x))


def kept_count(density: float, n: int) -> int:
    """Weights kept when a ``density`` of ``n`` is kept: ``round_half_up(density * n)``.

    The rule of every budget in the library (``layer_counts``' total, the global scopes of
    magnitude pruning and pruning at init): round((1 - s) * N), halves up. Pass
    ``density = 1 - sparsity``.
    """
    return round_half_up(density * n)


def floor_count(fraction: float, n: int) -> int:
    """``floor(snap(fraction * n))``: e.g. the ``floor(alpha_t * n_active)`` weights SET and
    RigL drop (0.29 of 100 active weights is 29, not 28)."""
    return math.floor(snap(fraction * n))


def step_at(fraction: float, total_steps: int) -> int:
    """The optimiser step at ``fraction`` of ``total_steps``: ``max(1, round_half_even(f * T))``.

    The run config's rule for step fractions (``sparse.update_end``, ``prune_begin``, ...),
    e.g. RigL's default t_end = 75% of training.
    """
    return max(1, round_half_even(fraction * total_steps))
