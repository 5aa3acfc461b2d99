"""Query plans of sync statements: one EXPLAIN per statement shape and interval, off the request.

The request thread only decides (one dict lookup per query inside a sync operation) whether the
statement's shape is due; when it is and the per-minute budget allows, it hands the statement
and a copy of its parameters to a bounded queue. A daemon worker per engine takes a connection
from the engine's pool (``engine.connect()``: the application's own connect events,
search_path and credentials apply; an async engine gets the worker's own event loop and a
one-connection pool the engine's pool makes) and, on the raw DBAPI cursor (the EXPLAIN is not
measured as an application query), in a transaction it always rolls back (``BEGIN`` first on
a connection in autocommit mode), runs:

* PostgreSQL: ``statement_timeout`` / ``lock_timeout`` for that transaction only, then
  ``EXPLAIN (FORMAT JSON, VERBOSE) <statement>`` with the statement's own parameters. Never
  ``ANALYZE``: the statement is planned, not executed.
* SQLite (file databases): ``EXPLAIN QUERY PLAN <statement>``.

Parameters live in memory until the EXPLAIN returns; they are never exported, logged or put on
a span, and neither is the plan itself (its filter and index conditions quote them). What leaves
the process is the finding kind, table names, estimated rows and costs, and the statement's
sanitized shape. docs/plans.md has the whole story.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from syncperf import _runtime
from syncperf._config import MAX_TTL, check_float, check_int
from syncperf._forklocks import renew_in_child
from syncperf._gate import not_quoted
from syncperf._metrics import catalogue
from syncperf._metrics.aggregates import freeze
from syncperf._runtime import Runtime
from syncperf.exceptions import ConfigError
from syncperf.sqlalchemy._detections import DetectionSeries
from syncperf.sqlalchemy._explain import AsyncConnection, Finding, read_postgresql, read_sqlite

if TYPE_CHECKING:
    from opentelemetry.trace import Span
    from sqlalchemy.engine import Engine

__all__ = ["PlanOptions", "Planner", "check_plans", "planner_for"]

_logger = logging.getLogger("syncperf.sqlalchemy")
_perf = time.perf_counter_ns
_NEVER = 1 << 62
_MINUTE = 60_000_000_000
_MAX_SHAPES = 2000
_IDLE = 30.0
"""Seconds the worker waits for a statement before it closes an async engine's own connection
(whose pool holds the engine through its connect events) and checks the engine still exists."""
EXPLAINED = frozenset({"SELECT", "UPDATE", "DELETE"})
"""Verbs whose plans are read. ``INSERT ... VALUES`` plans scan nothing; transaction control
and session settings have none."""


@dataclass(frozen=True)
class PlanOptions:
    """Settings of plan analysis: ``instrument_engine(engine, plans=PlanOptions(...))``.

    Attributes:
        interval: Seconds between two EXPLAINs of one statement shape on one engine.
        max_per_minute: EXPLAINs one engine runs per minute at most, whatever the shapes.
        rows: The planner's row estimate of a table above which a sequential scan of it is a
            finding; also the sorted rows above which a sort is one.
        cost_jump: Factor by which a shape's estimated total cost must grow against its
            previous plan to be a ``cost_jump`` finding.
        timeout: Seconds: ``statement_timeout`` and ``lock_timeout`` of each EXPLAIN.
        queue_size: Statements waiting for the worker; past it they are dropped and counted
            (``syncperf.dropped{syncperf.reason="plan_queue_full"}``).
    """

    interval: float = 300.0
    max_per_minute: int = 30
    rows: int = 10_000
    cost_jump: float = 10.0
    timeout: float = 1.0
    queue_size: int = 64

    def __post_init__(self) -> None:
        check_float("interval", self.interval, low=0.0, high=MAX_TTL)
        check_int("max_per_minute", self.max_per_minute, minimum=1)
        check_int("rows", self.rows, minimum=1)
        check_float("cost_jump", self.cost_jump, low=1.0, high=sys.float_info.max, open_low=True)
        check_float("timeout", self.timeout, low=0.0, high=3600.0, open_low=True)
        check_int("queue_size", self.queue_size, minimum=1)


@dataclass
class _Job:
    statement: str
    parameters: Any = field(repr=False)
    shape: str
    collection: str | None
    operation: str
    entity: str | None
    span: Span
    time_ns: int


class _Reports:
    """Per-runtime ``sync.db.plan.findings``; tables bounded as ``DetectionSeries``'s."""

    def __init__(self, rt: Runtime) -> None:
        self.tables = rt.state(DetectionSeries).collections
        self.findings = catalogue.SYNC_DB_PLAN_FINDINGS.create(
            rt.registry, max_series=rt.config.max_series
        )


