"""Callbacks: how everything beyond plain SGD hooks into the training loop.

A callback overrides only the hooks it needs; the loop calls a hook only on the callbacks that
override it, so an unused hook costs nothing on the hot path. Hooks, in order of a step:

``on_train_start(trainer)``  once, after resume (``trainer.step`` may be > 0)
``after_backward(trainer)``  gradients are ready, the optimiser has not stepped
``after_step(trainer)``      the optimiser stepped; ``trainer.step`` counts completed steps
``on_eval(trainer, metrics)`` after each evaluation (``metrics`` may be extended)
``on_train_end(trainer, summary)`` once, ``summary`` may be extended

A callback with state implements ``state_dict``/``load_state_dict``; the state goes into every
checkpoint under the callback's ``name`` (tensors and plain containers only).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn


class Trainer(Protocol):
    """What a callback sees of the training loop (:class:`sparseflow.training.loop.Trainer`);
    a protocol, so that this module does not import the loop that imports it."""

    step: int
    total_steps: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    callbacks: list[Callback]

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record metric values at ``step``."""

HOOKS = ("on_train_start", "after_backward", "after_step", "on_eval", "on_train_end")


class Callback:
    """Base class; override any of :data:`HOOKS` and, for state, ``state_dict``."""

    name: str = "callback"

    def on_train_start(self, trainer: Trainer) -> None:
        """Called once before the first step of this session."""

    def after_backward(self, trainer: Trainer) -> None:
        """Called after ``loss.backward()``, before ``optimizer.step()``."""

    def after_step(self, trainer: Trainer) -> None:
        """Called after ``optimizer.step()``."""

    def on_eval(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """Called after each evaluation."""

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """Called once at the end of training."""

    def state_dict(self) -> dict[str, Any]:
        """State saved in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


def overriding(callbacks: list[Callback], hook: str) -> list:
    """Bound methods of ``hook`` for the callbacks that override it."""
    base = getattr(Callback, hook)
    return [getattr(cb, hook) for cb in callbacks if getattr(type(cb), hook) is not base]


class TensorBoardCallback(Callback):
    """Writes each evaluation's metrics as TensorBoard scalars (the ``tensorboard`` extra)."""

    name = "tensorboard"

    def __init__(self, log_dir: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from sparseflow.errors import ConfigError

            raise ConfigError(
                "log.tensorboard: the 'tensorboard' package is not installed "
                "(pip install 'sparseflow[tensorboard]')"
            ) from None
        self.writer = SummaryWriter(log_dir=log_dir)

    def on_eval(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, trainer.step)
        self.writer.flush()

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self.writer.close()
