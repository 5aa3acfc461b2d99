"""The pre-bound series of one (operation, bounded entity) pair on one runtime.

``series()`` binds them once per runtime; ``_lifecycle`` records an operation into them, and
``_fold`` binds them again on the runtime in force for an operation that ended after
``configure()`` replaced its own.
"""

from __future__ import annotations

from syncperf._accel import InFlight
from syncperf._metrics.aggregates import HistogramSeries, SumSeries
from syncperf._runtime import Runtime
from syncperf._synclog import SyncLog

__all__ = ["OperationSeries", "series"]

Attrs = dict[str, str | bool]


class OperationSeries:
    """Everything one (operation, bounded entity) pair records into, bound once."""

    __slots__ = (
        "attrs",
        "batch",
        "conflict",
        "db_duration",
        "db_queries",
        "entity",
        "errors",
        "idempotency",
        "inflight",
        "items",
        "log",
        "operation",
        "overhead",
        "span_name",
        "success",
        "_rt",
    )

    def __init__(
        self,
        rt: Runtime,
        operation: str,
        entity: str | None,
        inflight: InFlight,
        overhead: HistogramSeries,
        log: SyncLog,
    ) -> None:
        """Bind the series (the caller holds ``rt.lock``)."""
        attrs: Attrs = {"sync.operation": operation}
        if entity is not None:
            attrs["sync.entity"] = entity
        self.attrs = attrs
        self.operation = operation
        self.entity = entity
        self.span_name = "sync " + operation
        self._rt = rt
        key = _key(attrs)
        self.success = rt.duration.histogram(_key({**attrs, "sync.outcome": "success"}))
        self.conflict: HistogramSeries | None = None
        self.errors: dict[str, HistogramSeries] = {}
        self.items: dict[str | None, SumSeries] = {}
        self.batch = rt.batch_size.histogram(key)
        self.idempotency = rt.idempotency.sum(key)
        self.db_queries = rt.db_queries.histogram(key)
        self.db_duration = rt.db_duration.histogram(key)
        self.inflight = inflight
        self.overhead = overhead
        self.log = log

    def conflicted(self) -> HistogramSeries:
        """Duration series for the conflict outcome (bound on first use)."""
        found = self.conflict
        if found is None:
            attrs = {**self.attrs, "sync.outcome": "conflict"}
            found = self.conflict = self._rt.duration.histogram(_key(attrs))
        return found

    def error(self, error_type: str) -> HistogramSeries:
        """Duration series for an error of ``error_type`` (bounded)."""
        found = self.errors.get(error_type)
        if found is None:
            attrs = {**self.attrs, "sync.outcome": "error", "error.type": error_type}
            found = self.errors[error_type] = self._rt.duration.histogram(_key(attrs))
        return found

    def items_of(self, change: str | None) -> SumSeries:
        """The ``sync.items`` series for this pair and ``change`` (bound on first use)."""
        found = self.items.get(change)
        if found is None:
            attrs = dict(self.attrs)
            if change is not None:
                attrs["sync.change"] = change
            found = self.items[change] = self._rt.items.sum(_key(attrs))
        return found


def _key(attrs: Attrs) -> tuple[tuple[str, str | bool], ...]:
    return tuple(sorted(attrs.items()))


def series(rt: Runtime, operation: str, entity: str | None) -> OperationSeries:
    """The pre-bound series of ``operation`` and a raw entity name (bounded here).

    Cached under the bounded name, and under the raw name only when the name was admitted,
    so overflow names cannot grow the cache.
    """
    found: OperationSeries | None = rt.op_series.get((operation, entity))
    if found is None:
        bounded = None if entity is None else rt.entities(entity)
        found = rt.op_series.get((operation, bounded))
        if found is not None:  # e.g. an overflowed name: its "_other" series exists
            return found
        inflight = rt.inflight_for(operation)
        overhead = rt.overhead_for("operation")
        log = rt.state(SyncLog)
        with rt.lock:
            found = rt.op_series.get((operation, bounded))
            if found is None:
                found = rt.op_series[(operation, bounded)] = OperationSeries(
                    rt, operation, bounded, inflight, overhead, log
                )
    return found
