"""What clients tell about themselves, as metric series: staleness, change age, health.

One sync operation gathers what its request said (``Observed``: the checkpoint's age, the
oldest change's age, the ``Sync-Client`` header's numbers); ``record()`` adds it to the
runtime's series when the operation ends, by ``sync.operation``, the final ``sync.entity`` and
the bounded ``sync.client.app_version``. The batch endpoint
(``syncperf.asgi.client_metrics_app``) records numbers clients stored while offline into the
same series. Device, user and client IDs are never attributes.
"""

from __future__ import annotations

import re
from typing import Any

from syncperf._metrics import catalogue
from syncperf._metrics.aggregates import HistogramSeries, Instrument
from syncperf._metrics.catalogue import MetricSpec
from syncperf._runtime import Bounded, Runtime

__all__ = ["REPORTED", "ClientSeries", "Observed", "app_version", "record"]

MAX_APP_VERSIONS = 20
"""Distinct app versions per runtime; later ones are reported as ``_other``."""

REPORTED: dict[str, MetricSpec] = {
    "pending": catalogue.SYNC_CLIENT_PENDING_CHANGES,
    "retries": catalogue.SYNC_CLIENT_RETRIES,
    "last-sync-age": catalogue.SYNC_CLIENT_LAST_SYNC_AGE,
    "db-size": catalogue.SYNC_CLIENT_DB_SIZE,
}
"""The numbers a client reports (``Sync-Client`` header members and batch fields) and the
metric each one is recorded in."""
_VERSION = r"v?([0-9]{1,6}(?:\.[0-9]{1,6}){0,3})(?![0-9])"
"""An app version's numeric part (compiled on first use by ``re``'s cache)."""
_OTHER = "_other"
MAX_BOUND = 10_000
"""Series handles kept per runtime (all attribute values are bounded; this bounds the cache)."""


def app_version(value: object) -> str | None:
    """The attribute value of a reported app version: its numeric part (``1.4.2`` of
    ``v1.4.2-beta+sha.5114f85``), or ``_other`` for anything else; None when absent.

    Only digits and dots reach a metric attribute, so whatever text a client sends as its
    version (a build ID, a token by mistake) is never exported.
    """
    if value is None:
        return None
    if type(value) is str and len(value) <= 64 and (found := re.match(_VERSION, value)):
        return found.group(1)
    return _OTHER


class Observed:
    """What one operation's request told about its client (recorded at the end)."""

    __slots__ = ("app", "change_age", "header", "staleness", "values")

    def __init__(self) -> None:
        self.header = False
        """Whether a ``Sync-Client`` header was read into it (by the middleware or a
        decorator): a decorated handler joining the operation reads it no second time."""
        self.staleness: float | None = None
        self.change_age: float | None = None
        self.values: dict[str, int] | None = None
        """Reported numbers by wire name (``pending``...)."""
        self.app: str | None = None
        """The app version attribute (already through ``app_version``), or None."""


class ClientSeries:
    """The client instruments of one runtime and their bound series (``rt.state``)."""

    def __init__(self, rt: Runtime) -> None:
        registry, limit = rt.registry, rt.config.max_series

        def create(spec: MetricSpec) -> Instrument:
            return spec.create(registry, max_series=limit)

        self.staleness = create(catalogue.SYNC_PULL_STALENESS)
        self.change_age = create(catalogue.SYNC_PUSH_CHANGE_AGE)
        self.reported = {key: create(spec) for key, spec in REPORTED.items()}
        self.duration = create(catalogue.SYNC_CLIENT_OPERATION_DURATION)
        self.batches = create(catalogue.SYNC_CLIENT_BATCHES)
        self.versions = Bounded(MAX_APP_VERSIONS)
        self._bound: dict[tuple[Any, ...], HistogramSeries] = {}

    def series(
        self,
        instrument: Any,
        operation: str,
        entity: str | None,
        app: str | None,
        outcome: str | None = None,
    ) -> HistogramSeries:
        """The series of ``instrument`` for these attributes (the caller holds the lock)."""
        if app is not None:
            app = self.versions(app)
        key = (instrument.name, operation, entity, app, outcome)
        found = self._bound.get(key)
        if found is None:
            attrs = {"sync.operation": operation}
            if entity is not None:
                attrs["sync.entity"] = entity
            if app is not None:
                attrs["sync.client.app_version"] = app
            if outcome is not None:
                attrs["sync.outcome"] = outcome
            found = instrument.histogram(tuple(sorted(attrs.items())))
            if len(self._bound) < MAX_BOUND:
                self._bound[key] = found
        return found


def record(cs: ClientSeries, operation: str, entity: str | None, observed: Observed) -> None:
    """Add what one operation observed (the caller holds ``rt.lock``; it took
    ``cs = rt.state(ClientSeries)`` before, as state is made under its own lock)."""
    if observed.staleness is not None:
        cs.series(cs.staleness, operation, entity, None).record(observed.staleness)
    if observed.change_age is not None:
        cs.series(cs.change_age, operation, entity, None).record(observed.change_age)
    if observed.values:
        app = observed.app
        for key, value in observed.values.items():
            cs.series(cs.reported[key], operation, entity, app).record(value)
