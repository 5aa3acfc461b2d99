"""Work that may stall (a collector that accepts and never answers), waited for at most a bound.

Flushes and shutdowns run such work on a daemon thread and wait for it at most what is left
of ``shutdown_timeout``: what is not done by then goes on in the background, or is lost when
the process exits, but never holds the caller (a request, a reload, the process's exit).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Deadline:
    """A point in time ``timeout`` seconds from now; ``left()`` is what remains of it."""

    def __init__(self, timeout: float) -> None:
        self.at = time.monotonic() + max(timeout, 0.0)

    def left(self) -> float:
        """Seconds until the deadline (0 once it passed)."""
        return max(self.at - time.monotonic(), 0.0)


def run_bounded(work: Callable[[], object], timeout: float, name: str) -> bool:
    """Run ``work`` on a daemon thread called ``name`` and wait for it at most ``timeout``
    seconds; True when it ended in time (``work`` handles its own errors).

    Where no thread can start (an exit hook on Python 3.12) it runs on the caller's thread:
    then only the timeouts ``work`` gives its own steps bound it.
    """
    done = threading.Event()

    def run() -> None:
        try:
            work()
        finally:
            done.set()

    try:
        threading.Thread(target=run, name=name, daemon=True).start()
    except RuntimeError:  # "can't create new thread at interpreter shutdown"
        run()
    return done.wait(timeout)
