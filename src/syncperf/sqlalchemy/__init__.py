"""SQLAlchemy instrumentation: query cost per sync operation, N+1 and slow queries, pool metrics.

Usage::

    from syncperf.sqlalchemy import instrument_engine

    engine = create_engine("postgresql+psycopg://...")     # or create_async_engine(...)
    handle = instrument_engine(engine)                      # idempotent
    ...
    handle.uninstrument()

Everything is attached to the given engine only; nothing global is patched. Queries are
timed by wrapping ``do_execute`` / ``do_executemany`` / ``do_execute_no_params`` on that
engine's own dialect instance (connection events would switch SQLAlchemy to its slower,
event-dispatching execution path: ~4.5 µs per query before any listener runs); the pool is
measured through pool events and by wrapping ``connect`` / ``recreate`` on that engine's pool
instance. An ``AsyncEngine`` is instrumented through its ``sync_engine``, once.

Per query (every query, inside a sync operation or not):

* ``db.client.operation.duration`` with ``db.system.name``, ``db.namespace``,
  ``db.operation.name``, ``db.collection.name``, ``server.address``, ``server.port``,
  ``error.type`` and ``db.response.status_code`` (failures only), recorded in syncperf's
  in-process aggregates;
* a CLIENT span, only when the current span is sampled, named ``{operation} {collection}``,
  with the sanitized statement as ``db.query.text`` (the parent's sampling decision stands).
  The request thread only notes parent, start and end; the span is built and ended by the
  span finisher thread.
  No span when OpenTelemetry's ``SQLAlchemyInstrumentor`` already made one for this query.

Per sync operation (when one is active): the query count and DB time go to the operation
(``sync.db.queries``, ``sync.db.duration``, also span attributes); the same normalized
statement executed ``n_plus_one_threshold`` times is an N+1 (``sync.db.n_plus_one``, span
event ``sync.db.n_plus_one``, rate-limited warning log); a query slower than
``slow_query_threshold`` is counted (``sync.db.slow_queries``) with a span event and a
rate-limited log.

Bound parameter values are never read. Statements are sanitized (``_sql_statement``) before
they appear on a span, an event or a log line, and no statement text is a metric attribute.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

try:
    from sqlalchemy.engine import Engine
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        f"syncperf.sqlalchemy needs SQLAlchemy ({exc.name} is missing): "
        "pip install 'syncperf[sqlalchemy]'",
        name=exc.name,
    ) from exc

from syncperf import _runtime
from syncperf._metrics.aggregates import HistogramSeries, SumSeries, freeze
from syncperf._operation import _CURRENT, SyncOperation, error_type
from syncperf._redact import status_code
from syncperf._runtime import DURATION_BOUNDS, Bounded, Runtime
from syncperf._sql import classify
from syncperf.exceptions import ConfigError
from syncperf.sqlalchemy._plans import Planner, PlanOptions, check_plans, planner_for
from syncperf.sqlalchemy._pool import PoolMetrics

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from syncperf._tracing.span import Tracer

__all__ = ["EngineInstrumentation", "PlanOptions", "instrument_engine"]

N_PLUS_ONE_THRESHOLD = 10
"""Default: executions of one normalized statement within one sync operation that make an N+1."""
SLOW_QUERY_THRESHOLD = 0.5
"""Default: seconds above which a query is slow."""
LOG_INTERVAL = 60.0
"""Default: seconds between two warning logs about the same statement."""
DB_DURATION_BOUNDS = (0.0001, 0.00025, 0.0005, *DURATION_BOUNDS)
"""Seconds: the semantic conventions' boundaries, 0.2 s / 2 s / 5 s, and sub-millisecond ones."""

