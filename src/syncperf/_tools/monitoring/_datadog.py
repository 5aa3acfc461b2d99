"""Datadog monitors equivalent to the Prometheus alerts, for metrics ingested over OTLP.

Over OTLP (Datadog Agent or the collector's Datadog exporter) metric names keep their
OpenTelemetry spelling and attributes become tags of the same name; histograms become
distributions (``count:``/``p95:`` aggregations), monotonic sums become counts and
gauges stay gauges. See docs/datadog.md.
"""

from __future__ import annotations

from typing import Any

from syncperf._metrics.catalogue import BY_NAME
from syncperf._tools.monitoring._alerts import Alert, alerts
from syncperf._tools.monitoring._options import RuleOptions, number, parse_duration
from syncperf.exceptions import ConfigError

_PRIORITY = {"critical": 1, "warning": 3, "info": 4}
_OP_ENTITY = ("sync.operation", "sync.entity")


def _window(option: str, value: str) -> str:
    """A Datadog evaluation window (``last_5m``) for a Prometheus duration."""
    seconds = int(parse_duration(option, value))
    if seconds % 60:
        raise ConfigError(option, value, "a whole number of minutes for --format datadog")
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


def metric(name: str) -> str:
    """A syncperf metric's Datadog name (its OpenTelemetry name; checked)."""
    if name not in BY_NAME:
        raise KeyError(name)
    return name


def _by(tags: tuple[str, ...]) -> str:
    return " by {" + ",".join(tags) + "}"


def _var(tag: str) -> str:
    return "{{[" + tag + "].name}}"


Query = tuple[str, float, str, tuple[str, ...]]
"""A monitor's ``(query, critical threshold, title, group tags)``."""


def monitors(o: RuleOptions) -> list[dict[str, Any]]:
    """Datadog monitor definitions (API ``POST /api/v1/monitor`` bodies), one per alert."""
    queries = {**_sync_queries(o), **_client_queries(o), **_other_queries(o)}
    return [_monitor(o, alert, *queries[alert.name]) for alert in alerts(o)]


def _sync_queries(o: RuleOptions) -> dict[str, Query]:
    """The monitors of sync operations, by alert name."""
    w = _window("window", o.window)
    b = _window("baseline_window", o.baseline_window)
    duration = metric("sync.operation.duration")
    by = _by(_OP_ENTITY)
    entity_op = f"entity {_var('sync.entity')} ({_var('sync.operation')})"
    return {
        "SyncPushConflictRateHigh": (
            f"sum(last_{w}):count:{duration}{{sync.operation:push,sync.outcome:conflict}}"
            f"{by}.as_count() / count:{duration}{{sync.operation:push}}{by}.as_count()"
            f" > {number(o.conflict_rate)}",
            o.conflict_rate,
            f"Push conflict rate high for {entity_op}",
            _OP_ENTITY,
        ),
        "SyncLatencyP95High": (
            f"avg(last_{w}):p95:{duration}{{*}}{by} > {number(o.p95_seconds)}",
            o.p95_seconds,
            f"Sync p95 latency high for {entity_op}",
            _OP_ENTITY,
        ),
        "SyncErrorRateHigh": (
            f"sum(last_{w}):count:{duration}{{sync.outcome:error}}{by}.as_count()"
            f" / count:{duration}{{*}}{by}.as_count() > {number(o.error_rate)}",
            o.error_rate,
            f"Sync error rate high for {entity_op}",
            _OP_ENTITY,
        ),
        "SyncVolumeSpike": (
            f"pct_change(sum(last_{w}),last_{b}):count:{duration}{{*}}{by}.as_count()"
            f" > {number((o.volume_spike_factor - 1) * 100)}",
            (o.volume_spike_factor - 1) * 100,
            f"Sync volume spike for {entity_op}",
            _OP_ENTITY,
        ),
        "SyncIdempotencyHitSpike": (
            # The share of pushes that were replays, now against one baseline earlier (the
            # Prometheus rule's ratio); its min-share and min-rate guards need a composite
            # monitor (docs/datadog.md).
            f"pct_change(sum(last_{w}),last_{b}):sum:{metric('sync.idempotency.hits')}"
            f"{{sync.operation:push}}{by}.as_count()"
            f" / count:{duration}{{sync.operation:push}}{by}.as_count()"
            f" > {number((o.idempotency_spike_factor - 1) * 100)}",
            (o.idempotency_spike_factor - 1) * 100,
            f"Idempotency-hit spike for {entity_op}",
            _OP_ENTITY,
        ),
    }


