"""``sync_operation()``: a ``with`` / ``async with`` block measured as one sync operation.

Nesting rule: the outermost sync operation owns the measurement. A decorated handler, a
``sync_operation`` block or the ASGI middleware that starts while another sync operation is
active *joins* it: its recorder calls go to the outer operation, an entity it names fills in
the outer operation's entity if that has none, and nothing is counted twice (one duration,
one span, one ``sync.operations.active`` increment per request).
"""

from __future__ import annotations

import contextlib
import sys
from types import TracebackType
from typing import Generic, TypeVar

from syncperf import _gate as gate
from syncperf import _runtime
from syncperf._ending import finish
from syncperf._gate import MAX_NAME, check_operation
from syncperf._lifecycle import begin, end
from syncperf._operation import NOOP, SyncOperation, active_operation

__all__ = ["Entries", "OperationScope", "entry_frame", "sync_operation"]

T = TypeVar("T")

_NAME = f"a string of 1 to {MAX_NAME} printable characters"


class OperationScope:
    """``with`` / ``async with`` block that starts (or joins) a sync operation.

    Re-entrant and shareable, also by concurrent tasks and threads: each entry is noted
    under the frame of its ``with`` statement (what it started, or that it joined), and each
    exit takes the latest entry made from its own frame. So entries may end in any order:
    a generator holding a shared scope open past the outer block, streams stepped in fresh
    copies of the context. An ``ExitStack`` counts as the ``with`` holding it; an exit from a
    frame that made no entry (a manual ``__exit__``) takes the scope's latest entry.
    """

    __slots__ = ("_entity", "_open", "_operation")

    def __init__(self, operation: str, entity: str | None) -> None:
        self._operation = operation
        self._entity = entity
        self._open: Entries[SyncOperation | None] = Entries()
        """What each open entry started, or None when it joined."""

    def __enter__(self) -> SyncOperation:
        return self._enter(entry_frame())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(entry_frame(), exc)

    def _enter(self, frame: int) -> SyncOperation:
        outer = active_operation()
        started = None
        if outer is not None and not outer._ended:
            if self._entity is not None and outer._entity is None:
                outer.set_entity(self._entity)
            result = outer
        else:
            rt = _runtime.current()
            if rt.enabled:
                started = result = begin(rt, self._operation, self._entity)
            else:
                result = NOOP
        self._open.add(frame, started)
        return result

    def _exit(self, frame: int, exc: BaseException | None) -> None:
        op = self._open.take(frame)
        if op is None:
            return
        if exc is not None:  # a raised HTTPException answering a conflict is no failure
            return finish(op, exc)  # (which ends it, also when reading its status raises)
        try:
            end(op, None)
        except Exception as error:
            op._rt.internal_error("operation_end_failed", error)

    async def __aenter__(self) -> SyncOperation:
        return self._enter(entry_frame())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(entry_frame(), exc)


class Entries(Generic[T]):
    """What a shareable scope's open entries made, by ``id()`` of the frame whose ``with``
    made them, innermost last (a frame is alive, so its id is its own, until its ``with``
    exits)."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[int, list[T]] = {}

    def add(self, frame: int, made: T) -> None:
        self._open.setdefault(frame, []).append(made)

    def take(self, frame: int) -> T | None:
        """What the latest entry from ``frame`` made (from any frame when ``frame`` made
        none: a manual ``__exit__``), removed; None when no entry is open."""
        entries = self._open
        if frame not in entries:  # exited from elsewhere: the latest entry
            try:
                frame = next(reversed(entries))
            except (StopIteration, RuntimeError):  # none open, or one opened meanwhile
                return None
        stack = entries.get(frame)
        try:
            made = stack.pop()  # type: ignore[union-attr]
        except (AttributeError, IndexError):  # taken meanwhile by another thread's exit
            return None
        if not stack:
            entries.pop(frame, None)
        return made


def entry_frame() -> int:
    """The ``id`` of the frame whose ``with`` entered or exits the scope: past contextlib's
    (an ``ExitStack`` enters in ``enter_context`` and exits in its own ``__exit__``, both
    called from the frame of the user's ``with ExitStack()``)."""
    frame = sys._getframe(2)
    while frame.f_code.co_filename == _CONTEXTLIB and frame.f_back is not None:
        frame = frame.f_back
    return id(frame)


_CONTEXTLIB = contextlib.__file__


def sync_operation(operation: str, *, entity: str | None = None) -> OperationScope:
    """Measure a block as one sync operation (``with`` or ``async with``).

    Args:
        operation: ``"pull"``, ``"push"`` or another low-cardinality name.
        entity: The entity synced (e.g. a table); bounded by ``max_entities``.

    Returns:
        A context manager yielding the ``SyncOperation`` recorder.

    Raises:
        ConfigError: ``operation`` or ``entity`` is not accepted.
    """
    operation = check_operation(operation)
    if entity is not None and (
        type(entity) is not str or not 0 < len(entity) <= MAX_NAME or not entity.isprintable()
    ):
        # the entity is often request data: a bad one is request-time misuse, not config
        name = gate.name(entity)
        if name is None:
            _runtime.current().reject("invalid_entity", "an entity: " + _NAME, entity)
        entity = name
    return OperationScope(operation, entity)
