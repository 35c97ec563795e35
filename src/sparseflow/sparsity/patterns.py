"""Sparsity patterns: which masks a layer may have (docs/science.md section 17).

A pattern constrains the set of allowed masks; a method still decides *which* weights are
active by its scores (magnitude, gradient, random), and :func:`pattern_topk` keeps the best
scores the pattern allows. The weight is seen as a 2-d matrix ``(out, fan_in)``
(:func:`matrix_view`): a Linear weight as it is; a Conv weight ``(out, in, kh, kw)`` permuted to
``(out, kh, kw, in)`` and flattened, so that consecutive entries of a row run along the input
channels -- the layout in which GPUs accelerate N:M sparsity (NVIDIA's ASP permutes the same
way).

Patterns (``sparse.pattern``):

- ``unstructured``: any k entries (the exact top-k of ``sparsity/topk.py``).
- ``N:M`` (e.g. ``2:4``): every group of M consecutive entries of a row holds exactly N active
  ones; the density is N/M whatever count is asked for. Needs fan_in divisible by M.
- ``block:BxB`` (or ``block:B``): whole B x B blocks of the matrix are active or not; a block's
  score is the sum of its entries' scores. Needs both sides divisible by B; the count is
  rounded half up to a whole number of blocks.
- ``unit``: whole output units (rows; conv filters) are active or not; a row's score is the sum
  of its scores; the count is rounded to whole rows (at least one row).
- ``fan_in``: constant fan-in (SRigL's constraint): every row has the same number of active
  entries, the k / out best of that row (count rounded to a multiple of ``out``, at least one
  per row).

Ties go to the lower index (rows, groups and blocks alike), so a mask is a function of its
scores. Counts use the rounding rule of ``sparsity/counts.py`` (``kept_count``: nearest,
halves up).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .counts import round_half_up
from .topk import topk_mask

__all__ = ["KINDS", "Pattern", "achievable_count", "from_matrix", "matrix_view", "parse_pattern",
           "pattern_topk", "pattern_violations", "random_pattern_mask"]

KINDS = ("unstructured", "nm", "block", "unit", "fan_in")


@dataclass(frozen=True)
class Pattern:
    """A sparsity pattern: ``kind`` in ``KINDS``; ``n``/``m`` for N:M; ``block`` for blocks."""

    kind: str = "unstructured"
    n: int = 0
    m: int = 0
    block: int = 0

    def __str__(self) -> str:
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "block":
            return f"block:{self.block}x{self.block}"
        return self.kind

    @property
    def structured(self) -> bool:
        """Whether the pattern constrains anything (every kind but ``unstructured``)."""
        return self.kind != "unstructured"


def parse_pattern(text: str) -> Pattern:
    """``unstructured``, ``N:M`` (``2:4``; 1 <= N < M), ``block:BxB`` or ``block:B`` (B >= 2),
    ``unit``, ``fan_in`` (also ``fan-in``) as a :class:`Pattern`; ValueError saying what is
    expected otherwise."""
    s = str(text).strip().lower()
    expected = ("expected unstructured, N:M (e.g. 2:4), block:BxB (e.g. block:4x4), unit or "
                f"fan_in, got {text!r}")
    if s in ("unstructured", "unit"):
        return Pattern(s)
    if s in ("fan_in", "fan-in", "fanin"):
        return Pattern("fan_in")
    if s.startswith("block:"):
        sides = s[len("block:"):].split("x")
        if len(sides) not in (1, 2) or not all(p.isdigit() for p in sides):
            raise ValueError(expected)
        if len(set(sides)) != 1:
            raise ValueError(f"block blocks are square: got {text!r}")
        b = int(sides[0])
        if b < 2:
            raise ValueError(f"block size must be at least 2, got {text!r}")
        return Pattern("block", block=b)
    parts = s.split(":")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        n, m = int(parts[0]), int(parts[1])
        if not 1 <= n < m:
            raise ValueError(f"N:M needs 1 <= N < M, got {text!r}")
        return Pattern("nm", n=n, m=m)
    raise ValueError(expected)


def matrix_view(t: torch.Tensor) -> torch.Tensor:
    """The ``(out, fan_in)`` matrix of a weight-shaped tensor: 2-d as it is; ``(out, in, *k)``
    permuted to ``(out, *k, in)`` and flattened (input channels fastest). 1-d: one row."""
    if t.dim() == 1:
        return t.reshape(1, -1)
    if t.dim() == 2:
        return t
    return t.movedim(1, -1).reshape(t.shape[0], -1)


def from_matrix(mat: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`matrix_view`: the ``(out, fan_in)`` matrix back in ``shape``."""
    shape = tuple(shape)
    if len(shape) <= 2:
        return mat.reshape(shape)
    out, inp, *k = shape
    return mat.reshape(out, *k, inp).movedim(-1, 1).contiguous()


