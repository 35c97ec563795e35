"""Running a sweep on Dask distributed: workers train, the client alone writes the store.

(Kept whole at ~450 lines: the client's scheduling, fault handling and store writes are one
state machine over the same bookkeeping; the worker side is ``sweep/worker.py``, the Dask
connection ``sweep/cluster.py``.)

Roles
-----
* The **client** (:func:`run_sweep`) expands the sweep, skips runs the store already holds as
  finished or diverged, submits the rest to Dask (source runs first: a run that needs another
  run is submitted only once that run is finished *in the store*), and, as results arrive,
  replays each run's recorded events into the store. It is the only process that writes the
  SQLite store, so the store never sees concurrent writers from many machines (workers only
  open it to read, as :func:`~sparseflow.training.run.execute` does to skip finished runs
  and find source runs).
* A **worker** (:func:`train_in_worker`, one thread per process) trains one run with a
  :class:`~sparseflow.store.recorder.MemoryRecorder` and returns the run's summary and
  events. It writes only files in the run's own directory ``ROOT/runs/RUN_ID``: checkpoints
  (atomic) and a journal ``sweep-events.jsonl`` of the events it recorded.

Faults
------
* Client killed (even ``kill -9``): LocalCluster workers die with it. Started again, the sweep
  skips what the store holds as finished; a run that was in flight resumes from its latest
  checkpoint, and its journal supplies the metric rows recorded before that checkpoint, so
  nothing is lost and nothing is duplicated (metric rows are keyed by run, step and name).
* Worker killed mid-run: the Dask scheduler gives the task to another worker (up to
  ``retries`` lost workers per task); the run resumes from its latest checkpoint, bit for bit.
* A run whose loss becomes NaN/inf is recorded ``diverged`` with its step; the sweep goes on
  (runs that need it as a source are reported ``blocked``).
* A run that raises is recorded ``failed`` with the error; the sweep goes on. Bad input
  (:class:`~sparseflow.errors.UserError`) is not retried; other exceptions are retried by Dask
  ``retries`` times.

``ROOT`` must be one directory that the client and every worker see under the same path (a
shared file system on a multi-machine cluster).
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sparseflow.config import Config
from sparseflow.errors import UserError
from sparseflow.store.database import Store, effective_status
from sparseflow.store.paths import store_path
from sparseflow.store.recorder import MemoryRecorder
from sparseflow.sweep.cluster import connect, n_workers
from sparseflow.sweep.plan import PlannedRun, as_configs, plan
from sparseflow.sweep.spec import Sweep
from sparseflow.sweep.status import stored_runs
from sparseflow.sweep.worker import TOPIC, journal_path, read_journal, train_in_worker, train_run
from sparseflow.typed import to_dict

TERMINAL = ("finished", "diverged")


# -- the client side -----------------------------------------------------------------------
def _head(r: PlannedRun) -> dict[str, Any]:
    c = r.config
    return {"run_id": r.run_id, "method": c.method, "dataset": c.dataset, "model": c.model,
            "seed": c.seed, "sparsity": 0.0 if c.method == "dense" else c.sparsity}


class _Sweeper:
    """The client's bookkeeping: what is done, what may start, and the store writes."""

    def __init__(self, runs: list[PlannedRun], root: Path, store: Store,
                 echo: Callable[[str], None], bar: Any) -> None:
        self.runs = {r.run_id: r for r in runs}
        self.order = [r.run_id for r in runs]
        self.root, self.store, self.echo, self.bar = root, store, echo, bar
        self.results: dict[str, dict[str, Any]] = {}
        self.state: dict[str, str] = {}  # rid -> finished/diverged/failed/busy/submitted/...
        # what the client waits for on Dask: workers' start notices (dicts) and the futures
        # of finished runs, put here from Dask's threads as they arrive
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.running: set[str] = set()  # marked running in the store by this client

    # -- scheduling ----------------------------------------------------------------------
    def ready(self) -> list[PlannedRun]:
        """Runs not yet submitted whose sources are finished."""
        out = []
        for rid in self.order:
            if rid in self.state:
                continue
            needs = [self.state.get(n) for n in self.runs[rid].needs]
            if all(s == "finished" for s in needs):
                out.append(self.runs[rid])
        return out

    def block_rest(self) -> None:
        """Runs that can no longer start this time (a source failed, diverged or is busy)."""
        changed = True
        while changed:
            changed = False
            for rid in self.order:
                if rid in self.state:
                    continue
                bad = [n for n in self.runs[rid].needs
                       if self.state.get(n) in ("failed", "diverged", "busy", "blocked")]
                if bad:
                    why = f"source run {bad[0]} is {self.state[bad[0]]}"
                    self.state[rid] = "blocked"
                    self.results[rid] = {**_head(self.runs[rid]), "status": "blocked",
                                         "error": why}
                    self.say(f"blocked  {rid}: {why}")
                    changed = True

    # -- reporting -----------------------------------------------------------------------
    def say(self, msg: str) -> None:
        """Print a line above the progress bar."""
        if self.bar is None:
            self.echo(msg)
            return
        from tqdm import tqdm

        with tqdm.external_write_mode(file=sys.stderr):
            self.echo(msg)

    def _line(self, r: PlannedRun, summary: dict[str, Any]) -> str:
        c = r.config
        sp = "" if c.method == "dense" else f" sparsity {c.sparsity:g}"
        st = summary.get("status", "?")
        if st == "finished":
            acc = summary.get("test_accuracy")
            tail = f"test acc {acc:.4f}" if isinstance(acc, float) else "finished"
            wall = summary.get("wall_seconds")
            if isinstance(wall, int | float):
                tail += f" ({wall:.1f} s)"
        elif st == "diverged":
            tail = f"diverged at step {summary.get('diverged_step')}"
        else:
            tail = f"{st}: {summary.get('error', '')}"
        role = "" if r.point else " [source]"
        return f"{st:8s} {r.run_id} {c.method}{sp} seed {c.seed}{role}: {tail}"

    # -- store writes (the client only) --------------------------------------------------
    def mark_started(self, msg: dict[str, Any]) -> None:
        """Apply a worker's start notice: the run is ``running`` in the store (unless its
        result came first)."""
        rid = msg.get("run_id")
        if rid in self.runs and self.state.get(rid) == "submitted":
            self.store.start_run(rid, to_dict(self.runs[rid].config))
            self.running.add(rid)

    def on_event(self, event: tuple[float, Any]) -> None:
        """Dask topic handler (runs in the client's event-loop thread): queue the notice."""
        _, msg = event
        if isinstance(msg, dict):
            self.inbox.put(msg)

    def record(self, result: dict[str, Any]) -> None:
        """Replay a worker's events into the store and note the outcome."""
        rid = result["run_id"]
        MemoryRecorder.replay(result["events"], self.store)
        if result.get("error") is not None or result.get("summary") is None:
            self.fail(rid, result.get("error") or "no summary", replay_journal=False)
            return
        summary = result["summary"]
        status = summary.get("status", "finished")
        self.state[rid] = status if status in TERMINAL else "failed"
        self.results[rid] = summary
        self.running.discard(rid)
        if status in TERMINAL:
            journal_path(self.root, rid).unlink(missing_ok=True)
        self.say(self._line(self.runs[rid], summary))
        if self.bar is not None:
            self.bar.update(1)

    def fail(self, rid: str, error: str, *, replay_journal: bool = True) -> None:
        """Record ``rid`` as failed (with what its journal holds), and go on."""
        error = " ".join(str(error).split())
        if replay_journal:
            with contextlib.suppress(OSError):
                MemoryRecorder.replay(read_journal(journal_path(self.root, rid)), self.store)
        r = self.runs[rid]
        if self.store.get_run(rid) is None:
            self.store.start_run(rid, to_dict(r.config))
        summary = {**_head(r), "status": "failed", "error": error}
        self.store.finish_run(rid, "failed", summary)
        self.state[rid] = "failed"
        self.results[rid] = summary
        self.running.discard(rid)
        self.say(self._line(r, summary))
        if self.bar is not None:
            self.bar.update(1)

    def interrupted(self) -> None:
        """The client stops early: runs it marked running (or has start notices of) are
        ``interrupted``."""
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, dict):
                with contextlib.suppress(Exception):
                    self.mark_started(item)
        for rid in list(self.running):
            with contextlib.suppress(Exception):
                MemoryRecorder.replay(read_journal(journal_path(self.root, rid)), self.store)
                self.store.set_status(rid, "interrupted")
        self.running.clear()


