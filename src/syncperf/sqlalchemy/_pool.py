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

Observed at collection time (no per-checkout cost): ``count`` by state (``idle`` / ``used``),
``max`` and ``idle.max``, read from the pool itself (``QueuePool.checkedout()`` /
``checkedin()``), so they are exact whatever happened in between (invalidations, overflow
connections closed on return, pre-ping reconnects); pools that do not count them are counted
here (checkouts seen and not yet checked in or detached). ``pending_requests`` is the number
of callers inside ``pool.connect()`` right now (a deque each caller appends to and pops from:
atomic, no lock). They are observed UpDownCounters, as the semantic conventions want (an
instrument with callbacks: each observation replaces the previous value); when the engine
is uninstrumented or collected they drop to 0, then stop. A forked child forgets the
parent's callers waiting in ``connect()`` (those threads do not exist in the child).

Pool kinds: ``QueuePool`` / ``AsyncAdaptedQueuePool`` report everything; ``NullPool`` has no
idle connections and no maximum (``max`` is not reported); ``StaticPool`` and
``AssertionPool`` hold one connection (``max`` 1); ``SingletonThreadPool`` one per thread up
to its ``pool_size``.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import AssertionPool, Pool, QueuePool, SingletonThreadPool, StaticPool

from syncperf import _runtime
from syncperf._metrics import catalogue
from syncperf._metrics.aggregates import Attributes, HistogramSeries, SumSeries
from syncperf._metrics.batches import FOLD_AT, Batch, batches

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from syncperf._runtime import Runtime

__all__ = ["PoolMetrics"]

_perf = time.perf_counter_ns
_serials = itertools.count(1)
POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
COUNT = catalogue.DB_CONNECTION_COUNT.name
MAX = catalogue.DB_CONNECTION_MAX.name
IDLE_MAX = catalogue.DB_CONNECTION_IDLE_MAX.name
PENDING = catalogue.DB_CONNECTION_PENDING_REQUESTS.name
_OBSERVED = (
    catalogue.DB_CONNECTION_COUNT,
    catalogue.DB_CONNECTION_MAX,
    catalogue.DB_CONNECTION_IDLE_MAX,
    catalogue.DB_CONNECTION_PENDING_REQUESTS,
)


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
        self._engine = weakref.ref(engine)
        self._attrs: Attributes = ((POOL_NAME, name),)
        self._idle: Attributes = (*self._attrs, (STATE, "idle"))
        self._used: Attributes = (*self._attrs, (STATE, "used"))
        self._lock = threading.Lock()
        self._waiting: deque[None] = deque()
        """One entry per caller inside ``pool.connect()`` (``pending_requests``)."""
        self._checked_out: deque[None] = deque()
        """One entry per checkout not yet checked in or detached (``used`` of pools that do
        not count it themselves)."""
        self._wrapped: weakref.ref[Pool] | None = None
        self._returns: weakref.WeakSet[Pool] = weakref.WeakSet()
        """Pools whose return is wrapped, replaced ones too (their connections come back)."""
        self._observers: list[_Observer] = []
        self.closed = False
        self._held: tuple[Runtime | None, PoolSeries | None] = (None, None)
        """``(runtime, PoolSeries)`` of the runtime that recorded last."""
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
        """Observe the pool's connection counts in ``rt``'s registry (one observer per runtime)."""
        if self.closed:
            return
        observer = _Observer(self, rt)
        with self._lock:
            self._observers = [o for o in self._observers if o.alive()] + [observer]

    def after_fork_in_child(self) -> None:
        """Forget the parent's callers waiting in ``connect()``: their threads are gone."""
        self._waiting.clear()

    # --- connect wrapper -------------------------------------------------------------------

    def _wrap(self, pool: Pool) -> None:
        original = pool.connect
        metrics = self
        waiting, checked_out, mark = self._waiting, self._checked_out, self._mark

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
                    record = fairy._connection_record.__dict__
                    stamps = record.get(mark)
                    if stamps is None:
                        record[mark] = [t1]
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
        checked_in = self._on_checkin

        def return_conn(record: Any) -> None:
            try:
                checked_in(None, record)
            except Exception as error:
                (_runtime.installed or _runtime.current()).internal_error(
                    "sqlalchemy_pool_hook_failed", error
                )
            finally:
                returned(record)

        return return_conn

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
            return PoolSeries(rt, self._attrs)

    def forget(self, rt: Runtime) -> None:
        """Drop this pool's series from ``rt`` (uninstrumented, or the engine collected)."""
        rt.forget(self._new_series, self._serial)

    # --- pool events -----------------------------------------------------------------------

    def _on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        # A checkin ends every checkout stamped on the record: a ``StaticPool`` connection
        # checked out twice at once is checked in once, at the first close (SQLAlchemy
        # sends no event for the second), and the pool counts it idle from then on.
        stamps = record.__dict__.get(self._mark)
        if not stamps:
            return  # checked out before instrumentation, or a failed checkout
        now = _perf()
        ended = []
        while stamps:
            try:
                ended.append(now - stamps.pop())
            except IndexError:  # another thread checked in the same record meanwhile
                break
            self._checked_out.pop()
        rt = _runtime.installed or _runtime.current()
        if rt.enabled and ended:
            try:
                held, series = self._held
                if held is not rt or series is None:
                    series = self.series(rt)
                values = series.use.values  # Batch.add, inline: one frame less
                values.extend(ended)
                if len(values) >= FOLD_AT:
                    series.use.fold_now()
            except Exception as error:
                rt.internal_error("sqlalchemy_pool_hook_failed", error)

    def _on_detach(self, dbapi_connection: Any, record: Any) -> None:
        # a detached connection leaves the pool: no checkin will come for its checkouts
        stamps = record.__dict__.pop(self._mark, None)
        for _ in stamps or ():
            self._checked_out.pop()

    # --- observation -----------------------------------------------------------------------

    def observe(self) -> dict[str, dict[Attributes, float]]:
        """Current values of the observed instruments, by instrument name."""
        values: dict[str, dict[Attributes, float]] = {COUNT: {}, MAX: {}, IDLE_MAX: {}, PENDING: {}}
        engine = self._engine()
        if engine is None or self.closed:
            self.closed = True  # a collected engine too: its observers report 0, then go
            return values
        values[PENDING][self._attrs] = len(self._waiting)
        pool = engine.pool
        maximum: int | None = None
        idle_max: int | None = None
        if isinstance(pool, QueuePool):
            used, idle = pool.checkedout(), pool.checkedin()
            overflow = pool._max_overflow
            if overflow >= 0:
                maximum = pool.size() + overflow
                idle_max = pool.size()
        else:
            used = len(self._checked_out)
            if isinstance(pool, StaticPool):
                record = vars(pool).get("connection")
                opened = 1 if record is not None and record.dbapi_connection is not None else 0
                used, maximum = min(used, 1), 1
                idle = max(opened - used, 0)
            elif isinstance(pool, AssertionPool):
                opened = 1 if getattr(pool, "_conn", None) is not None else 0
                used, maximum = min(used, 1), 1
                idle = max(opened - used, 0)
            elif isinstance(pool, SingletonThreadPool):
                maximum = pool.size
                idle = max(len(pool._all_conns) - used, 0)
            else:  # NullPool and unknown pools: nothing idle, no maximum
                idle = 0
        attrs = self._attrs
        counts = values[COUNT]
        counts[self._idle] = idle
        counts[self._used] = used
        if maximum is not None:
            values[MAX][attrs] = maximum
        if idle_max is not None:
            values[IDLE_MAX][attrs] = idle_max
        return values