_logger = logging.getLogger("syncperf.sqlalchemy")
_perf = time.perf_counter_ns
_CLIENT = SpanKind.CLIENT  # an enum member lookup costs ~70 ns
_wall = time.time_ns
_current_op = _CURRENT.get
_current_span = trace.get_current_span
_SCRATCH = "syncperf.sqlalchemy"
_MAX_STATEMENTS = 2000
_MAX_BOUND = 1000
"""Pre-bound ``db.client.operation.duration`` series one engine caches per runtime, at most.

Keys are ``(handle serial, operation, collection)``: statements differing only in inlined
literals share one; past the limit (only unbounded table names get there), series are looked up
on each query instead of cached."""
_serials = itertools.count()
_NOT_COUNTED = frozenset(
    {
        "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "SET", "RESET", "SHOW", "START",
        "END", "PRAGMA",
    }
)  # fmt: skip
"""Verbs that never make an N+1 (transaction control and session settings; unknown statements
neither: they all normalize to ``?``)."""
_SYSTEMS = {
    "postgresql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mariadb",
    "sqlite": "sqlite",
    "mssql": "microsoft.sql_server",
    "oracle": "oracle.db",
}

_instrumented: weakref.WeakKeyDictionary[Engine, EngineInstrumentation] = (
    weakref.WeakKeyDictionary()
)
_instrument_lock = threading.Lock()
_count_lock = threading.Lock()


@dataclass(frozen=True)
class _Options:
    n_plus_one_threshold: int | None
    slow_query_threshold: float | None
    pool_name: str | None
    spans: bool
    query_text: bool
    pool_metrics: bool
    log_interval: float
    plans: PlanOptions | None = None
    plans_from_config: bool = False


class _Query:
    """What syncperf knows about one statement string (cached per engine)."""

    __slots__ = ("collection", "counted", "key", "operation", "span_attrs", "span_name", "text")

    def __init__(
        self,
        key: tuple[int, str | None, str | None],
        text: str,
        operation: str | None,
        collection: str | None,
        span_name: str,
        span_attrs: dict[str, Any],
        counted: bool,
    ) -> None:
        self.key = key
        """The ``rt.cache`` key of the query's series: bounded, unlike statement strings."""
        self.text = text
        self.operation = operation
        self.collection = collection
        self.span_name = span_name
        self.span_attrs = span_attrs
        self.counted = counted


class _DeferredSpan:
    """A finished query's CLIENT span, built by the span finisher thread, not the request.

    The request thread only notes what the span needs (a few hundred nanoseconds); the
    ``SpanFinisher`` calls ``end()``, which starts the span as a child of the recorded
    parent with the recorded start time and ends it at the recorded end time. Span processors
    therefore see ``on_start`` on the finisher thread, after the fact.
    """

    __slots__ = ("_code", "_etype", "_parent", "_query", "_start", "_tracer")

    def __init__(
        self,
        tracer: Tracer,
        query: _Query,
        parent: SpanContext,
        start: int,
        etype: str | None,
        code: str | None,
    ) -> None:
        self._tracer = tracer
        self._query = query
        self._parent = parent
        self._start = start
        self._etype = etype
        self._code = code

    def end(self, end_time: int | None = None) -> None:
        query, etype = self._query, self._etype
        attrs = query.span_attrs
        if etype is not None:
            attrs = {**attrs, "error.type": etype}
            if self._code is not None:
                attrs["db.response.status_code"] = self._code
        span = self._tracer.start(
            query.span_name, self._parent, _CLIENT, attrs, start_time=self._start
        )
        if etype is not None:
            span.set_status(Status(StatusCode.ERROR, etype))
        span.end(end_time=end_time)


class _Reports:
    """Per-runtime bounds and series of the rare events (bound lazily)."""

    __slots__ = ("codes", "collections", "n_plus_one", "operations", "slow")

    def __init__(self, rt: Runtime) -> None:
        self.codes = Bounded(100, overflow="_OTHER")
        self.collections = Bounded(200)
        self.operations = Bounded(50, overflow="_OTHER")
        limit = rt.config.max_series
        self.n_plus_one = rt.registry.instrument(
            "sync.db.n_plus_one",
            "counter",
            "{detection}",
            "Statements executed at least the N+1 threshold times within one sync operation.",
            max_series=limit,
        )
        self.slow = rt.registry.instrument(
            "sync.db.slow_queries",
            "counter",
            "{query}",
            "Queries slower than the slow-query threshold.",
            max_series=limit,
        )


