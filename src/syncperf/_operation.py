"""The sync-operation recorder, the no-op operation and ``current_operation()``.

The recorder only collects; ``_lifecycle`` starts an operation, makes it current and, at its
end, turns what was recorded into metrics and a span.

Nesting rule: the outermost sync operation owns the measurement. A decorated handler, a
``sync_operation`` block or the ASGI middleware that starts while another sync operation is
active *joins* it: its recorder calls go to the outer operation, an entity it names fills in
the outer operation's entity if that has none, and nothing is counted twice (one duration,
one span, one ``sync.operations.active`` increment per request).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from syncperf import _gate as gate
from syncperf._accel import speedups
from syncperf._client_series import Observed
from syncperf._gate import MAX_COUNT, MAX_NAME
from syncperf._operation_fields import Fields
from syncperf._staleness import age_of

if TYPE_CHECKING:
    from syncperf._runtime import Runtime

__all__ = ["SyncOperation", "active_operation", "current_operation"]

CHANGES = frozenset({"created", "updated", "deleted"})
HELD = "syncperf.held"
"""``scratch`` key of the payload tallies an adapter holds until the answer decides them (a list
the ASGI middleware, or a decorator that owns its operation, puts there): a shipped adapter then
adds its tallies to it, uncommitted, and ``_http_status.settle`` commits them or not."""


def hold(op: SyncOperation) -> None:
    """Have ``op``'s adapter hold its payload tallies (``HELD``) until the answer decides
    them (``_http_status.settle``)."""
    scratch = op.scratch
    if scratch is None:
        scratch = op.scratch = {}
    scratch.setdefault(HELD, [])


CURRENT: ContextVar[SyncOperation | None] = ContextVar("syncperf_operation", default=None)
"""The operation in progress in this context; set and reset by ``_lifecycle`` only."""
active_operation: Callable[[], SyncOperation | None] = CURRENT.get
"""The operation current in this context, or None: how decorators and integrations join one
(callers skip an ``_ended`` one); ``current_operation()`` is the user's form, never None."""
_COUNT = "an int in [0, 2**53)"
_NAME = f"a string of 1 to {MAX_NAME} printable characters"


def _attribute_room(rt: Runtime) -> int | float:
    """The attributes a span of ``rt``'s tracer provider keeps (its ``SpanLimits``; the
    SDK's default, 128, without one; no limit when the provider sets none)."""
    tracer = rt.tracing.tracer
    if tracer is None:
        return 128
    room = tracer.limits.max_span_attributes
    return math.inf if room is None else room


def _entity(rt: Runtime, entity: object) -> str | None:
    """A request-time entity name, bounded; None (and a counted drop) when not acceptable."""
    name = entity if type(entity) is str and 0 < len(entity) <= MAX_NAME else gate.name(entity)
    if name is None or not name.isprintable():
        rt.reject("invalid_entity", "an entity: " + _NAME, entity)
        return None
    return rt.entities(name)


if TYPE_CHECKING:
    _Base = Fields
else:  # the compiled layout of the same fields, when built (``_accel``)
    _Base = Fields if speedups is None else speedups.Operation


def _late(op: SyncOperation) -> None:
    """A recorder call on an operation that has ended (its measurement is gone)."""
    op._rt.reject("operation_ended", "a recorder call before its operation ended")


