"""SQLAlchemy instrumentation: query cost per sync operation, N+1 and slow queries, pool metrics.

Usage::

    from syncperf.sqlalchemy import instrument_engine

    engine = create_engine("postgresql+psycopg://...")     # or create_async_engine(...)
    handle = instrument_engine(engine)                      # idempotent
    ...
    handle.uninstrument()

Everything is attached to the given engine only; nothing global is patched. Queries are
timed by wrapping ``do_execute`` / ``do_executemany`` / ``do_execute_no_params`` (and
``do_commit`` / ``do_rollback``: a ``COMMIT`` or ``ROLLBACK`` the driver sends is a query) on
that engine's own dialect instance (connection events would switch SQLAlchemy to its slower,
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

The mechanics live beside this module: ``_queries`` (the per-query recorder and the dialect
wrappers), ``_ends`` (transaction ends, two-phase commit's steps), ``_spans`` (a query's
deferred CLIENT span), ``_detections`` (N+1 and slow queries), ``_pool`` and
``_pool_gauges`` (connection-pool metrics), ``_plans`` and ``_explain`` (query plans of sync
statements, with ``plans=``).

Bound parameter values are never read (with ``plans=`` on, those of a statement whose plan is
due are copied for its ``EXPLAIN`` only, never exported or logged). Statements are sanitized
(``syncperf._sql``) before they appear on a span, an event or a log line, and no statement text
is a metric attribute.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

try:
    from sqlalchemy.engine import Engine
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        f"syncperf.sqlalchemy needs SQLAlchemy ({exc.name} is missing): "
        "pip install 'syncperf[sqlalchemy]'",
        name=exc.name,
    ) from exc

from syncperf import _runtime
from syncperf._config import MAX_SECONDS, check_bool, check_float, check_int
from syncperf._gate import MAX_NAME, not_quoted
from syncperf._gate import name as gate_name
from syncperf.exceptions import ConfigError
from syncperf.sqlalchemy._names import pool_name
from syncperf.sqlalchemy._plans import Planner, PlanOptions, check_plans, planner_for
from syncperf.sqlalchemy._pool import PoolMetrics
from syncperf.sqlalchemy._queries import QueryRecorder, QuerySeries

if TYPE_CHECKING:
    from syncperf._runtime import Runtime

__all__ = ["EngineInstrumentation", "PlanOptions", "instrument_engine", "wait_for_plans"]

N_PLUS_ONE_THRESHOLD = 10
"""Default: executions of one normalized statement within one sync operation that make an N+1."""
SLOW_QUERY_THRESHOLD = 0.5
"""Default: seconds above which a query is slow."""
LOG_INTERVAL = 60.0
"""Default: seconds between two warning logs about the same statement."""

_instrumented: weakref.WeakKeyDictionary[Any, EngineInstrumentation] = weakref.WeakKeyDictionary()
"""Handles by the engine's dialect: the wrapped object, shared by engines derived from it."""
_instrument_lock = threading.Lock()


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