def _reports(rt: Runtime) -> _Reports:
    found: _Reports | None = rt.cache.get(_Reports)
    if found is None:
        found = rt.cache[_Reports] = _Reports(rt)
    return found


class EngineInstrumentation:
    """The handle ``instrument_engine()`` returns; ``uninstrument()`` removes everything.

    Attributes:
        n_plus_one_threshold: Executions of one normalized statement within one sync
            operation reported as an N+1, or None when detection is off.
        slow_query_threshold: Seconds above which a query is slow, or None when off.
        pool_name: ``db.client.connection.pool.name`` of the engine's pool metrics.
    """

    def __init__(self, engine: Engine, options: _Options) -> None:
        self._engine = weakref.ref(engine)
        self._options = options
        self.n_plus_one_threshold = options.n_plus_one_threshold
        self.slow_query_threshold = options.slow_query_threshold
        self._n1 = options.n_plus_one_threshold or 0
        slow = options.slow_query_threshold
        self._slow_ns = int(slow * 1e9) if slow is not None else 1 << 62
        self._spans = options.spans
        self._query_text = options.query_text
        self._log_interval_ns = int(options.log_interval * 1e9)
        self._next_log: dict[Any, int] = {}
        dialect = engine.dialect
        name = "mariadb" if getattr(dialect, "is_mariadb", False) else dialect.name
        self.system = _SYSTEMS.get(name, "other_sql")
        self._dialect = name
        self._base = _connection_attributes(self.system, engine.url)
        self._queries: dict[str, _Query] = {}
        self._serial = next(_serials)
        self._bound_key = (_SCRATCH, self._serial)
        self._texts: dict[str, str] = {}
        self.pool_name = options.pool_name or _pool_name(engine)
        self._pool: PoolMetrics | None = None
        if options.pool_metrics:
            self._pool = PoolMetrics(engine, self.pool_name, DB_DURATION_BOUNDS)
        self._active = False
        self._finalizer: weakref.finalize[Any, Any] | None = None
        plans: PlanOptions | bool | None = options.plans
        if options.plans_from_config:
            plans = (_runtime._current or _runtime.current()).config.plans
        self.plans: Planner | None = planner_for(engine, plans, options.log_interval)
        """The engine's query plan analysis (``plans=``), or None when off."""

    @property
    def engine(self) -> Engine | None:
        """The instrumented (sync) engine, or None once it was garbage-collected."""
        return self._engine()

    @property
    def active(self) -> bool:
        """Whether the engine is still instrumented."""
        return self._active

    # --- life cycle --------------------------------------------------------------------------

    def _install(self, engine: Engine) -> None:
        dialect = engine.dialect
        record = self._record
        for name, wrap in (
            ("do_execute", _wrap_execute),
            ("do_executemany", _wrap_execute),
            ("do_execute_no_params", _wrap_no_params),
        ):
            setattr(dialect, name, wrap(getattr(dialect, name), record))
        if self._pool is not None:
            self._pool.install(engine)
            self._pool.attach(_runtime._current or _runtime.current())
        self._active = True
        with _count_lock:
            Runtime.db_instrumented += 1
        self._finalizer = weakref.finalize(engine, _release_count)

    def uninstrument(self) -> None:
        """Remove every wrapper and listener this instrumentation added (idempotent)."""
        with _instrument_lock:
            if not self._active:
                return
            self._active = False
            engine = self._engine()
            if engine is not None:
                if _instrumented.get(engine) is self:
                    del _instrumented[engine]
                attrs = vars(engine.dialect)
                for name in ("do_execute", "do_executemany", "do_execute_no_params"):
                    if getattr(attrs.get(name), "_syncperf_record", None) == self._record:
                        del attrs[name]
            if self._pool is not None:
                self._pool.uninstall()
            if self.plans is not None:
                self.plans.close()
            if self._finalizer is not None:
                self._finalizer()

    def _attach_runtime(self, rt: Runtime) -> None:
        if self._active and self._pool is not None:
            self._pool.attach(rt)
        engine = self._engine()
        if self._active and self._options.plans_from_config and engine is not None:
            if self.plans is not None:
                self.plans.close()
            self.plans = planner_for(engine, rt.config.plans, self._options.log_interval)

    # --- the hot path --------------------------------------------------------------------------

    def _record(
        self, statement: str, t1: int, duration_ns: int, error: BaseException | None, context: Any
    ) -> None:
        rt = _runtime._current or _runtime.current()
        if not rt.enabled:
            return
        try:
            query = self._queries.get(statement)
            if query is None:
                query = self._classify(statement)
            etype = code = None
            if error is None:
                series: HistogramSeries | None = rt.cache.get(query.key)
                if series is None:
                    series = self._bind(rt, query, None)
            else:
                etype = rt.error_types(error_type(error))
                code = status_code(error)
                if code is not None:
                    code = _reports(rt).codes(code)
                series = rt.cache.get((query.key, etype, code)) or self._bind(
                    rt, query, etype, code
                )
            if self._spans:
                tracing = rt.tracing
                if tracing.active or t1 >= tracing.next_check:
                    parent = _current_span().get_span_context()
                    if (
                        parent.trace_flags & 1  # sampled
                        and getattr(context, "_otel_span", None) is None  # contrib has one
                    ):
                        if rt.shed_until < t1:
                            self._span(rt, query, duration_ns, etype, code, t1, parent)
                        else:  # syncperf is shedding: not made, but counted
                            rt.span_shed()
            op = _current_op()
            detected = 0
            if op is not None:
                op.add_db_time(duration_ns)
                plans = self.plans
                if plans is not None and t1 >= plans.due.get(query.text, 0):
                    plans.offer(statement, query, op, context, t1)
                if self._n1 and query.counted:
                    scratch = op.scratch
                    if scratch is None:
                        counts: dict[str, int] = {}
                        op.scratch = {_SCRATCH: counts}
                    else:
                        counts = scratch.get(_SCRATCH)  # type: ignore[assignment]
                        if counts is None:
                            counts = scratch[_SCRATCH] = {}
                    detected = counts.get(query.text, 0) + 1
                    counts[query.text] = detected
            overhead = rt.overhead_for("sqlalchemy")
            own = _perf() - t1
            with rt.lock:
                series.record(duration_ns / 1e9)
                overhead.record(own / 1e9)
            if detected and detected == self._n1 and op is not None:
                self._n_plus_one(rt, op, query, detected)
            if duration_ns >= self._slow_ns:
                self._slow_query(rt, op, query, duration_ns)
        except Exception as failure:
            rt.internal_error("sqlalchemy_hook_failed", failure)

    # --- off the common path -----------------------------------------------------------------

    def _classify(self, statement: str) -> _Query:
        found = classify(statement, dialect=self._dialect)
        text = self._texts.get(found.text)
        if text is None:
            if len(self._texts) >= _MAX_STATEMENTS:
                self._texts.clear()
            text = self._texts[found.text] = sys.intern(found.text)
        operation, collection = found.operation, found.collection
        span_attrs = dict(self._base)
        if operation is not None:
            span_attrs["db.operation.name"] = operation
        if collection is not None:
            span_attrs["db.collection.name"] = collection
        if self._query_text:
            span_attrs["db.query.text"] = text
        if operation is None:
            span_name = self.system
        elif collection is None:
            span_name = operation
        else:
            span_name = f"{operation} {collection}"
        query = _Query(
            (self._serial, operation, collection),
            text,
            operation,
            collection,
            span_name,
            span_attrs,
            operation is not None and operation not in _NOT_COUNTED,
        )
        if len(self._queries) >= _MAX_STATEMENTS:  # e.g. literals inlined into statements
            self._queries.clear()
        self._queries[statement] = query
        return query

    def _bind(
        self, rt: Runtime, query: _Query, etype: str | None, code: str | None = None
    ) -> HistogramSeries:
        reports = _reports(rt)
        attrs: dict[str, Any] = dict(self._base)
        if query.operation is not None:
            attrs["db.operation.name"] = reports.operations(query.operation)
        if query.collection is not None:
            attrs["db.collection.name"] = reports.collections(query.collection)
        if etype is not None:
            attrs["error.type"] = etype
        if code is not None:
            attrs["db.response.status_code"] = code
        instrument = rt.registry.instrument(
            "db.client.operation.duration",
            "histogram",
            "s",
            "Duration of database client operations.",
            bounds=DB_DURATION_BOUNDS,
            max_series=rt.config.max_series,
        )
        with rt.lock:
            series = instrument.histogram(freeze(attrs))
        bound: int = rt.cache.get(self._bound_key, 0)
        if bound < _MAX_BOUND:  # a racing thread may add one more: still bounded
            rt.cache[self._bound_key] = bound + 1
            rt.cache[query.key if etype is None else (query.key, etype, code)] = series
        return series

    def _span(
        self,
        rt: Runtime,
        query: _Query,
        duration_ns: int,
        etype: str | None,
        code: str | None,
        t1: int,
        parent: SpanContext,
    ) -> None:
        tracing = rt.tracing
        if not tracing.active:
            tracing.resolve(t1)
        tracer = tracing.tracer
        if not tracing.active or tracer is None:
            return
        end = _wall()
        deferred = _DeferredSpan(tracer, query, parent, end - duration_ns, etype, code)
        rt.finisher.end(deferred, end)

    def _n_plus_one(self, rt: Runtime, op: SyncOperation, query: _Query, count: int) -> None:
        reports = _reports(rt)
        attrs: dict[str, str | bool] = {"sync.operation": op.operation}
        if op.entity is not None:
            attrs["sync.entity"] = op.entity
        if query.collection is not None:
            attrs["db.collection.name"] = reports.collections(query.collection)
        with rt.lock:
            series: SumSeries = reports.n_plus_one.sum(freeze(attrs))
            series.add(1)
        event_attrs: dict[str, Any] = {
            "db.query.text": query.text,
            "sync.db.n_plus_one.executions": count,
        }
        if query.operation is not None:
            event_attrs["db.operation.name"] = query.operation
        if query.collection is not None:
            event_attrs["db.collection.name"] = query.collection
        op.span.add_event("sync.db.n_plus_one", event_attrs)
        detections = self._bump(op, "n_plus_one")
        op.set_attribute("sync.db.n_plus_one", detections)
        if self._may_log(("n+1", op.operation, op.entity, query.text)):
            entity = f" (entity {op.entity})" if op.entity else ""
            _logger.warning(
                "syncperf: N+1 queries in sync %s%s: %s executed %d times within one "
                "operation; batch it (one IN (...) query, selectinload, a bulk insert)",
                op.operation,
                entity,
                query.text,
                count,
            )

    def _slow_query(
        self, rt: Runtime, op: SyncOperation | None, query: _Query, duration_ns: int
    ) -> None:
        reports = _reports(rt)
        attrs: dict[str, str | bool] = {}
        if query.operation is not None:
            attrs["db.operation.name"] = reports.operations(query.operation)
        if query.collection is not None:
            attrs["db.collection.name"] = reports.collections(query.collection)
        with rt.lock:
            series: SumSeries = reports.slow.sum(freeze(attrs))
            series.add(1)
        seconds = duration_ns / 1e9
        event_attrs: dict[str, Any] = {
            "db.system.name": self.system,
            "db.query.text": query.text,
            "sync.db.query.duration": seconds,
            "sync.db.slow_query.threshold": self._slow_ns / 1e9,
        }
        if query.operation is not None:
            event_attrs["db.operation.name"] = query.operation
        if query.collection is not None:
            event_attrs["db.collection.name"] = query.collection
        span = op.span if op is not None else _current_span()
        span.add_event("sync.db.slow_query", event_attrs)
        where = ""
        if op is not None:
            op.set_attribute("sync.db.slow_queries", self._bump(op, "slow"))
            where = f" in sync {op.operation}" + (f" (entity {op.entity})" if op.entity else "")
        if self._may_log(("slow", query.text)):
            _logger.warning(
                "syncperf: slow query%s: %.3f s (threshold %.3f s): %s",
                where,
                seconds,
                self._slow_ns / 1e9,
                query.text,
            )

    @staticmethod
    def _bump(op: SyncOperation, what: str) -> int:
        scratch = op.scratch
        if scratch is None:
            scratch = op.scratch = {}
        key = (_SCRATCH, what)
        count: int = scratch.get(key, 0) + 1  # type: ignore[call-overload]
        scratch[key] = count  # type: ignore[index]
        return count

    def _may_log(self, key: Any) -> bool:
        """At most one log line per key per ``log_interval`` seconds."""
        now = _perf()
        if now < self._next_log.get(key, 0):
            return False
        if len(self._next_log) >= 1000:
            self._next_log.clear()
        self._next_log[key] = now + self._log_interval_ns
        return True

    def __repr__(self) -> str:
        state = "active" if self._active else "removed"
        return f"<EngineInstrumentation {self.pool_name} {state}>"


