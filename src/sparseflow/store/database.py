"""The run store: one SQLite database (WAL mode, parameterised SQL only).

Tables
------
``runs``      one row per run: id, config JSON, status, identity columns, times, summary JSON.
``metrics``   (run_id, step, name) -> value; re-writing a step (after a resume) replaces it.
``artifacts`` (run_id, name) -> path and kind (checkpoints, figures, tables).

Several processes may write at once: every write is a short ``BEGIN IMMEDIATE`` transaction,
``busy_timeout`` waits for the lock, and a lock error that still escapes is retried with backoff.

Read-only mode (``Store(path, readonly=True)``, used by every command that only reads) never
creates, changes or locks a file, so a store on a read-only folder, mount or copy can be read:

* while a writer is live (the ``-wal`` file exists, with its ``-shm`` or in a writable
  folder), the connection is SQLite's ``mode=ro``: it sees every commit, as any reader does;
* otherwise (no ``-wal``: every commit is in the database file) the connection is
  ``mode=ro&immutable=1``, which takes no lock and creates no ``-wal``/``-shm`` (plain
  ``mode=ro`` would create them). Because an immutable connection does not notice writers,
  each read compares the database file's identity, size and mtime (and whether a ``-wal``
  appeared) before and after: if anything changed, the connection is opened again and the
  read repeated. A ``-wal`` left by a crashed writer in a folder that cannot hold a ``-shm``
  is not read (SQLite cannot without one); its last commits are then not seen.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sparseflow.errors import StoreError

STATUSES = ("running", "finished", "interrupted", "failed", "diverged")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id    TEXT PRIMARY KEY,
    config    TEXT NOT NULL,
    status    TEXT NOT NULL,
    method    TEXT,
    dataset   TEXT,
    model     TEXT,
    seed      INTEGER,
    started   REAL,
    finished  REAL,
    host      TEXT,
    pid       INTEGER,
    summary   TEXT,
    name      TEXT,
    tags      TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    step   INTEGER NOT NULL,
    name   TEXT NOT NULL,
    value  REAL,
    PRIMARY KEY (run_id, step, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS artifacts (
    run_id  TEXT NOT NULL,
    name    TEXT NOT NULL,
    path    TEXT NOT NULL,
    kind    TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""

RUN_COLUMNS = (
    "run_id", "status", "method", "dataset", "model", "seed", "started", "finished", "host",
    "pid", "config", "summary", "name", "tags",
)
#: columns added after the first stores were written: (name, SQL type), added on open
_ADDED_COLUMNS = (("name", "TEXT"), ("tags", "TEXT"))


class Store:
    """A handle on the SQLite run store at ``path`` (created on first use); with ``readonly``
    an existing store is only read, and no file is created or modified."""

    def __init__(self, path: str | Path, *, timeout: float = 60.0, readonly: bool = False
                 ) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.readonly = readonly
        self._stamp: tuple[Any, ...] | None = None  # the file as an immutable reader saw it
        if self.path.exists() and self.path.is_dir():
            raise StoreError(f"{self.path}: is a directory, expected a SQLite database file")
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"{self.path}: no run store here")
            self._conn = self._connect_readonly()
            return
        # Never open the database file with a second file descriptor here: closing it would
        # drop every POSIX lock this process holds on the file, including those of another
        # Store open on it (nested runs), and SQLite could then lose committed WAL frames.
        # SQLite itself refuses a non-database file before writing anything.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._retry(lambda: self._conn.execute("PRAGMA journal_mode=WAL"))
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._retry(lambda: self._conn.executescript(_SCHEMA))
            self._retry(self._add_columns)
        except sqlite3.DatabaseError as e:
            if "not a database" in str(e):
                raise StoreError(f"{self.path}: not a SQLite database (refusing to touch it)"
                                 ) from None
            raise StoreError(f"{self.path}: cannot open run store ({e})") from None

    def _add_columns(self) -> None:
        """Bring a store written by an earlier version up to the current ``runs`` columns."""
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(runs)")}
        for name, sql_type in _ADDED_COLUMNS:
            if name not in have:  # names and types are constants of this module
                self._conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {sql_type}")

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- read-only connections -----------------------------------------------------------
    def _file_stamp(self) -> tuple[Any, ...]:
        st = self.path.stat()
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                Path(f"{self.path}-wal").exists())

    def _connect_readonly(self) -> sqlite3.Connection:
        """A ``mode=ro`` connection when a writer's WAL is there and readable as SQLite needs,
        else an immutable one (see the module docstring); the first read is done here so a bad
        file fails now."""
        from urllib.parse import quote

        wal, shm = Path(f"{self.path}-wal"), Path(f"{self.path}-shm")
        uri = f"file:{quote(str(self.path.absolute()))}?mode=ro"
        live = wal.exists() and (shm.exists() or os.access(self.path.parent, os.W_OK))
        attempts = [uri, uri + "&immutable=1"] if live else [uri + "&immutable=1"]
        for i, u in enumerate(attempts):
            conn = None
            try:
                stamp = None if "immutable" not in u else self._file_stamp()
                conn = sqlite3.connect(u, uri=True, timeout=self.timeout,
                                       isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                self._stamp = stamp
                return conn
            except (sqlite3.DatabaseError, OSError) as e:
                if conn is not None:
                    conn.close()
                if "not a database" in str(e):
                    raise StoreError(f"{self.path}: not a SQLite database") from None
                if i == len(attempts) - 1:
                    why = e.strerror if isinstance(e, OSError) else str(e)
                    raise StoreError(f"{self.path}: cannot open run store read-only ({why})"
                                     ) from None
        raise AssertionError("unreachable")

    def _read_stable(self, go: Any) -> Any:
        """Run the read ``go``; on an immutable connection, again on a fresh connection as
        long as the file changed under it (a writer came: at most a few times)."""
        for _ in range(5):
            before = self._stamp
            if before is None:
                return go()
            try:
                if self._file_stamp() == before:
                    out = go()
                    if self._file_stamp() == before:
                        return out
            except OSError as e:
                raise StoreError(f"{self.path}: cannot read run store ({e.strerror})") from None
            self._conn.close()
            self._conn = self._connect_readonly()
        return go()

    # -- low level -----------------------------------------------------------------------
    def _retry(self, fn: Any, attempts: int = 50) -> Any:
        delay = 0.01
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e) or i == attempts - 1:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only, cannot write")
        self._retry(lambda: self._conn.execute("BEGIN IMMEDIATE"))
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._retry(lambda: self._conn.execute("COMMIT"))

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        def go() -> list[Any]:
            cur = self._conn.execute(sql, params)
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

        try:
            return self._read_stable(lambda: self._retry(go))
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: cannot read run store ({e})") from None

    # -- runs ------------------------------------------------------------------------------
    def start_run(self, run_id: str, config: dict[str, Any]) -> None:
        """Insert the run (or mark an existing one running again, keeping its metrics)."""
        now = time.time()
        with self._write() as c:
            c.execute(
                "INSERT INTO runs (run_id, config, status, method, dataset, model, seed, started,"
                " host, pid) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(run_id) DO UPDATE SET status='running', config=excluded.config,"
                " host=excluded.host, pid=excluded.pid, finished=NULL",
                (
                    run_id, json.dumps(config, sort_keys=True), config.get("method"),
                    config.get("dataset"), config.get("model"), config.get("seed"), now,
                    socket.gethostname(), os.getpid(),
                ),
            )

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        """Set the final status and summary of a run."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        with self._write() as c:
            c.execute(
                "UPDATE runs SET status=?, summary=?, finished=? WHERE run_id=?",
                (status, json.dumps(summary, sort_keys=True), time.time(), run_id),
            )

    def set_status(self, run_id: str, status: str) -> None:
        """Change only the status of a run."""
        with self._write() as c:
            c.execute("UPDATE runs SET status=? WHERE run_id=?", (status, run_id))

    def set_labels(self, run_id: str, name: str | None, tags: Sequence[str]) -> None:
        """Give a run a human name and tags (replacing earlier ones); they do not name the run
        (its id is the config's hash) and can change at any time."""
        with self._write() as c:
            c.execute("UPDATE runs SET name=?, tags=? WHERE run_id=?",
                      (name, json.dumps(sorted(set(tags))), run_id))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run's row with ``config`` and ``summary`` decoded, or None."""
        rows = self._query("SELECT * FROM runs WHERE run_id=?", (run_id,))
        return _decode(rows[0]) if rows else None

    def find_runs(self, prefix: str) -> list[str]:
        """Run ids starting with ``prefix`` (for abbreviated ids)."""
        rows = self._query(
            "SELECT run_id FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY run_id",
            (len(prefix), prefix),
        )
        return [r["run_id"] for r in rows]

    def resolve(self, prefix: str) -> str:
        """The full run id for a unique prefix; a StoreError when none or several match."""
        matches = self.find_runs(prefix)
        if not matches:
            raise StoreError(f"run {prefix!r} not found in {self.path}")
        if prefix in matches:
            return prefix
        if len(matches) > 1:
            raise StoreError(f"run id prefix {prefix!r} is ambiguous: {', '.join(matches[:5])}")
        return matches[0]

    def list_runs(self, status: str | None = None) -> list[dict[str, Any]]:
        """All runs (optionally of one status), oldest first."""
        if status is None:
            rows = self._query("SELECT * FROM runs ORDER BY started, run_id")
        else:
            rows = self._query(
                "SELECT * FROM runs WHERE status=? ORDER BY started, run_id", (status,)
            )
        return [_decode(r) for r in rows]

    # -- metrics ---------------------------------------------------------------------------
    def log_metrics(self, run_id: str, step: int, values: dict[str, float]) -> None:
        """Write several metrics of one step in one transaction (replacing earlier values)."""
        self.log_many(run_id, [(step, k, v) for k, v in values.items()])

    def log_many(self, run_id: str, rows: Iterable[tuple[int, str, float]]) -> None:
        """Write (step, name, value) rows in one transaction."""
        data = [(run_id, int(s), str(n), _num(v)) for s, n, v in rows]
        if not data:
            return
        with self._write() as c:
            c.executemany(
                "INSERT OR REPLACE INTO metrics (run_id, step, name, value) VALUES (?, ?, ?, ?)",
                data,
            )

    def metrics(
        self, run_id: str, name: str | None = None, *, prefix: str | None = None
    ) -> list[dict[str, Any]]:
        """Metric rows of a run, ordered by step then name; filter by exact name or prefix."""
        sql, params = "SELECT step, name, value FROM metrics WHERE run_id=?", [run_id]
        if name is not None:
            sql += " AND name=?"
            params.append(name)
        if prefix is not None:
            sql += " AND substr(name, 1, ?) = ?"
            params += [len(prefix), prefix]
        return self._query(sql + " ORDER BY step, name", params)

    def series(self, run_id: str, name: str) -> list[tuple[int, float]]:
        """(step, value) pairs of one metric."""
        return [(r["step"], r["value"]) for r in self.metrics(run_id, name)]

    # -- artifacts -------------------------------------------------------------------------
    def add_artifact(self, run_id: str, name: str, path: str | Path, kind: str) -> None:
        """Record a file produced by a run."""
        with self._write() as c:
            c.execute(
                "INSERT OR REPLACE INTO artifacts (run_id, name, path, kind, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (run_id, name, str(path), kind, time.time()),
            )

    def artifacts(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Artifacts of a run (optionally of one kind)."""
        if kind is None:
            return self._query(
                "SELECT * FROM artifacts WHERE run_id=? ORDER BY created, name", (run_id,)
            )
        return self._query(
            "SELECT * FROM artifacts WHERE run_id=? AND kind=? ORDER BY created, name",
            (run_id, kind),
        )

    def table(self, name: str) -> list[dict[str, Any]]:
        """All rows of one table (runs, metrics or artifacts) for export."""
        if name not in ("runs", "metrics", "artifacts"):
            raise StoreError(f"table: expected runs, metrics or artifacts, got {name!r}")
        order = {"runs": "started, run_id", "metrics": "run_id, step, name",
                 "artifacts": "run_id, name"}[name]
        return self._query(f"SELECT * FROM {name} ORDER BY {order}")  # name is whitelisted


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for k in ("config", "summary"):
        if out.get(k):
            out[k] = json.loads(out[k])
    out["name"] = out.get("name")  # None also in a store of an earlier version, read only
    out["tags"] = json.loads(out["tags"]) if out.get("tags") else []
    return out


def effective_status(run: dict[str, Any]) -> str:
    """The stored status, except that a 'running' run whose process is gone is 'interrupted'."""
    status = run.get("status", "")
    if status == "running" and run.get("host") == socket.gethostname() and run.get("pid"):
        try:
            os.kill(int(run["pid"]), 0)
        except ProcessLookupError:
            return "interrupted"
        except PermissionError:
            pass
    return status
