"""Interrupts never tear a checkpoint: a signal anywhere in a step (inside optimizer.step(),
inside backward, inside a mask update) stops the run at the next step boundary with a whole
checkpoint, and the resumed run equals an uninterrupted one bit for bit; a second signal aborts
without saving, and the run resumes from its last checkpoint, again exactly."""

from __future__ import annotations

import signal

import pytest
import torch

from sparseflow.config import load_config, run_id
from sparseflow.store.checkpoint import latest_checkpoint, load_checkpoint
from sparseflow.store.database import Store
from sparseflow.store.paths import run_dir
from sparseflow.training.callbacks import Callback
from sparseflow.training.interrupts import Interrupted
from sparseflow.training.run import execute

# RigL (mask updates every 8 steps, dense gradient captured in the optimiser's pre-hook),
# momentum, flow measured around updates: every kind of per-step state is in play
CFG = ["dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=32",
       "train.batch_size=32", "train.duration=3ep", "data.heldout=64", "method=rigl",
       "sparsity=0.8", "sparse.update_every=8", "flow.every=10", "flow.around_updates=1",
       "train.checkpoint_every=1ep"]
AT = 24  # the signal arrives during the step that makes optimiser step 24 (an update step)


class SignalInside(Callback):
    """Sends SIGINT (``times`` times) from inside one part of the step that makes step ``AT``."""

    name = "signal"

    def __init__(self, where: str, times: int = 1) -> None:
        self.where, self.times, self.sent = where, times, 0

    def _fire(self, step_being_made: int) -> None:
        if step_being_made == AT and self.sent == 0:
            for _ in range(self.times):
                self.sent += 1
                signal.raise_signal(signal.SIGINT)

    def on_train_start(self, trainer) -> None:
        if self.where == "optimizer.step":
            trainer.optimizer.register_step_pre_hook(
                lambda opt, a, k: self._fire(trainer.step + 1))
        elif self.where == "backward":
            first = next(trainer.module.parameters())
            first.register_hook(lambda g: self._fire(trainer.step + 1))
        elif self.where == "mask update":
            sp = next(c for c in trainer.callbacks if c.name == "sparsifier").sparsifier
            update = sp.update

            def update_with_signal(step):  # runs after the optimiser made step ``step``
                self._fire(step)
                return update(step)

            sp.update = update_with_signal


def final_state(root, cfg):
    """(model tensors, optimizer state tensors, masks, metric rows) of a finished run."""
    rid = run_id(cfg)
    _, path = latest_checkpoint(run_dir(root, rid) / "checkpoints")
    ck = load_checkpoint(path)
    opt = [v for st in ck["optimizer"]["state"].values() for v in st.values()
           if isinstance(v, torch.Tensor)]
    with Store(root / "sparseflow.db") as st:
        rows = sorted((r["step"], r["name"], r["value"]) for r in st.table("metrics")
                      if r["run_id"] == rid)
    return ck["model"], opt, ck["callbacks"]["sparsifier"]["masks"], rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    cfg = load_config(None, CFG)
    summary = execute(cfg, root=root, progress=False)
    return summary, final_state(root, cfg)


def assert_same_run(got, want):
    model, opt, masks, rows = got
    want_model, want_opt, want_masks, want_rows = want
    assert model.keys() == want_model.keys()
    for k in model:
        assert torch.equal(model[k], want_model[k]), k
    assert len(opt) == len(want_opt) and all(torch.equal(a, b) for a, b in zip(opt, want_opt,
                                                                               strict=True))
    for k in masks:
        assert torch.equal(masks[k], want_masks[k]), k
    assert rows == want_rows


@pytest.mark.parametrize("where", ["optimizer.step", "backward", "mask update"])
def test_signal_inside_a_step_stops_at_its_boundary(where, tmp_path, reference):
    root = tmp_path / "store"
    cfg = load_config(None, CFG)
    with pytest.raises(Interrupted) as stop:
        execute(cfg, root=root, progress=False, callbacks=[SignalInside(where)])
    assert stop.value.step == AT  # the step in flight was finished, then saved
    step, path = latest_checkpoint(run_dir(root, run_id(cfg)) / "checkpoints")
    assert step == AT and load_checkpoint(path)["step"] == AT
    with Store(root / "sparseflow.db") as st:
        assert st.get_run(run_id(cfg))["status"] == "interrupted"
    summary = execute(cfg, root=root, progress=False)
    assert summary["test_accuracy"] == reference[0]["test_accuracy"]
    assert_same_run(final_state(root, cfg), reference[1])


def test_second_signal_aborts_without_saving(tmp_path, reference):
    root = tmp_path / "store"
    cfg = load_config(None, CFG)
    with pytest.raises(KeyboardInterrupt) as abort:
        execute(cfg, root=root, progress=False, callbacks=[SignalInside("optimizer.step", 2)])
    assert not isinstance(abort.value, Interrupted)
    step, _ = latest_checkpoint(run_dir(root, run_id(cfg)) / "checkpoints")
    assert step < AT  # nothing saved mid-step: the last whole checkpoint stands
    summary = execute(cfg, root=root, progress=False)
    assert summary["test_accuracy"] == reference[0]["test_accuracy"]
    assert_same_run(final_state(root, cfg), reference[1])


def test_handlers_are_restored_after_the_run(tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    execute(load_config(None, [*CFG, "train.duration=1ep"]), root=tmp_path, progress=False)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_failed_setup_leaves_no_run_folder(tmp_path):
    """A config that fails while the run is being set up (here: a mask file that does not
    exist) writes no run folder."""
    from sparseflow.errors import ConfigError

    cfg = load_config(None, [*CFG, "method=static", f"sparse.mask={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError):
        execute(cfg, root=tmp_path / "store", progress=False)
    assert not run_dir(tmp_path / "store", run_id(cfg)).exists()


def test_sigterm_to_a_real_process_stops_whole(tmp_path):
    """``kill -TERM`` of a ``sparseflow run`` process: exit 130, one line naming the step, a
    checkpoint at exactly that step, and the resumed run ends like an uninterrupted one."""
    import json
    import os
    import subprocess
    import sys
    import time

    args = ["--set", "dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=32",
            "train.duration=100ep", "train.batch_size=16", "train.eval_every=20ep",
            "data.heldout=64", "method=set", "threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(root, **kw):
        return subprocess.run([sys.executable, "-m", "sparseflow", "run", "--root", str(root),
                               "--json", "--no-progress", *args], capture_output=True,
                              text=True, env=env, timeout=300, **kw)

    root = tmp_path / "a"
    proc = subprocess.Popen([sys.executable, "-m", "sparseflow", "run", "--root", str(root),
                             "--json", "--no-progress", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list(root.glob("runs/*/checkpoints/step-*.pt")):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("sparseflow: interrupted at step ")
    step = int(line.split("at step ")[1].split()[0])
    (rdir,) = root.glob("runs/*")
    assert latest_checkpoint(rdir / "checkpoints")[0] == step
    resumed = run(root)
    full = run(tmp_path / "b")
    a = json.loads(resumed.stdout.strip().splitlines()[-1])
    b = json.loads(full.stdout.strip().splitlines()[-1])
    assert a["status"] == "finished" and a["steps"] == b["steps"] > step
    for k in ("test_accuracy", "test_loss", "train_loss"):
        assert a[k] == b[k], k