def instrument_engine(
    engine: Any,
    *,
    n_plus_one_threshold: int | None = N_PLUS_ONE_THRESHOLD,
    slow_query_threshold: float | None = SLOW_QUERY_THRESHOLD,
    pool_name: str | None = None,
    spans: bool = True,
    query_text: bool = True,
    pool_metrics: bool = True,
    log_interval: float = LOG_INTERVAL,
    plans: bool | PlanOptions | None = None,
) -> EngineInstrumentation:
    """Instrument one SQLAlchemy ``Engine`` or ``AsyncEngine`` (idempotent).

    Args:
        engine: The engine; an ``AsyncEngine`` is instrumented through its ``sync_engine``.
        n_plus_one_threshold: Executions of one normalized statement within one sync
            operation that are reported as an N+1 (an int >= 2), or None to turn detection off.
        slow_query_threshold: Seconds above which a query is slow (> 0), or None for off.
        pool_name: ``db.client.connection.pool.name``; defaults to the pool's
            ``logging_name`` or ``{backend}://{host}:{port}/{database}`` (never credentials).
        spans: Make a CLIENT span per query when the current span is sampled.
        query_text: Put the sanitized statement on spans as ``db.query.text``.
        pool_metrics: Report ``db.client.connection.*`` for the engine's pool.
        log_interval: Seconds between two warnings about the same statement (>= 0).
        plans: Read the query plans of sync statements (docs/plans.md): True for the
            default ``PlanOptions()``, a ``PlanOptions`` to tune them, False for off, or
            None to follow ``configure(plans=...)`` / ``SYNCPERF_PLANS`` (default off).

    Returns:
        The handle; ``handle.uninstrument()`` removes the instrumentation. Instrumenting an
        engine again returns the same handle.

    Raises:
        ConfigError: an argument is not accepted, or the engine is already instrumented with
            other options.
    """
    sync_engine = getattr(engine, "sync_engine", engine)
    if not isinstance(sync_engine, Engine):
        raise ConfigError("engine", engine, "a sqlalchemy Engine or AsyncEngine")
    options = _Options(
        _check_threshold(n_plus_one_threshold),
        _check_seconds("slow_query_threshold", slow_query_threshold, allow_none=True),
        _check_name(pool_name),
        check_bool("spans", spans),
        check_bool("query_text", query_text),
        check_bool("pool_metrics", pool_metrics),
        _check_interval(log_interval),
        check_plans(sync_engine, plans),
        plans is None,
    )
    with _instrument_lock:
        existing = _instrumented.get(sync_engine)
        if existing is not None:
            if existing._options != options:
                raise ConfigError(
                    "engine",
                    engine,
                    "an engine not yet instrumented with other options "
                    "(call uninstrument() on its handle first)",
                )
            return existing
        handle = EngineInstrumentation(sync_engine, options)
        handle._install(sync_engine)
        _instrumented[sync_engine] = handle
    return handle


