"""The sync-operation recorder, ``sync_operation()`` and ``current_operation()``.

Nesting rule: the outermost sync operation owns the measurement. A decorated handler, a
``sync_operation`` block or the ASGI middleware that starts while another sync operation is
active *joins* it: its recorder calls go to the outer operation, an entity it names fills in
the outer operation's entity if that has none, and nothing is counted twice (one duration,
one span, one ``sync.operations.active`` increment per request).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from contextvars import ContextVar, Token
from datetime import datetime
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from syncperf import _gate as gate
from syncperf import _runtime
from syncperf._client_series import ClientSeries, Observed
from syncperf._client_series import record as record_observed
from syncperf._gate import MAX_COUNT, MAX_NAME
from syncperf._redact import record_exception
from syncperf._runtime import OpSeries, Runtime
from syncperf._staleness import age_of
from syncperf._tracing.span import Span, attach, detach
from syncperf.exceptions import ConfigError

__all__ = ["SyncOperation", "current_operation", "sync_operation"]

CHANGES = frozenset({"created", "updated", "deleted"})
_OPERATION_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_valid_operations: set[str] = {"pull", "push"}
MAX_OPERATIONS = 64
"""Distinct operation names accepted per process (they are metric attributes)."""
_perf = time.perf_counter_ns
_CURRENT: ContextVar[SyncOperation | None] = ContextVar("syncperf_operation", default=None)
_error_names: dict[type, str] = {}
_INTERNAL = SpanKind.INTERNAL  # an enum member lookup costs ~70 ns
_COUNT = "an int in [0, 2**53)"
_NAME = f"a string of 1 to {MAX_NAME} printable characters"


def check_operation(operation: object, option: str = "operation") -> str:
    """Validate an operation name once (decoration / construction time)."""
    name = gate.name(operation)
    if name in _valid_operations:
        return name
    if name is None or not _OPERATION_RE.fullmatch(name):
        raise ConfigError(
            option,
            operation,
            '"pull", "push" or another lowercase name matching [a-z][a-z0-9_]{0,31}',
        )
    if len(_valid_operations) >= MAX_OPERATIONS:
        raise ConfigError(
            option, operation, f"one of at most {MAX_OPERATIONS} low-cardinality operation names"
        )
    _valid_operations.add(name)
    return name


def is_operation(name: str) -> bool:
    """Whether ``name`` is an operation the application declared (so client data may name it
    without adding one)."""
    return name in _valid_operations


def check_entity(entity: object, option: str = "entity") -> str | None:
    """Validate a static entity name (decoration / construction time)."""
    if entity is None:
        return None
    name = gate.name(entity)
    if name is None:
        raise ConfigError(option, entity, "None or " + _NAME)
    return name


def _entity(rt: Runtime, entity: object) -> str | None:
    """A request-time entity name, bounded; None (and a counted drop) when not acceptable."""
    name = entity if type(entity) is str and 0 < len(entity) <= MAX_NAME else gate.name(entity)
    if name is None or not name.isprintable():
        rt.reject("invalid_entity", "an entity: " + _NAME, entity)
        return None
    return rt.entities(name)


def error_type(exc: BaseException) -> str:
    """``error.type`` of an exception: its fully qualified class name (builtins unqualified)."""
    cls = type(exc)
    name = _error_names.get(cls)
    if name is None:
        try:
            module, qualname = cls.__module__, cls.__qualname__
            full = qualname if module == "builtins" else f"{module}.{qualname}"
            name = gate.name(full[-MAX_NAME:]) or "_OTHER"
        except Exception:  # a class with a hostile __module__ or __qualname__
            name = "_OTHER"
        if len(_error_names) < 1000:
            _error_names[cls] = name
    return name


class SyncOperation:
    """Records one sync operation. Get it from ``sync_operation()``, the decorator, or
    ``current_operation()``; every method is cheap and never raises into your code
    (outside strict mode)."""

    # Defaults live on the class: an operation only writes what it records.
    _batch: int | None = None
    _items: dict[str | None, int] | None = None
    """Items of the operation's own entity, by change type."""
    _entity_items: dict[tuple[str, str | None], int] | None = None
    """Items of other entities, by (bounded entity, change type)."""
    _conflicts = 0
    _conflict_detail: dict[tuple[str | None, str | None], int] | None = None
    _idempotent = False
    _span: Span | None = None
    _span_attrs: dict[str, Any] | None = None
    _token: Any = None
    _ctx_token: Token[SyncOperation | None] | None = None
    _parent_ctx: trace.SpanContext | None = None
    _db_queries = 0
    _db_ns = 0
    _error_type: str | None = None
    _kind = SpanKind.INTERNAL
    _start_ns = 0
    _own_ns = 0
    scratch: dict[str, Any] | None = None
    """Per-operation state for integrations (e.g. statement counts for N+1 detection)."""
    _observed: Observed | None = None
    """What the request told about its client (checkpoint, change times, Sync-Client)."""

    def __init__(self, rt: Runtime, series: OpSeries, start_ns: int) -> None:
        self._rt = rt
        self._series = series
        self._entity = series.entity
        self._start_ns = start_ns

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
        """The operation's span, or an invalid non-recording span when it has none."""
        return self._span or trace.INVALID_SPAN

    @property
    def recording(self) -> bool:
        """Whether measurements go anywhere (False for the no-op operation)."""
        return True

    def set_entity(self, entity: str) -> None:
        """Name the operation's entity (bounded by ``max_entities``)."""
        bounded = _entity(self._rt, entity)
        if bounded is not None:
            self._entity = bounded

    def set_batch_size(self, n: int) -> None:
        """Set the number of items in this request or response."""
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
        if entity is None:
            items = self._items
            if items is None:
                self._items = {change: n}
            elif (total := items.get(change, 0) + n) < MAX_COUNT:
                items[change] = total
            else:
                rt.reject("invalid_count", "item counts whose total is below 2**53")
            return
        bounded = _entity(rt, entity)
        if bounded is None:
            return
        key = (bounded, change)
        others = self._entity_items
        if others is None:
            self._entity_items = {key: n}
        elif (total := others.get(key, 0) + n) < MAX_COUNT:
            others[key] = total
        else:
            rt.reject("invalid_count", "item counts whose total is below 2**53")

    def record_conflict(
        self, *, entity: str | None = None, count: int = 1, resolution: str | None = None
    ) -> None:
        """Count conflicts detected while applying a push.

        Args:
            entity: The conflicting records' entity; defaults to the operation's entity.
            count: How many conflicts (an int >= 0).
            resolution: How they were resolved, e.g. ``"server_wins"`` (low cardinality).
        """
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
        self._idempotent = True

    def record_checkpoint(self, at: datetime | float) -> None:
        """Record how far behind the client is: now minus its checkpoint (``sync.pull.staleness``).

        Adapters do this from the protocol's checkpoint; call it for any other protocol.

        Args:
            at: The time the client's checkpoint stands for (its last pull): a ``datetime``
                (naive means UTC) or seconds since the epoch. Zero or earlier means "never
                synced" and records nothing. Times further ahead of the server's clock than
                clock skew explains, or older than a year, are dropped and counted.
        """
        age = age_of(self._rt, at)
        if age is not None:
            self.observed().staleness = age

    def record_change_time(self, at: datetime | float) -> None:
        """Record when a pushed change was made on the client (``sync.push.change_age``: the
        age of the batch's oldest change). Call it for each change or once with the oldest.

        Args:
            at: A ``datetime`` (naive means UTC) or seconds since the epoch; bounded as for
                ``record_checkpoint``.
        """
        age = age_of(self._rt, at)
        if age is not None:
            observed = self.observed()
            if observed.change_age is None or age > observed.change_age:
                observed.change_age = age

    def observed(self) -> Observed:
        """What this operation's request told about its client (made on first use)."""
        observed = self._observed
        if observed is None:
            observed = self._observed = Observed()
        return observed

    def set_attribute(self, key: str, value: Any) -> None:
        """Set an attribute on the operation's span only (never on a metric).

        Values are what the OpenTelemetry SDK accepts; strings are cut at 1,024 characters and
        made valid UTF-8, and ints must fit in 64 bits.
        """
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
        else:
            attrs = self._span_attrs
            if attrs is None:
                attrs = self._span_attrs = {}
            attrs[key] = value

    def set_error(self, error_type: str) -> None:
        """Mark the operation failed without an exception (e.g. a 5xx response)."""
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


