"""Runtimes ``configure()`` replaced: what their open operations record goes to the runtime in
force (``retire``), and its in-flight gauges count those operations too (``replaced_by``).

An operation ends in the runtime that began it: until then that runtime stays alive (the
operation holds it), here as in ``REPLACED``.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING

from syncperf._metrics.outputs import carry

if TYPE_CHECKING:
    from syncperf._runtime import Runtime

REPLACED: weakref.WeakSet[Runtime] = weakref.WeakSet()
"""Replaced runtimes still alive, each pointing at the runtime in force (``successor``)."""
RETIRING = threading.RLock()
"""Held by ``_runtime.install`` from the swap to the end of ``retire``: one ``configure()``
at a time (two at once each retired the other's new runtime: a runtime its own successor).
A forked child resets it in place (a parent thread may have held it; imported by name)."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=RETIRING._at_fork_reinit)  # type: ignore[attr-defined]


def retire(previous: Runtime, rt: Runtime) -> None:
    """What operations still open in ``previous`` record when they end goes to ``rt``, whose
    exports carry it (``previous`` exports once more, then never: ``_fold.forward``)."""
    with previous.lock:
        for fold in previous.registry.folds:  # what ended so far: in its last export
            fold()
        previous.successor = rt
    rt.retired = [old for old in (*previous.retired, previous) if old.ended or not old.idle()]
    REPLACED.add(previous)  # all point at the runtime in force: a chain would keep every
    for old in list(REPLACED):  # runtime since alive while one is (an open stream, say)
        old.successor = rt
    carry(previous, rt)  # pull outputs: the counts go on (the others get a last export)


def replaced_by(rt: Runtime) -> list[Runtime]:
    """The runtimes still alive that ``rt`` replaced, directly or not (their open operations
    are in flight for ``rt``'s outputs: ``sync.operations.active``)."""
    return [old for old in list(REPLACED) if old.successor is rt]