class SyncOperation(_Base):
    """Records one sync operation. Get it from ``sync_operation()``, the decorator, or
    ``current_operation()``; every method is cheap and never raises into your code
    (outside strict mode)."""

    # Rarely set: defaults on the class, an operation writes only what it records.
    _log_started = False
    _span_attrs: dict[str, Any] | None = None
    _kind = SpanKind.INTERNAL
    scratch: dict[str, Any] | None = None
    """Per-operation state for integrations (e.g. statement counts for N+1 detection)."""
    _fed = False
    """Set when an adapter or count extractors feed this operation's counts (a middleware
    route's adapter, or the decorator that owns it): a decorated handler that joins it then
    skips its own, so nothing is counted twice."""

    @property
    def operation(self) -> str:
        """The operation's name (``pull``, ``push``...)."""
        return self._series.operation

    # --- public recorder API ---------------------------------------------------------------

    @property
    def entity(self) -> str | None:
        """The operation's entity after bounding (``_other`` past the limit), or None."""
        return self._entity

    @property
    def span(self) -> trace.Span:
        """The operation's span; for one its sampler dropped, the non-recording span current
        in it (its context carries the decision downstream), until a rescue makes a span;
        ``trace.INVALID_SPAN`` when it has neither (tracing off, left out by
        ``trace_sample_rate``, or shed)."""
        return self._span or self._unsampled or trace.INVALID_SPAN

    @property
    def recording(self) -> bool:
        """Whether measurements go anywhere (False for the no-op operation)."""
        return True

    @property
    def runtime(self) -> Runtime | None:
        """For integrations: the runtime this operation records into (its ``reject``,
        ``internal_error``, ``overhead_for``), or None for the no-op operation."""
        return self._rt

    def set_entity(self, entity: str) -> None:
        """Name the operation's entity (bounded by ``max_entities``)."""
        if self._ended:  # a background job that kept it: counted, not lost silently
            return _late(self)
        bounded = _entity(self._rt, entity)
        if bounded is not None:
            self._entity = bounded

    def set_batch_size(self, n: int) -> None:
        """Set the number of items in this request or response."""
        if self._ended:
            return _late(self)
        if type(n) is int and 0 <= n < MAX_COUNT:
            self._batch = n
        else:
            self._rt.reject("invalid_batch_size", "a batch size: " + _COUNT, n)

    def record_items(self, n: int, *, entity: str | None = None, change: str | None = None) -> None:
        """Count ``n`` items synced, optionally per entity and change type.

        Args:
            n: Item count (an int >= 0).
            entity: The items' entity; defaults to the operation's entity.
            change: ``"created"``, ``"updated"`` or ``"deleted"``, or None when unknown.
        """
        if self._ended:
            return _late(self)
        rt = self._rt
        if type(n) is not int or not 0 <= n < MAX_COUNT:
            rt.reject("invalid_count", "an item count: " + _COUNT, n)
            return
        if change is not None and (type(change) is not str or change not in CHANGES):
            name = gate.name(change)  # a StrEnum member is its plain value
            if name not in CHANGES:
                rt.reject("invalid_change", "change: created, updated, deleted or None", change)
                return
            change = name
        total = self._item_total + n  # one operation's items, all entities and changes
        if total >= MAX_COUNT:
            rt.reject("invalid_count", "item counts whose total is below 2**53")
            return
        if entity is None:
            items = self._items
            if items is None:
                self._items = {change: n}
            else:
                items[change] = items.get(change, 0) + n
            self._item_total = total
            return
        bounded = _entity(rt, entity)
        if bounded is None:
            return
        key = (bounded, change)
        others = self._entity_items
        if others is None:
            self._entity_items = {key: n}
        else:
            others[key] = others.get(key, 0) + n
        self._item_total = total

    def record_conflict(
        self, *, entity: str | None = None, count: int = 1, resolution: str | None = None
    ) -> None:
        """Count conflicts detected while applying a push.

        Args:
            entity: The conflicting records' entity; defaults to the operation's entity.
            count: How many conflicts (an int >= 0).
            resolution: How they were resolved, e.g. ``"server_wins"`` (low cardinality).
        """
        if self._ended:
            return _late(self)
        rt = self._rt
        if type(count) is not int or not 0 <= count < MAX_COUNT:
            rt.reject("invalid_count", "a conflict count: " + _COUNT, count)
            return
        if entity is not None:
            entity = _entity(rt, entity)
            if entity is None:
                return
        if resolution is not None:
            name = gate.name(resolution)
            if name is None:
                rt.reject("invalid_resolution", "a resolution: " + _NAME, resolution)
                return
            resolution = rt.resolutions(name)
        if count == 0:
            return
        total = self._conflicts + count
        if total >= MAX_COUNT:
            rt.reject("invalid_count", "conflict counts whose total is below 2**53")
            return
        self._conflicts = total
        detail = self._conflict_detail
        if detail is None:
            detail = self._conflict_detail = {}
        key = (entity, resolution)
        detail[key] = detail.get(key, 0) + count

    def record_idempotency_hit(self) -> None:
        """Mark this request as a duplicate (an idempotent replay)."""
        if self._ended:
            return _late(self)
        self._idempotent = True

    def record_checkpoint(self, at: datetime | float) -> None:
        """Record how far behind the client is (``sync.pull.staleness``: now minus ``at``).

        Args:
            at: The time of the client's checkpoint: a ``datetime`` (naive means UTC) or
                seconds since the epoch; 0 means "never synced" (nothing recorded). Far
                future or over a year old: dropped and counted (docs/clients.md).
        """
        if self._ended:
            return _late(self)
        age = age_of(self._rt, at)
        if age is not None:
            self.observed().staleness = age

    def record_change_time(self, at: datetime | float) -> None:
        """Record when a pushed change was made (``sync.push.change_age``: the age of the
        oldest one); ``at`` as for ``record_checkpoint``, per change or once with the oldest."""
        if self._ended:
            return _late(self)
        age = age_of(self._rt, at)
        if age is not None:
            observed = self.observed()
            if observed.change_age is None or age > observed.change_age:
                observed.change_age = age

    def observed(self) -> Observed:
        """What this operation's request told about its client (for integrations: the
        middleware and the decorator read the ``Sync-Client`` header into it)."""
        observed = self._observed
        if observed is None:
            observed = self._observed = Observed()
        return observed

    def set_attribute(self, key: str, value: Any) -> None:
        """Set an attribute on the operation's span only (never on a metric).

        Values are what the OpenTelemetry SDK accepts; strings are cut at 1,024 characters and
        made valid UTF-8, and ints must fit in 64 bits.
        """
        if self._ended:
            return _late(self)
        rt = self._rt
        if type(key) is not str or not 0 < len(key) <= MAX_NAME or not key.isprintable():
            rt.reject("invalid_attribute", "an attribute key: " + _NAME, key)
            return
        value = gate.attribute(value)
        if value is gate.REJECT:
            rt.reject("invalid_attribute", "an attribute value the SDK accepts, ints within int64")
            return
        if self._span is not None:
            self._span.set_attribute(key, value)
        else:  # kept for a span ``end`` may rescue: as many keys as a span keeps
            attrs = self._span_attrs
            if attrs is None:
                attrs = self._span_attrs = {}
            elif key not in attrs and len(attrs) >= _attribute_room(rt):
                rt.drop(
                    "span_attribute_limit",
                    "syncperf dropped span attributes of a sampled-out operation "
                    "(span_attribute_limit): past the %d keys a span keeps",
                    len(attrs),
                )
                return
            attrs[key] = value

    def set_error(self, error_type: str) -> None:
        """Mark the operation failed without an exception (e.g. a 5xx response)."""
        if self._ended:
            return _late(self)
        name = gate.name(error_type)
        if name is None:
            self._rt.reject("invalid_error_type", "an error type: " + _NAME, error_type)
            name = "_OTHER"
        self._error_type = self._rt.error_types(name)

    def add_db_time(self, duration_ns: int) -> None:
        """Attribute one database query of ``duration_ns`` to this operation."""
        self._db_queries += 1
        self._db_ns += duration_ns

    @property
    def conflicts(self) -> int:
        """Conflicts recorded so far."""
        return self._conflicts

    @property
    def db_queries(self) -> int:
        """Database queries attributed so far."""
        return self._db_queries

    def __repr__(self) -> str:
        return f"<SyncOperation {self.operation} entity={self._entity!r}>"