def _rows_cols(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    shape = tuple(shape)
    if len(shape) == 1:
        return 1, shape[0]
    rows = shape[0]
    cols = 1
    for d in shape[1:]:
        cols *= d
    return rows, cols


def _check_fits(shape: torch.Size | tuple[int, ...], pattern: Pattern) -> None:
    rows, cols = _rows_cols(shape)
    if pattern.kind == "nm" and cols % pattern.m:
        raise ValueError(f"pattern {pattern}: a layer of shape {tuple(shape)} has fan-in {cols}, "
                         f"not a multiple of {pattern.m}")
    if pattern.kind == "block" and (rows % pattern.block or cols % pattern.block):
        raise ValueError(f"pattern {pattern}: a layer of shape {tuple(shape)} is a {rows} x "
                         f"{cols} matrix, not divisible into {pattern.block} x {pattern.block} "
                         "blocks")


def achievable_count(shape: torch.Size | tuple[int, ...], k: int, pattern: Pattern) -> int:
    """The number of active entries a layer of ``shape`` holds under ``pattern`` when ``k`` are
    asked for: ``k`` (unstructured; N:M: numel * N / M whatever ``k``); otherwise ``k`` rounded
    half up to whole blocks of B^2, whole rows of fan_in, or a multiple of ``out`` (rows at
    least 1 for ``unit`` and ``fan_in`` when k > 0). ValueError when the shape does not fit the
    pattern (N:M: fan-in not a multiple of M; blocks: a side not a multiple of B)."""
    _check_fits(shape, pattern)
    rows, cols = _rows_cols(shape)
    n = rows * cols
    if not 0 <= k <= n:
        raise ValueError(f"count {k} out of range for a layer of {n} entries")
    if pattern.kind == "unstructured":
        return k
    if pattern.kind == "nm":
        return n // pattern.m * pattern.n
    unit = {"block": pattern.block ** 2, "unit": cols, "fan_in": rows}[pattern.kind]
    whole = round_half_up(k / unit) if k else 0
    if k and pattern.kind in ("unit", "fan_in"):
        whole = max(1, whole)
    return whole * unit


def _stable_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest along the last dim, ties to the lower index."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(-1, order, True)


def pattern_topk(scores: torch.Tensor, k: int, pattern: Pattern) -> torch.Tensor:
    """Boolean mask of ``scores``' shape with ``achievable_count(shape, k, pattern)`` active
    entries: the highest scores the pattern allows (module docstring; ties to the lower
    index). ``scores`` must be finite where they matter; a NaN score counts as the lowest."""
    count = achievable_count(scores.shape, k, pattern)
    if pattern.kind == "unstructured":
        return topk_mask(scores, count)
    s = torch.nan_to_num(matrix_view(scores.detach()).to(torch.float64), nan=-torch.inf)
    rows, cols = s.shape
    if pattern.kind == "nm":
        mat = _stable_top(s.reshape(rows, cols // pattern.m, pattern.m), pattern.n)
        mat = mat.reshape(rows, cols)
    elif pattern.kind == "block":
        b = pattern.block
        blocks = s.reshape(rows // b, b, cols // b, b).sum(dim=(1, 3))
        keep = topk_mask(blocks, count // (b * b))
        mat = keep[:, None, :, None].expand(rows // b, b, cols // b, b).reshape(rows, cols)
    elif pattern.kind == "unit":
        keep = topk_mask(s.sum(dim=1), count // cols)
        mat = keep[:, None].expand(rows, cols)
    else:  # fan_in
        mat = _stable_top(s, count // rows)
    return from_matrix(mat, scores.shape).to(torch.bool)


def random_pattern_mask(shape: torch.Size | tuple[int, ...], k: int, pattern: Pattern,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random mask under ``pattern`` with ``achievable_count(shape, k, pattern)``
    active entries: :func:`pattern_topk` of i.i.d. U(0, 1) scores (every allowed mask with that
    count, per group / block / row, equally likely)."""
    return pattern_topk(torch.rand(tuple(shape), generator=generator, dtype=torch.float64), k,
                        pattern)


def pattern_violations(mask: torch.Tensor, pattern: Pattern, *, empty_units: bool = False
                       ) -> list[str]:
    """What in ``mask`` breaks ``pattern`` (empty when it holds): N:M groups without exactly N
    active, partly active blocks or rows, rows whose active count differs from the first's
    (``empty_units``: among the rows with any active entry, e.g. SRigL's ablated units)."""
    _check_fits(mask.shape, pattern)
    mat = matrix_view(mask.detach().to(torch.bool))
    rows, cols = mat.shape
    bad: list[str] = []
    if pattern.kind == "nm":
        per = mat.reshape(rows, cols // pattern.m, pattern.m).sum(-1)
        wrong = int((per != pattern.n).sum())
        if wrong:
            bad.append(f"{wrong} groups of {pattern.m} without exactly {pattern.n} active")
    elif pattern.kind == "block":
        b = pattern.block
        per = mat.reshape(rows // b, b, cols // b, b).sum(dim=(1, 3))
        wrong = int(((per != 0) & (per != b * b)).sum())
        if wrong:
            bad.append(f"{wrong} blocks of {b}x{b} partly active")
    elif pattern.kind == "unit":
        per = mat.sum(1)
        wrong = int(((per != 0) & (per != cols)).sum())
        if wrong:
            bad.append(f"{wrong} units partly active")
    elif pattern.kind == "fan_in":
        per = mat.sum(1)
        if empty_units:
            per = per[per > 0]
        if per.numel() and int((per != per[0]).sum()):
            bad.append(f"fan-in differs across units ({int(per.min())}..{int(per.max())})")
    return bad
