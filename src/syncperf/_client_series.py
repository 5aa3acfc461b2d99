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
from typing import TYPE_CHECKING, Any

from syncperf._metrics.aggregates import HistogramSeries
from syncperf._staleness import AGE_BOUNDS

if TYPE_CHECKING:
    from syncperf._runtime import Runtime

__all__ = ["REPORTED", "ClientSeries", "Observed", "app_version", "record"]

COUNT_BOUNDS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
RETRY_BOUNDS = (0, 1, 2, 3, 5, 10, 20, 50, 100)
SIZE_BOUNDS = tuple(float(1024 * 4**i) for i in range(12))
"""Bytes: 1 KiB, 4 KiB ... 4 GiB."""
MAX_APP_VERSIONS = 20
"""Distinct app versions per runtime; later ones are reported as ``_other``."""

REPORTED: dict[str, tuple[str, str, str, tuple[float, ...]]] = {
    # wire name: (instrument, unit, description, bounds)
    "pending": (
        "sync.client.pending_changes",
        "{change}",
        "Changes waiting on the device, as the client reported.",
        COUNT_BOUNDS,
    ),
    "retries": (
        "sync.client.retries",
        "{retry}",
        "Failed attempts before this sync, as the client reported.",
        RETRY_BOUNDS,
    ),
    "last-sync-age": (
        "sync.client.last_sync_age",
        "s",
        "Seconds since the client's last successful sync, as it reported.",
        AGE_BOUNDS,
    ),
    "db-size": (
        "sync.client.db_size",
        "By",
        "Size of the client's local database, as it reported.",
        SIZE_BOUNDS,
    ),
}
"""The numbers a client reports (``Sync-Client`` header members and batch fields)."""
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

    __slots__ = ("app", "change_age", "staleness", "values")

    def __init__(self) -> None:
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

        def hist(name: str, unit: str, doc: str, bounds: tuple[float, ...]) -> Any:
            return registry.instrument(
                name, "histogram", unit, doc, bounds=bounds, max_series=limit
            )

        from syncperf._runtime import DURATION_BOUNDS, Bounded

        self.staleness = hist(
            "sync.pull.staleness",
            "s",
            "Age of the client's checkpoint when it pulls: how far behind it is.",
            AGE_BOUNDS,
        )
        self.change_age = hist(
            "sync.push.change_age", "s", "Age of the oldest change in a pushed batch.", AGE_BOUNDS
        )
        self.reported = {key: hist(*spec) for key, spec in REPORTED.items()}
        self.duration = hist(
            "sync.client.operation.duration",
            "s",
            "Duration of sync operations as the client measured them, by outcome.",
            DURATION_BOUNDS,
        )
        self.batches = registry.instrument(
            "sync.client.batches",
            "counter",
            "{batch}",
            "Client metric batches received, by result.",
            max_series=limit,
        )
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
