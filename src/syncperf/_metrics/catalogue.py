"""Every metric syncperf emits, declared once: name, kind, unit, description, buckets, attributes.

The runtime and every integration create their instruments only through these entries
(``SYNC_OPERATION_DURATION.create(registry, max_series=...)``); the rules, alerts, Datadog
monitors and dashboard behind ``syncperf rules`` / ``syncperf dashboard`` read names, kinds and
Prometheus names from ``METRICS``; tests check it against docs/metrics.md and against what a
runtime with every integration really creates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from syncperf._metrics.aggregates import GaugeCallback, Instrument, Kind, Registry
from syncperf._metrics.prometheus import prometheus_name

# fmt: off
DURATION_BOUNDS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
)
"""Seconds; 0.2 s, 2 s and 5 s (the KPI and alert thresholds) are exact boundaries."""
BATCH_BOUNDS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
QUERY_COUNT_BOUNDS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
OVERHEAD_BOUNDS = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1,
)
DB_DURATION_BOUNDS = (0.0001, 0.00025, 0.0005, *DURATION_BOUNDS)
"""Seconds: the semantic conventions' boundaries, 0.2 s / 2 s / 5 s, and sub-millisecond ones."""
LAG_BOUNDS = (
    0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
)
"""``outbox.lag`` boundaries: 10 ms to a day (0.2 s, 2 s and 5 s exact, as for durations)."""
HTTP_DURATION_BOUNDS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 2.0, 2.5, 5.0, 7.5, 10.0,
)
"""The semantic-convention advisory buckets plus 0.2 s and 2 s (syncperf's KPI thresholds)."""
BODY_SIZE_BOUNDS = (
    0, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)
AGE_BOUNDS = (
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
    86400.0, 172800.0, 604800.0, 1209600.0, 2592000.0,
)
"""Client ages (staleness, change age, time since the last sync), seconds to 30 days:
1 h, 8 h, 1 day and 1 week are exact boundaries (the alert thresholds)."""
PENDING_BOUNDS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
RETRY_BOUNDS = (0, 1, 2, 3, 5, 10, 20, 50, 100)
DB_SIZE_BOUNDS = tuple(float(1024 * 4**i) for i in range(12))
"""Bytes of a client's local database: 1 KiB, 4 KiB ... 4 GiB."""
# fmt: on


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric syncperf emits.

    Attributes:
        name: OpenTelemetry name (what OTLP backends such as Datadog show).
        kind: Instrument kind.
        unit: UCUM unit.
        description: The instrument's description, as exported.
        attributes: Attribute keys the metric may carry.
        bounds: Explicit bucket boundaries (histograms only).
    """

    name: str
    kind: Kind
    unit: str
    description: str
    attributes: tuple[str, ...]
    bounds: tuple[float, ...] = ()

    def create(
        self, registry: Registry, *, max_series: int = 2000, beside: object = None
    ) -> Instrument:
        """This metric's instrument in ``registry`` (created once; see ``Registry.instrument``)."""
        return registry.instrument(
            self.name,
            self.kind,
            self.unit,
            self.description,
            bounds=self.bounds,
            max_series=max_series,
            beside=beside,
        )

    def observe(
        self,
        registry: Registry,
        callback: GaugeCallback,
        *,
        max_series: int = 2000,
        probe: bool = False,
        beside: object = None,
    ) -> Instrument:
        """This metric's instrument in ``registry``, observed through ``callback`` at collection
        (``probe``: a costly one, see ``Instrument.probe``; ``beside``: see ``create``)."""
        instrument = self.create(registry, max_series=max_series, beside=beside)
        instrument.probe = instrument.probe or probe
        instrument.callbacks.append(callback)
        return instrument

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


def _spec(
    name: str,
    kind: Kind,
    unit: str,
    description: str,
    attributes: Sequence[str],
    bounds: Sequence[float] = (),
) -> MetricSpec:
    return MetricSpec(name, kind, unit, description, tuple(attributes), tuple(bounds))


_SYNC = ("sync.operation", "sync.entity")
_CLIENT = (*_SYNC, "sync.client.app_version")
_POOL = ("db.client.connection.pool.name",)
_OUTBOX = ("outbox.name",)
_HTTP = (
    "http.request.method",
    "url.scheme",
    "http.response.status_code",
    "http.route",
    "error.type",
    "network.protocol.version",
)

