"""Checkpoints inside runs: opened by plain torch, old files resume, copies from another run or
step are refused, killed writes are cleaned up, a failing save is one line and resumes exactly,
an incomplete or pickled file is one line."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparseflow.cli import main
from sparseflow.config import load_config, run_id
from sparseflow.store import checkpoint as ck
from sparseflow.store.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    sidecar_path,
)
from sparseflow.store.database import Store
from sparseflow.store.paths import run_dir
from sparseflow.training.run import execute, load_data, make_model

SMALL = ["dataset=synthetic", "model=mlp", "arch.depth=1", "arch.width=16",
         "train.batch_size=32", "train.duration=2ep", "data.heldout=32"]  # 16 steps an epoch
SPARSE = SMALL + ["method=static", "sparsity=0.8"]


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# what `sparseflow run` says on stderr before an error: the run's name, its training progress
_PROGRESS = re.compile(r"^(run [0-9a-f]+: |resuming run |epoch +[0-9.]+ step )")


def one_line(err: str) -> str:
    """The one error line of stderr (besides the run's progress); fails on anything else."""
    lines = [line for line in err.strip().splitlines() if not _PROGRESS.match(line)]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def unfinish(root, rid):
    with Store(root / "sparseflow.db") as st:
        st.set_status(rid, "interrupted")


def test_plain_torch_load_gives_the_model_and_the_masks(root):
    cfg = load_config(None, SPARSE)
    s = execute(cfg, root=root, progress=False)
    plain = torch.load(s["checkpoint"], weights_only=True)  # no sparseflow involved
    assert isinstance(plain, dict) and plain["run_id"] == s["run_id"]
    assert plain["step"] == s["steps"] == 32
    model = make_model(cfg, load_data(cfg))
    expected = model.state_dict()
    assert list(plain["model"]) == list(expected)
    assert all(plain["model"][k].shape == expected[k].shape for k in expected)
    verified = load_checkpoint(s["checkpoint"])
    assert all(torch.equal(plain["model"][k], verified["model"][k]) for k in expected)
    model.load_state_dict(plain["model"])  # loads into the model as is
    masks = plain["callbacks"]["sparsifier"]["masks"]
    assert set(masks) == {k for k in expected if k.endswith("weight")}
    nnz = sum(int(m.sum()) for m in masks.values())
    assert nnz == round(0.2 * sum(m.numel() for m in masks.values()))
    for name, m in masks.items():
        assert m.dtype == torch.bool and torch.all(plain["model"][name][~m] == 0)


def old_format_save(path, obj):
    """The writer of the old format (magic, hex SHA-256, newline, payload), copied as it was."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(b"SFCKPT1\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n"
                    + payload)
    os.replace(tmp, path)


def test_a_store_of_old_checkpoints_keeps_resuming(root, tmp_path, stop_after):
    cfg = load_config(None, SMALL + ["train.checkpoint_every=10it"])
    full = execute(cfg, root=tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, root=root, progress=False, callbacks=[stop_after(20)])
    ckdir = run_dir(root, run_id(cfg)) / "checkpoints"
    for p in list_checkpoints(ckdir).values():  # as the old version wrote them
        state = load_checkpoint(p)
        del state["run_id"]
        state["format"] = 1
        old_format_save(p, state)
        sidecar_path(p).unlink()
    assert max(list_checkpoints(ckdir)) == 20
    assert list_checkpoints(ckdir)[20].read_bytes().startswith(b"SFCKPT1\n")
    resumed = execute(cfg, root=root, progress=False)
    for k in ("test_accuracy", "test_loss", "train_loss", "train_accuracy", "steps"):
        assert resumed[k] == full[k], k


def test_a_checkpoint_copied_from_another_run_is_refused(capsys, root):
    """The issue's case: step 150 of one run copied (with its sidecar) over another run's
    step-00000200.pt; resuming or analysing it is one line, exit 2."""
    base = SPARSE + ["train.duration=200it", "train.checkpoint_steps=[150]",
                     "train.checkpoint_every=100it"]
    a, b = (load_config(None, base + [f"seed={s}"]) for s in (0, 1))
    ra, rb = (execute(c, root=root, progress=False)["run_id"] for c in (a, b))
    dst = run_dir(root, ra) / "checkpoints" / "step-00000200.pt"
    src = run_dir(root, rb) / "checkpoints" / "step-00000150.pt"
    shutil.copyfile(src, dst)
    shutil.copyfile(sidecar_path(src), sidecar_path(dst))
    unfinish(root, ra)
    expected = f"sparseflow: error: {dst}: holds step 150 of run {rb}, not step 200 of run {ra}"
    code, _, err = cli(capsys, "run", "--root", str(root), "--no-progress", "--set", *base,
                       "seed=0")
    assert code == 2 and one_line(err) == expected
    code, _, err = cli(capsys, "analyze", "hessian", ra, "--step", "200", "--root", str(root))
    assert code == 2 and one_line(err) == expected
    code, _, err = cli(capsys, "analyze", "hessian", str(dst), "--root", str(root))
    assert code == 2 and one_line(err) == expected


def test_stale_temps_are_removed_when_the_run_starts(root, stop_after):
    cfg = load_config(None, SMALL)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, root=root, progress=False, callbacks=[stop_after(20)])
    ckdir = run_dir(root, run_id(cfg)) / "checkpoints"
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = [ckdir / f".step-00000024.pt.tmp-{proc.pid}",
            ckdir / f".step-00000024.pt.sha256.tmp-{proc.pid}"]
    live = ckdir / f".step-00000025.pt.tmp-{os.getppid()}"
    for p in [*dead, live]:
        p.write_bytes(b"half a checkpoint")
    assert execute(cfg, root=root, progress=False)["status"] == "finished"
    assert not any(p.exists() for p in dead) and live.exists()


@pytest.fixture
def full_disk(monkeypatch):
    """Call ``on()``: every checkpoint write after step 16 fails with ENOSPC; ``off()``."""
    real = ck.write_synced

    def write(path, data):  # path: .step-XXXXXXXX.pt[.sha256].tmp-PID
        name = path.name[1:].split(".tmp-")[0].removesuffix(".sha256")
        if (ck.step_of(name) or 0) > 16:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    return (lambda: monkeypatch.setattr(ck, "write_synced", write),
            lambda: monkeypatch.setattr(ck, "write_synced", real))


def test_disk_full_is_one_line_then_the_resumed_run_equals_an_uninterrupted_one(
        capsys, root, tmp_path, full_disk, metric_rows):
    argv = ["run", "--json", "--no-progress", "--set", *SMALL]
    code, out, err = cli(capsys, *argv[:1], "--root", str(tmp_path / "ref"), *argv[1:])
    assert code == 0, err
    reference = json.loads(out.strip().splitlines()[-1])
    ckdir = run_dir(root, reference["run_id"]) / "checkpoints"

    on, off = full_disk
    on()
    code, _, err = cli(capsys, *argv[:1], "--root", str(root), *argv[1:])
    assert code == 2
    assert one_line(err) == (f"sparseflow: error: {ckdir}: cannot write checkpoint "
                             "(No space left on device)")
    assert sorted(p.name for p in ckdir.iterdir()) == [  # the good ones, no temp files
        "step-00000000.pt", "step-00000000.pt.sha256", "step-00000016.pt",
        "step-00000016.pt.sha256"]
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(ckdir).values()] == [0, 16]
    with Store(root / "sparseflow.db", readonly=True) as st:
        assert st.get_run(reference["run_id"])["status"] == "failed"

    off()  # space is freed: the same command resumes from step 16
    code, out, err = cli(capsys, *argv[:1], "--root", str(root), *argv[1:])
    assert code == 0, err
    resumed = json.loads(out.strip().splitlines()[-1])
    for k in ("test_accuracy", "test_loss", "train_loss", "train_accuracy", "steps"):
        assert resumed[k] == reference[k], k
    assert metric_rows(root) == metric_rows(tmp_path / "ref")


def _restricts_writes(folder: Path) -> bool:
    try:
        (folder / ".probe").write_bytes(b"")
    except OSError:
        return True
    (folder / ".probe").unlink()
    return False


def test_read_only_checkpoint_folder_is_one_line(capsys, root):
    """chmod a-w on the run's checkpoint folder (skipped where chmod does not stop this user,
    e.g. root; tests/test_store_readonly.py does a real read-only mount there)."""
    argv = ["run", "--root", str(root), "--json", "--no-progress", "--set", *SMALL]
    code, out, _ = cli(capsys, *argv)
    summary = json.loads(out.strip().splitlines()[-1])
    ckdir = Path(summary["checkpoint"]).parent
    final = Path(summary["checkpoint"])
    final.unlink()
    sidecar_path(final).unlink()
    unfinish(root, summary["run_id"])
    ckdir.chmod(0o555)
    try:
        if not _restricts_writes(ckdir):
            pytest.skip("chmod does not restrict this user (root): see test_store_readonly")
        code, _, err = cli(capsys, *argv)
        assert code == 2
        assert one_line(err) == (f"sparseflow: error: {ckdir}: cannot write checkpoint "
                                 "(Permission denied)")
    finally:
        ckdir.chmod(0o755)
    assert sorted(list_checkpoints(ckdir)) == [0, 16]


def test_a_checkpoint_without_model_is_one_line(capsys, root):
    code, out, _ = cli(capsys, "run", "--root", str(root), "--json", "--no-progress", "--set",
                       *SPARSE)
    summary = json.loads(out.strip().splitlines()[-1])
    final = Path(summary["checkpoint"])
    state = load_checkpoint(final)
    del state["model"]
    save_checkpoint(final, state)  # checksummed, but incomplete
    code, _, err = cli(capsys, "analyze", "hessian", str(final), "--root", str(root))
    assert code == 2 and one_line(err) == (f"sparseflow: error: {final}: checkpoint has no "
                                           "'model' entry")
    unfinish(root, summary["run_id"])
    code, _, err = cli(capsys, "run", "--root", str(root), "--no-progress", "--set", *SPARSE)
    assert code == 2 and one_line(err) == (f"sparseflow: error: {final}: checkpoint has no "
                                           "'model' entry")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_checksummed_raw_pickle_is_exactly_one_line_on_stderr(root):
    """A real process: torch's pickle-protocol warning would be a second stderr line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "default"}
    argv = [sys.executable, "-m", "sparseflow.cli", "run", "--root", str(root), "--json",
            "--no-progress", "--set", *SMALL]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    final = Path(summary["checkpoint"])
    final.write_bytes(pickle.dumps({"model": _Evil(), "step": 32}, protocol=4))
    sidecar_path(final).write_text(f"{hashlib.sha256(final.read_bytes()).hexdigest()}  "
                                   f"{final.name}\n")
    unfinish(root, summary["run_id"])
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "pwned" not in done.stdout
    line = one_line(done.stderr)
    assert line.startswith(f"sparseflow: error: {final}: cannot load checkpoint"), line
