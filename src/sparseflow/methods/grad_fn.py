"""The dense gradient of the sparsified weights on a fixed batch, for a method's update.

:func:`make_grad_fn` makes a :data:`GradFn` (``grad_fn() -> {name: dL/dW}``): the closure a
method that grows by gradient (RigL and its relatives, ``methods/dynamic.py``, ``granet.py``,
``srigl.py``) calls at an update step to score the growth on a fixed batch, e.g. a held-out one
(``sparse.grow_batch=heldout``), instead of the training batch. ``methods/base.py`` imports
these names from here and re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

GradFn = Callable[[], Mapping[str, torch.Tensor]]


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def make_grad_fn(
    model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> GradFn:
    """A closure giving the dense gradient dL/dW of each weight on the fixed batch (x, y).

    Uses ``torch.autograd.grad`` so the model's ``.grad`` fields are left alone; under
    ``torch.distributed`` the gradients are averaged over ranks.
    """
    import torch.nn.functional as F

    fn = loss_fn or F.cross_entropy
    names = list(params)

    def grad_fn() -> dict[str, torch.Tensor]:
        dev = next(iter(params.values())).device
        loss = fn(model(x.to(dev)), y.to(dev))
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        out = {n: g.detach() for n, g in zip(names, grads, strict=True)}
        if _distributed():
            world = torch.distributed.get_world_size()
            for g in out.values():
                torch.distributed.all_reduce(g)
                g.div_(world)
        return out

    return grad_fn
