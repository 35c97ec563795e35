"""Masks under a sparsity pattern: per-layer counts, and topology updates that keep the pattern
(docs/science.md section 17).

A pattern (``sparsity/patterns.py``) is seen through two notions:

- **atoms**, the units that are active or not: single entries (``unstructured``, ``N:M``,
  ``fan_in``), B x B blocks (``block``) or whole rows (``unit``). An atom's score is the sum of
  its entries' scores (``atom_scores``).
- **groups** of atoms whose active count the pattern fixes: every group of M entries of a row
  (``N:M``), every row (``fan_in``); the whole layer otherwise.

:func:`drop_and_grow` is the one topology update of the dynamic methods under any pattern:
drop the ``n_drop`` active atoms of lowest drop score over the whole layer (as RigL and SET
do), then let every group regrow to its target count (by default the count it had before)
from its highest grow scores. With one group (unstructured) this is exactly SET's and
RigL's update; with groups of M it keeps N:M, with rows it keeps a constant fan-in (SRigL's
update, Lasby et al. 2023, whose per-row targets also ablate units).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .counts import round_half_up
from .distributions import layer_counts
from .patterns import Pattern, achievable_count, from_matrix, matrix_view
from .topk import topk_mask

__all__ = ["atom_mask", "atom_scores", "drop_and_grow", "expand_atoms", "group_view",
           "pattern_counts", "schedule_pattern"]


def pattern_counts(shapes: Mapping[str, tuple[int, ...]], sparsity: float, distribution: str,
                   pattern: Pattern) -> dict[str, int]:
    """Active entries per layer under ``pattern``: the distribution's exact counts
    (``layer_counts``), each rounded to what the pattern allows (``achievable_count``; N:M:
    N/M of every layer whatever the distribution). ValueError naming the layer whose shape does
    not fit the pattern."""
    if pattern.kind == "nm":
        counts = {n: 0 for n in shapes}
    else:
        counts = layer_counts(shapes, sparsity, distribution)
    out = {}
    for name, shape in shapes.items():
        try:
            out[name] = achievable_count(shape, counts[name], pattern)
        except ValueError as e:
            raise ValueError(f"layer {name!r}: {e}") from None
    return out


def schedule_pattern(pattern: Pattern, density: float) -> Pattern | None:
    """The pattern of an intermediate step of gradual pruning at ``density``: N:M becomes
    n_t:M with n_t = clip(round_half_up(density * M), N, M) (None when n_t = M: still dense),
    so a cubic schedule walks N:M down from M:M to N:M; every other pattern is itself."""
    if pattern.kind != "nm":
        return pattern
    n_t = min(pattern.m, max(pattern.n, round_half_up(density * pattern.m)))
    return None if n_t == pattern.m else Pattern("nm", n=n_t, m=pattern.m)


def atom_scores(t: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """A weight-shaped tensor as the 2-d matrix of its atoms' scores (float64): the matrix view
    (``matrix_view``) summed over B x B blocks (``block``) or over rows (``unit``: one column)."""
    mat = matrix_view(t.detach()).to(torch.float64)
    if pattern.kind == "block":
        b = pattern.block
        r, c = mat.shape
        return mat.reshape(r // b, b, c // b, b).sum(dim=(1, 3))
    if pattern.kind == "unit":
        return mat.sum(dim=1, keepdim=True)
    return mat


def atom_mask(mask: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """The atoms of a mask that holds ``pattern``: an atom is active when its first entry is."""
    mat = matrix_view(mask.detach().to(torch.bool))
    if pattern.kind == "block":
        return mat[:: pattern.block, :: pattern.block].clone()
    if pattern.kind == "unit":
        return mat[:, :1].clone()
    return mat.clone()


def expand_atoms(atoms: torch.Tensor, pattern: Pattern, shape: torch.Size | tuple[int, ...]
                 ) -> torch.Tensor:
    """Inverse of :func:`atom_mask`: the weight-shaped bool mask of active atoms."""
    rows = shape[0] if len(shape) > 1 else 1
    cols = 1
    for d in (shape[1:] if len(shape) > 1 else shape):
        cols *= d
    if pattern.kind == "block":
        b = pattern.block
        r, c = atoms.shape
        mat = atoms[:, None, :, None].expand(r, b, c, b).reshape(r * b, c * b)
    elif pattern.kind == "unit":
        mat = atoms.expand(rows, cols)
    else:
        mat = atoms
    return from_matrix(mat.contiguous(), tuple(shape)).to(torch.bool)


def group_view(atoms: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Atoms as ``(groups, size)``: groups of M along rows (N:M), rows (fan_in), one group of
    every atom otherwise."""
    if pattern.kind == "nm":
        return atoms.reshape(-1, pattern.m)
    if pattern.kind == "fan_in":
        return atoms
    return atoms.reshape(1, -1)


