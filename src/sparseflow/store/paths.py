"""Where a run store keeps its files: the root, the SQLite database, one folder per run.

ROOT is ``--root``, else ``$SPARSEFLOW_HOME``, else ``./sparseflow-runs``; the database is
``ROOT/sparseflow.db`` and run ``RUN_ID`` keeps its config copy, checkpoints and journal in
``ROOT/runs/RUN_ID``.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_root() -> Path:
    """``$SPARSEFLOW_HOME`` or ``./sparseflow-runs``."""
    return Path(os.environ.get("SPARSEFLOW_HOME", "sparseflow-runs"))


def store_path(root: str | Path) -> Path:
    """Path of the SQLite run store under ``root``."""
    return Path(root) / "sparseflow.db"


def run_dir(root: str | Path, rid: str) -> Path:
    """Directory of one run (config copy and checkpoints)."""
    return Path(root) / "runs" / rid
