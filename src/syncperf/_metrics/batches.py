"""Histogram values queued without the lock and recorded in batches.

A value measured on the request path (a query's duration, a connection's wait or use time)
is appended to its series' ``Batch``: a list append, atomic, no lock. Once ``FOLD_AT`` values
are queued the appending thread records them under the registry's lock in one go
(``HistogramSeries.record_all``), and every collection records what is queued first
(``Registry.folds``), so counts are exact whenever they are read. A forked child discards the
values its parent queued (the parent records and exports them).

A value costs an append here and a share of one C-level sort at the fold
(``record_ns``), instead of a lock acquisition and a Python-level ``record``
on the request thread. Values are integers: nanoseconds recorded in seconds, or (``scales``
of 1) counts such as byte sizes recorded as they are; a negative value holds the place of a
series the entry does not record (an HTTP request with no body size).
"""

from __future__ import annotations

import functools
import math
import os
import weakref
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, Protocol

from syncperf._accel import speedups
from syncperf._metrics.aggregates import HistogramSeries, Registry

if TYPE_CHECKING:
    from syncperf._speedups import Values

__all__ = ["FOLD_AT", "MAX_QUEUED", "NS", "Batch", "Batches", "batches", "record_ns"]

FOLD_AT = 512
"""Values one batch queues before the thread adding the last ones records them all."""
MAX_QUEUED = 8192
"""Values at which the thread adding waits for the lock to record them: the queue stays
bounded while another thread holds the lock for long."""


class Batch:
    """Nanosecond values queued for one or more histogram series, recorded in seconds.

    An entry is one value per series, appended in one atomic ``extend``: the request path
    does ``values = batch.values; values += (a, b); if len(values) >= FOLD_AT:
    batch.fold_now()`` (inline, or ``add``)."""

    __slots__ = ("_lock", "scales", "series", "values")

    def __init__(
        self,
        series: tuple[HistogramSeries, ...],
        registry: Registry,
        scales: tuple[int, ...] | None = None,
    ) -> None:
        self.series = series
        self.scales = scales or (NS,) * len(series)
        """Per series, the value of one unit of the series in queued units (``NS``: queued
        nanoseconds, recorded in seconds)."""
        self.values: list[int] = []
        """Queued values, oldest first: threads extend it, folds take from the front."""
        self._lock = registry.lock

    def add(self, entry: tuple[int, ...]) -> None:
        """Queue one value per series; record the batch once ``FOLD_AT`` values are queued."""
        values = self.values
        values += entry
        if len(values) >= FOLD_AT:
            self.fold_now()

    def fold_now(self) -> None:
        """Record what is queued if the registry's lock is free (its holder may be a
        collection, which folds); past ``MAX_QUEUED`` values, wait for it."""
        lock = self._lock
        if lock.acquire(blocking=len(self.values) >= MAX_QUEUED):
            try:
                self.fold()
            finally:
                lock.release()

    def fold(self) -> None:
        """Record what is queued (the caller holds the registry's lock).

        Only lock holders take values, from the front; appends go to the back meanwhile,
        whole entries at a time.
        """
        values = self.values
        taken = values[:]
        del values[: len(taken)]
        stride = len(self.series)
        if stride == 1:
            record_ns(self.series[0], taken, self.scales[0])
            return
        for index, (series, scale) in enumerate(zip(self.series, self.scales, strict=True)):
            record_ns(series, taken[index::stride], scale)


NS = 1_000_000_000
_record = None if speedups is None else speedups.record
"""The compiled ``record_ns`` (False when it leaves the values to the code below)."""


def record_ns(series: HistogramSeries, values: list[int] | Values, scale: int = NS) -> None:
    """``series.record`` each of ``values``, nanoseconds, in seconds (``value / 1e9``); sorts
    ``values``. One C-level sort, then one bisect per bucket bound rather than one per value,
    and one division for the sum (the caller holds the registry's lock).

    ``scale``: queued units per recorded unit (1: the values as they are); negative values
    are placeholders, not recorded.
    """
    if not values:
        return
    if _record is not None and _record(series, values, _limits_ns(series.bounds, scale), scale):
        return
    if not isinstance(values, list):  # the compiled fold's (``speedups.Values``)
        values = values.take()
    values.sort()
    if values[0] < 0:
        del values[: bisect_left(values, 0)]
        if not values:
            return
    counts, n, below = series.counts, len(values), 0
    for index, limit in enumerate(_limits_ns(series.bounds, scale)):
        upto = bisect_right(values, limit, below)
        counts[index] += upto - below
        below = upto
        if below == n:
            break
    else:
        counts[-1] += n - below
    low: float
    high: float
    if scale == 1:  # counts: ints, exact (see ``HistogramSeries.sum``)
        series.sum += sum(values)
        low, high = values[0], values[-1]
    else:
        series.sum += sum(values) / scale
        low, high = values[0] / scale, values[-1] / scale
    if low < series.min:
        series.min = low
    if high > series.max:
        series.max = high


@functools.cache
def _limits_ns(bounds: tuple[float, ...], scale: int = NS) -> tuple[int, ...]:
    """Per bound, the largest nanosecond count ``t`` with ``t / 1e9 <= bound``: comparing
    nanoseconds with it buckets exactly as ``record`` buckets the value in seconds (dividing
    by 1e9 is monotonic, so the float rounding of ``bound * 1e9`` is stepped over here).
    ``scale``: units per recorded unit, as for ``record_ns``."""
    limits = []
    for bound in bounds:
        t = math.floor(bound * scale)
        for _ in range(4):  # a few ulps at most below 2**53, where t / scale is exact enough
            if (t + 1) / scale <= bound:
                t += 1
            elif t / scale > bound:
                t -= 1
            else:
                break
        limits.append(t)
    return tuple(limits)


class Batches:
    """The batches of one registry, recorded before each of its collections."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._batches: dict[tuple[HistogramSeries, ...], Batch] = {}
        registry.folds.append(self.fold)
        _live.add(self)

    def of(self, *series: HistogramSeries, scales: tuple[int, ...] | None = None) -> Batch:
        """The batch of ``series`` (one per tuple of series: bounded as series are);
        ``scales``: as for ``Batch``, the first time it is asked for."""
        found = self._batches.get(series)
        if found is None:  # setdefault: threads binding at once share one batch
            found = self._batches.setdefault(series, Batch(series, self._registry, scales))
        return found

    def fold(self) -> None:
        """Record every queued value (called under the registry's lock)."""
        for batch in list(self._batches.values()):
            batch.fold()

    def after_fork_in_child(self) -> None:
        """Forget what the parent queued: the parent records it."""
        for batch in list(self._batches.values()):
            batch.values.clear()


class _HasRegistry(Protocol):
    @property
    def registry(self) -> Registry: ...


def batches(owner: _HasRegistry) -> Batches:
    """The batches of ``owner``'s registry (for a runtime: ``rt.state(batches)``)."""
    return Batches(owner.registry)


_live: weakref.WeakSet[Batches] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for found in list(_live):
        found.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
