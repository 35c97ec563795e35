"""Batch-level training augmentation: random shifts / crops with optional horizontal flips.

One :class:`RandomCrop` pads a batch ``(N, C, H, W)`` by ``pad`` pixels and cuts every example
back to ``H x W`` at its own random offset (and mirrors it left-right with probability 1/2
when ``flip``), all in one ``gather``: no Python loop over examples. Results depend only on
the generator's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RandomCrop:
    """Random ``pad``-pixel shift per example, optionally with a random horizontal flip.

    ``fill`` is the per-channel value of the padding, in the (normalised) units of the
    input; ``None`` replicates the border pixels instead. It is a plain picklable object,
    so a :class:`~sparseflow.data.Dataset` can be sent to worker processes.
    """

    pad: int
    flip: bool = False
    fill: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"pad must be >= 0, got {self.pad}")

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Augment the batch ``x`` of shape ``(N, C, H, W)``, drawing from ``gen``."""
        if x.ndim != 4:
            raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        p = self.pad
        offsets = torch.randint(0, 2 * p + 1, (2, n), generator=gen, device=gen.device)
        offsets = offsets.to(x.device)
        flips = None
        if self.flip:
            flips = (torch.rand(n, generator=gen, device=gen.device) < 0.5).to(x.device)
        if p == 0 and flips is None:
            return x.clone()
        padded = _pad(x, p, self.fill)
        rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (N, H)
        cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (N, W)
        if flips is not None:
            cols = torch.where(flips[:, None], cols.flip(1), cols)
        index = rows[:, :, None] * (w + 2 * p) + cols[:, None, :]  # (N, H, W) into padded
        index = index.reshape(n, 1, h * w).expand(n, c, h * w)
        return padded.reshape(n, c, -1).gather(2, index).reshape(n, c, h, w)


def _pad(x: torch.Tensor, p: int, fill: Sequence[float] | None) -> torch.Tensor:
    if p == 0:
        return x
    if fill is None:
        return F.pad(x, (p, p, p, p), mode="replicate")
    n, c, h, w = x.shape
    if len(fill) not in (1, c):
        raise ValueError(f"fill has {len(fill)} values for {c} channels")
    values = torch.tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    padded = values.expand(n, c, h + 2 * p, w + 2 * p).clone()
    padded[:, :, p : p + h, p : p + w] = x
    return padded
