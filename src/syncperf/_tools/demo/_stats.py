"""The demo's numbers, read from syncperf's own aggregates, and the default alerts on them.

A ``Snapshot`` is one cumulative collection of the runtime (``rt.reader()``), flattened to
``{metric name: [(attributes, point)]}``. Percentiles are estimated from the histogram buckets
the way Prometheus's ``histogram_quantile`` does (linear within a bucket), clamped to the
recorded min and max.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics.export import HistogramDataPoint, MetricsData

from syncperf._tools.monitoring._alerts import alerts
from syncperf._tools.monitoring._options import RuleOptions

Attrs = Mapping[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """One cumulative collection, taken at ``at`` (monotonic seconds)."""

    at: float
    metrics: dict[str, list[tuple[dict[str, Any], Any]]]

    @classmethod
    def of(cls, data: MetricsData, at: float) -> Snapshot:
        """Flatten ``data``."""
        metrics: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = metrics.setdefault(metric.name, [])
                    points.extend(
                        (dict(point.attributes or {}), point) for point in metric.data.data_points
                    )
        return cls(at, metrics)

    def points(self, name: str, **match: Any) -> list[tuple[dict[str, Any], Any]]:
        """Points of ``name`` whose attributes include ``match`` (keys with dots as ``_``)."""
        wanted = {k.replace("__", "."): v for k, v in match.items()}
        return [
            (attrs, point)
            for attrs, point in self.metrics.get(name, ())
            if all(attrs.get(k) == v for k, v in wanted.items())
        ]

    def total(self, name: str, match: Attrs | None = None) -> float:
        """Sum of counter values (or histogram counts) over the matching points."""
        return float(
            sum(
                point.count if isinstance(point, HistogramDataPoint) else point.value
                for attrs, point in self.metrics.get(name, ())
                if _matches(attrs, match)
            )
        )

    def merged(self, name: str, match: Attrs | None = None) -> HistogramDataPoint | None:
        """The matching histogram points merged into one (None when there are none)."""
        found = [
            p
            for attrs, p in self.metrics.get(name, ())
            if _matches(attrs, match) and isinstance(p, HistogramDataPoint)
        ]
        if not found:
            return None
        first = found[0]
        counts = [sum(col) for col in zip(*(p.bucket_counts for p in found), strict=True)]
        return HistogramDataPoint(
            attributes={},
            start_time_unix_nano=first.start_time_unix_nano,
            time_unix_nano=first.time_unix_nano,
            count=sum(p.count for p in found),
            sum=sum(p.sum for p in found),
            bucket_counts=counts,
            explicit_bounds=list(first.explicit_bounds),
            min=min(p.min for p in found),
            max=max(p.max for p in found),
        )

    def gauge(self, name: str, match: Attrs | None = None) -> float | None:
        """The value of a gauge (or up-down counter), summed over the matching points."""
        values = [p.value for attrs, p in self.metrics.get(name, ()) if _matches(attrs, match)]
        return float(sum(values)) if values else None

    def series_count(self) -> int:
        """Number of exported series (data points) in this collection."""
        return sum(len(points) for points in self.metrics.values())


def _matches(attrs: Attrs, match: Attrs | None) -> bool:
    return match is None or all(attrs.get(k) == v for k, v in match.items())


def quantile(q: float, point: HistogramDataPoint | None) -> float | None:
    """The ``q`` quantile of a histogram point (Prometheus-style interpolation), or None."""
    if point is None or point.count == 0:
        return None
    rank = q * point.count
    cumulative = 0
    bounds = list(point.explicit_bounds)
    for index, count in enumerate(point.bucket_counts):
        if count and cumulative + count >= rank:
            # the bucket's range, narrowed by the recorded min and max
            lower = max(0.0 if index == 0 else bounds[index - 1], point.min)
            upper = min(bounds[index] if index < len(bounds) else point.max, point.max)
            return float(lower + (upper - lower) * (rank - cumulative) / count)
        cumulative += count
    return float(point.max)


def operations(snap: Snapshot) -> list[tuple[str, str]]:
    """The (operation, entity) pairs that have durations, sorted."""
    pairs = {
        (str(a.get("sync.operation")), str(a.get("sync.entity", "-")))
        for a, _ in snap.metrics.get("sync.operation.duration", ())
    }
    return sorted(pairs)


def operation_stats(
    snap: Snapshot,
    operation: str,
    entity: str,
    previous: Snapshot | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """Everything the view and the summary show for one (operation, entity).

    Throughput is per second since ``previous``, else over ``seconds``, else None.
    """
    key = {"sync.operation": operation, "sync.entity": entity}
    duration = snap.merged("sync.operation.duration", key)
    count = duration.count if duration else 0
    errors = snap.total("sync.operation.duration", {**key, "sync.outcome": "error"})
    conflicted = snap.total("sync.operation.duration", {**key, "sync.outcome": "conflict"})
    queries = snap.merged("sync.db.queries", key)
    db_time = snap.merged("sync.db.duration", key)
    rate = None
    if previous is not None and snap.at > previous.at:
        before = previous.total("sync.operation.duration", key)
        rate = (count - before) / (snap.at - previous.at)
    elif seconds:
        rate = count / seconds
    return {
        "operation": operation,
        "entity": entity,
        "count": int(count),
        "throughput": rate,
        "p50": quantile(0.5, duration),
        "p95": quantile(0.95, duration),
        "p99": quantile(0.99, duration),
        "errors": int(errors),
        "error_rate": errors / count if count else 0.0,
        "conflicted": int(conflicted),
        "conflict_rate": conflicted / count if count and operation == "push" else 0.0,
        "conflicts": int(snap.total("sync.conflicts", {"sync.entity": entity}))
        if operation == "push"
        else 0,
        "idempotency_hits": int(snap.total("sync.idempotency.hits", key)),
        "items": int(snap.total("sync.items", key)),
        "items_created": int(snap.total("sync.items", {**key, "sync.change": "created"})),
        "items_updated": int(snap.total("sync.items", {**key, "sync.change": "updated"})),
        "queries_per_sync": queries.sum / queries.count if queries and queries.count else None,
        "db_seconds_per_sync": db_time.sum / db_time.count if db_time and db_time.count else None,
        "n_plus_one": int(snap.total("sync.db.n_plus_one", key)),
    }


def overhead(snap: Snapshot) -> dict[str, dict[str, float | None]]:
    """syncperf's own time per operation, per component, in microseconds."""
    result: dict[str, dict[str, float | None]] = {}
    for attrs, _ in snap.metrics.get("syncperf.overhead", ()):
        component = str(attrs.get("syncperf.component"))
        point = snap.merged("syncperf.overhead", {"syncperf.component": component})
        if point is None or not point.count:
            continue
        p99 = quantile(0.99, point)
        result[component] = {
            "count": point.count,
            "mean_us": point.sum / point.count * 1e6,
            "p99_us": None if p99 is None else p99 * 1e6,
        }
    return result


