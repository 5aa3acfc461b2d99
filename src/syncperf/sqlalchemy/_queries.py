"""Per-query recording for one engine: duration metric, CLIENT span, N+1 and slow queries.

``QueryRecorder.record`` runs after every cursor execution of the engine (through the dialect
wrappers below). It looks the statement up in a per-engine cache of classified statements
(a bulk insert's page: its single-row statement), records ``db.client.operation.duration``
into a pre-bound series (``QuerySeries``, one per engine and runtime), notes a CLIENT span for
the span finisher when the current span is sampled, and counts the statement within the current
sync operation for N+1 detection.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine.interfaces import ExecuteStyle

from syncperf import _runtime
from syncperf._evicting import Evicting
from syncperf._gate import error_type
from syncperf._metrics import catalogue
from syncperf._metrics.aggregates import freeze
from syncperf._metrics.batches import FOLD_AT, Batch, batches
from syncperf._operation import active_operation
from syncperf._redact import status_code
from syncperf._runtime import Runtime
from syncperf._sql import MAX_LEXED, classify
from syncperf._sql_comments import Bare
from syncperf._sql_lex import Lexed
from syncperf._tracing.current import current_span as _current_span
from syncperf.sqlalchemy._detections import MAX_TRACKED, SCRATCH, DetectionSeries, Detector
from syncperf.sqlalchemy._ends import FAILED as _FAILED
from syncperf.sqlalchemy._ends import NAMES, ends, wrap_end
from syncperf.sqlalchemy._names import connection_attributes
from syncperf.sqlalchemy._spans import DeferredSpan

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from syncperf._operation import SyncOperation
    from syncperf.sqlalchemy._plans import Planner


_perf = time.perf_counter_ns
_wall = time.time_ns
_MAX_STATEMENTS = 2000
_MAX_LONG = 64
"""Statements longer than ``MAX_LEXED`` (4 KiB) one engine keeps, by their first ``MAX_LEXED``
characters (all classification lexes of them) with their length and hash (their batch is
counted over the whole, and N+1 detection tells them apart): distinct megabyte statements
never sit in the cache whole."""
_MAX_BOUND = 1000
"""Pre-bound ``db.client.operation.duration`` series one engine keeps per runtime, at most.

Keys are ``(operation, collection)``: statements differing only in inlined literals share one;
past the limit (only unbounded table names get there), series are looked up on each query
instead of kept."""
_serials = itertools.count()
_NOT_COUNTED = frozenset({
    "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "SET", "RESET", "SHOW", "START",
    "END", "PRAGMA", "PREPARE",
})  # fmt: skip
"""Verbs that never make an N+1 (transaction control, ``PREPARE``, session settings; unknown
statements neither: they all normalize to ``?``)."""
_BATCH = 10
"""Values in one ``IN`` list (or rows in one ``VALUES``) from which a statement is a batch, never
an N+1 execution: SQLAlchemy pages selectinload (500 keys a query) and bulk inserts, and an
application pages its own batches; a loop over items sends a few keys each."""
_BULK = frozenset({ExecuteStyle.EXECUTEMANY, ExecuteStyle.INSERTMANYVALUES})
"""Execute styles that are batches whatever their ``VALUES`` hold, never an N+1 execution: an
``executemany`` (one placeholder row, many rows of parameters: SQLAlchemy's, or an application's
own chunks) and a page of SQLAlchemy's bulk insert ("insertmanyvalues": one row a page on
SQLite)."""
_PAGES = ExecuteStyle.INSERTMANYVALUES
"""A page of a bulk insert: classified, and cached, as the single-row statement SQLAlchemy
compiled (``context.statement``), which the page repeats once per row. Pages of every size are
one statement (classification sanitizes at ~1 µs a character, up to ``MAX_LEXED``) and are not
kept (up to 1,000 rows a page)."""
_SYSTEMS = {
    "postgresql": "postgresql", "mysql": "mysql", "mariadb": "mariadb", "sqlite": "sqlite",
    "mssql": "microsoft.sql_server", "oracle": "oracle.db",
}  # fmt: skip


class Query:
    """What syncperf knows about one statement string (cached per engine)."""

    __slots__ = (
        "collection", "counted", "key", "operation", "repeat", "several", "span_attrs",
        "span_name", "text",
    )  # fmt: skip

    def __init__(
        self,
        text: str,
        operation: str | None,
        collection: str | None,
        span_name: str,
        span_attrs: dict[str, Any],
        counted: bool,
        several: bool = False,
        repeat: Any = None,
    ) -> None:
        self.key = (operation, collection)
        """The key of the query's series in ``QuerySeries``: bounded, unlike statements."""
        self.text = text
        self.operation = operation
        self.collection = collection
        self.span_name = span_name
        self.span_attrs = span_attrs
        self.counted = counted
        self.several = several
        """More than one statement (``a; b``): never explained, the EXPLAIN would run ``b``."""
        self.repeat = text if repeat is None else repeat
        """What N+1 detection counts repeats of: the text, or for a statement longer than the
        sanitizer reads, the text with the whole statement's length and hash (statements that
        share the prefix read are not one statement repeated)."""


