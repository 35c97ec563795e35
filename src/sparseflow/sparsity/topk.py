"""Exact top-k masks by selection, never a sort, and fast on large layers.

``topk_mask(scores, k)`` keeps the k largest scores; ties go to the lower flat (row-major)
index, so the result is deterministic for any scores. The k-th largest score t is found by
selection: ``torch.topk(sorted=False)`` when k <= n/2, else ``torch.kthvalue``.

On a large tensor (n >= ``SAMPLE_FROM``) the selection first narrows the candidates with a
strided sample: if the sample says t is at least ``lo`` and at least k scores are >= lo, then
every score of rank <= k is >= lo (the k-th largest is >= lo), so t is the k-th largest
*candidate*: exact, whatever the sample. Only when the sample's bound turns out wrong
(fewer than k candidates) does it fall back to selecting over every score. For a RigL update
of LeNet-300-100's first layer (k ~ 5,000 of 235,000 scores) this takes the selection from
about 0.8 ms to about 0.15 ms (benchmarks/masking.py prints the update's cost).
"""

from __future__ import annotations

import math

import torch

SAMPLE_FROM = 1 << 15  # below this many scores, select directly
SAMPLE_SIZE = 4096  # strided sample used to bound the k-th largest score


def _select_kth_largest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value of 1-d ``flat`` (1 <= k <= n), by selection over all of it."""
    n = flat.numel()
    if 2 * k <= n:
        return torch.topk(flat, k, sorted=False).values.min()
    return torch.kthvalue(flat, n - k + 1).values


def _sample_bound(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, bool, int] | None:
    """(bound, top, rank) from a strided sample, or None when sampling would not narrow much.

    top: the k-th largest is (very likely) >= bound, candidates are the scores >= bound;
    otherwise it is <= bound and candidates are the scores <= bound. rank: the rank of the
    k-th largest among the candidates counted from their extreme end (k, or n - k + 1).
    """
    n = flat.numel()
    if n < SAMPLE_FROM:
        return None
    sample = flat[:: n // SAMPLE_SIZE]
    m = sample.numel()
    top = 2 * k <= n
    rank = k if top else n - k + 1
    expected = rank * m / n
    j = min(m, math.ceil(expected + 4.0 * math.sqrt(expected) + 2.0))  # 4 sd margin
    if j >= m // 2:  # the bound would keep most of the tensor: no gain
        return None
    bound = _select_kth_largest(sample, j) if top else torch.kthvalue(sample, j).values
    return bound, top, rank


def kth_largest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value of 1-d ``flat`` (1 <= k <= n), exact (0-d tensor).

    Large inputs: bound it from a strided sample (with a margin of 4 standard deviations of
    the sample's rank), select among the candidates on the safe side of the bound, and fall
    back to the whole tensor when the bound is wrong.
    """
    found = _sample_bound(flat, k)
    if found is None:
        return _select_kth_largest(flat, k)
    bound, top, rank = found
    candidates = flat[flat >= bound] if top else flat[flat <= bound]
    if candidates.numel() < rank:  # the sample misled us: select over everything
        return _select_kth_largest(flat, k)
    return _select_kth_largest(candidates, k) if top else torch.kthvalue(candidates, rank).values


def _validated(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``scores`` flattened (bool as uint8) after checking 0 <= k <= n and that none is NaN."""
    flat = scores.detach().reshape(-1)
    n = flat.numel()
    if not 0 <= k <= n:
        raise ValueError(f"k={k} outside [0, {n}]")
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    if flat.is_floating_point() and bool(torch.isnan(flat.amax())):  # amax propagates NaN
        raise ValueError("scores contain NaN")
    return flat


def _keep_flat(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The rule of ``topk_mask`` on validated 1-d scores: a 1-d bool mask."""
    n = flat.numel()
    if k == 0 or k == n:
        return torch.full((n,), k == n, dtype=torch.bool, device=flat.device)
    kth = kth_largest(flat, k)
    keep = flat >= kth
    extra = int(torch.count_nonzero(keep)) - k
    if extra > 0:  # more ties at t than places left: drop the last ones in flat order
        ties = (flat == kth).nonzero().squeeze(1)
        keep[ties[ties.numel() - extra:]] = False
    return keep


def topk_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Ascending flat indices of the k largest scores, by the rule of ``topk_mask``.

    For few of many (k <= n/2, e.g. the positions RigL grows): candidates = indices of the
    scores >= a sampled bound (all of them when the bound fails), then the k-th largest
    candidate t, every candidate > t and the first ties at t in flat order. Equal to
    ``topk_mask(scores, k).flatten().nonzero()``.
    """
    flat = _validated(scores, k)
    if 0 < k and 2 * k <= flat.numel():
        found = _sample_bound(flat, k)
        if found is not None:
            idx = (flat >= found[0]).nonzero().squeeze(1)
            if idx.numel() >= k:  # else the sample misled us: select over everything
                return idx[_keep_flat(flat[idx], k).nonzero().squeeze(1)]  # flat order kept
    return _keep_flat(flat, k).nonzero().squeeze(1)


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask with True at the k largest scores; ties broken by the lower flat index.

    t = the k-th largest score (``kth_largest``: selection, never a sort); keep every score
    >= t, and when more than k scores tie at t keep only the first of them in flat
    (row-major) order. Deterministic for any scores; NaN scores are refused.
    """
    return _keep_flat(_validated(scores, k), k).view(scores.shape)