def outbox_stats(snap: Snapshot, name: str = "changes") -> dict[str, Any]:
    """The outbox's events, gauges and lag."""
    key = {"outbox.name": name}
    events = {
        event: int(snap.total("outbox.messages", {**key, "outbox.event": event}))
        for event in ("enqueued", "published", "failed", "retried", "dead_lettered")
    }
    lag = snap.merged("outbox.lag", key)
    return {
        **events,
        "depth": snap.gauge("outbox.depth", key),
        "oldest_age": snap.gauge("outbox.oldest_age", key),
        "lag_p95": quantile(0.95, lag),
    }


def plan_findings(snap: Snapshot) -> list[dict[str, Any]]:
    """Query plan findings (``sync.db.plan.findings``), most frequent first."""
    found = [
        {
            "finding": str(attrs.get("sync.db.plan.finding")),
            "table": str(attrs.get("db.collection.name", "-")),
            "operation": str(attrs.get("sync.operation")),
            "entity": str(attrs.get("sync.entity", "-")),
            "count": int(point.value),
        }
        for attrs, point in snap.points("sync.db.plan.findings")
    ]
    return sorted(found, key=lambda f: (-f["count"], f["finding"], f["table"]))


def client_stats(snap: Snapshot) -> dict[str, Any]:
    """What the clients see: staleness, their reported queues, their own failure rate."""
    staleness = snap.merged("sync.pull.staleness")
    pending = snap.merged("sync.client.pending_changes")
    measured = snap.total("sync.client.operation.duration")
    failed = snap.total("sync.client.operation.duration", {"sync.outcome": "error"})
    versions = {
        str(attrs.get("sync.client.app_version"))
        for attrs, _ in snap.points("sync.client.pending_changes")
    }
    return {
        "staleness_p50": quantile(0.5, staleness),
        "staleness_p95": quantile(0.95, staleness),
        "staleness_max": staleness.max if staleness is not None else None,
        "pending_p95": quantile(0.95, pending),
        "client_error_ratio": failed / measured if measured else None,
        "app_versions": sorted(versions),
    }