def _run_inprocess(sw: _Sweeper, root: Path) -> None:
    """``workers=0``: train each run in this process, in order (for debugging)."""
    while True:
        todo = sw.ready()
        if not todo:
            return
        for r in todo:
            sw.state[r.run_id] = "submitted"
            sw.store.start_run(r.run_id, to_dict(r.config))
            sw.running.add(r.run_id)
            try:
                result = train_run(to_dict(r.config), root, announce=False)
            except KeyboardInterrupt:
                sw.interrupted()
                raise
            except Exception as e:  # noqa: BLE001 (recorded, the sweep goes on)
                sw.fail(r.run_id, f"{type(e).__name__}: {e}")
                continue
            sw.record(result)
        sw.block_rest()


def _collect(sw: _Sweeper, rid: str, fut: Any) -> None:
    """Record the outcome of the finished (or failed, or cancelled) future of run ``rid``."""
    if fut.status == "finished":
        try:
            result = fut.result()
        except Exception as e:  # noqa: BLE001
            sw.fail(rid, f"{type(e).__name__}: {e}")
        else:
            if result.get("run_id") == rid:
                sw.record(result)
            else:
                sw.fail(rid, f"the worker named this run {result.get('run_id')}: the "
                        "client and the workers run different sparseflow versions")
    else:
        exc = fut.exception() if fut.status == "error" else None
        why = f"{type(exc).__name__}: {exc}" if exc is not None else fut.status
        sw.fail(rid, why)
    fut.release()


