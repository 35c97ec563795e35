"""Sweep faults with real processes: the client killed with SIGKILL and started again, a worker
process killed mid-run, and a real Dask scheduler with two workers as separate processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sparseflow.store.checkpoint import list_checkpoints
from sparseflow.store.database import Store
from sparseflow.sweep.client import run_sweep
from sparseflow.sweep.spec import expand, load_sweep
from sparseflow.sweep.status import sweep_status
from sparseflow.sweep.worker import journal_path, journal_workers

pytestmark = pytest.mark.slow

TINY = """\
base:
  dataset: synthetic
  model: mlp
  arch: {depth: 1, width: 16}
  train.batch_size: 64
  data.heldout: 64
  flow.enabled: false
  train.eval_every: 200it
  train.checkpoint_every: 200it
"""

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def write(tmp_path: Path, base: dict[str, object], rest: str = "") -> Path:
    """A sweep file: TINY's base plus ``base`` (dotted keys), then the axes in ``rest``."""
    p = tmp_path / "sweep.yaml"
    extra = "".join(f"  {k}: {v}\n" for k, v in base.items())
    p.write_text(TINY + extra + textwrap.dedent(rest))
    return p


def start_sweep(path: Path, root: Path, log: Path, workers: int = 2) -> subprocess.Popen:
    """``run_sweep`` in a separate client process (output to ``log``)."""
    code = ("from sparseflow.sweep.client import run_sweep; "
            f"run_sweep({str(path)!r}, {str(root)!r}, workers={workers}, progress=False)")
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-c", code], stdout=fh, stderr=subprocess.STDOUT,
                                env=ENV)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Terminate ``proc`` (then kill it), waiting a bounded time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


def finished_rows(root: Path) -> dict[str, float]:
    """``run_id -> finished`` of the finished runs, read without creating anything."""
    db = root / "sparseflow.db"
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute("SELECT run_id, finished FROM runs WHERE status='finished'")
            return dict(rows.fetchall())
        finally:
            con.close()
    except sqlite3.OperationalError:
        return {}