# fmt: off
# --- sync operations (the core) ---------------------------------------------------------
SYNC_OPERATION_DURATION = _spec(
    "sync.operation.duration", "histogram", "s", "Duration of sync operations.",
    (*_SYNC, "sync.outcome", "error.type"), DURATION_BOUNDS,
)
SYNC_BATCH_SIZE = _spec(
    "sync.batch.size", "histogram", "{item}", "Items in one sync request or response.",
    _SYNC, BATCH_BOUNDS,
)
SYNC_ITEMS = _spec(
    "sync.items", "counter", "{item}", "Items synced, by entity and change type.",
    (*_SYNC, "sync.change"),
)
SYNC_CONFLICTS = _spec(
    "sync.conflicts", "counter", "{conflict}", "Conflicts detected on push.",
    ("sync.entity", "sync.conflict.resolution"),
)
SYNC_IDEMPOTENCY_HITS = _spec(
    "sync.idempotency.hits", "counter", "{request}", "Duplicate (replayed) sync requests.", _SYNC
)
SYNC_OPERATIONS_ACTIVE = _spec(
    "sync.operations.active", "updowncounter", "{operation}", "Sync operations in progress.",
    ("sync.operation",),
)
SYNC_DB_QUERIES = _spec(
    "sync.db.queries", "histogram", "{query}", "Database queries per sync operation.",
    _SYNC, QUERY_COUNT_BOUNDS,
)
SYNC_DB_DURATION = _spec(
    "sync.db.duration", "histogram", "s", "Database time per sync operation.",
    _SYNC, DURATION_BOUNDS,
)

# --- database (syncperf.sqlalchemy) -------------------------------------------------------
DB_OPERATION_DURATION = _spec(
    "db.client.operation.duration", "histogram", "s", "Duration of database client operations.",
    ("db.system.name", "db.namespace", "db.operation.name", "db.collection.name",
     "server.address", "server.port", "error.type", "db.response.status_code"),
    DB_DURATION_BOUNDS,
)
SYNC_DB_SLOW_QUERIES = _spec(
    "sync.db.slow_queries", "counter", "{query}", "Queries slower than the slow-query threshold.",
    ("db.operation.name", "db.collection.name"),
)
SYNC_DB_N_PLUS_ONE = _spec(
    "sync.db.n_plus_one", "counter", "{detection}",
    "Statements executed at least the N+1 threshold times within one sync operation.",
    (*_SYNC, "db.collection.name"),
)
SYNC_DB_PLAN_FINDINGS = _spec(
    "sync.db.plan.findings", "counter", "{finding}",
    "Findings in the query plans of sync statements (seq_scan, sort, hash_join, cost_jump).",
    (*_SYNC, "db.collection.name", "sync.db.plan.finding"),
)
DB_CONNECTION_COUNT = _spec(
    "db.client.connection.count", "updowncounter", "{connection}",
    "Connections in the pool by state (idle, used).",
    (*_POOL, "db.client.connection.state"),
)
DB_CONNECTION_MAX = _spec(
    "db.client.connection.max", "updowncounter", "{connection}",
    "The maximum number of open connections allowed.", _POOL,
)
DB_CONNECTION_IDLE_MAX = _spec(
    "db.client.connection.idle.max", "updowncounter", "{connection}",
    "The maximum number of idle open connections allowed.", _POOL,
)
DB_CONNECTION_PENDING_REQUESTS = _spec(
    "db.client.connection.pending_requests", "updowncounter", "{request}",
    "Pending requests for an open connection.", _POOL,
)
DB_CONNECTION_WAIT_TIME = _spec(
    "db.client.connection.wait_time", "histogram", "s",
    "The time it took to obtain an open connection from the pool.", _POOL, DB_DURATION_BOUNDS,
)
DB_CONNECTION_USE_TIME = _spec(
    "db.client.connection.use_time", "histogram", "s",
    "The time between borrowing a connection and returning it to the pool.",
    _POOL, DB_DURATION_BOUNDS,
)
DB_CONNECTION_TIMEOUTS = _spec(
    "db.client.connection.timeouts", "counter", "{timeout}",
    "Connection checkouts that timed out waiting for the pool.", _POOL,
)

