"""What a handler's HTTP answer says about its sync operation: the status a returned
``Response`` or raised ``HTTPException`` carries, and the outcome that status gives (one rule
for ``instrument_sync``, ``sync_operation()`` and the ASGI middleware)."""

from __future__ import annotations

import inspect
from typing import Any

from syncperf._operation import HELD, SyncOperation

__all__ = [
    "PLAIN",
    "answered",
    "apply_http_status",
    "awaitable",
    "http_status",
    "raised",
    "settle",
]

PLAIN: frozenset[type] = frozenset({dict, list, tuple, str, bytes, int, type(None)})
"""Return types that are never a framework response object (checked before ``getattr``).
Looking a class up hashes it, which its metaclass may make raise: callers catch that."""


def http_status(value: Any) -> int | None:
    """The HTTP status a handler's return value or exception carries (a Starlette or FastAPI
    ``Response`` or ``HTTPException``: an int ``status_code`` beside ``headers``), or None."""
    try:
        if type(value) in PLAIN:  # hashing the class may raise (its metaclass's ``__hash__``)
            return None
        status = getattr(value, "status_code", None)
        if type(status) is not int or not 100 <= status <= 599 or not hasattr(value, "headers"):
            return None
    except Exception:  # an attribute that raises (a lazy load): not a response to read
        return None
    return status


def awaitable(value: Any) -> bool:
    """``inspect.isawaitable``, never raising: its ABC check hashes the value's class, which
    may be unhashable (its metaclass defines ``__eq__``) or raise."""
    try:
        return inspect.isawaitable(value)
    except Exception:
        return False


def apply_http_status(op: SyncOperation, status: int) -> None:
    """The outcome an HTTP status gives an operation (one rule for decorator and middleware).

    5xx: ``error`` (``error.type`` the status code). 4xx: ``conflict`` when the handler
    recorded conflicts, or for a 409 (which counts one conflict if none was recorded);
    any other 4xx is ``error`` with the status code as ``error.type`` (the request was
    refused: nothing synced, e.g. a 422 from validation before the handler ran).
    """
    if status >= 500:
        op.set_error(str(status))
    elif status >= 400 and not op.conflicts:
        if status == 409:
            op.record_conflict()
        else:
            op.set_error(str(status))


def settle(op: SyncOperation, status: int | None, replayed: bool = False) -> None:
    """Commit the payload tallies the adapter held (``HELD``) unless the answer refused the
    request: a 4xx that is not a conflict (nothing synced: no items, batch size or payload
    entity names). A 5xx, a raise, a client gone: the handler may have applied some of it.
    A replayed answer commits only its outcome (the request applied nothing again). Called
    before the status decides the outcome (a 409 counts one conflict only if none was held).
    One rule for the middleware (``asgi._finish``) and the decorator (``_ending.finish``)."""
    scratch = op.scratch
    held = None if scratch is None else scratch.pop(HELD, None)
    if not held:
        return
    refused = status is not None and 400 <= status < 500 and status != 409
    if refused and not op.conflicts and not any(tally.conflicts for tally in held):
        return
    for tally in held:
        tally.commit(op, replayed)


def answered(op: SyncOperation, result: Any) -> None:
    """Apply the status a returned ``Response`` carries (if any) to ``op``."""
    status = http_status(result)
    if status is not None:
        apply_http_status(op, status)


def raised(op: SyncOperation, exc: BaseException) -> BaseException | None:
    """What is left of a raised exception as ``op``'s failure: None when it is an
    ``HTTPException`` answering a conflict (a 4xx after ``record_conflict()``, or a 409),
    which it then records; else ``exc`` (a 5xx or another 4xx fails with its type)."""
    status = http_status(exc)
    if status is not None and status < 500 and (op.conflicts or status == 409):
        apply_http_status(op, status)
        return None  # the exception is the conflict's answer, not a failure
    return exc
