"""What a sweep costs besides training: runs are queued ahead of the worker, the client acts on
results as they arrive (it never sleeps to poll), a process's first run loads its dataset while
torch's lazy imports run, and LocalCluster worker processes skip their interpreter teardown."""

from __future__ import annotations

import sys
import time
import weakref
from types import SimpleNamespace

from sparseflow.config import load_config
from sparseflow.store.database import Store
from sparseflow.sweep.client import _Sweeper, run_sweep
from sparseflow.sweep.plan import plan
from sparseflow.sweep.worker import warm_up
from sparseflow.training.run import load_data

TINY = ["dataset=synthetic", "model=mlp", "arch.depth=1", "arch.width=16",
        "train.batch_size=64", "train.duration=2ep", "flow.enabled=false"]


def tiny(seed: int, *extra: str):
    return load_config(None, [*TINY, *extra, f"seed={seed}"])


def test_runs_queued_ahead_and_client_never_sleeps(tmp_path, monkeypatch):
    """One worker, three independent runs: all three are submitted before the first result is
    replayed (the worker goes from one run to the next without waiting for the client), and
    the client's loop waits on its inbox instead of sleeping."""
    sleeps: list[float] = []
    real_sleep = time.sleep

    def spy(seconds: float) -> None:
        if sys._getframe(1).f_globals.get("__name__", "").startswith("sparseflow.sweep"):
            sleeps.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", spy)
    seen: list[dict] = []
    real_record = _Sweeper.record

    def record(self, result):
        seen.append({"state": dict(self.state), "running": set(self.running),
                     "run_id": result["run_id"]})
        real_record(self, result)

    monkeypatch.setattr(_Sweeper, "record", record)
    cfgs = [tiny(s) for s in range(3)]
    out = run_sweep(cfgs, tmp_path / "root", workers=1, progress=False, echo=lambda s: None)
    assert [s["status"] for s in out] == ["finished"] * 3
    assert len(seen) == 3
    assert sorted(seen[0]["state"].values()) == ["submitted"] * 3  # all queued at once
    assert sleeps == []
    # start notices are applied as they arrive: a run is `running` before its result is in
    assert any(s["run_id"] in s["running"] for s in seen)


def test_interrupted_applies_start_notices_not_yet_seen(tmp_path):
    """A start notice still in the inbox when the client stops marks its run interrupted."""
    (run,) = plan([tiny(0)])
    with Store(tmp_path / "sparseflow.db") as store:
        sw = _Sweeper([run], tmp_path, store, lambda s: None, None)
        sw.state[run.run_id] = "submitted"
        sw.inbox.put({"run_id": run.run_id})
        sw.interrupted()
        assert store.get_run(run.run_id)["status"] == "interrupted"
        assert not sw.running


# -- the first run of a process ------------------------------------------------------------
def test_warm_up_loads_the_dataset_into_the_process_cache():
    cfg = tiny(0)
    warm_up(cfg)
    first = load_data(cfg)
    assert load_data(cfg) is first  # the run finds what the warm-up loaded


def test_warm_up_is_best_effort(monkeypatch):
    """A dataset that fails to load is not the warm-up's error: the run reports it."""
    from sparseflow.sweep import worker

    def broken(cfg):
        raise OSError("no such file")

    monkeypatch.setattr(worker, "load_data", broken)
    warm_up(tiny(0))  # no exception


# -- LocalCluster worker processes end quickly ---------------------------------------------
class FakeWorker:
    def __init__(self, status: str) -> None:
        self.status = SimpleNamespace(name=status)


def test_quick_exit_only_in_multiprocessing_children(monkeypatch):
    from sparseflow.sweep import quick_exit as qe

    registered: list = []
    monkeypatch.setattr(qe.atexit, "register", lambda *a: registered.append(a))
    qe.QuickExit().setup(FakeWorker("running"))
    assert registered == []  # this test process is nobody's multiprocessing child
    monkeypatch.setattr(qe.multiprocessing, "parent_process", lambda: object())
    worker = FakeWorker("running")
    qe.QuickExit().setup(worker)
    assert len(registered) == 1 and registered[0][0] is qe.quick_exit
    assert registered[0][1]() is worker


def test_quick_exit_waits_for_the_worker_to_close(monkeypatch):
    from sparseflow.sweep import quick_exit as qe

    exits: list[int] = []
    monkeypatch.setattr(qe.os, "_exit", exits.append)
    worker = FakeWorker("running")
    qe.quick_exit(weakref.ref(worker))
    assert exits == []  # still running: the process ends the usual way
    worker.status.name = "closed"
    qe.quick_exit(weakref.ref(worker))
    gone = FakeWorker("running")
    ref = weakref.ref(gone)
    del gone
    qe.quick_exit(ref)  # the worker object is gone: it has closed
    assert exits == [0, 0]


def test_local_cluster_workers_have_quick_exit_and_exit_cleanly():
    from sparseflow.sweep.cluster import connect

    client, cluster = connect(None, 1, 3, 5.0)
    try:
        plugins = client.run(lambda dask_worker: sorted(dask_worker.plugins))
        assert all("sparseflow-quick-exit" in p for p in plugins.values())
        (nanny,) = cluster.workers.values()
        process = nanny.process.process
    finally:
        client.close()
        cluster.close()
    assert process.exitcode == 0