class EngineInstrumentation:
    """The handle ``instrument_engine()`` returns; ``uninstrument()`` removes everything.

    Attributes:
        n_plus_one_threshold: Executions of one normalized statement within one sync
            operation reported as an N+1, or None when detection is off.
        slow_query_threshold: Seconds above which a query is slow, or None when off.
        pool_name: ``db.client.connection.pool.name`` of the engine's pool metrics.
        system: ``db.system.name`` of the engine's database.
    """

    def __init__(self, engine: Engine, options: _Options) -> None:
        self._engine = weakref.ref(engine)
        self._options = options
        self.n_plus_one_threshold = options.n_plus_one_threshold
        self.slow_query_threshold = options.slow_query_threshold
        self._recorder = QueryRecorder(
            engine,
            n_plus_one_threshold=options.n_plus_one_threshold,
            slow_query_threshold=options.slow_query_threshold,
            spans=options.spans,
            query_text=options.query_text,
            log_interval=options.log_interval,
        )
        self.system = self._recorder.system
        self.pool_name = options.pool_name or pool_name(engine)
        self._pool: PoolMetrics | None = None
        if options.pool_metrics:
            self._pool = PoolMetrics(engine, self.pool_name)
        self._active = False
        self._finalizer: weakref.finalize[Any, Any] | None = None
        plans: PlanOptions | bool | None = options.plans
        if options.plans_from_config:
            plans = (_runtime.installed or _runtime.current()).config.plans
        self._recorder.plans = planner_for(engine, plans, options.log_interval)

    @property
    def plans(self) -> Planner | None:
        """The engine's query plan analysis (``plans=``), or None when off."""
        return self._recorder.plans

    @property
    def engine(self) -> Engine | None:
        """The instrumented (sync) engine, or None once it was garbage-collected."""
        return self._engine()

    @property
    def active(self) -> bool:
        """Whether the engine is still instrumented."""
        return self._active

    def _install(self, engine: Engine) -> None:
        self._recorder.install(engine.dialect)
        if self._pool is not None:
            self._pool.install(engine)
            self._pool.attach(_runtime.installed or _runtime.current())
        self._active = True
        _runtime.note_database_instrumented(1)
        self._finalizer = weakref.finalize(engine, _release, self._recorder, self._pool)
        # Not at exit: it would run before syncperf's exit flush (atexit runs the last hook
        # registered first) and take a live engine's pool gauges out of the last export.
        self._finalizer.atexit = False

    def uninstrument(self) -> None:
        """Remove every wrapper and listener this instrumentation added (idempotent)."""
        with _instrument_lock:
            if not self._active:
                return
            self._active = False
            engine = self._engine()
            if engine is not None:
                if _instrumented.get(engine.dialect) is self:
                    del _instrumented[engine.dialect]
                self._recorder.uninstall(engine.dialect)
            if self._pool is not None:
                self._pool.uninstall()
            if self._finalizer is not None:
                self._finalizer()  # runs at most once: uninstrumented or collected

    def _attach_runtime(self, rt: Runtime) -> None:
        if self._active and self._pool is not None:
            self._pool.attach(rt)
        engine = self._engine()
        if self._active and self._options.plans_from_config and engine is not None:
            if self._recorder.plans is not None:
                self._recorder.plans.close()
            self._recorder.plans = planner_for(engine, rt.config.plans, self._options.log_interval)

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
        pool_name: ``db.client.connection.pool.name`` (1 to 128 printable characters);
            defaults to the pool's ``logging_name`` or ``{backend}://{host}:{port}/{database}``
            (never credentials), made a valid name (``syncperf._gate.made_name``).
        spans: Make a CLIENT span per query when the current span is sampled.
        query_text: Put the sanitized statement on spans as ``db.query.text``.
        pool_metrics: Report ``db.client.connection.*`` for the engine's pool.
        log_interval: Seconds between two warnings about the same statement (>= 0).
        plans: Read the query plans of sync statements (docs/plans.md): True for the
            default ``PlanOptions()``, a ``PlanOptions`` to tune them, False for off, or
            None to follow ``configure(plans=...)`` / ``SYNCPERF_PLANS`` (default off).

    Returns:
        The handle; ``handle.uninstrument()`` removes the instrumentation. Instrumenting an
        engine again, or an engine derived from it with ``execution_options()`` (same dialect
        and pool), returns the same handle.

    Raises:
        ConfigError: an argument is not accepted, or the engine is already instrumented with
            other options.
    """
    sync_engine = getattr(engine, "sync_engine", engine)
    if not isinstance(sync_engine, Engine):  # described, never quoted: a URL given by mistake
        raise ConfigError("engine", not_quoted(engine), "a sqlalchemy Engine or AsyncEngine")
    sync_engine = _root(sync_engine)
    options = _options(
        n_plus_one_threshold,
        slow_query_threshold,
        pool_name,
        spans,
        query_text,
        pool_metrics,
        log_interval,
        check_plans(sync_engine, plans),
        plans is None,
    )
    with _instrument_lock:
        existing = _instrumented.get(sync_engine.dialect)
        if existing is not None:
            if existing._options != options:
                raise ConfigError(
                    "engine",
                    not_quoted(engine),  # an engine's repr shows its URL's query
                    "an engine not yet instrumented with other options "
                    "(call uninstrument() on its handle first)",
                )
            return existing
        handle = EngineInstrumentation(sync_engine, options)
        handle._install(sync_engine)
        _instrumented[sync_engine.dialect] = handle
    return handle


def _release(recorder: QueryRecorder, pool: PoolMetrics | None) -> None:
    """What an engine's instrumentation holds outside the engine goes: run once, by
    ``uninstrument()`` or when the engine is garbage-collected (the finalizer holds the
    recorder and the pool metrics, never the engine). The plan worker stops (its thread, and
    an async engine's connection of its own, would wait for statements forever); the
    engine's query and pool series leave the runtimes that recorded them (what they queued
    is in the runtime's batches, recorded all the same). The pool's observers report 0 at
    the next collection, then remove their callbacks (``PoolMetrics.observe``). Never at
    exit: the engine is alive there, and the plan worker is a daemon thread."""
    _runtime.note_database_instrumented(-1)
    if recorder.plans is not None:
        recorder.plans.close()
    runtimes = {_runtime.installed, recorder._held.rt}  # the last to record, and the current
    if pool is not None:
        pool.closed = True
        runtimes.add(pool._held[0])
    for rt in runtimes:
        if rt is not None:
            rt.forget(QuerySeries, recorder.serial)
            if pool is not None:
                pool.forget(rt)


def _root(engine: Any) -> Any:
    """The engine ``engine`` was derived from with ``execution_options()``, else ``engine``.

    A derived engine shares its origin's dialect and pool, and keeps its origin alive: the
    instrumentation is that of the origin, which outlives every engine derived from it.
    """
    while True:
        origin = vars(engine).get("_proxied")  # SQLAlchemy's OptionEngine
        if not isinstance(origin, Engine) or origin.dialect is not engine.dialect:
            return engine
        engine = origin


def _options(
    n_plus_one_threshold: int | None,
    slow_query_threshold: float | None,
    pool_name: str | None,
    spans: bool,
    query_text: bool,
    pool_metrics: bool,
    log_interval: float,
    plans: PlanOptions | None,
    plans_from_config: bool,
) -> _Options:
    """The checked options (``ConfigError`` naming the first one not accepted)."""
    if n_plus_one_threshold is not None:
        check_int("n_plus_one_threshold", n_plus_one_threshold, minimum=2)
    if slow_query_threshold is not None:
        check_float(
            "slow_query_threshold", slow_query_threshold, low=0.0, high=MAX_SECONDS, open_low=True
        )
        slow_query_threshold = float(slow_query_threshold)
    if pool_name is not None and gate_name(pool_name) != pool_name:
        raise ConfigError(  # described: a URL given by mistake
            "pool_name",
            not_quoted(pool_name),
            f"a string of 1 to {MAX_NAME} printable characters, or None",
        )
    pool_name = gate_name(pool_name)
    check_bool("spans", spans)
    check_bool("query_text", query_text)
    check_bool("pool_metrics", pool_metrics)
    check_float("log_interval", log_interval, low=0.0, high=MAX_SECONDS)
    return _Options(
        n_plus_one_threshold,
        slow_query_threshold,
        pool_name,
        spans,
        query_text,
        pool_metrics,
        float(log_interval),
        plans,
        plans_from_config,
    )


def wait_for_plans(timeout: float = 10.0) -> bool:
    """Block until every instrumented engine has explained the statements queued so far.

    Plans are read off the request thread; tests (and the ``syncperf check`` pytest plugin,
    after each test) call this so that a finding belongs to the test that ran the statement.

    Returns:
        False when ``timeout`` seconds passed first.
    """
    deadline = time.monotonic() + timeout
    for handle in list(_instrumented.values()):
        plans = handle.plans
        if plans is not None and not plans.wait(max(deadline - time.monotonic(), 0.0)):
            return False
    return True


def _on_new_runtime(rt: Runtime) -> None:
    for handle in list(_instrumented.values()):
        handle._attach_runtime(rt)


_runtime.RUNTIME_HOOKS.append(_on_new_runtime)
