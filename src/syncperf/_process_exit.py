"""The exit flush: at interpreter exit, and in ``multiprocessing`` children, which end
without exit hooks.

multiprocessing ends a child it forked (start methods ``fork`` and ``forkserver``) with
``os._exit`` once its target returned: ``atexit`` hooks, syncperf's exit flush among them,
never run there, and what the child recorded since the last periodic export was lost. Its own
finalizers do run (``multiprocessing.util._exit_function``), so each child registers
``flush_for_exit`` as one, through the hook multiprocessing runs in every child it starts
before the target (``util.register_after_fork``; the finalizers registered before it are
cleared there). The flush is bounded by ``shutdown_timeout``, as at any exit.

A ``forkserver`` or ``spawn`` child imports the main module afresh (Python 3.11 and 3.12 do so
in the child itself even for ``forkserver``): only what is set up at module level is set up
there. A ``spawn`` child also runs the ``atexit`` hook, a second, quick flush.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any

from syncperf import _runtime
from syncperf._metrics import bounded

_exit_stalled = False
_exiting = threading.Lock()
"""Held by the stop flush that runs: a later one waits for it, then knows whether it stalled."""


def flush_for_exit() -> bool:
    """``force_flush`` for a process that is stopping (stop signal, ASGI lifespan shutdown,
    exit).

    Bounded by ``shutdown_timeout``; once such a flush ran out of time (the collector does not
    answer), later ones in the same process do not wait again, so a stop signal's flush
    followed by the lifespan shutdown's and the interpreter's exit stays within one bound. Nor
    does it wait while a flush that ran out of time is still waiting on the collector
    (``force_flush()`` in gunicorn's ``worker_exit``, then the exit hook). One that starts
    while another runs (the stop signal's, on its thread) waits for it first.
    """
    global _exit_stalled
    rt = _runtime.installed
    if rt is None:
        return True
    if not _exiting.acquire(timeout=rt.config.shutdown_timeout):
        return False  # the other one is still at it (its bound is its own)
    try:
        stalled = _exit_stalled or (rt.flush_timed_out and bounded.running(bounded.FLUSH))
        done = rt.flush(0.0 if stalled else None)
        _exit_stalled = _exit_stalled or rt.flush_timed_out  # not a quick failure: it may recover
    finally:
        _exiting.release()
    return done


atexit.register(flush_for_exit)

EXIT_PRIORITY = 0
"""The finalizer's priority: among those multiprocessing runs first (``>= 0``)."""


class _Token:
    """What multiprocessing keys the after-fork hook by (held weakly: kept here)."""


_TOKEN = _Token()
_hooked = False


def _flush_at_the_end(_: object) -> None:
    """In a multiprocessing child, before its target runs: flush when it ends."""
    from multiprocessing import util

    util.Finalize(None, flush_for_exit, exitpriority=EXIT_PRIORITY)


def _hook() -> None:
    """Hook the children multiprocessing starts, once it is in use (the hook runs only in
    multiprocessing's own children, never after a plain ``os.fork()``): at import (in a
    ``forkserver`` or ``spawn`` child, which imports syncperf itself before its target runs)
    and before every fork (the parent of a ``fork`` child, or the fork server)."""
    global _hooked
    util: Any = sys.modules.get("multiprocessing.util")
    if util is not None and not _hooked:
        util.register_after_fork(_TOKEN, _flush_at_the_end)
        _hooked = True


_hook()


def _after_fork_in_child() -> None:
    global _exiting
    _exiting = threading.Lock()  # a flush thread of the parent may have held it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_hook, after_in_child=_after_fork_in_child)
