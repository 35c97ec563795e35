"""Mixed precision of the training step (``train.precision``, docs/science.md section 15): the
autocast context of the forward pass and loss, the fp16 gradient scaler
(``torch.amp.GradScaler``) and the retry of a step whose scaled gradients overflow.

fp16 scales the loss, unscales the gradients right after backward (so ``after_backward`` hooks,
coupled L2 and RigL's grow scores see true gradients) and, when the scaled gradients overflow,
retries the step on the same batch with half the scale, BatchNorm buffers restored, so that
every schedule counts only steps the optimiser took. :class:`~sparseflow.training.loop.Trainer`
holds the scaler and the count of retries and calls these; ``training/loop.py`` re-exports
:data:`DTYPES` and :data:`MAX_RETRIES`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sparseflow.errors import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""Autocast dtype of each ``train.precision`` other than fp32."""
MAX_RETRIES = 40
"""fp16: consecutive overflowing attempts of one step (the scale halves each time, 2^16 to
2^-24) after which the run counts as diverged. ``training/loop.py`` re-exports it and the
Trainer passes loop's name, so setting ``loop.MAX_RETRIES`` changes the Trainer's limit."""


class _BufferSnapshot:
    """A copy of a module's buffers (BatchNorm statistics), taken before each fp16 attempt and
    put back when the attempt is retried."""

    def __init__(self, module: nn.Module) -> None:
        self.buffers = [b for b in module.buffers() if b.numel()]
        self.copies = [b.detach().clone() for b in self.buffers]

    def save(self) -> None:
        """Copy the buffers' current values."""
        if self.buffers:
            torch._foreach_copy_(self.copies, self.buffers)

    def restore(self) -> None:
        """Put the saved values back."""
        if self.buffers:
            with torch.no_grad():
                torch._foreach_copy_(self.buffers, self.copies)


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """The fp16 gradient scaler of ``precision`` on ``device`` (None otherwise); bf16 on a
    GPU without bf16 arithmetic is a one-line ConfigError."""
    if (precision == "bf16" and device.type == "cuda"
            and not torch.cuda.is_bf16_supported()):
        raise ConfigError("train.precision: bf16 is not supported by this GPU; use fp16 "
                          "(or fp32)")
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to the ``precision`` dtype on ``device_type``, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=DTYPES[precision])


def scaled_backward(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    x: torch.Tensor,
    y: torch.Tensor,
    buffers: _BufferSnapshot | None,
    *,
    context: Callable[[], contextlib.AbstractContextManager],
    max_retries: int,
    on_retry: Callable[[], None],
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """fp16: forward and loss under ``context()`` (the autocast), backward of the scaled
    loss, gradients unscaled in place; an attempt whose gradients overflow is undone
    (``buffers`` restored, scale halved by ``scaler.update()``, ``on_retry()`` called) and the
    step retried on the same batch.

    Returns ``(logits, loss)`` of the attempt whose gradients are finite; None (gradients
    cleared) when the loss is not finite or ``max_retries`` attempts in a row overflowed.
    """
    for _ in range(max_retries):
        if buffers is not None:
            buffers.save()
        with context():
            out = model(x)
            loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        found = scaler._found_inf_per_device(opt)  # what scaler.step() itself checks
        if not sum(v.item() for v in found.values()):
            return out, loss
        if not bool(torch.isfinite(loss.detach())):
            break  # the loss itself overflowed: no scale helps
        scaler.update()  # halves the scale and forgets this attempt's unscaling
        if buffers is not None:
            buffers.restore()
        on_retry()
    opt.zero_grad(set_to_none=True)
    return None
