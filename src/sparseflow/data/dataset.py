"""The :class:`Dataset` container and the fixed held-out split."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .errors import DataError

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class Dataset:
    """Tensors of one dataset, normalised, with held-out batches carved from its training set.

    ``x_*`` are float32 ``(N, *input_shape)``, ``y_*`` int64. ``heldout`` batches were taken
    out of the training set (they are not in ``x_train``). ``augment(x, gen)``, when not
    ``None``, augments a training batch.
    """

    name: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    heldout: list[tuple[torch.Tensor, torch.Tensor]] = field(repr=False)
    num_classes: int
    input_shape: tuple[int, ...]
    augment: Augment | None = None


def heldout_sizes(sizes: Sequence[int] | int) -> tuple[int, ...]:
    """Check held-out batch sizes (one int or a sequence of positive ints) and return a tuple."""
    sizes = (sizes,) if isinstance(sizes, int) and not isinstance(sizes, bool) else tuple(sizes)
    if any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in sizes):
        raise DataError(f"held-out batch sizes must be positive integers, got {sizes}")
    return sizes


def carve_heldout(
    x: torch.Tensor,
    y: torch.Tensor,
    sizes: Sequence[int] | int,
    seed: int,
    name: str = "dataset",
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Split off held-out batches of the given ``sizes`` from ``(x, y)``.

    The examples come from ``torch.randperm`` under ``torch.Generator().manual_seed(seed)``,
    so they depend only on ``seed`` and the data, never on the global RNG. The rest keeps
    its original order. Returns ``(x_rest, y_rest, [(x_batch, y_batch), ...])``.
    """
    sizes = heldout_sizes(sizes)
    total, n = sum(sizes), len(x)
    if total >= n:
        raise DataError(
            f"held-out batches {sizes} need {total} examples but {name} has only {n} "
            "training examples; pass smaller heldout sizes"
        )
    if total == 0:
        return x, y, []
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    batches, start = [], 0
    for size in sizes:
        idx = perm[start : start + size]
        batches.append((x[idx], y[idx]))
        start += size
    keep = torch.ones(n, dtype=torch.bool)
    keep[perm[:total]] = False
    return x[keep], y[keep], batches
