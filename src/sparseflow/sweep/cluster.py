"""Connecting a sweep client to Dask: a LocalCluster of single-thread workers, or a running
scheduler whose address is checked first so that a wrong one fails fast and clearly."""

from __future__ import annotations

import logging
import socket
from typing import Any

from sparseflow.errors import UserError

#: Dask settings of the LocalCluster. One task per worker at a time (runs are long and
#: uneven: no second run waits behind a busy worker). Worker profiling off (a thread sampling
#: the training thread's stack every 10 ms). And glibc's own malloc trimming instead of
#: Dask's ``MALLOC_TRIM_THRESHOLD_=65536``: with it glibc hands memory back to the OS after
#: nearly every training step (torch frees the step's activations), which measured ~25%
#: slower training of LeNet-300-100 in a worker than in a plain process.
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.scheduler.worker-saturation": 1.0,
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}


def _check_reachable(address: str, timeout: float) -> None:
    """A plain TCP connect to ``address`` first, so a wrong address fails fast and clearly."""
    from distributed.comm import parse_address, parse_host_port

    try:
        scheme, loc = parse_address(address)
    except ValueError as e:
        raise UserError(f"--scheduler: {address!r} is not a Dask address ({e})") from None
    if scheme not in ("tcp", "tls"):
        return
    try:
        host, port = parse_host_port(loc)
    except ValueError as e:
        raise UserError(f"--scheduler: {address!r} is not a Dask address ({e})") from None
    if not port:
        raise UserError(f"--scheduler: {address!r} has no port (e.g. tcp://HOST:8786)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        if isinstance(e, TimeoutError | socket.timeout):
            reason = f"no answer within {timeout:g} s"
        raise UserError(f"cannot reach Dask scheduler at {address} ({reason})") from None


def connect(scheduler: str | None, workers: int, retries: int, connect_timeout: float
            ) -> tuple[Any, Any]:
    """(client, cluster or None): a client of ``scheduler``, or of a new LocalCluster of
    ``workers`` single-thread worker processes (OMP/MKL threads 1)."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        _check_reachable(scheduler, connect_timeout)
        try:
            client = Client(scheduler, timeout=connect_timeout, set_as_default=False)
        except Exception as e:  # noqa: BLE001 (any failure to connect is the user's address)
            msg = " ".join(str(e).split()) or type(e).__name__
            raise UserError(f"cannot reach Dask scheduler at {scheduler} ({msg})") from None
        return client, None
    from sparseflow.sweep.quick_exit import QuickExit

    one = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    with dask.config.set(LOCAL_CLUSTER_CONFIG | {"distributed.scheduler.allowed-failures":
                                                 retries}):
        # no dashboard; the scheduler's small HTTP server on a free local port, not on 8787.
        # QuickExit: a worker process skips its ~1 s interpreter teardown at close
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR, env=one,
                               plugins={QuickExit()},
                               scheduler_kwargs={"dashboard": False,
                                                 "dashboard_address": "127.0.0.1:0"})
    client = Client(cluster, set_as_default=False)
    return client, cluster


def n_workers(client: Any) -> int:
    """Workers connected to the client's scheduler (0 when it cannot tell)."""
    try:
        return len(client.scheduler_info().get("workers", {}))
    except Exception:  # noqa: BLE001 (only used for a hint)
        return 0