_NOOP = _NoopOperation.__new__(_NoopOperation)
_NOOP._series = None  # type: ignore[assignment]
_NOOP._entity = None
_NOOP._rt = None  # type: ignore[assignment]


def current_operation() -> SyncOperation:
    """The active sync operation, or a no-op one that records nothing."""
    return _CURRENT.get() or _NOOP


def active_operation() -> SyncOperation | None:
    """The active sync operation or None (for integrations)."""
    return _CURRENT.get()


def release_entity(op: SyncOperation, entity: str) -> None:
    """Report ``op`` without ``entity`` and give back the slot it took in the entity bound
    (for integrations: a rejected request cannot use up ``max_entities``)."""
    op._rt.entities.release(entity)
    op._entity = None


# --- life cycle ------------------------------------------------------------------------


def begin(
    rt: Runtime,
    operation: str,
    entity: str | None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> SyncOperation:
    """Start an operation (the caller checked that none is active) and make it current."""
    series = rt.op_series.get((operation, entity)) or rt.series(operation, entity)
    return start(rt, series, kind, attributes)


def start(
    rt: Runtime,
    series: OpSeries,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> SyncOperation:
    """``begin`` with the operation's pre-bound series already at hand."""
    t0 = _perf()
    op = SyncOperation(rt, series, t0)
    if kind is not _INTERNAL:
        op._kind = kind
    tracing = rt.tracing
    if tracing.active or (t0 >= tracing.next_check and tracing.refresh(t0)):
        try:
            _start_span(rt, op, series, kind, attributes, t0)
        except Exception as error:  # a sampler or span processor failed: no span, no harm
            rt.internal_error("span_start_failed", error)
    series.inflight.append(None)
    op._ctx_token = _CURRENT.set(op)
    op._own_ns = _perf() - t0
    return op


def _start_span(
    rt: Runtime,
    op: SyncOperation,
    series: OpSeries,
    kind: SpanKind,
    attributes: Mapping[str, Any] | None,
    t0: int,
) -> None:
    tracing = rt.tracing
    parent = trace.get_current_span().get_span_context()
    trace_id = tracing.sample(series.span_name, kind, parent)
    if trace_id and rt.shed_until >= t0:  # syncperf is shedding: not made, but counted
        rt.span_shed()
    elif trace_id:
        span = tracing.tracer.start(  # type: ignore[union-attr]
            series.span_name,
            parent,
            kind,
            {**series.attrs, **attributes} if attributes else series.attrs,
            trace_id=trace_id,
        )
        op._span = span
        op._token = attach(span)
        if _perf() - t0 > rt.budget_ns:  # a span processor's on_start blocked
            rt.over_budget("slow_span_start")
        elif rt.budget_streak:
            rt.budget_streak = 0
    else:
        op._parent_ctx = parent
        if attributes:
            op._span_attrs = dict(attributes)


def end(op: SyncOperation, exc: BaseException | None, end_ns: int | None = None) -> None:
    """Finish ``op``: record every metric under one lock, end or rescue its span.

    Args:
        op: The operation ``begin()`` returned.
        exc: The exception that ended it, or None.
        end_ns: When the operation ended (``time.perf_counter_ns()``), if earlier than now:
            the ASGI middleware passes the time the response was complete, so background
            tasks that ran after it (with the operation still current) are not part of its
            duration. None: now.
    """
    t2 = _perf()
    rt = op._rt
    try:
        _CURRENT.reset(op._ctx_token)  # type: ignore[arg-type]
    except ValueError:  # ended in another context (e.g. an abandoned async generator)
        _CURRENT.set(None)
    if end_ns is None:
        duration_ns = t2 - op._start_ns
        lag_ns = 0
    else:
        lag_ns = min(max(t2 - end_ns, 0), t2 - op._start_ns)
        duration_ns = t2 - lag_ns - op._start_ns
    if exc is not None:
        outcome, etype = "error", rt.error_types(error_type(exc))
    elif op._error_type is not None:
        outcome, etype = "error", op._error_type
    elif op._conflicts:
        outcome, etype = "conflict", None
    else:
        outcome, etype = "success", None

    span = op._span
    failure: Exception | None = None
    try:
        if span is not None:
            _finish_span(op, span, outcome, etype, exc)
            rt.finisher.end(span, time.time_ns() - lag_ns)
        elif op._parent_ctx is not None and (outcome != "success" or duration_ns > rt.slow_ns):
            if rt.shed_until < t2:
                _rescue(op, outcome, etype, exc, duration_ns, lag_ns)
            else:
                rt.span_shed()
    except Exception as error:  # a span processor failed; the metrics still count
        failure = error
    finally:
        if span is not None:
            detach(op._token)
    # The metrics, under one lock; the in-flight count is left whatever happens.
    try:
        series = op._series
        entity = op._entity
        if entity is not series.entity:
            series = rt.series(op.operation, entity)
        seconds = duration_ns / 1e9
        items = op._items
        others = op._entity_items and [
            (rt.series(op.operation, item_entity), change, n)
            for (item_entity, change), n in op._entity_items.items()
        ]
        observed = op._observed
        if observed is not None:  # bound before the lock: state is made under its own
            client_series = rt.state(ClientSeries)
        with rt.lock:
            if etype is not None:
                series.error(etype).record(seconds)
            elif outcome == "conflict":
                series.conflicted().record(seconds)
            else:
                series.success.record(seconds)
            if op._batch is not None:
                series.batch.record(op._batch)
            if op._idempotent:
                series.idempotency.add(1)
            if items:
                for change, n in items.items():
                    counter = series.items.get(change) or series.items_of(change)
                    counter.value += n
                    counter.touched = True
            if others:
                for other, change, n in others:
                    other.items_of(change).add(n)
            if op._conflict_detail:
                for (conflict_entity, resolution), n in op._conflict_detail.items():
                    rt.conflicts_for(conflict_entity or entity, resolution).add(n)
            if observed is not None:
                record_observed(client_series, op.operation, entity, observed)
            if op._db_queries or rt.db_instrumented:
                series.db_queries.record(op._db_queries)
                series.db_duration.record(op._db_ns / 1e9)
            series.overhead.record((op._own_ns + _perf() - t2) / 1e9)
    finally:
        op._series.inflight.pop()
    if failure is not None:
        rt.internal_error("span_end_failed", failure)


def _finish_span(
    op: SyncOperation,
    span: Span,
    outcome: str,
    etype: str | None,
    exc: BaseException | None,
) -> None:
    attrs = span._attributes  # syncperf's own values: valid by construction
    attrs["sync.outcome"] = outcome
    attrs["sync.conflicts"] = op._conflicts
    attrs["sync.idempotency.hit"] = op._idempotent
    if op._entity is not None:
        attrs["sync.entity"] = op._entity
    if op._batch is not None:
        attrs["sync.batch.size"] = op._batch
    if op._db_queries or op._rt.db_instrumented:
        attrs["sync.db.queries"] = op._db_queries
        attrs["sync.db.duration"] = op._db_ns / 1e9
    if op._items or op._entity_items:
        attrs["sync.items"] = sum((op._items or {}).values()) + sum(
            (op._entity_items or {}).values()
        )
    if etype is not None:
        attrs["error.type"] = etype
        if exc is not None:
            record_exception(span, exc, op._rt.config.record_exception_messages)
        span.set_status(Status(StatusCode.ERROR, etype))
    if op._span_attrs:  # the application's, checked
        span.set_attributes(op._span_attrs)


def _rescue(
    op: SyncOperation,
    outcome: str,
    etype: str | None,
    exc: BaseException | None,
    duration_ns: int,
    lag_ns: int = 0,
) -> None:
    """Trace an error, conflict or slow operation that head sampling dropped.

    A new root span with the operation's real start time and a link to the context it ran in;
    it ends ``lag_ns`` before now (see ``end()``).
    """
    rt = op._rt
    tracer = rt.tracing.tracer
    if tracer is None:
        return
    now = time.time_ns() - lag_ns
    parent = op._parent_ctx
    links = [Link(parent)] if parent is not None and parent.is_valid else []
    attrs: dict[str, Any] = {"sync.operation": op.operation, "syncperf.rescued": True}
    span = tracer.start_span(
        "sync " + op.operation,
        context=trace.set_span_in_context(trace.INVALID_SPAN),
        kind=op._kind,
        attributes=attrs,
        links=links,
        start_time=now - duration_ns,
    )
    _finish_span(op, span, outcome, etype, exc)
    rt.finisher.end(span, now)


# --- the context manager -------------------------------------------------------------------


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
        outer = _CURRENT.get()
        if outer is not None:
            if self._entity is not None and outer._entity is None:
                outer.set_entity(self._entity)
            self._started.append(None)
            return outer
        rt = _runtime._current or _runtime.current()
        if not rt.enabled:
            self._started.append(None)
            return _NOOP
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
    if type(operation) is not str or operation not in _valid_operations:
        operation = check_operation(operation)
    if entity is not None and (type(entity) is not str or not 0 < len(entity) <= MAX_NAME):
        # the entity is often request data: a bad one is request-time misuse, not config
        name = gate.name(entity)
        if name is None:
            rt = _runtime._current or _runtime.current()
            rt.reject("invalid_entity", "an entity: " + _NAME, entity)
        entity = name
    return OperationScope(operation, entity)