def _client_queries(o: RuleOptions) -> dict[str, Query]:
    """The monitors of what clients see, by alert name."""
    w = _window("window", o.window)
    client = metric("sync.client.operation.duration")
    by = _by(_OP_ENTITY)
    entity_op = f"entity {_var('sync.entity')} ({_var('sync.operation')})"
    return {
        "SyncClientsFarBehind": (
            # More than a share s of pulls over T behind is the (1 - s) quantile over T: the
            # Prometheus rule counts the share in the buckets, Datadog's distribution answers
            # the quantile (stale_share is limited to the quantiles it offers).
            f"avg(last_{w}):{_quantile(1 - o.stale_share)}:{metric('sync.pull.staleness')}{{*}}"
            f"{by} > {number(o.stale_hours * 3600)}",
            o.stale_hours * 3600,
            f"Clients far behind for {entity_op}",
            _OP_ENTITY,
        ),
        "SyncClientPendingChangesHigh": (
            f"avg(last_{w}):p95:{metric('sync.client.pending_changes')}{{*}}{by}"
            f" > {number(o.pending_changes)}",
            o.pending_changes,
            f"Changes piling up on devices for {entity_op}",
            _OP_ENTITY,
        ),
        "SyncClientFailureRateHigh": (
            f"sum(last_{w}):count:{client}{{sync.outcome:error}}{by}.as_count()"
            f" / count:{client}{{*}}{by}.as_count() > {number(o.client_error_rate)}",
            o.client_error_rate,
            f"Client-side failure rate high for {entity_op}",
            _OP_ENTITY,
        ),
    }


def _quantile(q: float) -> str:
    """Datadog's aggregation of the distribution quantile ``q`` (``0.75`` -> ``p75``)."""
    return "p" + number(round(q * 100, 6))


def _other_queries(o: RuleOptions) -> dict[str, Query]:
    """The monitors of the outbox, the database and syncperf itself, by alert name."""
    w = _window("window", o.window)
    sw = _window("slow_query_window", o.slow_query_window)
    pw = _window("plan_window", o.plan_window)
    entity_op = f"entity {_var('sync.entity')} ({_var('sync.operation')})"
    slow_per_window = round(o.slow_queries_per_hour * o.seconds("slow_query_window") / 3600, 6)
    return {
        "OutboxOldestMessageTooOld": (
            f"max(last_{w}):max:{metric('outbox.oldest_age')}{{*}} by {{outbox.name}}"
            f" > {number(o.outbox_age_seconds)}",
            o.outbox_age_seconds,
            f"Outbox {_var('outbox.name')}: oldest message too old",
            ("outbox.name",),
        ),
        "OutboxProbeFailing": (
            f"sum(last_{w}):sum:{metric('outbox.probe.failures')}{{*}} by {{outbox.name}}"
            ".as_count() > 0",
            0.0,
            f"Outbox {_var('outbox.name')}: depth and age probe failing",
            ("outbox.name",),
        ),
        "SyncNPlusOneDetected": (
            f"sum(last_{w}):sum:{metric('sync.db.n_plus_one')}{{*}}"
            f"{_by((*_OP_ENTITY, 'db.collection.name'))}.as_count() > {number(o.n_plus_one)}",
            o.n_plus_one,
            f"N+1 queries on {_var('db.collection.name')} in {entity_op}",
            (*_OP_ENTITY, "db.collection.name"),
        ),
        "SyncQueryPlanFinding": (
            f"sum(last_{pw}):sum:{metric('sync.db.plan.findings')}{{*}}"
            f"{_by((*_OP_ENTITY, 'db.collection.name', 'sync.db.plan.finding'))}.as_count()"
            " > 0",
            0.0,
            f"Query plan finding {_var('sync.db.plan.finding')} on "
            f"{_var('db.collection.name')} in {entity_op}",
            (*_OP_ENTITY, "db.collection.name", "sync.db.plan.finding"),
        ),
        "SyncSlowQueriesHigh": (
            # The count over the window (as_count() summed), against the hourly threshold
            # scaled to the window, as the Prometheus rule counts them.
            f"sum(last_{sw}):sum:{metric('sync.db.slow_queries')}{{*}}"
            f"{_by(('db.operation.name', 'db.collection.name'))}.as_count()"
            f" > {number(slow_per_window)}",
            slow_per_window,
            f"Slow queries: {_var('db.operation.name')} on {_var('db.collection.name')}",
            ("db.operation.name", "db.collection.name"),
        ),
        "SyncPerfShedding": (
            f"sum(last_{w}):sum:{metric('syncperf.shed')}{{*}} by {{syncperf.reason}}"
            ".as_count() > 0",
            0.0,
            f"syncperf is shedding span work ({_var('syncperf.reason')})",
            ("syncperf.reason",),
        ),
        "SyncPerfExportFailing": (
            f"sum(last_{w}):sum:{metric('syncperf.export.failures')}{{*}}"
            " by {syncperf.signal}.as_count() > 0",
            0.0,
            f"syncperf cannot export {_var('syncperf.signal')}",
            ("syncperf.signal",),
        ),
    }


def _monitor(
    o: RuleOptions, alert: Alert, query: str, threshold: float, title: str, tags: tuple[str, ...]
) -> dict[str, Any]:
    return {
        "name": f"[syncperf] {title}",
        "type": "query alert",
        "query": query,
        "message": (
            f"{alert.description}\n\n"
            f"Runbook: {o.runbook(alert.name)}\n\n"
            "Group: " + ", ".join(f"{t}={_var(t)}" for t in tags)
        ),
        "tags": ["source:syncperf", f"alert:{alert.name}", f"severity:{alert.severity}"],
        "priority": _PRIORITY[alert.severity],
        "options": {
            "thresholds": {"critical": threshold},
            "notify_no_data": False,
            "require_full_window": False,
            "include_tags": True,
            "new_group_delay": 60,
        },
    }