def _run_dask(sw: _Sweeper, client: Any, root: Path, retries: int) -> None:
    """Submit runs as their sources finish; replay results as they arrive.

    Every run that may start is submitted at once: the scheduler queues them and hands a
    worker its next run as soon as the last one ends, without waiting for the client. The
    client blocks on one queue (:attr:`_Sweeper.inbox`) that Dask's threads fill with the
    workers' start notices and the finished futures (done callbacks), so it replays each
    result, and submits the runs that needed it, as soon as it arrives.
    """
    client.subscribe_topic(TOPIC, sw.on_event)
    pending: dict[str, tuple[str, Any]] = {}  # key -> (run id, future): holding it keeps it

    def submit_ready() -> None:
        for r in sw.ready():
            sw.state[r.run_id] = "submitted"
            fut = client.submit(train_in_worker, to_dict(r.config), str(root), 1,
                                key=f"sparseflow-train-{r.run_id}", retries=retries,
                                pure=False, priority=0 if r.point else 1)
            pending[fut.key] = (r.run_id, fut)
            fut.add_done_callback(sw.inbox.put)

    submit_ready()
    while pending:
        try:  # with a timeout, so that Ctrl-C is seen on every platform
            item = sw.inbox.get(timeout=1.0)
        except queue.Empty:
            continue
        finished = False
        while item is not None:  # everything that has arrived, then schedule once
            if isinstance(item, dict):
                sw.mark_started(item)
            elif item.key in pending:
                _collect(sw, *pending.pop(item.key))
                finished = True
            try:
                item = sw.inbox.get_nowait()
            except queue.Empty:
                item = None
        if finished:
            sw.block_rest()
            submit_ready()


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Any]:
    if not enabled or total == 0:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True, desc="sweep",
               disable=None)  # a bar only on a terminal
    try:
        yield bar
    finally:
        bar.close()


