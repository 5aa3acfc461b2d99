"""Ctrl-C and SIGTERM in ``syncperf demo``: either one stops the run cleanly.

While the clients run, both stop them through the event loop (the requests in flight finish,
the summary is printed); before and after, SIGTERM raises ``Terminated`` the way Ctrl-C raises
``KeyboardInterrupt``, so the run's clean-up still happens (its temporary directory is
removed, the exporters flush) instead of the process ending on the spot.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

from syncperf.cli import Terminated

STOPS = (signal.SIGINT, signal.SIGTERM)


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` in the block (main thread only; elsewhere a no-op)."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread: signals are the embedding program's business
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def on_stop_signals(
    loop: asyncio.AbstractEventLoop, handler: Callable[[signal.Signals], None]
) -> Iterator[None]:
    """``handler(signal)`` on ``loop`` for Ctrl-C and SIGTERM in the block, then the Python
    handlers from before (``remove_signal_handler`` alone would leave the default ones)."""
    before: dict[signal.Signals, Any] = {}
    for sig in STOPS:
        previous = signal.getsignal(sig)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, handler, sig)
            before[sig] = signal.SIG_DFL if previous is None else previous
    try:
        yield
    finally:
        for sig, previous in before.items():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
                signal.signal(sig, previous)
