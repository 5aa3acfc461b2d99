"""The one list of metrics syncperf emits, and their Prometheus names.

Rules, monitors, the dashboard and their tests name metrics only through this catalogue; a
unit test checks it against the core runtime's instruments, the contract table and the
instruments the integrations register, so an expression can never name a metric that does
not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from syncperf._metrics.prometheus import label_name, prometheus_name

Kind = Literal["histogram", "counter", "updowncounter", "gauge"]

_SYNC = ("sync.operation", "sync.entity")
_CLIENT = (*_SYNC, "sync.client.app_version")
_DB = ("db.system.name", "db.operation.name", "db.collection.name", "error.type")
_POOL = ("db.client.connection.pool.name",)
_HTTP = (
    "http.request.method",
    "url.scheme",
    "http.response.status_code",
    "http.route",
    "error.type",
    "network.protocol.version",
)


@dataclass(frozen=True)
class MetricSpec:
    """One metric syncperf emits.

    Attributes:
        name: OpenTelemetry name (what OTLP backends such as Datadog show).
        kind: Instrument kind.
        unit: UCUM unit.
        attributes: Attribute keys the metric may carry.
        source: Which part of syncperf emits it (``core``, ``sqlalchemy``, ``outbox``, ``asgi``).
    """

    name: str
    kind: Kind
    unit: str
    attributes: tuple[str, ...]
    source: str

    @property
    def prometheus(self) -> str:
        """The Prometheus base name (``_total`` included for counters)."""
        base = prometheus_name(self.name, self.unit)
        return base + "_total" if self.kind == "counter" else base

    @property
    def prometheus_series(self) -> tuple[str, ...]:
        """Every series name Prometheus stores for this metric."""
        if self.kind == "histogram":
            base = self.prometheus
            return (base + "_bucket", base + "_count", base + "_sum")
        return (self.prometheus,)

    @property
    def labels(self) -> tuple[str, ...]:
        """Prometheus label names of the attributes."""
        return tuple(label_name(a) for a in self.attributes)


def _m(name: str, kind: Kind, unit: str, attributes: tuple[str, ...], source: str) -> MetricSpec:
    return MetricSpec(name, kind, unit, attributes, source)


METRICS: tuple[MetricSpec, ...] = (
    # core (syncperf._runtime)
    _m("sync.operation.duration", "histogram", "s", (*_SYNC, "sync.outcome", "error.type"), "core"),
    _m("sync.batch.size", "histogram", "{item}", _SYNC, "core"),
    _m("sync.items", "counter", "{item}", (*_SYNC, "sync.change"), "core"),
    _m(
        "sync.conflicts",
        "counter",
        "{conflict}",
        ("sync.entity", "sync.conflict.resolution"),
        "core",
    ),
    _m("sync.idempotency.hits", "counter", "{request}", _SYNC, "core"),
    _m("sync.operations.active", "updowncounter", "{operation}", ("sync.operation",), "core"),
    _m("sync.db.queries", "histogram", "{query}", _SYNC, "core"),
    _m("sync.db.duration", "histogram", "s", _SYNC, "core"),
    _m("syncperf.overhead", "histogram", "s", ("syncperf.component",), "core"),
    _m("syncperf.dropped", "counter", "{measurement}", ("syncperf.reason",), "core"),
    _m("syncperf.shed", "counter", "{event}", ("syncperf.reason",), "core"),
    _m("syncperf.export.failures", "counter", "{export}", ("syncperf.signal",), "core"),
    # what clients see (syncperf._client_series; the batch endpoint in syncperf.asgi)
    _m("sync.pull.staleness", "histogram", "s", _SYNC, "core"),
    _m("sync.push.change_age", "histogram", "s", _SYNC, "core"),
    _m("sync.client.pending_changes", "histogram", "{change}", _CLIENT, "core"),
    _m("sync.client.retries", "histogram", "{retry}", _CLIENT, "core"),
    _m("sync.client.last_sync_age", "histogram", "s", _CLIENT, "core"),
    _m("sync.client.db_size", "histogram", "By", _CLIENT, "core"),
    _m(
        "sync.client.operation.duration",
        "histogram",
        "s",
        (*_CLIENT, "sync.outcome"),
        "core",
    ),
    _m("sync.client.batches", "counter", "{batch}", ("sync.client.batch.result",), "asgi"),
    # syncperf.sqlalchemy
    _m(
        "sync.db.slow_queries",
        "counter",
        "{query}",
        ("db.operation.name", "db.collection.name"),
        "sqlalchemy",
    ),
    _m(
        "sync.db.n_plus_one", "counter", "{detection}", (*_SYNC, "db.collection.name"), "sqlalchemy"
    ),
    _m("db.client.operation.duration", "histogram", "s", _DB, "sqlalchemy"),
    _m(
        "db.client.connection.count",
        "updowncounter",
        "{connection}",
        (*_POOL, "db.client.connection.state"),
        "sqlalchemy",
    ),
    _m("db.client.connection.max", "updowncounter", "{connection}", _POOL, "sqlalchemy"),
    _m("db.client.connection.idle.max", "updowncounter", "{connection}", _POOL, "sqlalchemy"),
    _m("db.client.connection.pending_requests", "updowncounter", "{request}", _POOL, "sqlalchemy"),
    _m("db.client.connection.timeouts", "counter", "{timeout}", _POOL, "sqlalchemy"),
    _m("db.client.connection.wait_time", "histogram", "s", _POOL, "sqlalchemy"),
    _m("db.client.connection.use_time", "histogram", "s", _POOL, "sqlalchemy"),
    # syncperf.outbox
    _m(
        "outbox.messages",
        "counter",
        "{message}",
        ("outbox.name", "outbox.event", "error.type"),
        "outbox",
    ),
    _m("outbox.depth", "gauge", "{message}", ("outbox.name",), "outbox"),
    _m("outbox.oldest_age", "gauge", "s", ("outbox.name",), "outbox"),
    _m("outbox.rows", "gauge", "{message}", ("outbox.name", "outbox.status"), "outbox"),
    _m("outbox.attempts", "gauge", "{attempt}", ("outbox.name",), "outbox"),
    _m("outbox.publish.duration", "histogram", "s", ("outbox.name",), "outbox"),
    _m("outbox.lag", "histogram", "s", ("outbox.name",), "outbox"),
    _m("outbox.batch.size", "histogram", "{message}", ("outbox.name",), "outbox"),
    _m("outbox.probe.failures", "counter", "{failure}", ("outbox.name", "error.type"), "outbox"),
    # syncperf.asgi (HTTP semantic conventions)
    _m("http.server.request.duration", "histogram", "s", _HTTP, "asgi"),
    _m(
        "http.server.active_requests",
        "updowncounter",
        "{request}",
        ("http.request.method", "url.scheme"),
        "asgi",
    ),
    _m("http.server.request.body.size", "histogram", "By", _HTTP, "asgi"),
    _m("http.server.response.body.size", "histogram", "By", _HTTP, "asgi"),
)
"""Every metric syncperf emits, in documentation order."""

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}
"""``METRICS`` keyed by OpenTelemetry name."""

PROMETHEUS_SERIES: frozenset[str] = frozenset(s for m in METRICS for s in m.prometheus_series)
"""Every Prometheus series name syncperf's metrics produce."""


def prom(name: str, suffix: str = "") -> str:
    """The Prometheus name of the syncperf metric ``name`` plus ``suffix`` (checked).

    Raises:
        KeyError: ``name`` is not a metric syncperf emits, or the suffixed series does not
            exist (e.g. ``_bucket`` of a counter).
    """
    series = BY_NAME[name].prometheus + suffix
    if series not in PROMETHEUS_SERIES:
        raise KeyError(series)
    return series


def label(attribute: str) -> str:
    """The Prometheus label name of an attribute key."""
    return label_name(attribute)
