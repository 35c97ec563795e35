"""Shared test set-up: one torch thread (fast and deterministic on a 2-core machine)."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("SPARSEFLOW_THREADS_SET", "1")


@pytest.fixture(autouse=True)
def _fresh_datasets():
    """Each test reads its dataset files itself (a process keeps decoded datasets, and tests
    change files, roots and environments between loads)."""
    from sparseflow.data.registry import clear_dataset_cache

    clear_dataset_cache()
    yield
    clear_dataset_cache()


@pytest.fixture
def root(tmp_path):
    """A fresh run-store root directory."""
    return tmp_path / "store"


@pytest.fixture
def stop_after():
    """A callback class that sends the process SIGINT (as Ctrl-C would) after a given step: the
    run stops at that step boundary, saves a checkpoint there and raises Interrupted."""
    import signal

    from sparseflow.training.callbacks import Callback

    class StopAfter(Callback):
        name = "stop"

        def __init__(self, step: int) -> None:
            self.step = step

        def after_step(self, trainer):
            if trainer.step == self.step:
                signal.raise_signal(signal.SIGINT)

    return StopAfter


@pytest.fixture
def metric_rows():
    """A function: every (step, name, value) metric row in the store under ``root``, by run."""
    from sparseflow.store.database import Store

    def rows_by_run(root) -> dict[str, list[tuple]]:
        with Store(root / "sparseflow.db") as st:
            rows = st.table("metrics")
        out: dict[str, list[tuple]] = {}
        for r in rows:
            out.setdefault(r["run_id"], []).append((r["step"], r["name"], r["value"]))
        return out

    return rows_by_run