class Planner:
    """Plans of one engine's sync statements (made by ``instrument_engine(plans=...)``).

    Attributes:
        options: The settings.
        explained: EXPLAINs run so far.
        capped: Times a due shape waited because the minute's budget was spent.
        deferred: Plans put off because the engine's pool had no connection to spare.
    """

    def __init__(self, engine: Engine, options: PlanOptions, log_interval: float) -> None:
        self.options = options
        self._engine = weakref.ref(engine)
        self._sqlite = engine.dialect.name == "sqlite"
        self._async = AsyncConnection() if getattr(engine.dialect, "is_async", False) else None
        self._interval_ns = int(options.interval * 1e9)
        self._log_interval_ns = int(log_interval * 1e9)
        self.due: dict[str, int] = {}
        """When each statement shape is next due (``perf_counter_ns``)."""
        self._costs: dict[str, float] = {}
        self._next_log: dict[str, int] = {}
        self._lock = threading.Lock()  # the request thread's, and the worker's
        renew_in_child(self, "_lock")
        self._minute, self._spent = -1, 0
        self._queue: queue.Queue[_Job | None] = queue.Queue(options.queue_size)
        self._thread: threading.Thread | None = None
        self.explained = 0
        self.capped = 0
        self.deferred = 0

    # --- the request thread ------------------------------------------------------------------

    def offer(self, statement: str, query: Any, op: Any, context: Any, now: int) -> None:
        """A statement ran inside sync operation ``op``: queue its plan if its shape is due.

        The caller checks ``now >= due.get(query.text, 0)`` first (one dict lookup per query);
        ``query`` is the statement's classification (``text``, ``operation``, ``collection``,
        ``several``: a string of several statements is never explained, ``EXPLAIN a; b`` runs
        ``b``).
        """
        shape = query.text
        with self._lock:
            if now < self.due.get(shape, 0):
                return
            if len(self.due) >= _MAX_SHAPES:
                self.due.clear()
            if query.operation not in EXPLAINED or query.several:
                self.due[shape] = _NEVER
                return
            minute = now // _MINUTE
            if minute != self._minute:
                self._minute, self._spent = minute, 0
            if self._spent >= self.options.max_per_minute:
                self.due[shape] = (minute + 1) * _MINUTE  # next minute, not every query
                self.capped += 1
                return
            self._spent += 1
            self.due[shape] = now + self._interval_ns
        job = _Job(
            statement,
            _parameters(context),
            shape,
            query.collection,
            op.operation,
            op.entity,
            op.span,
            time.time_ns(),
        )
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            rt = _runtime.installed or _runtime.current()
            rt.drop(
                "plan_queue_full",
                "syncperf: the query plan queue is full (queue_size %d); statements are "
                "skipped until the worker catches up",
                self.options.queue_size,
            )
            return
        thread = self._thread
        if thread is None or not thread.is_alive():  # first use, or after a fork
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._work, name="syncperf-plans", daemon=True)
                self._thread = thread
                thread.start()

    def wait(self, timeout: float = 10.0) -> bool:
        """Block until every queued statement was explained (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        """Stop the worker (queued statements are discarded)."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
                self._queue.task_done()
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(queue.Full):  # a racing offer filled it: the thread idles
                self._queue.put_nowait(None)

    # --- the worker --------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=_IDLE)
            except queue.Empty:  # idle: an async engine's own pool goes (it holds the engine)
                if self._async is not None:
                    self._async.close()
                if self._engine() is None:  # collected, and close() found the queue full
                    return
                continue
            try:
                if job is None:
                    if self._async is not None:  # its loop and connection are this thread's
                        self._async.close()
                    return
                self._explain(job)
            except Exception as failure:
                rt = _runtime.installed or _runtime.current()
                rt.drop(
                    "plan_failed",
                    "syncperf: a query plan could not be read (%s); plans of other "
                    "statements continue",
                    type(failure).__name__,
                )
            finally:
                job = None  # the parameters go now, not with the next job
                self._queue.task_done()

    def _explain(self, job: _Job) -> None:
        engine = self._engine()
        if engine is None:
            return
        if self._async is not None:
            findings, cost, summary = self._async.read(engine, self._read, job)
        else:
            deadline = _perf() + int(self.options.timeout * 1e9)
            while _pool_full(engine.pool):  # never queue for the application's last connection
                if _perf() >= deadline:
                    with self._lock:
                        self.due.pop(job.shape, None)  # due again: its next execution retries
                    self.deferred += 1
                    return
                time.sleep(0.01)
            with engine.connect() as connection:
                findings, cost, summary = self._read(connection.connection, job)
        self.explained += 1
        if cost is not None:
            previous = self._costs.get(job.shape)
            if len(self._costs) >= _MAX_SHAPES:
                self._costs.clear()
            self._costs[job.shape] = cost
            if previous is not None and previous > 0 and cost >= previous * self.options.cost_jump:
                findings.append(Finding("cost_jump", job.collection, previous_cost=previous))
        if findings:
            self._report(job, findings, cost, summary)

    def _read(self, pooled: Any, job: _Job) -> tuple[list[Finding], float | None, str]:
        """The plan's findings, on one pooled connection, in a transaction rolled back.

        A connection in autocommit mode (``isolation_level="AUTOCOMMIT"``) gets an explicit
        ``BEGIN`` and ``ROLLBACK``: the timeouts are set for the transaction, and without one
        they would end with their own statement (the driver's ``rollback()`` does nothing in
        that mode). Its mode is never changed; if the ``ROLLBACK`` fails, the connection is
        invalidated rather than handed back to the application inside a transaction.
        """
        dbapi = pooled.dbapi_connection
        explicit = not self._sqlite and getattr(dbapi, "autocommit", False) is True
        cursor = dbapi.cursor()
        try:
            if self._sqlite:
                return read_sqlite(cursor, job, self.options.rows)
            if explicit:
                cursor.execute("BEGIN")
            return read_postgresql(cursor, job, self.options.rows, self.options.timeout)
        finally:
            try:
                if explicit:
                    _end(pooled, cursor)
                cursor.close()
            finally:
                dbapi.rollback()

    def _report(self, job: _Job, findings: list[Finding], cost: float | None, summary: str) -> None:
        rt = _runtime.installed or _runtime.current()
        if not rt.enabled:
            return
        reports = rt.state(_Reports)
        base: dict[str, Any] = {"sync.operation": job.operation}
        if job.entity is not None:
            base["sync.entity"] = job.entity
        span = job.span
        recording = span.is_recording()
        for finding in findings:
            attrs = dict(base)
            table = finding.table or job.collection
            if table is not None:
                attrs["db.collection.name"] = reports.tables(table)
            attrs["sync.db.plan.finding"] = finding.kind
            with rt.lock:
                reports.findings.sum(freeze(attrs)).add(1)
            if recording:  # the sync span was not ended yet: the event goes on it
                event: dict[str, Any] = {
                    "sync.db.plan.finding": finding.kind,
                    "db.query.text": job.shape,
                }
                if table is not None:
                    event["db.collection.name"] = table
                if finding.rows is not None:
                    event["sync.db.plan.rows"] = finding.rows
                if cost is not None:
                    event["sync.db.plan.cost"] = cost
                if finding.previous_cost is not None:
                    event["sync.db.plan.previous_cost"] = finding.previous_cost
                span.add_event("sync.db.plan.finding", event, timestamp=job.time_ns)
        now = _perf()
        if now >= self._next_log.get(job.shape, 0):
            if len(self._next_log) >= _MAX_SHAPES:
                self._next_log.clear()
            self._next_log[job.shape] = now + self._log_interval_ns
            kinds = ", ".join(f.describe(cost) for f in findings)
            entity = f" (entity {job.entity})" if job.entity else ""
            _logger.warning(
                "syncperf: query plan of sync %s%s: %s; statement %s; plan %s",
                job.operation,
                entity,
                kinds,
                job.shape,
                summary,
            )


