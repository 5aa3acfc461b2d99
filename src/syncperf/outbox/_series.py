"""The pre-bound series of one outbox on one runtime."""

from __future__ import annotations

from syncperf._metrics import catalogue
from syncperf._metrics.aggregates import HistogramSeries, SumSeries, freeze
from syncperf._metrics.catalogue import LAG_BOUNDS as LAG_BOUNDS
from syncperf._runtime import Bounded, Runtime

MAX_NAMES = 100
"""Distinct ``outbox.name`` values per runtime; later names are reported as ``_other``."""


def outbox_names(rt: Runtime) -> Bounded:
    """The ``outbox.name`` values one runtime admits (``rt.state(outbox_names)``)."""
    return Bounded(MAX_NAMES)


def rebound(rt: Runtime, failed: dict[str, int]) -> dict[str, int]:
    """Failure counts by ``error.type``, the types bounded by ``rt`` (the runtime in force
    after the one that bounded them was replaced)."""
    found: dict[str, int] = {}
    for etype, n in failed.items():
        kind = rt.error_types(etype)
        found[kind] = found.get(kind, 0) + n
    return found


class OutboxSeries:
    """The series one outbox records into on one runtime (``Outbox._series``)."""

    __slots__ = (
        "batch_size",
        "dead_lettered",
        "duration",
        "enqueued",
        "lag",
        "name",
        "overhead",
        "published",
        "retried",
        "_base",
        "_duration",
        "_errors",
        "_failed",
        "_messages",
        "_probe",
        "_probe_failures",
    )

    def __init__(self, rt: Runtime, name: str, overhead: HistogramSeries) -> None:
        """Bind the series of the (bounded) ``name`` (call under ``rt.lock``)."""
        registry, limit = rt.registry, rt.config.max_series
        self.name = name
        self._base: dict[str, str | bool] = {"outbox.name": name}
        self._messages = catalogue.OUTBOX_MESSAGES.create(registry, max_series=limit)
        self.enqueued = self._event("enqueued")
        self.published = self._event("published")
        self.retried = self._event("retried")
        self.dead_lettered = self._event("dead_lettered")
        self._failed: dict[str, SumSeries] = {}
        self._duration = catalogue.OUTBOX_PUBLISH_DURATION.create(registry, max_series=limit)
        self.duration = self._duration.histogram(freeze(self._base))
        self._errors: dict[str, HistogramSeries] = {}
        self.lag = catalogue.OUTBOX_LAG.create(registry, max_series=limit).histogram(
            freeze(self._base)
        )
        self.batch_size = catalogue.OUTBOX_BATCH_SIZE.create(registry, max_series=limit).histogram(
            freeze(self._base)
        )
        self._probe_failures = catalogue.OUTBOX_PROBE_FAILURES.create(registry, max_series=limit)
        self._probe: dict[str, SumSeries] = {}
        self.overhead = overhead

    def _event(self, event: str) -> SumSeries:
        return self._messages.sum(freeze({**self._base, "outbox.event": event}))

    def failed(self, etype: str) -> SumSeries:
        """``outbox.messages{outbox.event=failed, error.type}`` (call under ``rt.lock``)."""
        series = self._failed.get(etype)
        if series is None:
            attrs = {**self._base, "outbox.event": "failed", "error.type": etype}
            series = self._failed[etype] = self._messages.sum(freeze(attrs))
        return series

    def duration_error(self, etype: str) -> HistogramSeries:
        """``outbox.publish.duration{error.type}`` (call under ``rt.lock``)."""
        series = self._errors.get(etype)
        if series is None:
            series = self._errors[etype] = self._duration.histogram(
                freeze({**self._base, "error.type": etype})
            )
        return series

    def probe_failure(self, etype: str) -> SumSeries:
        """``outbox.probe.failures{error.type}`` (call under ``rt.lock``)."""
        series = self._probe.get(etype)
        if series is None:
            series = self._probe[etype] = self._probe_failures.sum(
                freeze({**self._base, "error.type": etype})
            )
        return series
