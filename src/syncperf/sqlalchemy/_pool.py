"""Connection-pool metrics (``db.client.connection.*``) for one SQLAlchemy engine.

Measured where they happen, by wrappers of the engine's ``pool.connect()`` and of the pool's
return of a connection, ``_return_conn`` (attributes set on that one pool instance, moved to
the new pool when ``engine.dispose()`` recreates it; never a class-level patch; a pool without
``_return_conn`` gets a ``checkin`` listener instead):

* ``wait_time`` and ``timeouts`` around ``pool.connect()``;
* ``use_time`` from the end of that wait (the checkout) to the checkin: the
  checkout time is pushed on the connection record (a list: a ``StaticPool`` record can be
  checked out more than once at a time), and the checkin ends every checkout on it
  (SQLAlchemy checks such a record in once, at the first close).

Histogram values are queued in batches, without a lock (``syncperf._metrics.batches``).

The observed gauges (``count``, ``max``, ``idle.max``, ``pending_requests``) are in
``syncperf.sqlalchemy._pool_gauges``, attached to the runtime current at ``install`` and to
each runtime this pool's series are bound for (``_new_series``: the first checkout or checkin
it sees), so a runtime the engine was not instrumented in (the application's, after a test's
``capture()``) reports them too. ``observe`` gives them what this module counts:
``pending_requests``, the callers inside ``pool.connect()`` right now (a deque each caller
appends to and pops from: atomic, no lock), and per pool the checkouts seen and not yet
checked in or detached, from the pools ``engine.dispose()`` replaced too (their connections
are still in use until they go back). A forked child forgets the parent's callers waiting in
``connect()`` and its checkouts (those threads do not exist in the child).
"""

from __future__ import annotations

import itertools
import os
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import Pool

