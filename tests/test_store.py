"""The SQLite run store: round trips, concurrent writers, bad files."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from sparseflow.errors import StoreError
from sparseflow.store.database import Store


def test_run_lifecycle(tmp_path):
    with Store(tmp_path / "s.db") as s:
        s.start_run("abc", {"method": "dense", "dataset": "synthetic", "model": "mlp", "seed": 1})
        s.log_metrics("abc", 10, {"test_accuracy": 0.5, "test_loss": 1.0})
        s.log_metrics("abc", 10, {"test_accuracy": 0.6})  # a resumed step replaces the value
        s.finish_run("abc", "finished", {"test_accuracy": 0.6})
        run = s.get_run("abc")
        assert run["status"] == "finished" and run["summary"] == {"test_accuracy": 0.6}
        assert run["config"]["seed"] == 1 and run["method"] == "dense"
        assert s.series("abc", "test_accuracy") == [(10, 0.6)]
        assert len(s.metrics("abc")) == 2
        assert s.find_runs("ab") == ["abc"] and s.find_runs("x") == []
        s.start_run("abc", {"method": "dense"})  # restart keeps metrics
        assert len(s.metrics("abc")) == 2


def _writer(path: str, worker: int, n: int) -> None:
    s = Store(path)
    s.start_run(f"run{worker}", {"seed": worker})
    for i in range(n):
        s.log_metrics(f"run{worker}", i, {"a": float(i), "b": float(worker)})
    s.finish_run(f"run{worker}", "finished", {"n": n})
    s.close()


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "s.db")
    Store(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 150)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Store(path) as s:
        assert len(s.table("metrics")) == 4 * 150 * 2
        assert {r["status"] for r in s.list_runs()} == {"finished"}


def test_not_a_database_is_refused_and_untouched(tmp_path):
    p = tmp_path / "notes.db"
    p.write_text("my precious notes\n")
    with pytest.raises(StoreError, match="not a SQLite database"):
        Store(p)
    assert p.read_text() == "my precious notes\n"


def _other_writer(path: str, n: int) -> None:
    s = Store(path)
    s.start_run("other", {})
    for i in range(n):
        s.log_metrics("other", i, {"x": 1.0})
    s.close()  # the last connection of that process: SQLite checkpoints the WAL


def test_nested_stores_in_one_process_lose_nothing(tmp_path):
    """A run that trains its source run opens a second Store on the same file in the same
    process. Opening the file any other way would drop this process's POSIX locks when it is
    closed, and another process's checkpoint could then discard our WAL frames (seen as lost
    metrics, or 'disk I/O error')."""
    path = str(tmp_path / "s.db")
    outer = Store(path)
    outer.start_run("outer", {})
    ctx = mp.get_context("spawn")
    for k in range(3):
        inner = Store(path)
        inner.log_metrics("outer", 1000 + k, {"y": 1.0})
        inner.close()
        p = ctx.Process(target=_other_writer, args=(path, 30))
        p.start()
        p.join(60)
        assert p.exitcode == 0
        for i in range(20):
            outer.log_metrics("outer", k * 100 + i, {"x": float(i)})
    outer.finish_run("outer", "finished", {})
    outer.close()
    with Store(path) as s:
        assert len(s.metrics("outer")) == 3 + 3 * 20
        assert s.get_run("outer")["status"] == "finished"
