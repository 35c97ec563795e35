"""Training batches by step: shuffled, sliced for data parallel, augmented, on the device.

The batch of optimiser step ``t`` is a pure function of ``(seed, t)``: epoch ``e = t // S`` (``S``
steps per epoch, the last ``N mod B`` examples of each permutation unused) visits the training
set in the order of ``torch.randperm(N)`` drawn from a CPU generator seeded with
``seed * 1_000_003 + e``; the batch is positions ``[p B, (p + 1) B)`` of that order (``p = t mod
S``), of which data-parallel rank ``r`` of ``W`` takes every ``W``-th from ``r``; augmentation
draws from a CPU generator seeded with ``seed * 1_000_003 + 7919 t + 1``. A resumed run
therefore sees exactly the batches an uninterrupted one would, and no state but the step is
kept.

Where the work happens (``on_device``):

- ``True``: the training set is copied to the device once; each batch is gathered there and a
  :class:`~sparseflow.data.augment.RandomCrop` pads, crops and flips it there. Only the random
  draws (a permutation per epoch, 2 offsets and a flip bit per example per step) are made on
  the CPU and copied, so the batches are identical to the CPU path's on every device: the
  setting changes where the work runs, not the numbers.
- ``False``: the training set stays in host memory (pinned when the device is CUDA); each batch
  is gathered and augmented on the CPU and copied to the device.

:func:`fits_on_device` is the ``auto`` rule.
"""

from __future__ import annotations

import torch

from .augment import RandomCrop
from .dataset import Augment

MIX = 1_000_003
"""Multiplier that separates the seeds of different runs' generators."""
DEVICE_FRACTION = 0.25
"""``auto`` keeps a training set on a CUDA device when it takes at most this much of the free
memory (the rest is for the model, its activations and the optimiser)."""


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s permutation: ``seed * 1_000_003 + epoch``."""
    return seed * MIX + epoch


def step_seed(seed: int, step: int) -> int:
    """Seed of step ``step``'s augmentation: ``seed * 1_000_003 + 7919 step + 1``."""
    return seed * MIX + 7919 * step + 1


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order in which epoch ``epoch`` visits ``n`` examples (``torch.randperm`` on the CPU)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


def fits_on_device(nbytes: int, device: torch.device, augment: Augment | None = None) -> bool:
    """The ``data.on_device=auto`` rule: whether a training set of ``nbytes`` goes on ``device``.

    True on CUDA when ``nbytes <= DEVICE_FRACTION * free memory`` (``torch.cuda.mem_get_info``)
    and the augmentation, if any, is the built-in :class:`RandomCrop` (which runs on the
    device; a dataset's own ``augment`` function gets CPU batches unless asked otherwise).
    False on every other device: on the CPU the data is there already.
    """
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    if augment is not None and not isinstance(augment, RandomCrop):
        return False
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_FRACTION * free


class TrainBatches:
    """The training batches of a run, by step (see the module docstring for the rule).

    ``x``, ``y``: the training set; ``batch_size``: the global batch ``B``; ``rank``/``world``:
    this process's slice of every batch; ``augment(x, generator)``: applied to each batch
    (``None``: none); ``memory_format``: of 4-d batches (``torch.channels_last`` for
    channels-last convolutions; ``None`` leaves them as gathered).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, seed: int,
                 device: torch.device, on_device: bool, augment: Augment | None = None,
                 rank: int = 0, world: int = 1,
                 memory_format: torch.memory_format | None = None) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
        if not 1 <= batch_size <= len(x):
            raise ValueError(f"batch_size {batch_size} is not in [1, {len(x)}]")
        self.n, self.batch_size, self.seed = len(x), batch_size, seed
        self.device, self.on_device = torch.device(device), on_device
        self.augment, self.rank, self.world = augment, rank, world
        self.memory_format = memory_format
        self.steps_per_epoch = self.n // batch_size
        home = self.device if on_device else torch.device("cpu")
        self.x, self.y = x.to(home), y.to(home)
        if not on_device and self.device.type == "cuda":
            self.x, self.y = self.x.pin_memory(), self.y.pin_memory()
        self._epoch = -1
        self._order: torch.Tensor | None = None

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of epoch ``epoch``, where the data is (cached for the current one)."""
        if epoch != self._epoch:
            self._order = epoch_order(self.n, self.seed, epoch).to(self.x.device)
            self._epoch = epoch
        assert self._order is not None
        return self._order

    def indices(self, step: int) -> torch.Tensor:
        """Positions in the training set of this rank's examples of step ``step``'s batch."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        idx = self.order(epoch)[pos * self.batch_size : (pos + 1) * self.batch_size]
        return idx[self.rank :: self.world] if self.world > 1 else idx

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of step ``step`` on the device, augmented when an ``augment`` is set."""
        idx = self.indices(step)
        x, y = self.x[idx], self.y[idx]
        if self.augment is not None:
            g = torch.Generator().manual_seed(step_seed(self.seed, step))
            x = self.augment(x, g)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.memory_format is not None and x.dim() == 4:
            x = x.contiguous(memory_format=self.memory_format)
        return x, y
