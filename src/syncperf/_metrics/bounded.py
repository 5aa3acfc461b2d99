"""Work that may stall (a collector that accepts and never answers), waited for at most a bound.

Flushes and shutdowns run such work on a daemon thread and wait for it at most what is left
of ``shutdown_timeout``: what is not done by then goes on in the background, or is lost when
the process exits, but never holds the caller (a request, a reload, the process's exit).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

FLUSH = "syncperf-flush"
"""The name of a flush's thread (``Runtime.flush``)."""
_running: set[tuple[str, object, threading.Event]] = set()
"""The runs not finished yet: name, ``alone`` key, done (set operations are atomic: no lock
to cross a fork)."""
_starting = threading.Lock()
"""Held while an ``alone`` run looks for one of its key and adds itself (never waits)."""


class Deadline:
    """A point in time ``timeout`` seconds from now; ``left()`` is what remains of it."""

    def __init__(self, timeout: float) -> None:
        self.at = time.monotonic() + max(timeout, 0.0)

    def left(self) -> float:
        """Seconds until the deadline (0 once it passed)."""
        return max(self.at - time.monotonic(), 0.0)


def run_bounded(
    work: Callable[[], object], timeout: float, name: str, *, alone: object = None
) -> bool:
    """Run ``work`` on a daemon thread called ``name`` and wait for it at most ``timeout``
    seconds; True when it ended in time (``work`` handles its own errors).

    With ``alone`` (a key: the runtime whose exporters ``work`` uses), a run with the same
    key not finished yet (one that ran out of time, still waiting on a collector) is waited
    for first, within the same ``timeout``, rather than another thread (and socket) started
    next to it: False, and ``work`` not run, when it does not end in time. So repeated calls
    against a collector that never answers keep one thread, not one each, and a runtime
    ``configure()`` made does not wait on its predecessor's.

    Where no thread can start (an exit hook on Python 3.12) it runs on the caller's thread:
    then only the timeouts ``work`` gives its own steps bound it.
    """
    deadline = Deadline(timeout)
    done = threading.Event()
    entry = (name, alone, done)
    while True:
        with _starting:
            ahead = None
            if alone is not None:
                ahead = next((d for _, key, d in tuple(_running) if key is alone), None)
            if ahead is None:
                _running.add(entry)
                break
        if not ahead.wait(deadline.left()):
            return False

    def run() -> None:
        try:
            work()
        finally:
            done.set()
            _running.discard(entry)

    try:
        threading.Thread(target=run, name=name, daemon=True).start()
    except RuntimeError:  # "can't create new thread at interpreter shutdown"
        run()
    return done.wait(deadline.left())


def running(name: str) -> bool:
    """True while a run of ``name`` has not finished: one that ran out of time may still be
    waiting on a collector that does not answer."""
    return any(each == name for each, _, _ in tuple(_running))


if hasattr(os, "register_at_fork"):  # the parent's runs are not the child's

    def _after_fork_in_child() -> None:
        global _starting
        _running.clear()
        _starting = threading.Lock()  # another thread may have held it at the fork

    os.register_at_fork(after_in_child=_after_fork_in_child)
