"""Export run-store tables to CSV (stdlib) or Parquet (pyarrow, the ``export`` extra).

The ``runs`` table is flattened for pandas: config fields become ``config.<dotted.name>``
columns and summary fields ``summary.<name>`` columns.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from sparseflow.errors import UserError
from sparseflow.store.database import Store, effective_status
from sparseflow.typed import flatten


def table_rows(store: Store, table: str) -> list[dict[str, Any]]:
    """Rows of ``table`` as flat dicts (runs: config and summary spread into columns)."""
    rows = store.table(table)
    if table != "runs":
        return rows
    out = []
    for r in rows:
        cfg = json.loads(r.pop("config") or "{}")
        summary = json.loads(r.pop("summary") or "{}")
        r["status"] = effective_status(r)
        flat = dict(r)
        flat.update({f"config.{k}": _scalar(v) for k, v in flatten(cfg).items()})
        flat.update({f"summary.{k}": _scalar(v) for k, v in summary.items()})
        out.append(flat)
    return out


def _scalar(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, list | dict) else v


def export_table(store: Store, table: str, fmt: str, out: str | Path) -> int:
    """Write ``table`` to ``out`` ('-' = stdout, csv only) atomically; returns the row count."""
    rows = table_rows(store, table)
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        if str(out) == "-":
            sys.stdout.write(buf.getvalue())
            return len(rows)
        data = buf.getvalue().encode()
    elif fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(
                "--format parquet needs pyarrow (pip install 'sparseflow[export]')"
            ) from None
        if str(out) == "-":
            raise UserError("--out: parquet cannot be written to stdout; give a file name")
        cols = {c: [r.get(c) for r in rows] for c in columns}
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table(cols) if columns else pa.table({}), sink)
        data = sink.getvalue().to_pybytes()
    else:
        raise UserError(f"--format: expected csv or parquet, got {fmt!r}")
    path = Path(out)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return len(rows)
