"""Recording a training loop of your own in the run store, so that ``runs list``, ``analyze``
and ``report`` work on it as on a run that ``sparseflow run`` trained.

::

    cfg = load_config(None, ["model=mypkg.nets:mlp", "model_args.hidden=64",
                             "dataset=mypkg.data:load", "method=rigl", "sparsity=0.9"])
    with sparseflow.track(model, cfg, sparsifier=sparsifier, name="my loop") as run:
        run.checkpoint(0)
        for step in range(1, steps + 1):
            ...                                   # your step
            run.log(step, {"train_loss": loss.item()})
        run.log(steps, {"test_accuracy": acc})
        run.checkpoint(steps)

``config`` says what the model and data are (a model and dataset of your own by reference, or
built-in ones), so that the analyses can rebuild the model and load the data; the checkpoints
hold the model's state dict (and the sparsifier's masks). The run id is a hash of the config
and the name, marked as tracked, so it never collides with a ``sparseflow run`` of the same
config; tracking the same config and name again records over the same run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparseflow.config import Config, config_to_yaml, run_id
from sparseflow.errors import UserError
from sparseflow.store.checkpoint import checkpoint_name, save_checkpoint
from sparseflow.store.database import Store
from sparseflow.store.paths import default_root, run_dir, store_path
from sparseflow.typed import to_dict


def tracked_run_id(config: Config, name: str | None) -> str:
    """``sha256("tracked:" + run_id(config) + ":" + name)[:12]``: the id of a tracked run."""
    key = f"tracked:{run_id(config)}:{name or ''}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class TrackedRun:
    """A run of your own loop being recorded (see the module docstring)."""

    def __init__(self, model: nn.Module, config: Config, store: Store, root: Path,
                 sparsifier: Any = None, optimizer: torch.optim.Optimizer | None = None,
                 name: str | None = None) -> None:
        self.model, self.config, self.store = model, config, store
        self.sparsifier, self.optimizer = sparsifier, optimizer
        self.run_id = tracked_run_id(config, name)
        self.dir = run_dir(root, self.run_id)
        self.last: dict[str, float] = {}
        self.step = 0
        self.last_checkpoint: Path | None = None

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record metric values at optimiser step ``step`` (e.g. ``train_loss``,
        ``test_accuracy``); the last value of each goes into the run's summary."""
        rows = [(int(step), str(k), float(v)) for k, v in metrics.items()]
        self.store.log_many(self.run_id, rows)
        self.last.update({k: v for _, k, v in rows})
        self.step = max(self.step, int(step))

    def checkpoint(self, step: int) -> Path:
        """Save the model's state (with the sparsifier's masks and the optimiser's state when
        given) as ``runs/ID/checkpoints/step-N.pt``, verified like every checkpoint; ``ID@N``
        then names it in ``analyze``."""
        state: dict[str, Any] = {"format": 2, "run_id": self.run_id, "step": int(step),
                                 "model": self.model.state_dict(), "callbacks": {}}
        if self.sparsifier is not None:
            state["callbacks"]["sparsifier"] = self.sparsifier.state_dict()
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        self.last_checkpoint = save_checkpoint(
            self.dir / "checkpoints" / checkpoint_name(int(step)), state)
        self.step = max(self.step, int(step))
        return self.last_checkpoint

    def summary(self) -> dict[str, Any]:
        """What ``runs list`` and the report show of the run."""
        out: dict[str, Any] = {
            "run_id": self.run_id, "method": self.config.method, "dataset": self.config.dataset,
            "model": self.config.model, "seed": self.config.seed, "steps": self.step,
            "test_accuracy": self.last.get("test_accuracy"),
            "test_loss": self.last.get("test_loss"), "train_loss": self.last.get("train_loss"),
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "tracked": True, "sparsity": 0.0,
        }
        if self.sparsifier is not None:
            out.update(self.sparsifier.summary(self.model))
        return out


@contextmanager
def track(model: nn.Module, config: Config, *, sparsifier: Any = None,
          optimizer: torch.optim.Optimizer | None = None, root: str | Path | None = None,
          name: str | None = None, tags: Sequence[str] = ()) -> Iterator[TrackedRun]:
    """Record your own training loop as a run of the store under ``root`` (default
    ``$SPARSEFLOW_HOME`` or ``./sparseflow-runs``); see the module docstring. The run is
    ``finished`` when the block ends, ``interrupted`` on Ctrl-C and ``failed`` on an error."""
    if not isinstance(config, Config):
        raise UserError(f"track(): config: expected a sparseflow Config (load_config(None, "
                        f"[...])), got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise UserError(f"track(): model: expected an nn.Module, got {type(model).__name__}")
    root = Path(root) if root is not None else default_root()
    with Store(store_path(root)) as store:
        run = TrackedRun(model, config, store, root, sparsifier, optimizer, name)
        run.dir.mkdir(parents=True, exist_ok=True)
        (run.dir / "config.yaml").write_text(config_to_yaml(config))
        store.start_run(run.run_id, to_dict(config))
        if name is not None or tags:
            store.set_labels(run.run_id, name, list(tags))
        try:
            yield run
        except KeyboardInterrupt:
            store.set_status(run.run_id, "interrupted")
            raise
        except BaseException:
            store.set_status(run.run_id, "failed")
            raise
        store.finish_run(run.run_id, "finished", run.summary())
