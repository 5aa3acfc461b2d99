"""Connection-pool metrics (``db.client.connection.*``) for one SQLAlchemy engine.

Measured where they happen:

* ``pending_requests``, ``wait_time`` and ``timeouts`` around the engine's ``pool.connect()``
  (an attribute set on that one pool instance, moved to the new pool when
  ``engine.dispose()`` recreates it; never a class-level patch).
* ``use_time`` from the pool's ``checkout`` to its ``checkin`` event.

Observed at collection time (no per-checkout cost): ``count`` by state (``idle`` / ``used``),
``max`` and ``idle.max``, read from the pool itself (``QueuePool.checkedout()`` /
``checkedin()``), so they are exact whatever happened in between (invalidations, overflow
connections closed on return, pre-ping reconnects). They are observed UpDownCounters, as
the semantic conventions want (an instrument with callbacks: each observation replaces the
previous value); when the engine is uninstrumented or collected they drop to 0, then stop.

Pool kinds: ``QueuePool`` / ``AsyncAdaptedQueuePool`` report everything; ``NullPool`` has no
idle connections and no maximum (``max`` is not reported); ``StaticPool`` and
``AssertionPool`` hold one connection (``max`` 1); ``SingletonThreadPool`` one per thread up
to its ``pool_size``.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import (
    AssertionPool,
    Pool,
    QueuePool,
    SingletonThreadPool,
    StaticPool,
)

from syncperf import _runtime
from syncperf._metrics import catalogue
from syncperf._metrics.aggregates import Attributes, HistogramSeries, SumSeries

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from syncperf._runtime import Runtime

__all__ = ["PoolMetrics"]

_perf = time.perf_counter_ns
_serials = itertools.count(1)
_OUT = "_syncperf_checkout_ns"
POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
COUNT = catalogue.DB_CONNECTION_COUNT.name
MAX = catalogue.DB_CONNECTION_MAX.name
IDLE_MAX = catalogue.DB_CONNECTION_IDLE_MAX.name
_OBSERVED = (
    catalogue.DB_CONNECTION_COUNT,
    catalogue.DB_CONNECTION_MAX,
    catalogue.DB_CONNECTION_IDLE_MAX,
)


class PoolSeries:
    """Pre-bound event-driven series of one pool on one runtime (``PoolMetrics.series``)."""

    __slots__ = ("pending", "timeouts", "use", "wait")

    def __init__(self, rt: Runtime, attrs: Attributes) -> None:
        registry, limit = rt.registry, rt.config.max_series
        self.pending: SumSeries = catalogue.DB_CONNECTION_PENDING_REQUESTS.create(
            registry, max_series=limit
        ).sum(attrs)
        self.timeouts: SumSeries = catalogue.DB_CONNECTION_TIMEOUTS.create(
            registry, max_series=limit
        ).sum(attrs)
        self.wait: HistogramSeries = catalogue.DB_CONNECTION_WAIT_TIME.create(
            registry, max_series=limit
        ).histogram(attrs)
        self.use: HistogramSeries = catalogue.DB_CONNECTION_USE_TIME.create(
            registry, max_series=limit
        ).histogram(attrs)


class PoolMetrics:
    """Pool instrumentation of one engine; ``install()`` / ``uninstall()``."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.name = name
        self._serial = next(_serials)
        self._engine = weakref.ref(engine)
        self._attrs: Attributes = ((POOL_NAME, name),)
        self._idle: Attributes = (*self._attrs, (STATE, "idle"))
        self._used: Attributes = (*self._attrs, (STATE, "used"))
        self._lock = threading.Lock()
        self._outstanding: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        """Checked-out records of pools that cannot count them themselves (not QueuePool)."""
        self._wrapped: weakref.ref[Pool] | None = None
        self._track = False
        self._observers: list[_Observer] = []
        self.closed = False
        self._held: tuple[Runtime | None, PoolSeries | None] = (None, None)
        """``(runtime, PoolSeries)`` of the runtime that recorded last."""

    # --- life cycle ------------------------------------------------------------------------

    def install(self, engine: Engine) -> None:
        """Listen on ``engine``'s pool events and wrap its pool's ``connect``."""
        event.listen(engine, "checkout", self._on_checkout)
        event.listen(engine, "checkin", self._on_checkin)
        self._wrap(engine.pool)

    def uninstall(self) -> None:
        """Remove listeners and the ``connect`` wrapper; observers report zero, then stop."""
        self.closed = True
        engine = self._engine()
        if engine is not None:
            for name, fn in (("checkout", self._on_checkout), ("checkin", self._on_checkin)):
                if event.contains(engine, name, fn):
                    event.remove(engine, name, fn)
        self._unwrap()

    def attach(self, rt: Runtime) -> None:
        """Observe the pool's connection counts in ``rt``'s registry (one observer per runtime)."""
        if self.closed:
            return
        observer = _Observer(self, rt)
        with self._lock:
            self._observers = [o for o in self._observers if o.alive()] + [observer]

    # --- connect wrapper -------------------------------------------------------------------

    def _wrap(self, pool: Pool) -> None:
        original = pool.connect
        metrics = self

        def connect() -> Any:
            rt = _runtime.installed or _runtime.current()
            if not rt.enabled:
                return original()
            try:
                series = metrics.series(rt)
                with rt.lock:
                    series.pending.add(1)
            except Exception as error:
                rt.internal_error("sqlalchemy_pool_hook_failed", error)
                return original()
            t0 = _perf()
            try:
                connection = original()
            except BaseException as error:
                waited = _perf() - t0
                timed_out = isinstance(error, sa_exc.TimeoutError)
                with rt.lock:
                    series.pending.add(-1)
                    if timed_out:
                        series.timeouts.add(1)
                        series.wait.record(waited / 1e9)
                raise
            waited = _perf() - t0
            with rt.lock:
                series.pending.add(-1)
                series.wait.record(waited / 1e9)
            return connection

        original_recreate = pool.recreate

        def recreate() -> Pool:
            # engine.dispose() swaps in a new pool: move the wrappers over to it
            new_pool = original_recreate()
            metrics._unwrap()
            if not metrics.closed:
                metrics._wrap(new_pool)
            return new_pool

        connect.__wrapped__ = original  # type: ignore[attr-defined]
        pool.connect = connect  # type: ignore[method-assign]
        pool.recreate = recreate  # type: ignore[method-assign]
        self._wrapped = weakref.ref(pool)
        self._track = not isinstance(pool, QueuePool)

    def _unwrap(self) -> None:
        pool = self._wrapped() if self._wrapped is not None else None
        if pool is not None:
            for name in ("connect", "recreate"):
                if name in vars(pool):
                    delattr(pool, name)
        self._wrapped = None

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

    # --- pool events -----------------------------------------------------------------------

    def _on_checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        setattr(record, _OUT, _perf())
        if self._track:
            with self._lock:
                self._outstanding[record] = self._outstanding.get(record, 0) + 1

    def _on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        started = getattr(record, _OUT, 0)
        if self._outstanding:
            with self._lock:
                depth = self._outstanding.pop(record, 0) - 1
                if depth > 0:
                    self._outstanding[record] = depth
        if not started:
            return
        setattr(record, _OUT, 0)
        used_ns = _perf() - started
        rt = _runtime.installed or _runtime.current()
        if not rt.enabled:
            return
        try:
            series = self.series(rt)
            with rt.lock:
                series.use.record(used_ns / 1e9)
        except Exception as error:
            rt.internal_error("sqlalchemy_pool_hook_failed", error)

    # --- observation -----------------------------------------------------------------------

    def observe(self) -> dict[str, dict[Attributes, float]]:
        """Current values of the observed instruments, by instrument name."""
        values: dict[str, dict[Attributes, float]] = {COUNT: {}, MAX: {}, IDLE_MAX: {}}
        engine = self._engine()
        if engine is None or self.closed:
            return values
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
            with self._lock:
                used = len(self._outstanding)
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
