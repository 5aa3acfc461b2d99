"""``sync_operation()``: a ``with`` / ``async with`` block measured as one sync operation.

Nesting rule: the outermost sync operation owns the measurement. A decorated handler, a
``sync_operation`` block or the ASGI middleware that starts while another sync operation is
active *joins* it: its recorder calls go to the outer operation, an entity it names fills in
the outer operation's entity if that has none, and nothing is counted twice (one duration,
one span, one ``sync.operations.active`` increment per request).
"""

from __future__ import annotations

from contextvars import ContextVar
from types import TracebackType

from syncperf import _gate as gate
from syncperf import _runtime
from syncperf._gate import MAX_NAME, check_operation
from syncperf._http_status import raised
from syncperf._lifecycle import begin, end
from syncperf._operation import NOOP, SyncOperation, active_operation

__all__ = ["OperationScope", "sync_operation"]

_NAME = f"a string of 1 to {MAX_NAME} printable characters"


_ENTRIES: ContextVar[tuple[tuple[OperationScope, SyncOperation | None], ...]] = ContextVar(
    "syncperf_scope_entries", default=()
)
"""This context's open ``OperationScope`` entries, innermost last: ``(scope, what it started,
or None when it joined)``. A task or thread gets a copy: its entries are its own."""


class OperationScope:
    """``with`` / ``async with`` block that starts (or joins) a sync operation.

    Re-entrant and shareable, also by concurrent tasks and threads: each ``__enter__`` notes
    in its own context what it started (or that it joined), and each ``__exit__`` ends what
    the same context's latest entry of this scope started.
    """

    __slots__ = ("_entity", "_operation", "_started")

    def __init__(self, operation: str, entity: str | None) -> None:
        self._operation = operation
        self._entity = entity
        self._started: list[SyncOperation] = []
        """Operations this scope started and has not ended (for an exit in another context,
        e.g. a generator finished elsewhere: the latest of them is ended)."""

    def __enter__(self) -> SyncOperation:
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
                self._started.append(started)
            else:
                result = NOOP
        _ENTRIES.set((*_ENTRIES.get(), (self, started)))
        return result

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entries = _ENTRIES.get()
        for index in range(len(entries) - 1, -1, -1):
            if entries[index][0] is self:
                op = entries[index][1]
                _ENTRIES.set(entries[:index] + entries[index + 1 :])
                break
        else:  # entered in another context
            op = self._started[-1] if self._started else None
        if op is None:
            return
        try:
            self._started.remove(op)
        except ValueError:  # already ended, by an exit in another context
            return
        if exc is not None:  # a raised HTTPException answering a conflict is no failure
            try:
                exc = raised(op, exc)
            except Exception as error:
                op._rt.internal_error("operation_end_failed", error)
        try:  # whatever happened above: an operation left open would swallow every later one
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
