"""The training loop: learning, determinism, exact resume, divergence, callbacks."""

from __future__ import annotations

import pytest
import torch

from sparseflow.config import load_config, run_id
from sparseflow.store.checkpoint import list_checkpoints, load_checkpoint
from sparseflow.store.database import Store
from sparseflow.store.paths import run_dir
from sparseflow.training.callbacks import Callback
from sparseflow.training.run import execute

SMALL = ["dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=32",
         "train.batch_size=32", "train.duration=4ep", "data.heldout=64", "optim.lr=0.05"]


def test_learns_synthetic_and_stores_metrics(root):
    cfg = load_config(None, SMALL)
    s = execute(cfg, root=root, progress=False)
    assert s["status"] == "finished" and s["run_id"] == run_id(cfg)
    assert s["test_accuracy"] > 0.8  # 4 Gaussian classes: chance is 0.25
    assert s["steps"] == 4 * (512 // 32)  # synthetic: n_train=512 after the held-out carve
    with Store(root / "sparseflow.db") as st:
        acc = st.series(s["run_id"], "test_accuracy")
        assert len(acc) == 4 and acc[-1][1] == s["test_accuracy"]
    ckpts = list_checkpoints(run_dir(root, s["run_id"]) / "checkpoints")
    assert 0 in ckpts and s["steps"] in ckpts


def test_same_config_same_numbers(root, tmp_path):
    cfg = load_config(None, SMALL)
    a = execute(cfg, root=root, progress=False)
    b = execute(cfg, root=tmp_path / "other", progress=False)
    for k in ("test_accuracy", "test_loss", "train_loss"):
        assert a[k] == b[k]


def test_finished_run_is_not_retrained(root):
    cfg = load_config(None, SMALL)
    a = execute(cfg, root=root, progress=False)
    b = execute(cfg, root=root, progress=False)
    assert a == b


def test_resume_mid_epoch_is_exact(root, tmp_path, stop_after):
    """Stop after a mid-epoch checkpoint, resume, and match an uninterrupted run exactly."""
    overrides = SMALL + ["train.checkpoint_every=20it", "optim.name=adam", "optim.lr=0.003",
                         "optim.weight_decay=0.01"]
    cfg = load_config(None, overrides)
    full = execute(cfg, root=tmp_path / "full", progress=False)

    try:
        execute(cfg, root=root, progress=False, callbacks=[stop_after(30)])
    except KeyboardInterrupt:
        pass
    with Store(root / "sparseflow.db") as st:
        assert st.get_run(run_id(cfg))["status"] == "interrupted"
    assert 30 in list_checkpoints(run_dir(root, run_id(cfg)) / "checkpoints")
    resumed = execute(cfg, root=root, progress=False)
    for k in ("test_accuracy", "test_loss", "train_loss", "train_accuracy", "steps"):
        assert resumed[k] == full[k], k
    wa = load_checkpoint(resumed["checkpoint"])["model"]
    wb = load_checkpoint(full["checkpoint"])["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_divergence_is_recorded(root):
    cfg = load_config(None, SMALL + ["optim.name=sgd", "optim.lr=1e6", "optim.schedule=constant"])
    s = execute(cfg, root=root, progress=False)
    assert s["status"] == "diverged" and s["diverged_step"] > 0
    with Store(root / "sparseflow.db") as st:
        assert st.get_run(s["run_id"])["status"] == "diverged"


def test_callbacks_see_every_step_in_order(root):
    seen = []

    class Spy(Callback):
        name = "spy"

        def after_backward(self, trainer):
            seen.append(("b", trainer.step))

        def after_step(self, trainer):
            seen.append(("s", trainer.step))

        def on_train_end(self, trainer, summary):
            summary["spy"] = len(seen)

    cfg = load_config(None, SMALL + ["train.duration=5it"])
    s = execute(cfg, root=root, progress=False, callbacks=[Spy()])
    assert seen == [(k, i + (k == "s")) for i in range(5) for k in "bs"]
    assert s["spy"] == 10


def test_every_optimizer_and_schedule_trains(root):
    for i, (opt, sched) in enumerate([("sgd", "step"), ("nesterov", "linear"),
                                      ("rmsprop", "constant"), ("adagrad", "cosine"),
                                      ("adamw", "cosine")]):
        lr = "0.001" if opt in ("rmsprop", "adamw") else "0.05"
        cfg = load_config(None, SMALL + [f"optim.name={opt}", f"optim.schedule={sched}",
                                         f"optim.lr={lr}", "optim.warmup=5it", f"seed={i}"])
        s = execute(cfg, root=root, progress=False)
        assert s["test_accuracy"] > 0.5, (opt, s)


def test_tensorboard_event_files(root):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(None, SMALL + ["train.duration=2ep", "log.tensorboard=true"])
    s = execute(cfg, root=root, progress=False)
    logdir = run_dir(root, s["run_id"]) / "tensorboard"
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    values = [e.value for e in acc.Scalars("test_accuracy")]
    assert len(values) == 2 and values[-1] == pytest.approx(s["test_accuracy"])


def test_denormal_flushing_is_scoped_to_the_run(root):
    from sparseflow.training.run import denormals_flushed

    assert not denormals_flushed()
    execute(load_config(None, SMALL + ["train.duration=2it"]), root=root, progress=False)
    assert not denormals_flushed()  # the process is left as it was


def test_memory_recorder_leaves_the_store_alone_until_replayed(root, tmp_path):
    from sparseflow.store.recorder import MemoryRecorder

    cfg = load_config(None, SMALL)
    rec = MemoryRecorder()
    s = execute(cfg, root=root, progress=False, recorder=rec)
    with Store(root / "sparseflow.db") as st:
        assert st.get_run(s["run_id"]) is None and not st.metrics(s["run_id"])
        MemoryRecorder.replay(rec.events, st)
        MemoryRecorder.replay(rec.events, st)  # a replay after a retry adds nothing
        got = st.metrics(s["run_id"])
        assert st.get_run(s["run_id"])["status"] == "finished"
    direct = execute(cfg, root=tmp_path / "direct", progress=False)
    with Store(tmp_path / "direct" / "sparseflow.db") as st:
        assert st.metrics(direct["run_id"]) == got


def test_redirected_output_has_epoch_lines_and_no_progress_bar(tmp_path):
    """Progress bars only on a terminal: a run whose output goes to a file (as in a cluster
    log) writes one line per epoch and no carriage-return debris."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "sparseflow", "run", "--root", str(tmp_path),
                          "--set", *SMALL, "train.duration=3ep"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-1000:]
    assert "\r" not in out.stdout + out.stderr
    epochs = [ln for ln in out.stdout.splitlines() if ln.startswith("epoch ")]
    assert len(epochs) == 3