class QuerySeries:
    """The pre-bound series one engine records its queries into on one runtime
    (``rt.state(QuerySeries, engine serial)``)."""

    __slots__ = ("batches", "detections", "durations", "instrument", "overhead", "rt")

    def __init__(self, rt: Runtime | None) -> None:
        self.rt = rt
        """The runtime these series belong to (None: the recorder's placeholder)."""
        if rt is None:
            return
        self.durations: dict[Any, Batch] = {}
        """``db.client.operation.duration`` by ``Query.key`` (and error type and code), each
        batched with the ``syncperf.overhead`` series: an entry is ``(duration, own time)``."""
        self.instrument = catalogue.DB_OPERATION_DURATION.create(
            rt.registry, max_series=rt.config.max_series
        )
        self.overhead = rt.overhead_for("sqlalchemy")
        self.batches = rt.state(batches)
        self.detections = rt.state(DetectionSeries)


class QueryRecorder:
    """Records every query of one engine (``record`` is the dialect wrappers' callback)."""

    def __init__(
        self,
        engine: Engine,
        *,
        n_plus_one_threshold: int | None,
        slow_query_threshold: float | None,
        spans: bool,
        query_text: bool,
        log_interval: float,
    ) -> None:
        dialect = engine.dialect
        name = "mariadb" if getattr(dialect, "is_mariadb", False) else dialect.name
        self.system = _SYSTEMS.get(name, "other_sql")
        self._detector = detector = Detector(
            self.system, n_plus_one_threshold, slow_query_threshold, log_interval
        )
        self._n1 = detector.n_plus_one_threshold
        self._slow_ns = detector.slow_ns
        self._spans = spans
        self._query_text = query_text
        self._dialect = name
        self._base = connection_attributes(self.system, engine.url)
        self._statements: Evicting[str, Query] = Evicting(_MAX_STATEMENTS)
        self._queries = self._statements.hot  # a hit: one ``dict.get``
        self._long: Evicting[tuple[str, int, int], Query] = Evicting(_MAX_LONG)
        self._bare: Bare[Query] = Bare(name, _MAX_STATEMENTS)  # sqlcommenter: one per request
        self.serial = next(_serials)
        """Tells this engine's ``QuerySeries`` apart on a runtime."""
        self._texts: dict[str, str] = {}
        self._held = QuerySeries(None)
        """The ``QuerySeries`` of the runtime that recorded last (one attribute read)."""
        self._other = Query("?", None, None, self.system, dict(self._base), False)  # not a str
        self.plans: Planner | None = None
        """Query plans of sync statements (``plans=``), or None when off."""

    # --- dialect wrappers ----------------------------------------------------------------
    # The engine's own dialect instance gets these as instance attributes: every cursor
    # execution of that engine (and of engines derived with execution_options()) passes
    # through them, and nothing else does. Connection events would cost ~4.5 µs per query:
    # one listener switches SQLAlchemy's whole execution path to its event-dispatching variant.

    def install(self, dialect: Any) -> None:
        """Wrap ``do_execute`` / ``do_executemany`` / ``do_execute_no_params`` of ``dialect``,
        and the methods that end a transaction past them (``syncperf.sqlalchemy._ends``)."""
        for name, with_params in _WRAPPED:
            setattr(dialect, name, self._wrap(getattr(dialect, name), with_params))
        for name, statement in ends(dialect):
            original = getattr(dialect, name)
            end = wrap_end(self._wrap, original, name, statement)
            end._syncperf_recorder = self
            end.__wrapped__ = original
            setattr(dialect, name, end)

    def uninstall(self, dialect: Any) -> None:
        """Remove this recorder's wrappers from ``dialect`` (not another recorder's)."""
        attrs = vars(dialect)
        for name in (*(name for name, _ in _WRAPPED), *NAMES):
            if getattr(attrs.get(name), "_syncperf_recorder", None) is self:
                del attrs[name]

    # --- the hot path ----------------------------------------------------------------------

    def _wrap(self, original: Callable[..., Any], with_params: bool) -> Callable[..., Any]:
        """The wrapper of one dialect method: times the call and records the query.

        ``do_execute`` / ``do_executemany`` take ``(cursor, statement, parameters, context)``,
        ``do_execute_no_params`` ``(cursor, statement, context)``. What every query needs runs
        in this one frame (a Python call costs as much as the rest of the recording); the rare
        cases (a new statement or runtime, a failure, a span, a sync operation) call methods.
        The duration and syncperf's own time go to the series' batch in one atomic extend,
        without a lock (``syncperf._metrics.batches``).
        """
        queries = self._queries
        recorder = self
        spans = self._spans
        slow_ns = self._slow_ns

        def execute(
            cursor: Any, statement: str, parameters: Any = None, context: Any = None
        ) -> Any:
            error: BaseException | None = None
            t0 = _perf()
            try:
                if with_params:
                    return original(cursor, statement, parameters, context)
                if context is None:  # ``(cursor, statement, context)``, given by position
                    context = parameters
                return original(cursor, statement, context)
            except BaseException as raised:
                error = raised
                raise
            finally:
                t1 = _perf()
                rt = _runtime.installed or _runtime.current()
                if rt.enabled:
                    try:
                        try:
                            query = queries.get(statement) or recorder._classify(statement, context)
                        except TypeError:  # unhashable, not a str (psycopg's ``sql.Composed``)
                            query = recorder._classify(statement, context)
                        held = recorder._held
                        if held.rt is not rt:  # another runtime (configure(), capture())
                            held = recorder._held = rt.state(QuerySeries, recorder.serial)
                        if error is None:
                            batch = held.durations.get(query.key) or recorder._bind(
                                rt, held, query, None, None
                            )
                            etype = code = None
                        else:
                            batch, etype, code = recorder._failed(rt, held, query, error)
                        if spans:
                            tracing = rt.tracing
                            if tracing.active or (t1 >= tracing.next_check and tracing.due(t1)):
                                recorder._traced(rt, query, t1 - t0, etype, code, context)
                        op = active_operation()
                        if op is not None and op._ended:  # outlived by this task: not its
                            op = None
                        if op is not None:
                            recorder._in_operation(rt, held, op, statement, query, t0, t1, context)
                        values = batch.values
                        values += (t1 - t0, _perf() - t1)
                        if len(values) >= FOLD_AT:
                            batch.fold_now()
                        if t1 - t0 >= slow_ns:
                            recorder._detector.slow_query(rt, held.detections, op, query, t1 - t0)
                    except Exception as failure:
                        rt.internal_error(_FAILED, failure)
                error = None  # no cycle through the traceback

        execute._syncperf_recorder = self  # type: ignore[attr-defined]
        execute.__wrapped__ = original  # type: ignore[attr-defined]
        return execute

    def _failed(
        self, rt: Runtime, held: QuerySeries, query: Query, error: BaseException
    ) -> tuple[Batch, str, str | None]:
        """The batch of a failed query, its ``error.type`` and ``db.response.status_code``."""
        etype = rt.error_types(error_type(error))
        code = status_code(error)
        if code is not None:
            code = held.detections.codes(code)
        batch = held.durations.get((query.key, etype, code)) or self._bind(
            rt, held, query, etype, code
        )
        return batch, etype, code

    def _traced(
        self,
        rt: Runtime,
        query: Query,
        duration_ns: int,
        etype: str | None,
        code: str | None,
        context: Any,
    ) -> None:
        """Note a CLIENT span for the query when the current span is sampled."""
        parent = _current_span().get_span_context()
        if not parent.trace_flags & 1 or getattr(context, "_otel_span", None) is not None:
            return  # not sampled, or contrib's instrumentation made one
        if rt.shed_until >= _perf():  # syncperf is shedding: not made, but counted
            rt.span_shed()
            return
        tracer = rt.tracing.tracer
        if tracer is None:
            return
        end = _wall()
        deferred = DeferredSpan(tracer, query, parent, end - duration_ns, etype, code)
        rt.finisher.end(deferred, end)

    def _in_operation(
        self,
        rt: Runtime,
        held: QuerySeries,
        op: SyncOperation,
        statement: str,
        query: Query,
        t0: int,
        t1: int,
        context: Any,
    ) -> None:
        """The query's share of the current sync operation: DB time, plans, N+1."""
        op.add_db_time(t1 - t0)
        plans = self.plans
        if plans is not None and t1 >= plans.due.get(query.text, 0):
            plans.offer(statement, query, op, context, t1)
        if self._n1 and query.counted and getattr(context, "execute_style", None) not in _BULK:
            scratch = op.scratch
            if scratch is None:
                scratch = op.scratch = {}
            counts: dict[Any, int] | None = scratch.get(SCRATCH)
            if counts is None:
                counts = scratch[SCRATCH] = {}
            detected = counts.get(query.repeat, 0) + 1
            if detected == 1 and len(counts) >= MAX_TRACKED:  # bounded: not tracked
                self._detector.untracked(rt)
            else:
                counts[query.repeat] = detected
                if detected == self._n1:
                    self._detector.n_plus_one(rt, held.detections, op, query, detected)

    # --- off the common path -----------------------------------------------------------------

    def _classify(self, statement: str, context: Any = None, tokens: Lexed = None) -> Query:
        if not isinstance(statement, str):  # psycopg's ``sql.Composed``: unknown, text unread
            return self._other
        if getattr(context, "execute_style", None) is _PAGES:
            single = getattr(context, "statement", None)
            if isinstance(single, str) and single != statement:
                return self._queries.get(single) or self._classify(single)
        if (bare := self._bare.find(statement, self._classify)) is not None:
            return bare  # without its comments: kept by the bare text, not this one
        cache: Evicting[Any, Query] = self._statements
        key: Any = statement
        repeat = None
        if len(statement) > MAX_LEXED:  # kept by its prefix and a hash: never whole
            repeat = (len(statement), hash(statement))
            cache, key = self._long, (statement[:MAX_LEXED], *repeat)
        if (held := cache.hot.get(key) or cache.recall(key, None)) is not None:  # set aside
            return held
        found = classify(statement, dialect=self._dialect, tokens=tokens)
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
        span_name = operation or self.system
        if operation is not None and collection is not None:
            span_name = f"{operation} {collection}"
        query = Query(
            text,
            operation,
            collection,
            span_name,
            span_attrs,
            operation is not None and operation not in _NOT_COUNTED and found.batch < _BATCH,
            found.several,
            text if repeat is None else (text, *repeat),
        )
        cache.put(key, query)  # bounded: e.g. literals inlined into statements
        return query

    def _bind(
        self, rt: Runtime, held: QuerySeries, query: Query, etype: str | None, code: str | None
    ) -> Batch:
        detections = held.detections
        attrs: dict[str, Any] = dict(self._base)
        if query.operation is not None:
            attrs["db.operation.name"] = detections.operations(query.operation)
        if query.collection is not None:
            attrs["db.collection.name"] = detections.collections(query.collection)
        if etype is not None:
            attrs["error.type"] = etype
        if code is not None:
            attrs["db.response.status_code"] = code
        with rt.lock:
            series = held.batches.of(held.instrument.histogram(freeze(attrs)), held.overhead)
        durations = held.durations
        if len(durations) < _MAX_BOUND:  # a racing thread may add one more: still bounded
            durations[query.key if etype is None else (query.key, etype, code)] = series
        return series


_WRAPPED = (("do_execute", True), ("do_executemany", True), ("do_execute_no_params", False))
"""The dialect methods wrapped, and whether they take parameters."""