def pool_stats(snap: Snapshot) -> dict[str, Any]:
    """Connection pool use (all pools together)."""
    wait = snap.merged("db.client.connection.wait_time")
    return {
        "used": snap.gauge("db.client.connection.count", {"db.client.connection.state": "used"}),
        "idle": snap.gauge("db.client.connection.count", {"db.client.connection.state": "idle"}),
        "max": snap.gauge("db.client.connection.max"),
        "pending": snap.gauge("db.client.connection.pending_requests"),
        "wait_p99": quantile(0.99, wait),
        "timeouts": int(snap.total("db.client.connection.timeouts")),
    }


def alert_report(
    snap: Snapshot, seconds: float, options: RuleOptions | None = None
) -> list[dict[str, Any]]:
    """Which of syncperf's default alerts would fire on the run's totals.

    The run is treated as one rate window (its totals over its length); ``for`` durations
    are not waited for. Alerts that compare against a baseline (the hour before) cannot be
    evaluated in a run of seconds and are reported as such.
    """
    o = options or RuleOptions()
    seconds = max(seconds, 1e-9)
    pairs = operations(snap)
    stats = {pair: operation_stats(snap, *pair) for pair in pairs}

    def sync_rule(check: Any) -> tuple[bool, list[str]]:
        hits = [
            f"{op} {entity}: {detail}"
            for (op, entity), s in stats.items()
            if s["count"] / seconds > o.min_rate and (detail := check(op, s)) is not None
        ]
        return bool(hits), hits

    def conflict(op: str, s: dict[str, Any]) -> str | None:
        if op == "push" and s["conflict_rate"] > o.conflict_rate:
            return f"conflict rate {s['conflict_rate']:.1%} > {o.conflict_rate:.0%}"
        return None

    def latency(op: str, s: dict[str, Any]) -> str | None:
        p95 = s["p95"]
        if p95 is not None and p95 > o.p95_seconds:
            return f"p95 {p95:.2f} s > {o.p95_seconds:g} s"
        return None

    def errors(op: str, s: dict[str, Any]) -> str | None:
        if s["error_rate"] > o.error_rate:
            return f"error rate {s['error_rate']:.1%} > {o.error_rate:.0%}"
        return None

    def by_labels(name: str, labels: Iterable[str]) -> dict[tuple[Any, ...], float]:
        sums: dict[tuple[Any, ...], float] = {}
        for attrs, point in snap.metrics.get(name, ()):
            key = tuple(attrs.get(label) for label in labels)
            sums[key] = sums.get(key, 0.0) + point.value
        return sums

    report: list[dict[str, Any]] = []
    for alert in alerts(o):
        fired: bool | None
        details: list[str] = []
        if alert.name == "SyncPushConflictRateHigh":
            fired, details = sync_rule(conflict)
        elif alert.name == "SyncLatencyP95High":
            fired, details = sync_rule(latency)
        elif alert.name == "SyncErrorRateHigh":
            fired, details = sync_rule(errors)
        elif alert.name == "OutboxOldestMessageTooOld":
            ages = by_labels("outbox.oldest_age", ["outbox.name"])
            details = [
                f"outbox {name}: oldest {age:.0f} s > {o.outbox_age_seconds:g} s"
                for (name,), age in ages.items()
                if age > o.outbox_age_seconds
            ]
            fired = bool(details)
        elif alert.name == "OutboxProbeFailing":
            found = by_labels("outbox.probe.failures", ["outbox.name"])
            details = [
                f"outbox {name}: {n:.0f} probe failures" for (name,), n in found.items() if n > 0
            ]
            fired = bool(details)
        elif alert.name == "SyncNPlusOneDetected":
            found = by_labels(
                "sync.db.n_plus_one", ["sync.operation", "sync.entity", "db.collection.name"]
            )
            details = [
                f"{op} {entity} on {table}: {n:.0f} detections"
                for (op, entity, table), n in found.items()
                if n > o.n_plus_one
            ]
            fired = bool(details)
        elif alert.name == "SyncQueryPlanFinding":
            found = by_labels(
                "sync.db.plan.findings",
                ["sync.operation", "sync.entity", "db.collection.name", "sync.db.plan.finding"],
            )
            details = [
                f"{finding} on {table} in {op} {entity}: {n:.0f}"
                for (op, entity, table, finding), n in found.items()
                if n > 0
            ]
            fired = bool(details)
        elif alert.name == "SyncSlowQueriesHigh":
            found = by_labels("sync.db.slow_queries", ["db.operation.name", "db.collection.name"])
            details = [
                f"{verb} {table}: {n / seconds * 3600:.0f}/h > {o.slow_queries_per_hour:g}/h"
                for (verb, table), n in found.items()
                if n / seconds * 3600 > o.slow_queries_per_hour
            ]
            fired = bool(details)
        elif alert.name == "SyncPerfShedding":
            found = by_labels("syncperf.shed", ["syncperf.reason"])
            details = [f"{reason}: {n:.0f}" for (reason,), n in found.items() if n > 0]
            fired = bool(details)
        elif alert.name == "SyncPerfExportFailing":
            found = by_labels("syncperf.export.failures", ["syncperf.signal"])
            details = [f"{signal}: {n:.0f} failed" for (signal,), n in found.items() if n > 0]
            fired = bool(details)
        elif alert.name in _CLIENT_ALERTS:
            details = _client_alert(snap, alert.name, o, seconds)
            fired = bool(details)
        else:  # volume and idempotency spikes compare with the hour before the window
            fired = None
            details = [f"needs a {o.baseline_window} baseline"]
        report.append(
            {"alert": alert.name, "severity": alert.severity, "fired": fired, "details": details}
        )
    return report


