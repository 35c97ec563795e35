"""Data-parallel training across processes (``torchrun --nproc_per_node N -m sparseflow run``).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; the run then joins a process group (gloo on
CPU, nccl on CUDA), wraps the model in ``DistributedDataParallel`` and gives each rank the
slice ``batch[rank::world]`` of every global batch, so a run on N processes uses the same batches
as one process. Only rank 0 writes the store and the checkpoints; every rank can read them.
Masks stay identical on every rank: gradients are all-reduced by DDP before RigL scores them,
random choices use generators seeded identically, and ties are broken deterministically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Whether this process writes the store, checkpoints and output."""
        return self.rank == 0


def dist_info() -> DistInfo:
    """From torchrun's environment variables (a single process when they are absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world,
                    int(os.environ.get("LOCAL_RANK", "0")))


def ensure_process_group(info: DistInfo, device: torch.device) -> None:
    """Join the default process group once (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world)


def wrap(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model``."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" and device.index is not None else None
    return DistributedDataParallel(model, device_ids=ids)
