"""The LocalCluster's worker processes end without tearing their interpreter down.

Tearing down a process that has imported torch, ``torch._dynamo`` and numba takes about a
second (0.4 s for torch alone), and ``LocalCluster.close`` waits for it, once per sweep. So a
LocalCluster worker process whose worker has closed ends with ``os._exit(0)`` instead, as
every process started by ``fork`` does (multiprocessing's ``os._exit`` after the target
returns; Dask starts its workers by ``spawn``). Nothing is lost by skipping the teardown: the
client holds every result before it closes the cluster, and what a worker writes
(checkpoints, journals) is flushed, and synced where it matters, as it is written; logging
handlers and the standard streams are flushed first.

Imports ``distributed`` (the ``sweep`` extra): imported only where a cluster is started.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import sys
import weakref
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class QuickExit(WorkerPlugin):
    """Worker plugin: at interpreter exit, a nanny's worker process whose worker has closed
    ends at once (:func:`quick_exit`). A process that is not a multiprocessing child (a
    worker without a nanny, a test) is left alone, and so is one that ends while its worker
    still runs."""

    name = "sparseflow-quick-exit"

    def setup(self, worker: Any) -> None:
        """Called by the worker as it starts: arrange the quick exit."""
        if multiprocessing.parent_process() is not None:
            atexit.register(quick_exit, weakref.ref(worker))


def quick_exit(worker_ref: weakref.ref) -> None:
    """``os._exit(0)`` after flushing logs and streams, if the worker is closed or gone."""
    worker = worker_ref()
    if worker is not None and getattr(worker.status, "name", None) != "closed":
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed or replaced streams
            pass
    os._exit(0)
