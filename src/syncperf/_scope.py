"""``sync_operation()``: a ``with`` / ``async with`` block measured as one sync operation.

Nesting rule: the outermost sync operation owns the measurement. A decorated handler, a
``sync_operation`` block or the ASGI middleware that starts while another sync operation is
active *joins* it: its recorder calls go to the outer operation, an entity it names fills in
the outer operation's entity if that has none, and nothing is counted twice (one duration,
one span, one ``sync.operations.active`` increment per request).
"""

from __future__ import annotations

import threading
from types import TracebackType

from syncperf import _gate as gate
from syncperf import _runtime
from syncperf._gate import MAX_NAME
from syncperf._lifecycle import begin, end
from syncperf._operation import NOOP, SyncOperation, active_operation, check_operation

__all__ = ["OperationScope", "sync_operation"]

_NAME = f"a string of 1 to {MAX_NAME} printable characters"


class OperationScope:
    """``with`` / ``async with`` block that starts (or joins) a sync operation.

    Re-entrant and shareable, also by concurrent tasks and threads: each ``__enter__``
    notes what it started (or None when it joined an outer operation) beside the operation
    then current in its context, and each ``__exit__`` ends the entry of its own context
    (the one whose operation is current there).
    """

    __slots__ = ("_entity", "_lock", "_operation", "_started")

    def __init__(self, operation: str, entity: str | None) -> None:
        self._operation = operation
        self._entity = entity
        self._started: list[tuple[SyncOperation | None, SyncOperation | None]] = []
        """``(started, current)`` per ``__enter__`` not yet exited: what it started, if
        anything, and the operation current in its context after it."""
        self._lock = threading.Lock()

    def __enter__(self) -> SyncOperation:
        outer = active_operation()
        if outer is not None:
            if self._entity is not None and outer._entity is None:
                outer.set_entity(self._entity)
            entry: tuple[SyncOperation | None, SyncOperation | None] = (None, outer)
            result = outer
        else:
            rt = _runtime.current()
            if not rt.enabled:
                entry, result = (None, None), NOOP
            else:
                op = begin(rt, self._operation, self._entity)
                entry, result = (op, op), op
        with self._lock:
            self._started.append(entry)
        return result

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        current = active_operation()
        with self._lock:
            started = self._started
            # This context's entry: the latest whose operation is current here (entries
            # with the same one are alike: joins of it). None found (exited in another
            # context): the latest.
            index = next(
                (i for i in range(len(started) - 1, -1, -1) if started[i][1] is current),
                len(started) - 1,
            )
            op = started.pop(index)[0] if started else None
        if op is not None:
            try:
                end(op, exc)
            except Exception as error:
                op._rt.internal_error("operation_end_failed", error)

    async def __aenter__(self) -> SyncOperation:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


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
