"""The training loop: minimal on the hot path, everything else through callbacks.

Determinism and exact resume: the data order of epoch ``e`` is a permutation drawn from a
generator seeded by ``(seed, e)``; augmentation at step ``t`` uses a generator seeded by
``(seed, t)`` (:mod:`sparseflow.data.device_loader`); the learning rate is a pure function of
the step. A checkpoint therefore needs only the model, the optimiser, the callbacks' states,
torch's global RNG state, the gradient scaler's state (fp16), the step and the epoch's running
sums, and a resumed run continues bit for bit as an uninterrupted one would.

Speed options (``train.*``, docs/science.md section 15): ``precision`` autocasts the forward
pass and the loss to bf16 or fp16 (weights, gradients, optimiser state, masks, evaluation and
the callbacks' measurements stay float32: only the step's forward and loss run inside
autocast); fp16 scales the loss (``torch.amp.GradScaler``), unscales the gradients right after
backward (so ``after_backward`` hooks, coupled L2 and RigL's grow scores see true gradients)
and, when the scaled gradients overflow, retries the step on the same batch with half the
scale, BatchNorm buffers restored, so that every schedule (learning rate, data, mask updates,
measurements) counts only steps the optimiser took (the autocast, the scaler and the retry:
``training/precision.py``). ``compile`` runs the forward pass through ``torch.compile``
(backend :data:`COMPILE_BACKEND`); evaluation and measurements use the eager module.

(Kept whole at ~430 lines: the ``Trainer`` is one object over one state: its construction,
checkpoint and resume, evaluation and the step loop.)
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from sparseflow.config import Config, Duration
from sparseflow.data import Dataset
from sparseflow.data.device_loader import TrainBatches, fits_on_device
from sparseflow.errors import CheckpointError, ConfigError
from sparseflow.store.checkpoint import (
    checkpoint_name,
    clean_stale_temps,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from sparseflow.training import optim as optim_mod
from sparseflow.training import precision as precision_mod
from sparseflow.training.callbacks import Callback, overriding
from sparseflow.training.interrupts import Interrupted, StopRequest
from sparseflow.training.precision import (  # noqa: F401 (DTYPES: re-exported)
    DTYPES,
    MAX_RETRIES,
    _BufferSnapshot,
)

_RESUME_KEYS = ("model", "optimizer", "rng", "loop", "step")  # what restore() reads
COMPILE_BACKEND: Any = "inductor"
"""``torch.compile`` backend of ``train.compile=true`` (a name or a callable; tests count
compilations through a callable)."""


class Diverged(Exception):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int) -> None:
        super().__init__(f"loss is not finite at step {step}")
        self.step = step


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on (x, y); restores the mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device, non_blocking=True)
        yb = y[i : i + batch_size].to(device, non_blocking=True)
        out = model(xb)
        loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
        correct += (out.argmax(1) == yb).sum().item()
    model.train(was_training)
    n = max(1, len(x))
    return loss_sum / n, correct / n


class Trainer:
    """Trains ``model`` on ``data`` as ``cfg`` says, checkpointing into ``run_dir``.

    ``log_fn(step, {name: value})`` receives every metric (the run store's writer); rows are
    buffered and flushed at evaluations and checkpoints.
    """

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Dataset,
        *,
        device: torch.device,
        callbacks: list[Callback] | None = None,
        run_dir: Path | None = None,
        log_fn: Callable[[list[tuple[int, str, float]]], None] | None = None,
        progress: bool = True,
        echo: Callable[[str], None] | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.cfg = cfg
        self.model = model  # what the step runs (a DistributedDataParallel wrapper or the model)
        self.module: nn.Module = getattr(model, "module", model)  # the user's model
        self.rank, self.world = rank, world
        self.local_batch = len(range(rank, cfg.train.batch_size, world))
        self.optimizer = optimizer
        self.data = data
        self.device = device
        self.callbacks = list(callbacks or [])
        self.run_dir = run_dir
        self.log_fn = log_fn
        self.progress = progress
        self.echo = echo or (lambda s: tqdm.write(s, file=sys.stdout))
        self.batch_size = cfg.train.batch_size
        n = len(data.x_train)
        if n < self.batch_size:
            raise ConfigError(
                f"train.batch_size: {self.batch_size} is larger than the training set ({n})"
            )
        self.steps_per_epoch = n // self.batch_size
        self.total_steps = Duration.parse(cfg.train.duration).steps(self.steps_per_epoch)
        self.eval_steps = max(1, Duration.parse(cfg.train.eval_every).steps(self.steps_per_epoch))
        self.ckpt_steps = max(
            1, Duration.parse(cfg.train.checkpoint_every).steps(self.steps_per_epoch)
        )
        self.warmup = Duration.parse(cfg.optim.warmup).steps(self.steps_per_epoch)
        self.extra_ckpts = set(cfg.train.checkpoint_steps)
        self.step = 0
        self.elapsed_before = 0.0
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self._correct = torch.zeros((), dtype=torch.int64, device=device)
        self._count = 0
        self._pending: list[tuple[int, str, float]] = []
        self.last_eval: dict[str, float] = {}
        self.last_checkpoint: Path | None = None
        self.stop = StopRequest()  # set by a deferred SIGINT/SIGTERM (training/interrupts.py)
        self.retries = 0  # fp16 attempts retried after an overflow
        self.precision = cfg.train.precision
        self.scaler = self._make_scaler()
        augment = data.augment if cfg.data.augment else None
        on_device = cfg.data.on_device
        if on_device == "auto":
            nbytes = sum(t.numel() * t.element_size() for t in (data.x_train, data.y_train))
            on_device = fits_on_device(nbytes, device, augment)
        self.batches = TrainBatches(
            data.x_train, data.y_train, batch_size=self.batch_size, seed=cfg.seed,
            device=device, on_device=bool(on_device), augment=augment, rank=rank, world=world,
            memory_format=torch.channels_last if cfg.train.channels_last else None)
        self.use_model(model)

    def use_model(self, model: nn.Module) -> None:
        """Train through ``model`` (the user's model or its data-parallel wrapper), compiled
        with ``torch.compile(backend=COMPILE_BACKEND)`` when ``train.compile`` is set;
        checkpoints, evaluation and measurements keep using the eager :attr:`module`."""
        if self.cfg.train.compile:
            model = torch.compile(model, backend=COMPILE_BACKEND)
        self.model = model

    def _make_scaler(self) -> torch.amp.GradScaler | None:
        """The fp16 gradient scaler (None otherwise); bf16 on a GPU without bf16 arithmetic
        is a one-line ConfigError (:func:`~sparseflow.training.precision.make_scaler`)."""
        return precision_mod.make_scaler(self.precision, self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context of the training forward pass and loss: ``torch.autocast`` to the
        ``train.precision`` dtype on the run's device type, nothing for fp32."""
        return precision_mod.autocast(self.precision, self.device.type)

    # -- metrics ---------------------------------------------------------------------------
    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Queue metrics of ``step`` for the store."""
        self._pending.extend((step, k, float(v)) for k, v in metrics.items())

    def flush(self) -> None:
        """Write queued metrics."""
        if self._pending and self.log_fn is not None:
            self.log_fn(self._pending)
        self._pending = []

    # -- data ------------------------------------------------------------------------------
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch of ``step`` (deterministic in seed and step;
        :class:`~sparseflow.data.device_loader.TrainBatches`)."""
        return self.batches.batch(step)

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs, with the run id (the run folder's name) and step
        that loading checks against the file's place."""
        return {
            "format": 2,
            "run_id": self.run_dir.name if self.run_dir is not None else None,
            "step": self.step,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks},
            "rng": {"torch": torch.get_rng_state()},
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
            "loop": {
                "loss_sum": float(self._loss_sum),
                "correct": int(self._correct),
                "count": self._count,
                "elapsed": self.elapsed(),
                "last_eval": dict(self.last_eval),
                "retries": self.retries,
            },
        }

    def save(self) -> Path | None:
        """Checkpoint at the current step (flushing metrics first)."""
        self.flush()
        if self.run_dir is None or self.rank != 0:
            return None
        path = save_checkpoint(self.run_dir / "checkpoints" / checkpoint_name(self.step),
                               self.state())
        self.last_checkpoint = path
        return path

    def restore(self, ckpt: dict[str, Any], source: str | Path | None = None) -> None:
        """Load a checkpoint written by :meth:`state`; a missing entry is a one-line
        CheckpointError naming ``source`` (the file) and the entry."""
        try:
            self.module.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            states = ckpt.get("callbacks", {})
            for cb in self.callbacks:
                if cb.name in states:
                    cb.load_state_dict(states[cb.name])
            torch.set_rng_state(ckpt["rng"]["torch"])
            if self.scaler is not None and "scaler" in ckpt:
                self.scaler.load_state_dict(ckpt["scaler"])
            loop = ckpt["loop"]
            self.step = int(ckpt["step"])
            self._loss_sum.fill_(loop["loss_sum"])
            self._correct.fill_(loop["correct"])
            self._count = int(loop["count"])
            self.elapsed_before = float(loop["elapsed"])
            self.last_eval = dict(loop.get("last_eval", {}))
            self.retries = int(loop.get("retries", 0))
        except KeyError as e:
            raise CheckpointError(f"{source or 'checkpoint'}: checkpoint has no {e.args[0]!r} "
                                  "entry (not written by a sparseflow run)") from None

    def resume_if_possible(self) -> bool:
        """Restore the newest checkpoint in ``run_dir``; True when one was found.

        First finishes or removes the temp files of checkpoint writes that were killed
        (:func:`~sparseflow.store.checkpoint.clean_stale_temps`, rank 0 only). The checkpoint
        must record this run (``run_dir``'s name) and the step of its file name.
        """
        if self.run_dir is None:
            return False
        folder = self.run_dir / "checkpoints"
        if self.rank == 0:
            clean_stale_temps(folder)
        found = latest_checkpoint(folder)
        if found is None:
            return False
        step, path = found
        ckpt = load_checkpoint(path, map_location=self.device, run_id=self.run_dir.name,
                               step=step, require=_RESUME_KEYS)
        self.restore(ckpt, source=path)
        self.last_checkpoint = path
        return True

    def elapsed(self) -> float:
        """Training wall time so far, over all sessions of this run."""
        return self.elapsed_before + (time.perf_counter() - self._t0 if hasattr(self, "_t0")
                                      else 0.0)

    # -- evaluation ------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Test loss/accuracy plus the running train loss/accuracy since the last evaluation."""
        test_loss, test_acc = evaluate(
            self.module, self.data.x_test, self.data.y_test, self.cfg.data.eval_batch_size
        )
        metrics = {"test_loss": test_loss, "test_accuracy": test_acc}
        if self._count:
            metrics["train_loss"] = float(self._loss_sum) / self._count
            metrics["train_accuracy"] = int(self._correct) / (self._count * self.local_batch)
        for hook in overriding(self.callbacks, "on_eval"):
            hook(self, metrics)
        self._loss_sum.zero_()
        self._correct.zero_()
        self._count = 0
        metrics["epoch"] = self.step / self.steps_per_epoch
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        self.log(self.step, metrics)
        self.last_eval = metrics
        return metrics

    def _report(self, m: dict[str, float]) -> None:
        train = (f"train loss {m['train_loss']:.4f} acc {m['train_accuracy']:.4f} | "
                 if "train_loss" in m else "")
        self.echo(
            f"epoch {m['epoch']:6.2f} step {self.step:7d} | {train}"
            f"test loss {m['test_loss']:.4f} acc {m['test_accuracy']:.4f}"
        )

    # -- the loop --------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps`` (resuming if a checkpoint exists); returns the summary."""
        self._t0 = time.perf_counter()
        model, opt, cfg = self.model, self.optimizer, self.cfg
        model.train()
        for hook in overriding(self.callbacks, "on_train_start"):
            hook(self)
        if self.step == 0 and (self.last_checkpoint is None):
            self.save()
        after_backward = overriding(self.callbacks, "after_backward")
        after_step = overriding(self.callbacks, "after_step")
        manual_decay = optim_mod.needs_manual_decay(opt)
        scaler = self.scaler
        buffers = _BufferSnapshot(self.module) if scaler is not None else None
        total = self.total_steps
        sched = (cfg.optim.schedule, self.warmup, tuple(cfg.optim.milestones), cfg.optim.gamma)
        # a bar only on a terminal (disable=None): a redirected log gets the epoch lines alone
        bar = tqdm(total=total, initial=self.step, disable=None if self.progress else True,
                   file=sys.stderr, mininterval=0.5, unit="step", dynamic_ncols=True, leave=False)
        try:
            while self.step < total:
                optim_mod.set_lr(opt, optim_mod.lr_factor(self.step, total, *sched))
                x, y = self.batch(self.step)
                if scaler is None:
                    with self.autocast():
                        out = model(x)
                        loss = F.cross_entropy(out, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                else:
                    out, loss = self._scaled_backward(x, y, buffers)
                for hook in after_backward:
                    hook(self)
                if manual_decay:
                    optim_mod.coupled_l2_(opt)
                    optim_mod.decoupled_decay_(opt)
                if scaler is None:
                    opt.step()
                else:
                    scaler.step(opt)  # gradients are finite here: the optimiser steps
                    scaler.update()
                self.step += 1
                with torch.no_grad():
                    self._loss_sum += loss.detach()
                    self._correct += (out.argmax(1) == y).sum()
                self._count += 1
                for hook in after_step:
                    hook(self)
                bar.update(1)
                if self.step % 100 == 0 or self.step == total:
                    if not math.isfinite(float(self._loss_sum)):
                        raise Diverged(self.step)
                if self.step % self.eval_steps == 0 or self.step == total:
                    m = self.evaluate()
                    self._report(m)
                    bar.set_postfix(test_acc=f"{m['test_accuracy']:.4f}", refresh=False)
                if (self.step % self.ckpt_steps == 0 or self.step == total
                        or self.step in self.extra_ckpts):
                    self.save()
                if self.stop.requested:  # a signal arrived during this step: stop here, whole
                    if (self.last_checkpoint is None
                            or self.last_checkpoint.name != checkpoint_name(self.step)):
                        self.save()
                    raise Interrupted(self.step)
        finally:
            bar.close()
        return self.summary()

    def _scaled_backward(self, x: torch.Tensor, y: torch.Tensor,
                         buffers: _BufferSnapshot | None) -> tuple[torch.Tensor, torch.Tensor]:
        """fp16: forward and loss under autocast, backward of the scaled loss, gradients
        unscaled in place; an attempt whose gradients overflow is undone (BatchNorm buffers
        restored, scale halved by ``scaler.update()``) and the step retried on the same batch
        (:func:`~sparseflow.training.precision.scaled_backward`; each retry counts in
        :attr:`retries`).

        Returns ``(logits, loss)`` of the attempt whose gradients are finite. A non-finite
        loss, or :data:`MAX_RETRIES` overflowing attempts in a row, is :class:`Diverged`.
        """
        assert self.scaler is not None

        def retried() -> None:
            self.retries += 1

        done = precision_mod.scaled_backward(
            self.model, self.optimizer, self.scaler, x, y, buffers, context=self.autocast,
            max_retries=MAX_RETRIES, on_retry=retried)  # loop's name: tests patch it
        if done is None:
            raise Diverged(self.step + 1)
        return done

    def summary(self) -> dict[str, Any]:
        """The run's final numbers (callbacks may add fields)."""
        if not self.last_eval or "test_loss" not in self.last_eval:
            self.evaluate()
        m = self.last_eval
        summary: dict[str, Any] = {
            "steps": self.step,
            "epochs": self.step / self.steps_per_epoch,
            "test_accuracy": m["test_accuracy"],
            "test_loss": m["test_loss"],
            "train_loss": m.get("train_loss"),
            "train_accuracy": m.get("train_accuracy"),
            "wall_seconds": round(self.elapsed(), 3),
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
        }
        if self.scaler is not None:
            summary["fp16_retries"] = self.retries
        for hook in overriding(self.callbacks, "on_train_end"):
            hook(self, summary)
        self.flush()
        return summary
