"""A network evaluated at a given state, with BatchNorm statistics re-estimated for it.

docs/science.md section 6 (BatchNorm re-estimation, Garipov et al. 2018). Shared by the
linear paths (``landscape/paths.py``) and the curves (``landscape/curves.py``).

``evaluate_state`` gives the mean cross-entropy and accuracy of a model at a
``state_dict``-like mapping of parameters and buffers, through
``torch.func.functional_call``. Interpolated running statistics do not describe the
interpolated network, so with ``bn_x`` the statistics are first re-estimated for the state:
a pass over ``bn_x`` with the BatchNorm layers in train mode, every other module in eval
mode, no gradients, and the statistics the exact size-weighted average of the per-batch
statistics (with equal batches the cumulative average of ``momentum=None``). The
re-estimation works on copies of the buffers; ``reset_bn_`` does the same in place on the
model's own buffers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["bn_modules", "evaluate_state", "reset_bn_"]


# --- BatchNorm -----------------------------------------------------------------------------


def bn_modules(model: nn.Module) -> dict[str, _BatchNorm]:
    """The BatchNorm layers that keep running statistics, by module name."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats
    }


@contextmanager
def _bn_estimation_mode(model: nn.Module) -> Iterator[dict[str, _BatchNorm]]:
    """BatchNorm layers in train mode, every other module in eval; modes/momenta restored."""
    modes = {m: m.training for m in model.modules()}
    bns = bn_modules(model)
    momenta = {name: m.momentum for name, m in bns.items()}
    try:
        model.eval()
        for m in bns.values():
            m.train()
        yield bns
    finally:
        for m, mode in modes.items():
            m.training = mode
        for name, m in bns.items():
            m.momentum = momenta[name]


def _device_of(model: nn.Module, state: Mapping[str, Tensor] | None = None) -> torch.device:
    if state:
        return next(iter(state.values())).device
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _batches(n: int, batch_size: int, *, merge_single: bool = False) -> list[slice]:
    """Consecutive slices of ``batch_size``; with ``merge_single`` a trailing batch of one
    example joins the previous batch (BatchNorm cannot use batch statistics of one example).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if merge_single and len(out) > 1 and out[-1].stop - out[-1].start == 1:
        out[-2:] = [slice(out[-2].start, n)]
    return out


def _estimate_bn(
    model: nn.Module,
    x: Tensor,
    batch_size: int,
    state: dict[str, Tensor] | None,
) -> None:
    """Re-estimate the running statistics, of the model (``state=None``) or in ``state``.

    Statistics are reset (mean 0, var 1, count 0), then each batch of b examples after n
    seen is folded in with momentum b / (n + b): the result is the size-weighted average of
    the batch means and of the (unbiased) batch variances.
    """
    if len(x) < 2:
        raise ValueError(f"BatchNorm re-estimation needs at least 2 inputs, got {len(x)}")
    device = _device_of(model, state)
    with torch.no_grad(), _bn_estimation_mode(model) as bns:
        for name, m in bns.items():
            if state is None:
                m.reset_running_stats()
            else:
                prefix = f"{name}." if name else ""
                state[prefix + "running_mean"].zero_()
                state[prefix + "running_var"].fill_(1.0)
                state[prefix + "num_batches_tracked"].zero_()
        seen = 0
        for sl in _batches(len(x), batch_size, merge_single=True):
            xb = x[sl].to(device)
            b = len(xb)
            for m in bns.values():
                m.momentum = b / (seen + b)
            if state is None:
                model(xb)
            else:
                functional_call(model, state, (xb,))
            seen += b


def reset_bn_(model: nn.Module, x: Tensor, batch_size: int = 500) -> None:
    """Re-estimate the model's BatchNorm running statistics in place from inputs ``x``.

    One pass over ``x`` with no gradients, BatchNorm layers in train mode and every other
    module in eval mode (no dropout); the statistics become the size-weighted average of
    the per-batch statistics (momentum b / (n + b) for a batch of b after n examples, which
    is the cumulative average of ``momentum=None`` when all batches have equal size); a
    trailing batch of one example joins the previous batch. Train/eval modes and momenta
    are restored afterwards. No-op without BatchNorm.
    """
    if not bn_modules(model):
        return
    _estimate_bn(model, x, batch_size, None)


# --- evaluation ----------------------------------------------------------------------------


def _full_state(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with the model's own tensors for any name it lacks (params and buffers)."""
    full = dict(state)
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        full.setdefault(name, t)
    return full


def _bn_buffer_names(model: nn.Module) -> list[str]:
    names = []
    for name in bn_modules(model):
        prefix = f"{name}." if name else ""
        names += [prefix + b for b in ("running_mean", "running_var", "num_batches_tracked")]
    return names


def evaluate_state(
    model: nn.Module,
    state: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 1000,
    bn_x: Tensor | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` at ``state`` on ``(x, y)``.

    ``L = (1/N) sum_i CE(f(x_i; state), y_i)`` (accumulated in float64), accuracy the
    fraction of argmax predictions equal to ``y``. The model runs in eval mode through
    ``torch.func.functional_call`` over ``state`` (names it lacks fall back to the model's
    own tensors). With ``bn_x`` and BatchNorm layers the running statistics are first
    re-estimated on ``bn_x`` for this state (see ``reset_bn_``), on copies of the buffers.
    The model object (tensors, modes, momenta) is left as it was.
    """
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples, y {len(y)}")
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty set")
    full = _full_state(model, state)
    if bn_x is not None and bn_modules(model):
        for name in _bn_buffer_names(model):
            full[name] = full[name].detach().clone()
        _estimate_bn(model, bn_x, batch_size, full)
    device = _device_of(model, full)
    was_training = {m: m.training for m in model.modules()}
    total = torch.zeros((), dtype=torch.float64)
    correct = 0
    try:
        model.eval()
        with torch.no_grad():
            for sl in _batches(len(x), batch_size):
                xb, yb = x[sl].to(device), y[sl].to(device)
                logits = functional_call(model, full, (xb,))
                loss = F.cross_entropy(logits.double(), yb, reduction="sum")
                total += loss.cpu()
                correct += int((logits.argmax(1) == yb).sum())
    finally:
        for m, mode in was_training.items():
            m.training = mode
    return float(total) / len(x), correct / len(x)
