"""The compiled hot path (``_speedups``, a C extension built with the package when a compiler
is there), or None: then every caller runs its pure-Python twin, which behaves the same.

``SYNCPERF_NO_EXTENSIONS=1`` selects the pure-Python path (read once, at import, as
``AIOHTTP_NO_EXTENSIONS`` or ``MULTIDICT_NO_EXTENSIONS`` are: the choice shapes classes).
Only the main interpreter, when it imported syncperf first, uses it: the compiled state is one
per process, and a sub-interpreter's import would rebind it (``_speedups.usable``)."""

from __future__ import annotations

import os
from collections import deque
from types import ModuleType
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from syncperf._speedups import Count

__all__ = ["InFlight", "in_flight", "speedups"]

InFlight: TypeAlias = "deque[None] | Count"
"""The in-flight count of an operation name: ``append(None)``, ``pop()``, ``clear()``,
``len()``; a ``_speedups.Count`` (one C integer the compiled path steps in place), or a
deque of Nones on the pure-Python path."""


def _load() -> ModuleType | None:
    if os.environ.get("SYNCPERF_NO_EXTENSIONS", "").strip() not in ("", "0"):
        return None
    try:
        from syncperf import _speedups
    except ImportError:  # not built (no compiler at install time): the pure-Python path
        return None
    # its state is one per process: a sub-interpreter (mod_wsgi, uWSGI) takes the Python path
    return _speedups if _speedups.usable() else None


speedups = _load()


def in_flight() -> InFlight:
    """A new in-flight count."""
    return deque() if speedups is None else speedups.Count()
