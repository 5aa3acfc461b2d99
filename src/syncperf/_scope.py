"""``sync_operation()``: a ``with`` / ``async with`` block measured as one sync operation.

Nesting rule: the outermost sync operation owns the measurement. A decorated handler, a
``sync_operation`` block or the ASGI middleware that starts while another sync operation is
active *joins* it: its recorder calls go to the outer operation, an entity it names fills in
the outer operation's entity if that has none, and nothing is counted twice (one duration,
one span, one ``sync.operations.active`` increment per request).
"""

from __future__ import annotations

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

    Re-entrant and shareable: each ``__enter__`` pushes what it started (or None when it
    joined an outer operation) and its ``__exit__`` ends exactly that.
    """

    __slots__ = ("_entity", "_operation", "_started")

    def __init__(self, operation: str, entity: str | None) -> None:
        self._operation = operation
        self._entity = entity
        self._started: list[SyncOperation | None] = []

    def __enter__(self) -> SyncOperation:
        outer = active_operation()
        if outer is not None:
            if self._entity is not None and outer._entity is None:
                outer.set_entity(self._entity)
            self._started.append(None)
            return outer
        rt = _runtime.current()
        if not rt.enabled:
            self._started.append(None)
            return NOOP
        op = begin(rt, self._operation, self._entity)
        self._started.append(op)
        return op

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        op = self._started.pop() if self._started else None
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
