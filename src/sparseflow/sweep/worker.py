"""The worker side of a sweep: train one run, record its events in memory and in a journal.

A worker (:func:`train_in_worker`, one thread per process) trains one run with a
:class:`~sparseflow.store.recorder.MemoryRecorder` and returns the run's summary and events for
the client (:mod:`sparseflow.sweep.client`) to replay into the store. It writes only files in
the run's own directory ``ROOT/runs/RUN_ID``: checkpoints (atomic) and a journal
``sweep-events.jsonl`` of the events it recorded, so a run resumed by another worker after a
crash loses none of the metric rows recorded before its latest checkpoint.

A process's first run loads its dataset while torch's lazy imports run (:func:`warm_up`); the
process keeps the dataset for the runs after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from sparseflow.config import Config, config_from_dict, run_id
from sparseflow.errors import UserError
from sparseflow.store.checkpoint import latest_checkpoint
from sparseflow.store.paths import run_dir
from sparseflow.store.recorder import MemoryRecorder
from sparseflow.training.run import execute, load_data

JOURNAL = "sweep-events.jsonl"
TOPIC = "sparseflow-sweep"

Event = tuple[str, str, Any, Any]


def journal_path(root: str | Path, rid: str) -> Path:
    """The journal of the events a worker recorded for run ``rid``."""
    return run_dir(root, rid) / JOURNAL


def read_journal(path: str | Path) -> list[Event]:
    """Events in a journal file, in order; a line cut short by a crash is ignored."""
    p = Path(path)
    if not p.exists():
        return []
    events: list[Event] = []
    for line in p.read_text().splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, list) and len(item) == 4:
            events.append((item[0], item[1], item[2], item[3]))
    return events


def journal_workers(path: str | Path) -> list[dict[str, Any]]:
    """The ``{"pid", "host", "time"}`` records of the worker processes that trained the run."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict) and "pid" in item:
            out.append(item)
    return out


class JournalRecorder(MemoryRecorder):
    """A :class:`MemoryRecorder` that also appends every event to the run's journal file.

    The loop hands metric rows to the recorder just before it writes each checkpoint, so the
    journal holds every row up to the latest checkpoint: a run resumed from that checkpoint by
    another process (after a crash) loses none of its rows.
    """

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.root = Path(root)
        self._files: dict[str, Any] = {}

    def _file(self, rid: str) -> Any:
        fh = self._files.get(rid)
        if fh is None:
            path = journal_path(self.root, rid)
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = self._files[rid] = open(path, "a")  # noqa: SIM115 (closed in close())
        return fh

    def _write(self, rid: str, item: Any, *, durable: bool = False) -> None:
        """Append ``item``; flushed always (a killed process loses nothing), fsync'ed when
        ``durable``: metric rows, which the loop hands over just before each checkpoint, so
        a machine that goes down keeps every row its latest checkpoint counts on. The other
        events (start, status, labels, ...) are written again by the run that resumes."""
        fh = self._file(rid)
        fh.write(json.dumps(item) + "\n")
        fh.flush()
        if durable:
            os.fsync(fh.fileno())

    def note_worker(self, rid: str) -> None:
        """Record which process trains ``rid`` (for operators and tests)."""
        self._write(rid, {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()})

    def start(self, rid: str, config: dict[str, Any]) -> None:
        super().start(rid, config)
        self._write(rid, list(self.events[-1]))

    def log(self, rid: str, rows: list[tuple[int, str, float]]) -> None:
        super().log(rid, rows)
        self._write(rid, list(self.events[-1]), durable=True)

    def status(self, rid: str, status: str) -> None:
        super().status(rid, status)
        self._write(rid, list(self.events[-1]))

    def finish(self, rid: str, status: str, summary: dict[str, Any]) -> None:
        super().finish(rid, status, summary)
        self._write(rid, list(self.events[-1]))

    def artifact(self, rid: str, name: str, path: str | Path, kind: str) -> None:
        super().artifact(rid, name, path, kind)
        self._write(rid, list(self.events[-1]))

    def labels(self, rid: str, name: str | None, tags: list[str]) -> None:
        super().labels(rid, name, tags)
        self._write(rid, list(self.events[-1]))

    def close(self) -> None:
        """Close the journal files."""
        for fh in self._files.values():
            fh.close()
        self._files.clear()


def _quiet(msg: str) -> None:
    """Workers print nothing: their lines would interleave; the client reports."""


def _announce(rid: str) -> None:
    """Tell the client (through a Dask event topic) that this worker starts training ``rid``."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    worker.log_event(TOPIC, {"run_id": rid, "pid": os.getpid(), "host": socket.gethostname()})


_warmed = False  # whether this process has trained a sweep run (see warm_up)


def warm_up(cfg: Config) -> None:
    """Before a process's first run: load the run's dataset in a second thread while this one
    builds a throwaway torch optimizer, whose first construction in a process imports
    ``torch._dynamo`` (about 1 s). Decoding a dataset (zlib, numpy, torch) mostly releases
    the GIL, so on a free core it takes no time of its own, and the run then finds the
    dataset in the process's cache (:func:`~sparseflow.data.load_dataset`). Best effort: a
    dataset that fails to load here fails again in the run, with its error."""
    import torch

    def load() -> None:
        with contextlib.suppress(Exception):
            load_data(cfg)

    thread = threading.Thread(target=load, name="sparseflow-warm-up", daemon=True)
    thread.start()
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    thread.join()


def train_run(config_dict: dict[str, Any], root: str | Path, *, announce: bool) -> dict[str, Any]:
    """Train one run without writing the store; see :func:`train_in_worker`."""
    global _warmed
    cfg = config_from_dict(config_dict)
    rid = run_id(cfg)
    jpath = journal_path(root, rid)
    if latest_checkpoint(run_dir(root, rid) / "checkpoints") is None:
        jpath.unlink(missing_ok=True)  # a fresh start: older rows will be recorded again
    prior = [e for e in read_journal(jpath) if e[1] == rid]
    rec = JournalRecorder(root)
    rec.note_worker(rid)
    if announce:
        _announce(rid)
    summary: dict[str, Any] | None = None
    error: str | None = None
    try:
        if not _warmed:
            _warmed = True
            warm_up(cfg)
        summary = execute(cfg, root=root, progress=False, echo=_quiet, recorder=rec)
    except UserError as e:  # bad input is not retried
        error = str(e)
    finally:
        rec.close()
    return {"run_id": rid, "summary": summary, "events": prior + rec.events, "error": error}


def train_in_worker(config_dict: dict[str, Any], root: str, threads: int = 1) -> dict[str, Any]:
    """Train (or resume) one run in a worker process; returns ``{"run_id", "summary",
    "events", "error"}``.

    Sets ``torch.set_num_threads(threads)``, runs
    :func:`~sparseflow.training.run.execute` with a recorder that keeps the events in
    memory (and in the run's journal) instead of writing the store, and returns them for the
    client to replay. A :class:`~sparseflow.errors.UserError` comes back as ``error`` (it would
    fail again: no retry); other exceptions propagate (Dask retries them).
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    return train_run(config_dict, root, announce=True)