# --- dialect wrappers ------------------------------------------------------------------------
# The engine's own dialect instance gets these as instance attributes: every cursor execution of
# that engine (and of engines derived with execution_options()) passes through them, and nothing
# else does. Connection events would cost ~4.5 µs per query: one listener switches SQLAlchemy's
# whole execution path to its event-dispatching variant.

Record = Callable[[str, int, int, "BaseException | None", Any], None]


def _wrap_execute(original: Callable[..., Any], record: Record) -> Callable[..., Any]:
    """``do_execute`` / ``do_executemany``: ``(cursor, statement, parameters, context)``."""

    def execute(cursor: Any, statement: str, parameters: Any, context: Any = None) -> Any:
        t0 = _perf()
        try:
            result = original(cursor, statement, parameters, context)
        except BaseException as error:
            t1 = _perf()
            record(statement, t1, t1 - t0, error, context)
            raise
        t1 = _perf()
        record(statement, t1, t1 - t0, None, context)
        return result

    execute._syncperf_record = record  # type: ignore[attr-defined]
    execute.__wrapped__ = original  # type: ignore[attr-defined]
    return execute


def _wrap_no_params(original: Callable[..., Any], record: Record) -> Callable[..., Any]:
    """``do_execute_no_params``: ``(cursor, statement, context)``."""

    def execute(cursor: Any, statement: str, context: Any = None) -> Any:
        t0 = _perf()
        try:
            result = original(cursor, statement, context)
        except BaseException as error:
            t1 = _perf()
            record(statement, t1, t1 - t0, error, context)
            raise
        t1 = _perf()
        record(statement, t1, t1 - t0, None, context)
        return result

    execute._syncperf_record = record  # type: ignore[attr-defined]
    execute.__wrapped__ = original  # type: ignore[attr-defined]
    return execute