# --- outbox (syncperf.outbox) -------------------------------------------------------------
OUTBOX_MESSAGES = _spec(
    "outbox.messages", "counter", "{message}",
    "Outbox messages by event: enqueued, published, failed, retried, dead_lettered.",
    (*_OUTBOX, "outbox.event", "error.type"),
)
OUTBOX_DEPTH = _spec(
    "outbox.depth", "gauge", "{message}", "Outbox messages waiting to be published.", _OUTBOX
)
OUTBOX_OLDEST_AGE = _spec(
    "outbox.oldest_age", "gauge", "s",
    "Age of the oldest outbox message waiting to be published.", _OUTBOX,
)
OUTBOX_ROWS = _spec(
    "outbox.rows", "gauge", "{message}",
    "Outbox messages in the table by status, read from the table.",
    (*_OUTBOX, "outbox.status"),
)
OUTBOX_ATTEMPTS = _spec(
    "outbox.attempts", "gauge", "{attempt}",
    "Publish attempts recorded in the outbox table's rows.", _OUTBOX,
)
OUTBOX_PUBLISH_DURATION = _spec(
    "outbox.publish.duration", "histogram", "s", "Duration of outbox relay batches.",
    (*_OUTBOX, "error.type"), DURATION_BOUNDS,
)
OUTBOX_LAG = _spec(
    "outbox.lag", "histogram", "s", "Time from enqueueing an outbox message to publishing it.",
    _OUTBOX, LAG_BOUNDS,
)
OUTBOX_BATCH_SIZE = _spec(
    "outbox.batch.size", "histogram", "{message}", "Messages per outbox relay batch.",
    _OUTBOX, BATCH_BOUNDS,
)
OUTBOX_PROBE_FAILURES = _spec(
    "outbox.probe.failures", "counter", "{failure}",
    "Outbox stats calls (depth, oldest age) that failed or timed out.",
    (*_OUTBOX, "error.type"),
)

# --- what clients see (staleness, the Sync-Client header, the client metrics endpoint) -----
SYNC_PULL_STALENESS = _spec(
    "sync.pull.staleness", "histogram", "s",
    "Age of the client's checkpoint when it pulls: how far behind it is.", _SYNC, AGE_BOUNDS,
)
SYNC_PUSH_CHANGE_AGE = _spec(
    "sync.push.change_age", "histogram", "s", "Age of the oldest change in a pushed batch.",
    _SYNC, AGE_BOUNDS,
)
SYNC_CLIENT_PENDING_CHANGES = _spec(
    "sync.client.pending_changes", "histogram", "{change}",
    "Changes waiting on the device, as the client reported.", _CLIENT, PENDING_BOUNDS,
)
SYNC_CLIENT_RETRIES = _spec(
    "sync.client.retries", "histogram", "{retry}",
    "Failed attempts before this sync, as the client reported.", _CLIENT, RETRY_BOUNDS,
)
SYNC_CLIENT_LAST_SYNC_AGE = _spec(
    "sync.client.last_sync_age", "histogram", "s",
    "Seconds since the client's last successful sync, as it reported.", _CLIENT, AGE_BOUNDS,
)
SYNC_CLIENT_DB_SIZE = _spec(
    "sync.client.db_size", "histogram", "By",
    "Size of the client's local database, as it reported.", _CLIENT, DB_SIZE_BOUNDS,
)
SYNC_CLIENT_OPERATION_DURATION = _spec(
    "sync.client.operation.duration", "histogram", "s",
    "Duration of sync operations as the client measured them, by outcome.",
    (*_CLIENT, "sync.outcome"), DURATION_BOUNDS,
)
SYNC_CLIENT_BATCHES = _spec(
    "sync.client.batches", "counter", "{batch}", "Client metric batches received, by result.",
    ("sync.client.batch.result",),
)