def _top_per_group(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Bool ``(G, S)``: in each group g, the ``counts[g]`` highest scores (ties to the lower
    index; -inf scores only when nothing else is left).

    By selection, not a sort: t_g = the counts[g]-th largest score of the group
    (``torch.topk`` with k = max counts), every score above t_g, and of the scores equal to
    t_g the first ones in index order until the group has counts[g]."""
    groups, size = scores.shape
    k = min(size, int(counts.max())) if counts.numel() else 0
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    counts = counts.clamp(max=size)
    top = torch.topk(scores, k, dim=1).values  # descending
    t = top.gather(1, (counts - 1).clamp(min=0)[:, None])
    above = scores > t
    ties = scores == t
    want = counts[:, None] - above.sum(dim=1, keepdim=True)
    chosen = above | (ties & (ties.cumsum(dim=1) <= want))
    chosen[counts == 0] = False
    return chosen


def drop_and_grow(mask: torch.Tensor, drop_scores: torch.Tensor, grow_scores: torch.Tensor,
                  n_drop: int, pattern: Pattern, *, targets: torch.Tensor | None = None,
                  exclude_dropped: bool = False) -> torch.Tensor:
    """The new mask of a topology update under ``pattern`` (the module docstring's rule).

    1. Drop: of the active atoms, the ``n_drop`` of lowest drop score (the atom sums of
       ``drop_scores``, e.g. |w|) leave, over the whole layer (ties: the lower index stays).
    2. Per group g, with kept_g atoms left and target t_g (``targets``, shape ``(groups,)``;
       default: the active count before the drop): when kept_g > t_g the lowest-scored kept
       atoms leave too; when kept_g < t_g the group grows t_g - kept_g atoms of highest grow
       score among those not kept (just-dropped ones included unless ``exclude_dropped``;
       then a group short of free atoms keeps its best dropped ones instead).

    ``mask`` must hold ``pattern``; the result holds it, with sum_g t_g atoms.
    """
    atoms = group_view(atom_mask(mask, pattern), pattern)
    d = group_view(atom_scores(drop_scores.abs() if drop_scores.is_floating_point()
                               else drop_scores, pattern), pattern)
    g = group_view(atom_scores(grow_scores, pattern), pattern)
    g = torch.nan_to_num(g, nan=-torch.inf)
    before = atoms.sum(dim=1)
    t = before if targets is None else targets.to(before.dtype).reshape(-1)
    if t.numel() != atoms.shape[0] or bool((t > atoms.shape[1]).any() | (t < 0).any()):
        raise ValueError(f"targets: expected {atoms.shape[0]} group counts in [0, "
                         f"{atoms.shape[1]}]")
    n_active = int(before.sum())
    if not 0 <= n_drop <= n_active:
        raise ValueError(f"n_drop={n_drop} outside [0, {n_active}]")
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    masked_d = torch.where(atoms, d, -inf)
    kept = topk_mask(masked_d.reshape(-1), n_active - n_drop).view(atoms.shape) & atoms
    # groups over target (ablated rows, a lower target) drop their weakest kept atoms too
    kept_n = kept.sum(dim=1)
    over = (kept_n > t)
    if bool(over.any()):
        kept = kept & _top_per_group(torch.where(kept, d, -inf), torch.minimum(kept_n, t))
        kept_n = kept.sum(dim=1)
    need = (t - kept_n).clamp(min=0)
    dropped = atoms & ~kept
    eligible = ~atoms if exclude_dropped else ~kept
    if exclude_dropped:  # a group short of free atoms keeps its best dropped ones
        short = (need - eligible.sum(dim=1)).clamp(min=0)
        if bool(short.any()):
            back = _top_per_group(torch.where(dropped, d, -inf), short) & dropped
            kept = kept | back
            need = need - short
    grown = _top_per_group(torch.where(eligible, g, -inf), need) & eligible
    new = kept | grown
    shape_atoms = atom_mask(mask, pattern).shape
    return expand_atoms(new.reshape(shape_atoms), pattern, mask.shape)