def run_sweep(
    sweep_or_configs: Sweep | str | Path | list[Config],
    root: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    dry_run: bool = False,
    retries: int = 3,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    connect_timeout: float = 5.0,
) -> list[dict[str, Any]]:
    """Run every point of a sweep that the store does not hold as finished; returns the
    points' summaries in sweep order.

    ``workers``: worker processes of the LocalCluster (default: one per core; never more than
    there are runs); ``0`` trains in this process, without Dask (debugging). ``scheduler``
    (``tcp://HOST:PORT``): submit to that running Dask cluster instead (``workers`` is then
    ignored); an address that does not answer within ``connect_timeout`` seconds is a
    :class:`~sparseflow.errors.UserError`. ``dry_run``: list what would run and start nothing.
    ``retries``: how many times a run is given to another worker after its worker died (or
    after an unexpected exception). Source runs (``lottery``, ``sparse.mask=pruned``) are
    trained first, once each.

    Summaries have at least ``run_id``, ``status`` (finished, diverged, failed, or blocked
    when a source run did not finish; ``pending`` in a dry run), ``method``, ``seed``,
    ``sparsity``; finished runs have ``test_accuracy`` and ``wall_seconds``, diverged ones
    ``diverged_step``, failed and blocked ones ``error``.
    """
    configs = as_configs(sweep_or_configs)
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 0:
        raise UserError(f"--workers: expected 0 or more, got {workers}")
    if retries < 0:
        raise UserError(f"retries: expected 0 or more, got {retries}")
    root = Path(root).absolute()
    runs = plan(configs)
    stored = stored_runs(root, [r.run_id for r in runs])
    here = socket.gethostname()
    results: dict[str, dict[str, Any]] = {}
    state: dict[str, str] = {}
    for r in runs:
        row = stored.get(r.run_id)
        if row is None:
            continue
        st = effective_status(row)
        if st in TERMINAL and row.get("summary"):
            state[r.run_id] = st
            results[r.run_id] = row["summary"]
        elif st == "running" and row.get("host") == here and row.get("pid") != os.getpid():
            state[r.run_id] = "busy"  # another live process on this machine trains it
            results[r.run_id] = {**_head(r), "status": "running",
                                 "error": f"being trained by process {row.get('pid')}"}
    todo = [r for r in runs if r.run_id not in state]

    if dry_run:
        echo(f"{len(runs)} runs: {len(runs) - len(todo)} already done or running, "
             f"{len(todo)} to run")
        for r in todo:
            c = r.config
            role = "" if r.point else " [source]"
            echo(f"would run {r.run_id} {c.method} {c.model} on {c.dataset}, sparsity "
                 f"{c.sparsity:g}, seed {c.seed}{role}")
        return [results.get(r.run_id, {**_head(r), "status": "pending"})
                for r in runs if r.point]

    if not todo:
        echo(f"all {len(runs)} runs of the sweep are done")
        return [results[r.run_id] for r in runs if r.point]

    client = cluster = None
    if workers > 0 or scheduler is not None:
        client, cluster = connect(scheduler, min(workers, len(todo)) or 1, retries,
                                  connect_timeout)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with Store(store_path(root)) as store, _progress(len(todo), progress) as bar:
            sw = _Sweeper(runs, root, store, echo, bar)
            sw.state.update(state)
            sw.results.update(results)
            where = (f"Dask scheduler {scheduler}" if scheduler else
                     f"{min(workers, len(todo))} local worker processes" if workers else
                     "this process")
            sw.say(f"{len(todo)} of {len(runs)} runs to train on {where}")
            if scheduler is not None and not n_workers(client):
                sw.say("the scheduler has no workers yet: runs start when workers join")
            sw.block_rest()
            try:
                if client is None:
                    _run_inprocess(sw, root)
                else:
                    _run_dask(sw, client, root, retries)
            except BaseException:
                sw.interrupted()
                raise
            sw.block_rest()
            out = [sw.results.get(r.run_id, {**_head(r), "status": "pending"})
                   for r in runs if r.point]
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=10)
    return out


def results_table(summaries: list[dict[str, Any]]) -> str:
    """The final table: run id, method, sparsity, seed, status, test accuracy, wall time."""
    head = (f"{'run id':12s}  {'method':13s}  {'sparsity':>8s}  {'seed':>4s}  {'status':14s}  "
            f"{'test acc':>8s}  {'time s':>7s}")
    lines = [head, "-" * len(head)]
    counts: dict[str, int] = {}
    for s in summaries:
        st = str(s.get("status", "?"))
        counts[st] = counts.get(st, 0) + 1
        if st == "diverged" and s.get("diverged_step") is not None:
            st = f"diverged@{s['diverged_step']}"
        acc = s.get("test_accuracy")
        wall = s.get("wall_seconds")
        sp = s.get("sparsity")
        method = str(s.get("method", "?"))
        sp_s = "-" if method == "dense" or not isinstance(sp, int | float) else f"{sp:.3f}"
        seed = s.get("seed")
        lines.append(
            f"{str(s.get('run_id', '?')):12s}  {method:13s}  {sp_s:>8s}  "
            f"{'-' if seed is None else seed:>4}  {st:14s}  "
            f"{f'{acc:.4f}' if isinstance(acc, int | float) else '-':>8s}  "
            f"{f'{wall:.1f}' if isinstance(wall, int | float) else '-':>7s}"
        )
    lines.append(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return "\n".join(lines)