# --- helpers ---------------------------------------------------------------------------------


def _release_count() -> None:
    """Undo one ``Runtime.db_instrumented`` increment (uninstrument or engine collected).

    Runs through a ``weakref.finalize``, hence at most once per instrumentation.
    """
    with _count_lock:
        Runtime.db_instrumented -= 1


def _on_new_runtime(rt: Runtime) -> None:
    for handle in list(_instrumented.values()):
        handle._attach_runtime(rt)


_runtime.RUNTIME_HOOKS.append(_on_new_runtime)


def _connection_attributes(system: str, url: URL) -> dict[str, Any]:
    attrs: dict[str, Any] = {"db.system.name": system}
    database = url.database
    if database and database != ":memory:":
        attrs["db.namespace"] = database
    if url.host:
        attrs["server.address"] = url.host
    if url.port:
        attrs["server.port"] = int(url.port)
    return attrs


def _pool_name(engine: Engine) -> str:
    logging_name = getattr(engine.pool, "logging_name", None)
    if isinstance(logging_name, str) and logging_name:
        return logging_name
    url = engine.url
    host = url.host or ""
    if host and url.port:
        host = f"{host}:{url.port}"
    return f"{url.get_backend_name()}://{host}/{url.database or ''}"


def _check_threshold(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ConfigError("n_plus_one_threshold", value, "an integer >= 2, or None")
    return value


def _check_seconds(option: str, value: object, *, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or value == float("inf")
    ):
        raise ConfigError(
            option, value, "a number of seconds > 0" + (", or None" if allow_none else "")
        )
    return float(value)


def _check_interval(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value >= 0
        or value == float("inf")
    ):
        raise ConfigError("log_interval", value, "a number of seconds >= 0")
    return float(value)


def _check_name(value: object) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    raise ConfigError("pool_name", value, "a non-empty string or None")


def check_bool(option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(option, value, "True or False")
    return value