_CLIENT_ALERTS = frozenset(
    {"SyncClientsFarBehind", "SyncClientPendingChangesHigh", "SyncClientFailureRateHigh"}
)


def _client_alert(snap: Snapshot, name: str, o: RuleOptions, seconds: float) -> list[str]:
    """The client alerts, per operation and entity, on the run's totals (as ``alert_report``)."""
    metric = {
        "SyncClientsFarBehind": "sync.pull.staleness",
        "SyncClientPendingChangesHigh": "sync.client.pending_changes",
        "SyncClientFailureRateHigh": "sync.client.operation.duration",
    }[name]
    pairs = sorted(
        {(a.get("sync.operation"), a.get("sync.entity")) for a, _ in snap.points(metric)},
        key=str,
    )
    details = []
    for op, entity in pairs:
        match = {"sync.operation": op, "sync.entity": entity}
        point = snap.merged(metric, match)
        if point is None or point.count / seconds <= o.min_rate:
            continue
        if name == "SyncClientsFarBehind":
            limit = o.stale_hours * 3600
            bounds, counts = point.explicit_bounds, point.bucket_counts[:-1]  # no +Inf
            within = sum(n for b, n in zip(bounds, counts, strict=True) if b <= limit)
            share = 1 - within / point.count
            if share > o.stale_share:
                details.append(f"{op} {entity}: {share:.0%} over {o.stale_hours:g} h behind")
        elif name == "SyncClientPendingChangesHigh":
            p95 = quantile(0.95, point)
            if p95 is not None and p95 > o.pending_changes:
                details.append(f"{op} {entity}: p95 {p95:.0f} > {o.pending_changes:g}")
        else:
            failed = snap.total(metric, {**match, "sync.outcome": "error"})
            if failed / point.count > o.client_error_rate:
                details.append(
                    f"{op} {entity}: {failed / point.count:.0%} > {o.client_error_rate:.0%}"
                )
    return details


def fmt_seconds(value: float | None) -> str:
    """A duration for humans: ``12.3 ms``, ``1.20 s``, ``-``."""
    if value is None or math.isnan(value):
        return "-"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"