class _Observer:
    """Reports one pool's observed values to one runtime's registry (one callback each)."""

    def __init__(self, metrics: PoolMetrics, rt: Runtime) -> None:
        self._metrics = metrics
        self._registry = weakref.ref(rt.registry)
        self._last: dict[str, dict[Attributes, float]] = {spec.name: {} for spec in _OBSERVED}
        self._callbacks: list[
            tuple[str, Callable[[], Iterable[tuple[dict[str, str | bool], float]]]]
        ] = []
        for spec in _OBSERVED:
            callback = self._callback(spec.name)
            spec.observe(rt.registry, callback, max_series=rt.config.max_series)
            self._callbacks.append((spec.name, callback))

    def alive(self) -> bool:
        return self._registry() is not None and bool(self._callbacks)

    def _callback(self, name: str) -> Callable[[], Iterable[tuple[dict[str, str | bool], float]]]:
        def observe() -> list[tuple[dict[str, str | bool], float]]:
            return self._changes(name)

        return observe

    def _changes(self, name: str) -> list[tuple[dict[str, str | bool], float]]:
        """Current values; series that disappeared (pool closed, max gone) report 0 once."""
        current = self._metrics.observe()[name]
        last = self._last[name]
        if self._metrics.closed and not current and not last:
            # the zeros went out with the previous collection; detaching during the one
            # that carries them would turn them into a sum for the reader
            self._detach(name)
            return []
        values = [(dict(attrs), value) for attrs, value in current.items()]
        values.extend((dict(attrs), 0.0) for attrs in last if attrs not in current)
        self._last[name] = current
        return values

    def _detach(self, name: str) -> None:
        registry = self._registry()
        for index, (callback_name, callback) in enumerate(self._callbacks):
            if callback_name == name:
                if registry is not None:
                    registry.remove_gauge_callback(name, callback)
                del self._callbacks[index]
                return


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
