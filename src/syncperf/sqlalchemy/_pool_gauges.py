"""The observed pool gauges: ``db.client.connection.count`` by state, ``max``, ``idle.max`` and
``pending_requests``, read at collection time (no per-checkout cost).

``read_pool`` reads a pool's counts from the pool itself where it keeps them
(``QueuePool.checkedout()`` / ``checkedin()``), so they are exact whatever happened in between
(invalidations, overflow connections closed on return, pre-ping reconnects); pools that do not
count them are counted from the checkouts seen. ``PoolGauges`` reports them to one runtime's
registry, one per pool name: engines whose pools share a name (two engines on one URL under
the default name, or one ``pool_name`` given twice) report the sums of their pools, as their
wait and use times share one histogram series; none overwrites another. They are observed
UpDownCounters, as the semantic conventions want (each observation replaces the previous
value); when every engine of a name is uninstrumented or collected they drop to 0, then stop.

Pool kinds: ``QueuePool`` / ``AsyncAdaptedQueuePool`` report everything; ``NullPool`` has no
idle connections and no maximum (``max`` is not reported); ``StaticPool`` and
``AssertionPool`` hold one connection (``max`` 1); ``SingletonThreadPool`` one per thread up
to its ``pool_size``.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.pool import AssertionPool, Pool, QueuePool, SingletonThreadPool, StaticPool

from syncperf._forklocks import renew_in_child
from syncperf._metrics import catalogue
from syncperf._metrics.aggregates import Attributes

if TYPE_CHECKING:
    from syncperf._runtime import Runtime

__all__ = ["COUNT", "IDLE_MAX", "MAX", "PENDING", "PoolGauges", "attach", "read_pool"]

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
Values = dict[str, dict[Attributes, float]]
"""Observed values by instrument name, then by attributes."""
_lock = threading.Lock()
renew_in_child(sys.modules[__name__], "_lock")  # collection holds it; a forked worker takes it


class Observed(Protocol):
    """One engine's pool metrics, as the gauges read them (``PoolMetrics``)."""

    name: str
    closed: bool

    def observe(self) -> Values: ...


def read_pool(pool: Pool, seen: int, elsewhere: int) -> tuple[int, int, int | None, int | None]:
    """``(used, idle, max, idle.max)`` of ``pool`` (None: not reported).

    Args:
        pool: The engine's pool.
        seen: Checkouts seen and not yet checked in or detached, from every pool of the
            engine: what pools that do not count them report as used.
        elsewhere: Those of them from pools ``engine.dispose()`` replaced (still in use; a
            ``QueuePool`` counts its own only).
    """
    if isinstance(pool, QueuePool):
        used, idle = pool.checkedout() + elsewhere, _idle(pool)
        overflow = pool._max_overflow
        if overflow < 0:
            return used, idle, None, None
        return used, idle, pool.size() + overflow, pool.size()
    if isinstance(pool, StaticPool):
        record = vars(pool).get("connection")
        opened = 1 if record is not None and record.dbapi_connection is not None else 0
    elif isinstance(pool, AssertionPool):
        opened = 1 if getattr(pool, "_conn", None) is not None else 0
    elif isinstance(pool, SingletonThreadPool):
        return seen, max(len(pool._all_conns) - seen, 0), pool.size, None
    else:  # NullPool and unknown pools: nothing idle, no maximum
        return seen, 0, None, None
    used = min(seen, 1)
    return used, max(opened - used, 0), 1, None


def _idle(pool: QueuePool) -> int:
    """The connections idle in ``pool``: its queued records that hold one. A record whose
    connection an invalidation closed holds none until its next checkout reopens it."""
    queue = pool._pool
    held: Iterable[Any] | None = getattr(queue, "queue", None)  # the thread queue's deque
    if held is None:  # an asyncio one's, once made (not made here: it binds an event loop)
        held = getattr(vars(queue).get("_queue"), "_queue", ())
    try:
        records = tuple(held)  # one C call under the GIL: no checkout or checkin meanwhile
    except Exception:  # a queue of another shape
        return pool.checkedin()
    return sum(getattr(record, "dbapi_connection", None) is not None for record in records)


def _groups(rt: Runtime) -> dict[str, PoolGauges]:
    return {}


def attach(metrics: Observed, rt: Runtime) -> None:
    """Report ``metrics``' pool in ``rt``'s registry, summed with the pools named alike."""
    groups = rt.state(_groups)
    with _lock:
        gauges = groups.get(metrics.name)
        if gauges is None or not gauges.alive():
            gauges = groups[metrics.name] = PoolGauges(rt, metrics.name, groups)
        gauges.add(metrics)


class PoolGauges:
    """Reports the pools of one name to one runtime's registry (one callback per instrument):
    the sums of their observed values. Once one of them stops it leaves ``groups`` (the next
    engine of its name gets new gauges), so dropped names are not kept."""

    def __init__(self, rt: Runtime, name: str, groups: dict[str, PoolGauges]) -> None:
        self._name = name
        self._groups = groups
        self._members: list[Observed] = []
        self._registry = weakref.ref(rt.registry)
        self._last: Values = {spec.name: {} for spec in _OBSERVED}
        self._callbacks: list[
            tuple[str, Callable[[], Iterable[tuple[dict[str, str | bool], float]]]]
        ] = []
        for spec in _OBSERVED:
            callback = self._callback(spec.name)
            spec.observe(rt.registry, callback, max_series=rt.config.max_series)
            self._callbacks.append((spec.name, callback))

    def add(self, metrics: Observed) -> None:
        """Count ``metrics``' pool in from the next collection on (once, however often)."""
        if all(member is not metrics for member in self._members):
            self._members = [*self._members, metrics]

    def alive(self) -> bool:
        """Whether every callback is still registered (none is taken off yet)."""
        return self._registry() is not None and len(self._callbacks) == len(_OBSERVED)

    def _callback(self, name: str) -> Callable[[], Iterable[tuple[dict[str, str | bool], float]]]:
        def observe() -> list[tuple[dict[str, str | bool], float]]:
            return self._changes(name)

        return observe

    def _changes(self, name: str) -> list[tuple[dict[str, str | bool], float]]:
        """Current sums; series that disappeared (pools closed, max gone) report 0 once."""
        current: dict[Attributes, float] = {}
        for metrics in self._members:  # a snapshot: ``add`` replaces the list, never changes it
            for attrs, value in metrics.observe()[name].items():
                current[attrs] = current.get(attrs, 0) + value
        last = self._last[name]
        with _lock:  # ``attach`` adds under it: a pool added since the snapshot stays
            if any(metrics.closed for metrics in self._members):  # it reports nothing more
                self._members = [metrics for metrics in self._members if not metrics.closed]
            if not self._members and not current and not last:
                # the zeros went out with the previous collection; detaching during the one
                # that carries them would turn them into a sum for the reader
                self._detach(name)
                return []
        values = [(dict(attrs), value) for attrs, value in current.items()]
        values.extend((dict(attrs), 0.0) for attrs in last if attrs not in current)
        self._last[name] = current
        return values

    def _detach(self, name: str) -> None:
        """Take ``name``'s callback off (under ``_lock``): these gauges are no longer alive."""
        if self._groups.get(self._name) is self:
            del self._groups[self._name]
        registry = self._registry()
        for index, (callback_name, callback) in enumerate(self._callbacks):
            if callback_name == name:
                if registry is not None:
                    registry.remove_gauge_callback(name, callback)
                del self._callbacks[index]
                return