from syncperf import _runtime
from syncperf._metrics import catalogue
from syncperf._metrics.aggregates import Attributes, HistogramSeries, SumSeries
from syncperf._metrics.batches import FOLD_AT, Batch, batches
from syncperf.sqlalchemy._pool_gauges import (
    COUNT,
    IDLE_MAX,
    MAX,
    PENDING,
    Values,
    attach,
    read_pool,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from syncperf._runtime import Runtime

__all__ = ["PoolMetrics"]

_perf = time.perf_counter_ns
_serials = itertools.count(1)
POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"


class PoolSeries:
    """Pre-bound event-driven series of one pool on one runtime (``PoolMetrics.series``)."""

    __slots__ = ("timeouts", "use", "wait", "wait_series")

    def __init__(self, rt: Runtime, attrs: Attributes) -> None:
        registry, limit = rt.registry, rt.config.max_series
        self.timeouts: SumSeries = catalogue.DB_CONNECTION_TIMEOUTS.create(
            registry, max_series=limit
        ).sum(attrs)
        self.wait_series: HistogramSeries = catalogue.DB_CONNECTION_WAIT_TIME.create(
            registry, max_series=limit
        ).histogram(attrs)
        use: HistogramSeries = catalogue.DB_CONNECTION_USE_TIME.create(
            registry, max_series=limit
        ).histogram(attrs)
        queued = rt.state(batches)
        self.wait: Batch = queued.of(self.wait_series)
        self.use: Batch = queued.of(use)


class PoolMetrics:
    """Pool instrumentation of one engine; ``install()`` / ``uninstall()``."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.name = name
        self._serial = next(_serials)
        self._mark = f"_syncperf_checkouts_{self._serial}"
        """The connection record's attribute holding its checkout times (a list: a stack)."""
        self._owner = f"_syncperf_pool_{self._serial}"
        """The record's attribute holding its pool's checkouts not yet returned (a deque)."""
        self._engine = weakref.ref(engine)
        self._attrs: Attributes = ((POOL_NAME, name),)
        self._idle: Attributes = (*self._attrs, (STATE, "idle"))
        self._used: Attributes = (*self._attrs, (STATE, "used"))
        self._waiting: deque[None] = deque()
        """One entry per caller inside ``pool.connect()`` (``pending_requests``)."""
        self._pools: list[tuple[weakref.ref[Pool], deque[None]]] = []
        """Each pool wrapped (the current one last, before it those ``engine.dispose()``
        replaced) with one entry per checkout from it not yet checked in or detached."""
        self._wrapped: weakref.ref[Pool] | None = None
        self._returns: weakref.WeakSet[Pool] = weakref.WeakSet()
        """Pools whose return is wrapped, replaced ones too (their connections come back)."""
        self.closed = False
        self._held: tuple[Runtime | None, PoolSeries | None] = (None, None)
        """``(runtime, PoolSeries)`` of the runtime that recorded last."""
        self._checked_in = _checkin(self, None)
        _live.add(self)

    # --- life cycle ------------------------------------------------------------------------

    def install(self, engine: Engine) -> None:
        """Listen on ``engine``'s pool events and wrap its pool's ``connect`` and return."""
        if _returns(engine.pool) is None:  # timed by the event instead (see ``_wrap``)
            event.listen(engine, "checkin", self._on_checkin)
        event.listen(engine, "detach", self._on_detach)
        self._wrap(engine.pool)

    def uninstall(self) -> None:
        """Remove listeners and the ``connect`` wrapper; observers report zero, then stop."""
        self.closed = True
        engine = self._engine()
        if engine is not None:
            for name, fn in (("checkin", self._on_checkin), ("detach", self._on_detach)):
                if event.contains(engine, name, fn):
                    event.remove(engine, name, fn)
        self._unwrap()
        for pool in list(self._returns):
            vars(pool).pop("_return_conn", None)
        self._returns.clear()

    def attach(self, rt: Runtime) -> None:
        """Observe the pool's connection counts in ``rt``'s registry (``_pool_gauges.attach``)."""
        if not self.closed:
            attach(self, rt)

    def after_fork_in_child(self) -> None:
        """Forget the parent's callers waiting in ``connect()`` and its checkouts: their
        threads are gone (the parent's connections are the parent's: SQLAlchemy advises a
        child not to use them, and ``engine.dispose(close=False)``)."""
        self._waiting.clear()
        for _, checked_out in self._pools:
            checked_out.clear()

    # --- connect wrapper -------------------------------------------------------------------

    def _wrap(self, pool: Pool) -> None:
        original = pool.connect
        metrics = self
        waiting, mark, owner = self._waiting, self._mark, self._owner
        checked_out: deque[None] = deque()
        self._pools = [(ref, out) for ref, out in self._pools if ref() is not None]
        self._pools.append((weakref.ref(pool), checked_out))

        def connect() -> Any:
            waiting.append(None)
            t0 = _perf()
            try:
                fairy = original()
            except BaseException as error:
                waiting.pop()
                metrics._failed(_perf() - t0, error)
                raise
            t1 = _perf()
            waiting.pop()
            rt = _runtime.installed or _runtime.current()
            try:
                if fairy._counter == 1:  # a checkout (not a nested connect of the same one)
                    record = fairy._connection_record  # not its ``__dict__``: reading that
                    stamps = getattr(record, mark, None)  # would make SQLAlchemy's own
                    if stamps is None:  # attribute reads on the record slower
                        setattr(record, mark, [t1])
                        setattr(record, owner, checked_out)  # the record's pool's
                    else:
                        stamps.append(t1)
                    checked_out.append(None)
                if rt.enabled:
                    held, series = metrics._held
                    if held is not rt or series is None:
                        series = metrics.series(rt)
                    values = series.wait.values  # Batch.add, inline: one frame less
                    values.append(t1 - t0)
                    if len(values) >= FOLD_AT:
                        series.wait.fold_now()
            except Exception as error:
                rt.internal_error("sqlalchemy_pool_hook_failed", error)
            return fairy

        original_recreate = pool.recreate

        def recreate() -> Pool:
            # engine.dispose() swaps in a new pool: move the wrappers over to it (the old
            # pool keeps its return wrapper: connections checked out from it go back to it)
            new_pool = original_recreate()
            metrics._unwrap()
            if not metrics.closed:
                metrics._wrap(new_pool)
            return new_pool

        connect.__wrapped__ = original  # type: ignore[attr-defined]
        pool.connect = connect  # type: ignore[method-assign]
        pool.recreate = recreate  # type: ignore[method-assign]
        returned = _returns(pool)
        if returned is not None:
            pool._return_conn = self._returning(returned)  # type: ignore[method-assign,assignment]
            self._returns.add(pool)
        self._wrapped = weakref.ref(pool)

    def _returning(self, returned: Callable[[Any], None]) -> Callable[[Any], None]:
        """``returned`` (the pool's ``_return_conn``) timing the checkin: where SQLAlchemy
        returns the record to the pool, right after its ``checkin`` event (a listener would
        cost its dispatch on every checkin)."""
        return _checkin(self, returned)

    def _unwrap(self) -> None:
        """Remove the ``connect`` and ``recreate`` wrappers from the current pool."""
        pool = self._wrapped() if self._wrapped is not None else None
        if pool is not None:
            for name in ("connect", "recreate"):
                if name in vars(pool):
                    delattr(pool, name)
        self._wrapped = None

    def _failed(self, waited_ns: int, error: BaseException) -> None:
        """A ``pool.connect()`` that raised: a timeout is counted with its wait."""
        rt = _runtime.installed or _runtime.current()
        if not rt.enabled or not isinstance(error, sa_exc.TimeoutError):
            return
        try:
            series = self.series(rt)
            with rt.lock:
                series.timeouts.add(1)
                series.wait_series.record(waited_ns / 1e9)
        except Exception as failure:
            rt.internal_error("sqlalchemy_pool_hook_failed", failure)

    def series(self, rt: Runtime) -> PoolSeries:
        """This pool's event-driven series in ``rt`` (bound once, kept by the runtime)."""
        held, series = self._held
        if held is not rt or series is None:  # one tuple: a reader never sees a torn pair
            series = rt.state(self._new_series, self._serial)
            self._held = (rt, series)
        return series

    def _new_series(self, rt: Runtime) -> PoolSeries:
        with rt.lock:
            series = PoolSeries(rt, self._attrs)
        # Every runtime that records the pool's times observes its gauges too: one the engine
        # was instrumented outside of (an outer capture's, the application's) as well.
        self.attach(rt)
        return series

    def forget(self, rt: Runtime) -> None:
        """Drop this pool's series from ``rt`` (uninstrumented, or the engine collected)."""
        rt.forget(self._new_series, self._serial)

    # --- pool events -----------------------------------------------------------------------

    def _on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        """The ``checkin`` listener of a pool without ``_return_conn``."""
        self._checked_in(record)

    def _on_detach(self, dbapi_connection: Any, record: Any) -> None:
        # a detached connection leaves the pool: no checkin will come for its checkouts
        stamps = record.__dict__.pop(self._mark, None)
        checked_out = record.__dict__.pop(self._owner, None)
        for _ in stamps or ():
            if checked_out:  # (none left: checked out before a fork, forgotten since)
                checked_out.pop()

    # --- observation -----------------------------------------------------------------------

    def observe(self) -> Values:
        """Current values of the observed instruments, by instrument name."""
        values: Values = {COUNT: {}, MAX: {}, IDLE_MAX: {}, PENDING: {}}
        engine = self._engine()
        if engine is None or self.closed:
            self.closed = True  # a collected engine too: its observers report 0, then go
            return values
        values[PENDING][self._attrs] = len(self._waiting)
        pool = engine.pool
        seen = elsewhere = 0
        for ref, checked_out in list(self._pools):
            seen += len(checked_out)
            if ref() is not pool:
                elsewhere += len(checked_out)
        used, idle, maximum, idle_max = read_pool(pool, seen, elsewhere)
        counts = values[COUNT]
        counts[self._idle] = idle
        counts[self._used] = used
        if maximum is not None:
            values[MAX][self._attrs] = maximum
        if idle_max is not None:
            values[IDLE_MAX][self._attrs] = idle_max
        return values


def _checkin(metrics: PoolMetrics, returned: Callable[[Any], None] | None) -> Callable[[Any], None]:
    """The end of the checkouts stamped on a connection record at its checkin (``use_time``),
    then ``returned(record)`` if given, in one frame (a frame is ~15 % of a session's pool
    metrics). Never raises: a failure is counted and the record still goes back.

    A checkin ends every checkout stamped on the record: a ``StaticPool`` connection checked
    out twice at once is checked in once, at the first close (SQLAlchemy sends no event for
    the second), and the pool counts it idle from then on."""
    mark, owner = metrics._mark, metrics._owner

    def checkin(record: Any) -> None:
        try:
            stamps = getattr(record, mark, None)
            if not stamps:
                return  # checked out before instrumentation, or a failed checkout
            checked_out = getattr(record, owner)
            now = _perf()
            try:
                ended = now - stamps.pop()
            except IndexError:  # another thread checked in the same record meanwhile
                return
            if checked_out:  # (none left: checked out before a fork, forgotten by this child)
                checked_out.pop()
            more: list[int] | None = None
            while stamps:  # a record checked out more than once (``StaticPool``)
                try:
                    (more := more or []).append(now - stamps.pop())
                    checked_out.pop()
                except IndexError:
                    break
            rt = _runtime.installed or _runtime.current()
            if rt.enabled:
                held, series = metrics._held
                if held is not rt or series is None:
                    series = metrics.series(rt)
                values = series.use.values  # Batch.add, inline: one frame less
                values.append(ended)
                if more:
                    values += more
                if len(values) >= FOLD_AT:
                    series.use.fold_now()
        except Exception as error:
            (_runtime.installed or _runtime.current()).internal_error(
                "sqlalchemy_pool_hook_failed", error
            )
        finally:
            if returned is not None:
                returned(record)

    return checkin


def _returns(pool: Pool) -> Callable[[Any], None] | None:
    """The pool's ``_return_conn(record)`` (called right after ``checkin``), or None."""
    found = getattr(pool, "_return_conn", None)
    return found if callable(found) else None


_live: weakref.WeakSet[PoolMetrics] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for metrics in list(_live):
        metrics.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
