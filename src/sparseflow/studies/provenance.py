"""Where and with what a result was measured: the commit, the machine, the library versions.

:func:`environment` is recorded into a reproduction's ``claims.json`` when its claims are
measured (``studies/reproduce.py``), and read back by the document generator
(``studies/document.py``), so REPRODUCTION.md states the environment of the measurement, not
that of the moment it was written.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: the source tree of this package (a git work tree in a development install)
SOURCE = Path(__file__).resolve().parents[3]


def _git(*args: str, cwd: Path = SOURCE) -> str | None:
    """Output of ``git ARGS`` in ``cwd`` (stripped), or None when git or the repository is
    not there."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def commit(cwd: Path = SOURCE) -> str:
    """The commit of the source tree (``git rev-parse HEAD``), ``+dirty`` added when tracked
    files differ from it; ``unknown`` outside a git work tree (an installed package)."""
    head = _git("rev-parse", "HEAD", cwd=cwd)
    if not head:
        return "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return head + ("+dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment() -> dict[str, Any]:
    """The measurement environment: ``commit``, ``cpu``, ``cores``, ``threads`` (torch's intra-
    op threads), ``torch``, ``numpy``, ``python``, ``platform``, ``gpu`` (CUDA device names,
    empty for none), ``date`` (UTC, ISO 8601) and ``sparseflow`` (the package version)."""
    import numpy
    import torch

    try:
        from importlib.metadata import version

        own = version("sparseflow")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        own = "unknown"
    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available() else [])
    return {"commit": commit(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "numpy": numpy.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "gpu": gpus,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "sparseflow": own}


def reproduce_command(paper: str, scale: str, setting: Sequence[str] = (),
                      workers: int | None = None) -> str:
    """The command line that reproduces a preset run: ``sparseflow reproduce PAPER --scale S``,
    the setting as ``--set KEY=VALUE`` (a ``-c FILE``'s settings too, so the line stands
    alone) and ``--workers N`` when given."""
    parts = ["sparseflow", "reproduce", paper, "--scale", scale]
    if setting:
        parts += ["--set", *setting]
    if workers is not None:
        parts += ["--workers", str(workers)]
    return " ".join(shlex.quote(p) for p in parts)
