"""The command line: JSON summary, run store commands, bad input, and a real kill + resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparseflow.cli import main
from sparseflow.store.checkpoint import list_checkpoints

SMALL = ["dataset=synthetic", "model=mlp", "arch.depth=1", "arch.width=16",
         "train.batch_size=32", "train.duration=2ep", "data.heldout=32"]
KEYS = {"run_id", "status", "method", "dataset", "model", "seed", "steps", "test_accuracy",
        "test_loss", "train_loss", "wall_seconds", "checkpoint"}


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_json_and_runs_commands(capsys, root, tmp_path):
    code, out, err = run_cli(capsys, "run", "--root", str(root), "--json", "--no-progress",
                             "--set", *SMALL)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert KEYS <= set(summary) and summary["status"] == "finished"
    assert Path(summary["checkpoint"]).exists()
    rid = summary["run_id"]

    code, out, _ = run_cli(capsys, "runs", "list", "--root", str(root))
    assert code == 0 and rid in out and "finished" in out
    code, out, _ = run_cli(capsys, "runs", "show", rid[:6], "--root", str(root))
    assert code == 0 and "test_acc" in out and rid in out
    code, out, _ = run_cli(capsys, "runs", "show", rid, "--json", "--root", str(root))
    shown = json.loads(out)
    assert shown["summary"]["test_accuracy"] == summary["test_accuracy"]

    csv_path = tmp_path / "runs.csv"
    code, _, _ = run_cli(capsys, "runs", "export", "--format", "csv", "--out", str(csv_path),
                         "--root", str(root))
    rows = list(csv.DictReader(csv_path.open()))
    assert code == 0 and rows[0]["run_id"] == rid
    assert float(rows[0]["summary.test_accuracy"]) == summary["test_accuracy"]
    assert rows[0]["config.model"] == "mlp"
    pq = tmp_path / "metrics.parquet"
    code, _, err = run_cli(capsys, "runs", "export", "--format", "parquet", "--table", "metrics",
                           "--out", str(pq), "--root", str(root))
    assert code == 0, err
    import pyarrow.parquet as pqm

    t = pqm.read_table(pq)
    assert set(t.column_names) == {"run_id", "step", "name", "value"} and t.num_rows > 4


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["run", "--set", "optim.lrr=0.1"], "did you mean 'optim.lr'"),
        (["run", "--set", "optim.lr=-3"], "optim.lr"),
        (["run", "--set", "model=nope"], "lenet300"),
        (["run", "--set", "dataset=nope"], "fashion_mnist"),
        (["run", "--set", "optim.name=lbfgs"], "optim.name"),
        (["run", "-c", "/nonexistent.yaml"], "cannot read"),
        (["runs", "show", "deadbeef"], "not found"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, root, argv, fragment):
    code, out, err = run_cli(capsys, *argv, "--root", str(root)) if argv[0] == "runs" else \
        run_cli(capsys, *argv[:1], "--root", str(root), *argv[1:])
    if argv[0] == "runs" and code == 2 and "no run store" in err:
        root.mkdir(parents=True, exist_ok=True)
        from sparseflow.store.database import Store

        Store(root / "sparseflow.db").close()
        code, out, err = run_cli(capsys, *argv, "--root", str(root))
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_dataset_says_where_it_looked(capsys, root, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEFLOW_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    code, _, err = run_cli(capsys, "run", "--root", str(root), "--no-progress", "--set",
                           "dataset=mnist", "data.download=false")
    assert code == 2 and str(tmp_path / "empty") in err
    assert len(err.strip().splitlines()) == 1


def test_bad_yaml_and_bad_store_keep_files(capsys, tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("optim: {lr: [\n")
    code, _, err = run_cli(capsys, "run", "-c", str(bad), "--root", str(tmp_path))
    assert code == 2 and "not valid YAML" in err
    root = tmp_path / "r"
    root.mkdir()
    (root / "sparseflow.db").write_text("not a database")
    code, _, err = run_cli(capsys, "run", "--root", str(root), "--no-progress", "--set", *SMALL)
    assert code == 2 and "not a SQLite database" in err
    assert (root / "sparseflow.db").read_text() == "not a database"


def test_corrupt_checkpoint_is_reported_not_loaded(capsys, root):
    argv = ["run", "--root", str(root), "--json", "--no-progress", "--set", *SMALL]
    code, out, _ = run_cli(capsys, *argv)
    summary = json.loads(out.strip().splitlines()[-1])
    ckpt = Path(summary["checkpoint"])
    # make the run unfinished again and damage its newest checkpoint
    from sparseflow.store.database import Store

    with Store(root / "sparseflow.db") as st:
        st.set_status(summary["run_id"], "interrupted")
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:-100])
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "corrupt or truncated" in err and str(ckpt) in err


def _cli(*args, env=None):
    return [sys.executable, "-m", "sparseflow.cli", *args]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    """A real ``kill -9`` mid-run; the same command resumes and ends with identical metrics."""
    args = ["run", "--json", "--no-progress", "--set", "dataset=synthetic", "data.n_train=4096",
            "model=mlp", "arch.depth=2", "arch.width=256", "train.batch_size=32",
            "train.duration=6ep", "train.checkpoint_every=50it", "data.heldout=32",
            "threads=1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = subprocess.run(_cli(*args, "--root", str(tmp_path / "ref")), capture_output=True,
                         text=True, env=env, timeout=300)
    assert ref.returncode == 0, ref.stderr
    expected = json.loads(ref.stdout.strip().splitlines()[-1])
    total = expected["steps"]

    root = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*args, "--root", str(root)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    ckdir = root / "runs" / expected["run_id"] / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline:
        steps = list(list_checkpoints(ckdir))
        if any(s >= 100 for s in steps):
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reached = max(list_checkpoints(ckdir))
    assert 100 <= reached < total, "the run was not interrupted mid-way"

    listing = subprocess.run(_cli("runs", "list", "--root", str(root)), capture_output=True,
                             text=True, env=env)
    assert "interrupted" in listing.stdout

    again = subprocess.run(_cli(*args, "--root", str(root)), capture_output=True, text=True,
                           env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"resuming run {expected['run_id']} from step {reached}" in again.stderr
    got = json.loads(again.stdout.strip().splitlines()[-1])
    for k in ("test_accuracy", "test_loss", "train_loss", "train_accuracy", "steps"):
        assert got[k] == expected[k], k


def test_help_is_complete():
    out = subprocess.run(_cli("run", "--help"), capture_output=True, text=True)
    assert out.returncode == 0
    for field in ("optim.lr", "optim.weight_decay", "train.duration", "data.heldout", "seed"):
        assert field in out.stdout
    for sub in (["runs", "list", "--help"], ["runs", "export", "--help"], ["--help"]):
        assert subprocess.run(_cli(*sub), capture_output=True).returncode == 0
