"""Same-capacity sizing: weight counts, small-dense widths and SC-SDC layer densities."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .errors import ModelError
from .registry import build_model, default_widths, with_widths

__all__ = [
    "dense_weight_count",
    "scale_widths",
    "scsdc_layer_counts",
    "scsdc_layer_densities",
    "small_dense_widths",
    "weight_count",
]

WEIGHT_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
"""Module types whose ``weight`` counts as a layer weight (the tensors sparsity acts on)."""


def weight_count(model: nn.Module) -> int:
    """Number of entries of all Linear/Conv ``weight`` tensors (no biases, no BatchNorm)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, WEIGHT_LAYERS))


def dense_weight_count(
    name: str, input_shape: Sequence[int], num_classes: int, **model_kwargs
) -> int:
    """``weight_count`` of a registered model, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = build_model(name, input_shape, num_classes, **model_kwargs)
    return weight_count(model)


def scale_widths(widths: Sequence[int], factor: float) -> list[int]:
    """Multiply every width by ``factor`` and round half up, keeping each at least 1."""
    return [max(1, int(w * factor + 0.5)) for w in widths]


def small_dense_widths(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    target_nonzeros: int,
    widths: Sequence[int] | None = None,
    **model_kwargs,
) -> list[int]:
    """Widths of a dense model whose weight count is as close as possible to a target.

    All hidden widths (``widths``, else the model's defaults under ``model_kwargs``) are
    multiplied by one common factor ``f``. The weight count is non-decreasing in ``f``, so
    bisection finds the factor ``f*`` at which the rounded (half up, at least 1) widths first
    exceed ``target_nonzeros``. Rounding alone can leave a large gap for tiny nets (LeNet5
    at 5%: -9.7% or +10.3%), so each width may then be rounded down or up around
    ``w * f*``: starting from all floors, widths are raised to their ceilings one at a time,
    greedily, while that brings the count closer to the target. The result is the closest of
    these candidates (the smaller on a tie). Only Linear/Conv weights count (see
    ``weight_count``), not biases. ``f`` may exceed 1 when the target is above the dense
    count. For a sparse model of density ``d``, pass
    ``target_nonzeros = round(d * dense_weight_count(...))``.
    """
    if isinstance(target_nonzeros, bool) or not isinstance(target_nonzeros, int):
        raise ModelError(f"target_nonzeros must be an integer, got {target_nonzeros!r}")
    if target_nonzeros < 1:
        raise ModelError(f"target_nonzeros must be >= 1, got {target_nonzeros}")
    opts = dict(model_kwargs)
    if widths is not None:
        opts["widths"] = list(widths)
    base = default_widths(name, input_shape, num_classes, **opts)
    cache: dict[tuple[int, ...], int] = {}

    def count(ws: list[int]) -> int:
        key = tuple(ws)
        if key not in cache:
            kwargs = with_widths(opts, ws)
            cache[key] = dense_weight_count(name, input_shape, num_classes, **kwargs)
        return cache[key]

    def error(ws: list[int]) -> tuple[float, float]:
        try:
            n = count(ws)
        except ModelError:  # e.g. a rounding that breaks a model's width constraints
            return math.inf, math.inf
        return abs(n - target_nonzeros), n

    lo, hi = 0.0, 1.0
    if count(scale_widths(base, lo)) > target_nonzeros:
        return scale_widths(base, lo)
    while count(scale_widths(base, hi)) <= target_nonzeros:
        lo, hi = hi, hi * 2
        if hi > 2**20:
            raise ModelError(f"cannot reach {target_nonzeros} weights by widening {name!r}")
    for _ in range(60):
        if scale_widths(base, lo) == scale_widths(base, hi):
            break
        mid = (lo + hi) / 2
        if count(scale_widths(base, mid)) <= target_nonzeros:
            lo = mid
        else:
            hi = mid
    candidates = [scale_widths(base, lo), scale_widths(base, hi)]
    current = [max(1, math.floor(w * hi)) for w in base]
    ceilings = [max(1, math.ceil(w * hi)) for w in base]
    candidates.append(current)
    while True:
        moves = [
            current[:i] + [ceilings[i]] + current[i + 1 :]
            for i in range(len(current))
            if current[i] < ceilings[i]
        ]
        best = min(moves, key=error, default=None)
        if best is None or error(best) >= error(current):
            break
        current = best
        candidates.append(current)
    return min(candidates, key=error)


def _check_scsdc(depth: int, sparse_width: int, dense_width: int, in_features: int, classes: int):
    for what, v in (
        ("depth", depth),
        ("sparse_width", sparse_width),
        ("dense_width", dense_width),
        ("in_features", in_features),
        ("num_classes", classes),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ModelError(f"{what} must be a positive integer, got {v!r}")
    if dense_width > sparse_width:
        raise ModelError(
            f"dense_width ({dense_width}) must not exceed sparse_width ({sparse_width})"
        )


def scsdc_layer_counts(
    depth: int, sparse_width: int, dense_width: int, in_features: int, num_classes: int
) -> list[int]:
    """Non-zero weights per layer for an SC-SDC pair of MLPs with ``depth`` hidden layers.

    Each count equals the number of weights of the narrow dense MLP's layer:
    ``[in_features * W_d] + [W_d * W_d] * (depth - 1) + [W_d * num_classes]``. These exact
    integers are the source of truth; the wide sparse MLP (width ``W_s``) keeps that many
    weights in each of its layers.
    """
    _check_scsdc(depth, sparse_width, dense_width, in_features, num_classes)
    d = dense_width
    return [in_features * d, *([d * d] * (depth - 1)), d * num_classes]


def scsdc_layer_densities(
    depth: int, sparse_width: int, dense_width: int, in_features: int, num_classes: int
) -> list[float]:
    """Per-layer density of the wide sparse MLP in an SC-SDC pair (Tessera et al. 2021).

    ``scsdc_layer_counts(...)[l] / numel(sparse layer l)``, i.e. ``W_d/W_s`` for the first and
    output layers and ``(W_d/W_s)**2`` for hidden-to-hidden layers.
    """
    counts = scsdc_layer_counts(depth, sparse_width, dense_width, in_features, num_classes)
    s = sparse_width
    numels = [in_features * s, *([s * s] * (depth - 1)), s * num_classes]
    return [c / n for c, n in zip(counts, numels, strict=True)]
