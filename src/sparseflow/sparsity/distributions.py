"""How a global sparsity is split over layers: uniform, ER, ERK (docs/science.md section 1).

Every function here works on shapes only, so it can size masks before any model exists.
Shapes follow PyTorch: Linear ``(out, in)``, Conv ``(out, in, *kernel)``.

Integer counts. Per layer the continuous target is ``c_l = d_l * numel_l``. Counts start
at ``round(c_l)`` (``counts.round_half_up``: halves up, after snapping float noise), clipped
to ``[1, numel_l]`` (every sparsified layer keeps at least one weight, so that no layer
disconnects the network). The total is then made equal to
``T = round((1 - s) * sum_l numel_l)`` (``counts.kept_count``) one weight at a time: while
the total is short, add a weight to the layer with the largest residual ``c_l - count_l``
(that still has room); while it is over, remove one from the layer with the largest
``count_l - c_l`` (that keeps >= 1). Ties go to the earlier layer. The total therefore
equals ``T`` exactly, and each count is within one weight of ``c_l`` (unless the ">= 1"
floor lifted it).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import torch

from .counts import kept_count, round_half_up

DISTRIBUTIONS = ("uniform", "er", "erk")

ShapeLike = Sequence[int] | torch.Size | torch.Tensor


def _shape(value: ShapeLike) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(int(v) for v in value)


def raw_density(shape: Sequence[int], distribution: str, power: float = 1.0) -> float:
    """The unnormalised density raw_l of one layer.

    ER:  raw = (n_in + n_out) / (n_in * n_out)           (kernel dims ignored)
    ERK: raw = (n_out + n_in + k_1 + ...) / (n_out * n_in * k_1 * ...) = sum(shape) / prod(shape)
         (for a Linear layer this equals ER)
    uniform: raw = 1.
    The result is raised to ``power`` (rigl's ``erk_power_scale``).
    """
    if distribution == "uniform":
        return 1.0
    if len(shape) < 2:
        raise ValueError(f"{distribution} needs weights of >= 2 dims (out, in, ...), got {shape}")
    dims = shape[:2] if distribution == "er" else shape
    return (sum(dims) / math.prod(dims)) ** power


def _solve_eps(
    raw: dict[str, float], numel: dict[str, int], target: float
) -> tuple[dict[str, float], set[str]]:
    """Densities d_l = min(1, eps * raw_l) with sum_l d_l * numel_l = target.

    eps = (target - sum_{capped} numel_l) / sum_{free} raw_l * numel_l; layers with
    eps * raw_l > 1 join the capped (dense) set and eps is re-solved until none exceeds 1.
    """
    capped: set[str] = set()
    while True:
        free = [n for n in raw if n not in capped]
        if not free:
            return {n: 1.0 for n in raw}, capped
        budget = target - sum(numel[n] for n in capped)
        eps = budget / sum(raw[n] * numel[n] for n in free)
        over = {n for n in free if eps * raw[n] > 1.0}
        if not over:
            dens = {n: (1.0 if n in capped else eps * raw[n]) for n in raw}
            return dens, capped
        capped |= over


def _round_to_total(cont: dict[str, float], numel: dict[str, int], total: int) -> dict[str, int]:
    """Integer counts near ``cont`` in [1, numel] summing to ``total`` (module docstring)."""
    counts = {n: min(numel[n], max(1, round_half_up(c))) for n, c in cont.items()}
    names = list(cont)
    diff = total - sum(counts.values())
    while diff != 0:
        step = 1 if diff > 0 else -1
        room = [n for n in names if (counts[n] < numel[n] if step > 0 else counts[n] > 1)]
        # unreachable when 1 * L <= total <= sum(numel), which the caller checks
        assert room, "no layer can absorb the rounding difference"
        best = max(room, key=lambda n: step * (cont[n] - counts[n]))
        counts[best] += step
        diff -= step
    return counts


def layer_counts(
    shapes: Mapping[str, ShapeLike],
    sparsity: float,
    distribution: str = "erk",
    *,
    dense: Collection[str] = (),
    erk_power_scale: float = 1.0,
    exact_total: bool = True,
) -> dict[str, int]:
    """Exact number of non-zero weights per layer for a global ``sparsity`` s.

    ``exact_total=False`` rounds each layer on its own (half up, at least 1): the total is then
    within one weight per layer of T, and every layer's count is non-increasing in s, which
    magnitude pruning needs (a pruned layer cannot grow back to meet a rounding correction).

    Budget T = round((1 - s) * sum_{l not dense} numel_l), over the sparsified layers only;
    layers named in ``dense`` get all their weights and are left out of the budget (rigl's
    convention). uniform: d_l = 1 - s. ER/ERK: d_l = min(1, eps * raw_l) with eps solved so
    that sum_l d_l * numel_l = T (see ``raw_density`` and ``_solve_eps``); counts are
    rounded as the module docstring says, so ``sum(counts) == T`` exactly.

    ``shapes`` maps names to shapes (or to tensors, whose shape is used). Raises
    ValueError for s outside [0, 1), an unknown distribution, an unknown dense name, or a
    budget smaller than one weight per sparsified layer.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if distribution not in DISTRIBUTIONS:
        valid = ", ".join(DISTRIBUTIONS)
        raise ValueError(f"unknown distribution {distribution!r}; valid: {valid}")
    shp = {n: _shape(s) for n, s in shapes.items()}
    unknown = [n for n in dense if n not in shp]
    if unknown:
        raise ValueError(f"dense names not among the layers: {unknown}; layers: {list(shp)}")
    numel = {n: math.prod(s) for n, s in shp.items()}
    empty = [n for n, k in numel.items() if k == 0]
    if empty:
        raise ValueError(f"layers with no weights cannot be sized: {empty}")
    sparse = [n for n in shp if n not in dense]
    counts = {n: numel[n] for n in shp}
    if not sparse:
        return counts
    total = kept_count(1.0 - sparsity, sum(numel[n] for n in sparse))
    if total < len(sparse):
        raise ValueError(
            f"sparsity {sparsity} leaves {total} weights for {len(sparse)} layers; "
            "every sparsified layer keeps at least 1"
        )
    raw = {n: raw_density(shp[n], distribution, erk_power_scale) for n in sparse}
    dens, _ = _solve_eps(raw, {n: numel[n] for n in sparse}, float(total))
    cont = {n: dens[n] * numel[n] for n in sparse}
    if not exact_total:
        counts.update({n: min(numel[n], max(1, round_half_up(c))) for n, c in cont.items()})
        return counts
    counts.update(_round_to_total(cont, numel, total))
    return counts


def layer_densities(
    shapes: Mapping[str, ShapeLike],
    sparsity: float,
    distribution: str = "erk",
    *,
    dense: Collection[str] = (),
    erk_power_scale: float = 1.0,
) -> dict[str, float]:
    """Realised per-layer densities d_l = count_l / numel_l of ``layer_counts`` (same args)."""
    counts = layer_counts(
        shapes, sparsity, distribution, dense=dense, erk_power_scale=erk_power_scale
    )
    return {n: counts[n] / math.prod(_shape(s)) for n, s in shapes.items()}
