"""The stop flush: export as soon as the server is told to stop (SIGTERM, SIGINT).

The lifespan shutdown and the exit hooks come after the server drained its connections, or
never: a request still open when the grace period ends is followed by the orchestrator's
SIGKILL (Kubernetes, gunicorn's ``--graceful-timeout``), a mounted application sees no lifespan,
and uvicorn re-raises SIGTERM once stopped, so no exit hook runs. So the ASGI middleware
``arm()``s on its first request and at the lifespan startup: on the main thread, where the
server installed a Python handler of SIGTERM (or SIGINT), syncperf chains one in front of it.
A signal's default action (``SIG_DFL``, ``SIG_IGN``, Python's ``KeyboardInterrupt``) is never
replaced.

The handler does no I/O and takes no lock (the main thread may have been interrupted holding
any): it writes the signal's number to a pipe and returns. A daemon thread, started when armed,
reads it, exports what was recorded (``flush_for_exit``: bounded by ``shutdown_timeout``) and
then delivers the signal again; the handler passes that one, and every later signal, to the
server's handler. So the server starts to stop only once the export ended: a few milliseconds
with a collector that answers, at most the bound with one that does not (the final flush then
does not wait again). Signals asyncio handles (``loop.add_signal_handler``) reach it whatever a
Python handler does: there the export runs beside the stop. A forked child arms afresh.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeGuard

from syncperf._process_exit import flush_for_exit

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT") if hasattr(signal, name))
_MARK = "_syncperf_stop_flush"

_pipe: tuple[int, int] | None = None
"""(read end, write end), the flush thread's; None before ``arm()`` and in a forked child."""
_seen = False
"""A stop signal was handled in this process: the later ones go straight to the server."""


def arm() -> None:
    """Chain the stop handler in front of the server's Python handlers of the stop signals,
    once per process (and again if the server installed new ones); never raises."""
    if os.name != "posix" or threading.current_thread() is not threading.main_thread():
        return  # signal.signal works only there (and the server runs elsewhere)
    try:
        for signum in SIGNALS:
            previous = signal.getsignal(signum)
            if getattr(previous, _MARK, False):
                _start()  # chained already (in a forked child: by its parent)
            elif _chainable(previous):
                _start()
                signal.signal(signum, _chain(previous))
    except (OSError, RuntimeError, ValueError):  # no thread, no pipe, an embedded interpreter
        return


def _chainable(handler: object) -> TypeGuard[Callable[[int, FrameType | None], Any]]:
    """A Python handler the server installed (not a default action)."""
    return callable(handler) and handler is not signal.default_int_handler


def _start() -> None:
    """Start the flush thread, once per process."""
    global _pipe
    if _pipe is None:
        read, write = os.pipe()
        os.set_blocking(write, False)
        threading.Thread(
            target=_flush_on_signal, args=(read,), name="syncperf-stop-flush", daemon=True
        ).start()
        _pipe = (read, write)


def _chain(previous: Callable[[int, FrameType | None], Any]) -> Callable[..., Any]:
    # asyncio's handlers are a no-op: the signal reaches the loop through its wake-up fd.
    deferred = (getattr(previous, "__module__", None), getattr(previous, "__name__", None)) != (
        "asyncio.unix_events",
        "_sighandler_noop",
    )

    def stop_flush(signum: int, frame: FrameType | None) -> Any:
        global _seen
        if not _seen:
            _seen = True
            if _wake(signum if deferred else 0) and deferred:
                return None  # the flush thread delivers it again once it exported
        return previous(signum, frame)

    setattr(stop_flush, _MARK, True)
    return stop_flush


def _wake(signum: int) -> bool:
    """Tell the flush thread (a write to its pipe: no lock); False when it cannot be told."""
    pipe = _pipe  # None once the thread ended (not ``is_alive()``: it may take a lock)
    if pipe is None:
        return False
    try:
        return os.write(pipe[1], bytes((signum,))) == 1
    except (OSError, ValueError):
        return False


def _flush_on_signal(read: int) -> None:
    """The flush thread: on each stop signal, export, then deliver the signal again."""
    global _pipe
    try:
        while True:
            received = os.read(read, 1)
            if not received:
                return
            with contextlib.suppress(Exception):  # it logs its own failures; deliver anyway
                flush_for_exit()
            if received[0]:
                os.kill(os.getpid(), received[0])
    finally:  # never expected: the signals go straight to the server from now on
        if _pipe is not None and _pipe[0] == read:
            _pipe = None


def _after_fork_in_child() -> None:
    """The child has no flush thread: close its copy of the pipe; it arms on its own."""
    global _pipe, _seen
    pipe, _pipe, _seen = _pipe, None, False
    for fd in pipe or ():
        with contextlib.suppress(OSError):
            os.close(fd)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