# --- HTTP server (syncperf.asgi) ----------------------------------------------------------
HTTP_SERVER_REQUEST_DURATION = _spec(
    "http.server.request.duration", "histogram", "s", "Duration of HTTP server requests.",
    _HTTP, HTTP_DURATION_BOUNDS,
)
HTTP_SERVER_ACTIVE_REQUESTS = _spec(
    "http.server.active_requests", "updowncounter", "{request}",
    "Number of active HTTP server requests.", ("http.request.method", "url.scheme"),
)
HTTP_SERVER_REQUEST_BODY_SIZE = _spec(
    "http.server.request.body.size", "histogram", "By", "Size of HTTP server request bodies.",
    _HTTP, BODY_SIZE_BOUNDS,
)
HTTP_SERVER_RESPONSE_BODY_SIZE = _spec(
    "http.server.response.body.size", "histogram", "By", "Size of HTTP server response bodies.",
    _HTTP, BODY_SIZE_BOUNDS,
)

# --- syncperf itself ----------------------------------------------------------------------
SYNCPERF_OVERHEAD = _spec(
    "syncperf.overhead", "histogram", "s", "syncperf's own time per operation.",
    ("syncperf.component",), OVERHEAD_BOUNDS,
)
SYNCPERF_SHED = _spec(
    "syncperf.shed", "counter", "{event}",
    "Times syncperf shed span work to stay within its overhead budget.", ("syncperf.reason",),
)
SYNCPERF_DROPPED = _spec(
    "syncperf.dropped", "counter", "{measurement}",
    "Measurements dropped as invalid, by reason.", ("syncperf.reason",),
)
SYNCPERF_EXPORT_FAILURES = _spec(
    "syncperf.export.failures", "counter", "{export}", "Failed metric exports.",
    ("syncperf.signal",),
)
# fmt: on

METRICS: tuple[MetricSpec, ...] = (
    SYNC_OPERATION_DURATION,
    SYNC_BATCH_SIZE,
    SYNC_ITEMS,
    SYNC_CONFLICTS,
    SYNC_IDEMPOTENCY_HITS,
    SYNC_OPERATIONS_ACTIVE,
    SYNC_DB_QUERIES,
    SYNC_DB_DURATION,
    DB_OPERATION_DURATION,
    SYNC_DB_SLOW_QUERIES,
    SYNC_DB_N_PLUS_ONE,
    SYNC_DB_PLAN_FINDINGS,
    DB_CONNECTION_COUNT,
    DB_CONNECTION_MAX,
    DB_CONNECTION_IDLE_MAX,
    DB_CONNECTION_PENDING_REQUESTS,
    DB_CONNECTION_WAIT_TIME,
    DB_CONNECTION_USE_TIME,
    DB_CONNECTION_TIMEOUTS,
    OUTBOX_MESSAGES,
    OUTBOX_DEPTH,
    OUTBOX_OLDEST_AGE,
    OUTBOX_ROWS,
    OUTBOX_ATTEMPTS,
    OUTBOX_PUBLISH_DURATION,
    OUTBOX_LAG,
    OUTBOX_BATCH_SIZE,
    OUTBOX_PROBE_FAILURES,
    SYNC_PULL_STALENESS,
    SYNC_PUSH_CHANGE_AGE,
    SYNC_CLIENT_PENDING_CHANGES,
    SYNC_CLIENT_RETRIES,
    SYNC_CLIENT_LAST_SYNC_AGE,
    SYNC_CLIENT_DB_SIZE,
    SYNC_CLIENT_OPERATION_DURATION,
    SYNC_CLIENT_BATCHES,
    HTTP_SERVER_REQUEST_DURATION,
    HTTP_SERVER_ACTIVE_REQUESTS,
    HTTP_SERVER_REQUEST_BODY_SIZE,
    HTTP_SERVER_RESPONSE_BODY_SIZE,
    SYNCPERF_OVERHEAD,
    SYNCPERF_SHED,
    SYNCPERF_DROPPED,
    SYNCPERF_EXPORT_FAILURES,
)
"""Every metric syncperf emits, in the order of docs/metrics.md."""

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}
"""``METRICS`` keyed by OpenTelemetry name."""

PROMETHEUS_SERIES: frozenset[str] = frozenset(s for m in METRICS for s in m.prometheus_series)
"""Every Prometheus series name syncperf's metrics produce."""
