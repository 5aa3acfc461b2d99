"""N+1 and slow-query detection: the counters, span events and rate-limited warnings.

``QueryRecorder`` counts each normalized statement within the current sync operation; when a
count reaches the N+1 threshold, or a query takes longer than the slow-query threshold, it
hands the query to its ``Detector``. These are rare events: their series are bound when they
happen, and their bounds and instruments are shared by every engine of a runtime
(``DetectionSeries``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from syncperf._metrics import catalogue
from syncperf._metrics.aggregates import SumSeries, freeze
from syncperf._runtime import Bounded, Runtime
from syncperf._tracing.current import current_span as _current_span

if TYPE_CHECKING:
    from syncperf._operation import SyncOperation
    from syncperf.sqlalchemy._queries import Query

_logger = logging.getLogger("syncperf.sqlalchemy")
_perf = time.perf_counter_ns
SCRATCH = "syncperf.sqlalchemy"
"""The key of syncperf.sqlalchemy's counts in ``SyncOperation.scratch``."""
MAX_TRACKED = 1000
"""Distinct statements N+1 detection counts per sync operation, at most: each holds its text
(up to 2 KB) until the operation ends. Executions of others are counted in
``syncperf.dropped`` (``n_plus_one_untracked``)."""
_MAX_LOG_KEYS = 1000


class DetectionSeries:
    """One runtime's bounds and instruments shared by every engine (N+1, slow queries,
    response codes); series of the rare events are bound when they happen."""

    __slots__ = ("codes", "collections", "n_plus_one", "operations", "slow")

    def __init__(self, rt: Runtime) -> None:
        self.codes = Bounded(100, overflow="_OTHER")
        self.collections = Bounded(200)
        self.operations = Bounded(50, overflow="_OTHER")
        limit = rt.config.max_series
        self.n_plus_one = catalogue.SYNC_DB_N_PLUS_ONE.create(rt.registry, max_series=limit)
        self.slow = catalogue.SYNC_DB_SLOW_QUERIES.create(rt.registry, max_series=limit)


class Detector:
    """Reports the N+1 and slow queries of one engine (thresholds fixed at instrumentation)."""

    def __init__(
        self,
        system: str,
        n_plus_one_threshold: int | None,
        slow_query_threshold: float | None,
        log_interval: float,
    ) -> None:
        self._system = system
        self.n_plus_one_threshold = n_plus_one_threshold or 0
        """Executions that make an N+1; 0 when detection is off."""
        slow = slow_query_threshold
        self.slow_ns = int(slow * 1e9) if slow is not None else 1 << 62
        """Nanoseconds from which a query is slow (never, when detection is off)."""
        self._log_interval_ns = int(log_interval * 1e9)
        self._next_log: dict[Any, int] = {}

    def n_plus_one(
        self,
        rt: Runtime,
        detections: DetectionSeries,
        op: SyncOperation,
        query: Query,
        count: int,
    ) -> None:
        attrs: dict[str, str | bool] = {"sync.operation": op.operation}
        if op.entity is not None:
            attrs["sync.entity"] = op.entity
        if query.collection is not None:
            attrs["db.collection.name"] = detections.collections(query.collection)
        with rt.lock:
            series: SumSeries = detections.n_plus_one.sum(freeze(attrs))
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
        op.set_attribute("sync.db.n_plus_one", _bump(op, "n_plus_one"))
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

    def untracked(self, rt: Runtime) -> None:
        """An execution N+1 detection leaves out: its operation tracks ``MAX_TRACKED``
        distinct statements already, this one is not among them."""
        rt.drop(
            "n_plus_one_untracked",
            "syncperf: a sync operation ran more than %d distinct statements; N+1 detection "
            "counts the first %d only (the executions of the others are counted in "
            "syncperf.dropped)",
            MAX_TRACKED,
            MAX_TRACKED,
        )

    def slow_query(
        self,
        rt: Runtime,
        detections: DetectionSeries,
        op: SyncOperation | None,
        query: Query,
        duration_ns: int,
    ) -> None:
        attrs: dict[str, str | bool] = {}
        if query.operation is not None:
            attrs["db.operation.name"] = detections.operations(query.operation)
        if query.collection is not None:
            attrs["db.collection.name"] = detections.collections(query.collection)
        with rt.lock:
            series: SumSeries = detections.slow.sum(freeze(attrs))
            series.add(1)
        seconds, threshold = duration_ns / 1e9, self.slow_ns / 1e9
        event_attrs: dict[str, Any] = {
            "db.system.name": self._system,
            "db.query.text": query.text,
            "sync.db.query.duration": seconds,
            "sync.db.slow_query.threshold": threshold,
        }
        if query.operation is not None:
            event_attrs["db.operation.name"] = query.operation
        if query.collection is not None:
            event_attrs["db.collection.name"] = query.collection
        span = op.span if op is not None else _current_span()
        span.add_event("sync.db.slow_query", event_attrs)
        where = ""
        if op is not None:
            op.set_attribute("sync.db.slow_queries", _bump(op, "slow"))
            where = f" in sync {op.operation}" + (f" (entity {op.entity})" if op.entity else "")
        if self._may_log(("slow", query.text)):
            _logger.warning(
                "syncperf: slow query%s: %.3f s (threshold %.3f s): %s",
                where,
                seconds,
                threshold,
                query.text,
            )

    def _may_log(self, key: Any) -> bool:
        """At most one log line per key per ``log_interval`` seconds."""
        now = _perf()
        if now < self._next_log.get(key, 0):
            return False
        if len(self._next_log) >= _MAX_LOG_KEYS:
            self._next_log.clear()
        self._next_log[key] = now + self._log_interval_ns
        return True


def _bump(op: SyncOperation, what: str) -> int:
    scratch = op.scratch
    if scratch is None:
        scratch = op.scratch = {}
    key = (SCRATCH, what)
    count: int = scratch.get(key, 0) + 1  # type: ignore[call-overload]
    scratch[key] = count  # type: ignore[index]
    return count
