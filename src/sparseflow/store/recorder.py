"""Where a run's life is written: the store (the default), memory (sweep workers) or nowhere.

A sweep worker must not write the store (only the client does): it trains with a
:class:`MemoryRecorder`, returns its events with the result, and the client replays them into
the store in order with :meth:`MemoryRecorder.replay`. Writes are idempotent (metrics are keyed
by run, step and name), so a replay after a retry adds no duplicate rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparseflow.store.database import Store

Rows = list[tuple[int, str, float]]


class Recorder:
    """Interface; the base class records nothing (ranks other than 0 of a distributed run)."""

    def start(self, rid: str, config: dict[str, Any]) -> None:
        """The run starts (or resumes)."""

    def log(self, rid: str, rows: Rows) -> None:
        """(step, name, value) metric rows."""

    def status(self, rid: str, status: str) -> None:
        """Only the status changes (interrupted, failed)."""

    def finish(self, rid: str, status: str, summary: dict[str, Any]) -> None:
        """The run ended with ``status`` and ``summary``."""

    def artifact(self, rid: str, name: str, path: str | Path, kind: str) -> None:
        """A file the run produced."""

    def labels(self, rid: str, name: str | None, tags: list[str]) -> None:
        """The run's human name and tags."""


class StoreRecorder(Recorder):
    """Writes straight to a :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def start(self, rid: str, config: dict[str, Any]) -> None:
        self.store.start_run(rid, config)

    def log(self, rid: str, rows: Rows) -> None:
        self.store.log_many(rid, rows)

    def status(self, rid: str, status: str) -> None:
        self.store.set_status(rid, status)

    def finish(self, rid: str, status: str, summary: dict[str, Any]) -> None:
        self.store.finish_run(rid, status, summary)

    def artifact(self, rid: str, name: str, path: str | Path, kind: str) -> None:
        self.store.add_artifact(rid, name, path, kind)

    def labels(self, rid: str, name: str | None, tags: list[str]) -> None:
        self.store.set_labels(rid, name, tags)


class MemoryRecorder(Recorder):
    """Keeps every event in order (picklable), to be replayed into a store by the client."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any, Any]] = []

    def start(self, rid: str, config: dict[str, Any]) -> None:
        self.events.append(("start", rid, config, None))

    def log(self, rid: str, rows: Rows) -> None:
        self.events.append(("log", rid, list(rows), None))

    def status(self, rid: str, status: str) -> None:
        self.events.append(("status", rid, status, None))

    def finish(self, rid: str, status: str, summary: dict[str, Any]) -> None:
        self.events.append(("finish", rid, status, summary))

    def artifact(self, rid: str, name: str, path: str | Path, kind: str) -> None:
        self.events.append(("artifact", rid, (name, str(path)), kind))

    def labels(self, rid: str, name: str | None, tags: list[str]) -> None:
        self.events.append(("labels", rid, name, list(tags)))

    @staticmethod
    def replay(events: list[tuple[str, str, Any, Any]], store: Store) -> None:
        """Apply recorded events to ``store`` in order."""
        rec = StoreRecorder(store)
        for kind, rid, a, b in events:
            if kind == "start":
                rec.start(rid, a)
            elif kind == "log":
                rec.log(rid, a)
            elif kind == "status":
                rec.status(rid, a)
            elif kind == "finish":
                rec.finish(rid, a, b)
            elif kind == "artifact":
                rec.artifact(rid, a[0], a[1], b)
            elif kind == "labels":
                rec.labels(rid, a, b)