def latest_step(root: Path, rid: str) -> int:
    ckpts = list_checkpoints(root / "runs" / rid / "checkpoints")
    return max(ckpts) if ckpts else -1


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = cond()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log else ""
            pytest.fail(f"the sweep process exited ({proc.returncode}) before {what}: {tail}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_client_sigkill_then_restart_completes_exactly_once(tmp_path, metric_rows):
    path = write(tmp_path, {"train.duration": "4000it"}, "seeds: 6\n")
    rids = [c for c in expand(load_sweep(path))]
    from sparseflow.config import run_id

    rids = [run_id(c) for c in rids]
    root, log = tmp_path / "root", tmp_path / "client.log"
    proc = start_sweep(path, root, log)
    try:
        # kill once a run has finished and another is well into training (past checkpoints)
        def midway() -> bool:
            done = finished_rows(root)
            busy = [r for r in rids if r not in done and latest_step(root, r) >= 800]
            return 1 <= len(done) < len(rids) and bool(busy)

        wait_for(midway, 90, "a run to finish while another is midway", proc, log)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        stop(proc)
    before = finished_rows(root)
    assert 1 <= len(before) < len(rids)
    in_flight = [r for r in rids if r not in before and latest_step(root, r) > 0]
    assert in_flight
    step0 = {r: (root / "runs" / r / "checkpoints" / "step-00000000.pt").stat().st_mtime_ns
             for r in in_flight}
    finals = {r: (root / "runs" / r / "checkpoints" / "step-00004000.pt").stat().st_mtime_ns
              for r in before}
    # the LocalCluster's worker processes die with their client: nobody trains on
    pids = {w["pid"] for r in in_flight for w in journal_workers(journal_path(root, r))}
    assert pids
    wait_for(lambda: not any(alive(p) for p in pids), 15, "the orphaned workers to exit")
    status = sweep_status(load_sweep(path), root)
    assert sorted(status["done"]) == sorted(before)
    # the dead client's 'running' rows (a run begun in the last instant may still be pending)
    assert {r for r in in_flight if latest_step(root, r) >= 800} <= set(status["interrupted"])
    assert set(in_flight) <= set(status["interrupted"]) | set(status["pending"])

    lines: list[str] = []
    out = run_sweep(path, root, workers=2, progress=False, echo=lines.append)
    assert [s["status"] for s in out] == ["finished"] * len(rids)
    assert lines[0].startswith(f"{len(rids) - len(before)} of {len(rids)} runs to train")
    assert sum(line.startswith("finished") for line in lines) == len(rids) - len(before)

    with Store(root / "sparseflow.db") as st:
        runs = st.list_runs()
        assert sorted(r["run_id"] for r in runs) == sorted(rids)  # one row per run
        assert all(r["status"] == "finished" for r in runs)
        for rid, t in before.items():  # finished runs were not retrained
            assert st.get_run(rid)["finished"] == t
    for rid, t in finals.items():
        assert (root / "runs" / rid / "checkpoints" / "step-00004000.pt").stat().st_mtime_ns == t
    for rid, t in step0.items():  # interrupted runs resumed from their checkpoint
        assert (root / "runs" / rid / "checkpoints" / "step-00000000.pt").stat().st_mtime_ns == t

    clean = run_sweep(path, tmp_path / "clean", workers=0, progress=False, echo=lambda s: None)
    assert [s["test_accuracy"] for s in out] == [s["test_accuracy"] for s in clean]
    got, want = metric_rows(root), metric_rows(tmp_path / "clean")
    assert {r: len(v) for r, v in got.items()} == {r: len(v) for r, v in want.items()}
    assert got == want  # no duplicated, lost or different rows


def test_worker_killed_mid_run_is_retried_from_checkpoint(tmp_path, metric_rows):
    path = write(tmp_path, {}, """
        zip:
          train.duration: [12000it, 600it, 600it]
          seed: [0, 1, 2]
        """)
    from sparseflow.config import run_id

    cfgs = expand(load_sweep(path))
    long_id = run_id(cfgs[0])
    root, log = tmp_path / "root", tmp_path / "client.log"
    proc = start_sweep(path, root, log)
    try:
        def training() -> int | None:
            workers = journal_workers(journal_path(root, long_id))
            if workers and latest_step(root, long_id) >= 2000:
                return workers[-1]["pid"]
            return None

        pid = wait_for(training, 90, "the long run to be midway", proc, log)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        proc.wait(120)
    finally:
        stop(proc)
    output = log.read_text()
    assert proc.returncode == 0, output
    assert "finished " + long_id in output and "failed" not in output

    ckdir = root / "runs" / long_id / "checkpoints"
    ckpts = list_checkpoints(ckdir)
    assert max(ckpts) == 12000
    # resumed, not restarted: step 0 was written before the kill, the end after it
    assert ckpts[0].stat().st_mtime < killed_at < ckpts[12000].stat().st_mtime
    with Store(root / "sparseflow.db") as st:
        assert [r["status"] for r in st.list_runs()] == ["finished"] * 3
        summary = st.get_run(long_id)["summary"]

    clean = run_sweep([cfgs[0]], tmp_path / "clean", workers=0, progress=False,
                      echo=lambda s: None)[0]
    for key in ("test_accuracy", "test_loss", "train_loss", "train_accuracy", "steps"):
        assert summary[key] == clean[key], key
    assert metric_rows(root)[long_id] == metric_rows(tmp_path / "clean")[long_id]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_scheduler_and_two_workers_match_local(tmp_path, metric_rows):
    from distributed import Client

    path = write(tmp_path, {"train.duration": "3ep", "sparsity": 0.8, "sparse.prune_every": 4},
                 """
        zip:
          method: [dense, lottery]
        seeds: 2
        """)
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        def spawn(args: list[str], name: str) -> None:
            fh = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed below)
            logs.append(fh)
            procs.append(subprocess.Popen([sys.executable, "-m", *args], stdout=fh,
                                          stderr=subprocess.STDOUT, env=ENV, cwd=tmp_path))

        spawn(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
               "--no-dashboard"], "scheduler")
        for i in range(2):
            spawn(["distributed.cli.dask_worker", addr, "--nthreads", "1", "--no-dashboard",
                   "--name", f"w{i}"], f"worker{i}")

        def two_workers() -> bool:
            try:
                with Client(addr, timeout=2, set_as_default=False) as c:
                    c.wait_for_workers(2, timeout=30)
                    return True
            except (OSError, TimeoutError):
                return False

        wait_for(two_workers, 60, "the scheduler and two workers")
        lines: list[str] = []
        remote = run_sweep(path, tmp_path / "remote", scheduler=addr, progress=False,
                           echo=lines.append)
        assert lines[0] == f"5 of 5 runs to train on Dask scheduler {addr}"
        with Client(addr, timeout=5, set_as_default=False) as c:
            assert len(c.scheduler_info(n_workers=-1)["workers"]) == 2  # both still there
    finally:
        for p in reversed(procs):
            stop(p)
        for fh in logs:
            fh.close()
    local = run_sweep(path, tmp_path / "local", workers=0, progress=False, echo=lambda s: None)
    assert [s["status"] for s in remote] == ["finished"] * 4
    for a, b in zip(remote, local, strict=True):
        for key in ("run_id", "status", "test_accuracy", "test_loss", "train_loss", "sparsity"):
            assert a[key] == b[key], key
    assert metric_rows(tmp_path / "remote") == metric_rows(tmp_path / "local")