class _NoopOperation(SyncOperation):
    """What ``current_operation()`` returns outside a sync operation: records nothing."""

    __slots__ = ()

    @property
    def recording(self) -> bool:
        return False

    @property
    def runtime(self) -> None:
        return None

    @property
    def operation(self) -> str:
        return "none"

    def set_entity(self, entity: str) -> None:
        pass

    def set_batch_size(self, n: int) -> None:
        pass

    def record_items(self, n: int, *, entity: str | None = None, change: str | None = None) -> None:
        pass

    def record_conflict(
        self, *, entity: str | None = None, count: int = 1, resolution: str | None = None
    ) -> None:
        pass

    def record_idempotency_hit(self) -> None:
        pass

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_error(self, error_type: str) -> None:
        pass

    def record_checkpoint(self, at: datetime | float) -> None:
        pass

    def record_change_time(self, at: datetime | float) -> None:
        pass

    def observed(self) -> Observed:
        return Observed()  # discarded: the no-op operation is shared

    def add_db_time(self, duration_ns: int) -> None:
        pass


NOOP = _NoopOperation()
"""The one no-op operation."""


def current_operation() -> SyncOperation:
    """The active sync operation, or a no-op one that records nothing."""
    op = CURRENT.get()
    return NOOP if op is None or op._ended else op


if speedups is not None:  # the compiled twins take the common case; these, every other
    python_record_items = SyncOperation.record_items
    speedups.operations(CURRENT, NOOP, python_record_items)
    delattr(SyncOperation, "record_items")  # ``_speedups.Operation.record_items`` shows through
    current_operation = speedups.current_operation
