"""Interrupts that never tear a checkpoint: a signal only asks the loop to stop.

While a run trains, SIGINT (Ctrl-C) and SIGTERM do not raise where they land (that could be in
the middle of ``optimizer.step()``, of backward or of a mask update, and a checkpoint saved
there would hold half of a step). The first signal sets :attr:`StopRequest.requested`; the loop
finishes the step it is in, saves a checkpoint at that step boundary and raises
:class:`Interrupted`. A second signal aborts at once with a plain ``KeyboardInterrupt`` and
saves nothing: the run resumes from its last checkpoint, which is whole.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run stopped on request at a step boundary, after saving a checkpoint there."""

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted at step {step} (checkpoint saved)")
        self.step = step


class StopRequest:
    """A flag set by the first SIGINT/SIGTERM; the second one aborts (``KeyboardInterrupt``)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: ask for a stop, or abort when one was asked for already."""
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal = signum


@contextmanager
def deferred_interrupts(stop: StopRequest) -> Iterator[StopRequest]:
    """Route SIGINT and SIGTERM to ``stop`` for the block, restoring the previous handlers.

    Only the main thread can install handlers; elsewhere (a Dask worker thread) the block runs
    with the process's own handling.
    """
    try:
        old = {s: signal.signal(s, stop.handle) for s in SIGNALS}
    except ValueError:  # not the main thread
        yield stop
        return
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
