"""The fields of a sync operation that ``start``, ``end`` and the fold read (``_operation``
builds the recorder on them)."""

from __future__ import annotations

from contextvars import Token
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from syncperf._client_series import Observed
from syncperf._tracing.span import Span

if TYPE_CHECKING:
    from syncperf._operation import SyncOperation
    from syncperf._runtime import Runtime
    from syncperf._series import OperationSeries

__all__ = ["Fields"]


class Fields:
    """What ``start``, ``end`` and the fold read of an operation (the compiled path's
    ``_speedups.Operation`` holds the same fields as a C struct); all set at construction,
    so reading one never falls back to a class default (a slower lookup)."""

    __slots__ = (
        "_batch",
        "_conflict_detail",
        "_conflicts",
        "_ctx_token",
        "_db_ns",
        "_db_queries",
        "_ended",
        "_entity",
        "_entity_items",
        "_error_type",
        "_idempotent",
        "_item_total",
        "_items",
        "_observed",
        "_own_ns",
        "_parent_ctx",
        "_resumed_ns",
        "_rt",
        "_series",
        "_span",
        "_start_ns",
        "_token",
        "_unsampled",
    )
    _rt: Runtime
    _series: OperationSeries
    _entity: str | None
    _start_ns: int
    _own_ns: int
    _resumed_ns: int
    """When the result extractors began (0: at ``end``)."""
    _batch: int | None
    _items: dict[str | None, int] | None
    """Items of the operation's own entity, by change type."""
    _item_total: int
    """Items recorded so far, every entity and change (below ``MAX_COUNT``)."""
    _entity_items: dict[tuple[str, str | None], int] | None
    """Items of other entities, by (bounded entity, change type)."""
    _conflicts: int
    _conflict_detail: dict[tuple[str | None, str | None], int] | None
    _idempotent: bool
    _span: Span | None
    _ctx_token: Token[SyncOperation | None] | None
    _parent_ctx: trace.SpanContext | None
    _token: Any
    """The OpenTelemetry context token of the span (or unsampled span) made current."""
    _unsampled: trace.Span | None
    """The non-recording span current during an operation its sampler dropped."""
    _db_queries: int
    _db_ns: int
    _error_type: str | None
    _observed: Observed | None
    """What the request told about its client (checkpoint, change times, Sync-Client)."""
    _ended: bool
    """Set by ``end``: a task that copied the context still sees it current, but joins it no
    more (its own operations start afresh)."""

    def __init__(self, rt: Any = None, series: Any = None, start_ns: int = 0) -> None:
        self._rt = rt
        self._series = series
        self._entity = None if series is None else series.entity
        self._start_ns = start_ns
        self._own_ns = self._resumed_ns = self._conflicts = self._item_total = 0
        self._db_queries = self._db_ns = 0
        self._ctx_token = self._span = self._parent_ctx = self._error_type = self._observed = None
        self._conflict_detail = self._batch = self._items = self._entity_items = None
        self._idempotent = self._ended = False
        self._token = self._unsampled = None
