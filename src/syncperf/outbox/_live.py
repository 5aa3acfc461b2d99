"""The open outboxes with stats, each scoped to the ``testing.capture()`` it was made in.

An outbox made outside any capture is seen everywhere: every runtime collects its gauges and
no other outbox with stats may take its name. One made inside a capture belongs to that
capture (and the captures nested in it): once the capture ends, later runtimes do not collect
its gauges and its name is free again, even while something keeps it alive (a failed test's
traceback does), so one test's outboxes never reach into the next.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any

from syncperf import _runtime
from syncperf._forklocks import renew_in_child
from syncperf.exceptions import ConfigError

if TYPE_CHECKING:
    from syncperf.outbox import Outbox

_live: weakref.WeakSet[Outbox] = weakref.WeakSet()
_lock = threading.Lock()
renew_in_child(sys.modules[__name__], "_lock")  # taken by a new Outbox or runtime, in a child too


def scope_of(rt: _runtime.Runtime | None) -> tuple[object, ...]:
    """The capture scope ``rt`` records in (``Capture.scope``; empty outside captures)."""
    capture: Any = None if rt is None else rt.capture
    return () if capture is None else capture.scope


def in_view(outbox: Outbox, scope: tuple[object, ...]) -> bool:
    """Whether ``outbox`` (open) belongs to ``scope``: made there or in an enclosing one."""
    owned = outbox._scope
    return not outbox._closed and scope[: len(owned)] == owned


def claim(outbox: Outbox) -> None:
    """Add ``outbox``, made in the current scope; ``ConfigError`` if one in view has its name."""
    scope = outbox._scope
    with _lock:
        if any(other.name == outbox.name and in_view(other, scope) for other in _live):
            raise ConfigError(
                "name",
                outbox.name,
                "a name no other open Outbox with stats uses (their gauges would hide "
                "each other); close() the other one first",
            )
        _live.add(outbox)


def release(outbox: Outbox) -> None:
    with _lock:
        _live.discard(outbox)


def visible(scope: tuple[object, ...]) -> list[Outbox]:
    """The open outboxes ``scope`` sees."""
    with _lock:
        outboxes = list(_live)
    return [outbox for outbox in outboxes if in_view(outbox, scope)]