def check_plans(engine: Engine, value: object) -> PlanOptions | None:
    """``instrument_engine(plans=...)`` as a ``PlanOptions``, or None for off."""
    if value is None or value is False:
        return None
    value = PlanOptions() if value is True else value
    if not isinstance(value, PlanOptions):  # described: it may be a URL given by mistake
        raise ConfigError("plans", not_quoted(value), "True, False, None or a PlanOptions")
    if planner_for(engine, True, 0.0) is None:
        raise ConfigError(
            "plans",
            value,
            "False on this engine (plans need PostgreSQL, or SQLite with a file database and "
            "a synchronous driver)",
        )
    return value


def planner_for(
    engine: Engine, options: PlanOptions | bool | None, log_interval: float
) -> Planner | None:
    """A planner for ``engine``, or None when plans are off or the engine cannot have one."""
    if options is None or options is False:
        return None
    dialect = engine.dialect
    if dialect.name not in ("postgresql", "sqlite"):
        return None
    if getattr(dialect, "is_async", False) and dialect.name != "postgresql":
        return None
    if dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return None
    return Planner(engine, PlanOptions() if options is True else options, log_interval)


def _pool_full(pool: Any) -> bool:
    """No idle connection, and none can be opened without overflowing the pool's size."""
    try:
        return bool(pool.checkedin() == 0 and pool.checkedout() >= pool.size())
    except AttributeError:  # a pool without these counts (NullPool, StaticPool...)
        return False


def _end(pooled: Any, cursor: Any) -> None:
    """``ROLLBACK`` the explicit transaction of an autocommit connection, or invalidate it."""
    try:
        cursor.execute("ROLLBACK")
    except BaseException:
        pooled.invalidate()
        raise


def _parameters(context: Any) -> Any:
    """The statement's first parameter set (a copy), or None when it has none."""
    if context is None or getattr(context, "no_parameters", False):
        return None
    parameters = getattr(context, "parameters", None)
    if not parameters:
        return None
    first = parameters[0]
    return dict(first) if isinstance(first, Mapping) else tuple(first)
