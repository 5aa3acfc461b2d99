"""The alert and recording rules, as data: PromQL over the catalogue's names (``_series.prom``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from syncperf._tools.monitoring._options import RuleOptions, format_duration, number, percent
from syncperf._tools.monitoring._series import events, le_matcher, prom

BY = "sync_operation, sync_entity"
"""The labels sync alerts are grouped by (operation and entity)."""


@dataclass(frozen=True)
class Recording:
    """One recording rule."""

    record: str
    expr: str


@dataclass(frozen=True)
class Alert:
    """One alert rule.

    Attributes:
        name: ``alertname`` (also the runbook section).
        expr: PromQL.
        for_: Pending duration before firing.
        severity: ``critical``, ``warning`` or ``info``.
        summary: Annotation template naming the entity and operation (``{{ $labels.x }}``).
        description: What crossed which threshold.
        labels: Labels of the alert's series (its ``by`` clause).
    """

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Names:
    """Recording-rule names for one window."""

    ops: str
    error_ratio: str
    conflict_ratio: str
    quantiles: dict[str, str]


def names(o: RuleOptions) -> Names:
    """The recording-rule names (they carry the window, e.g. ``rate5m``)."""
    w = o.window
    return Names(
        ops=f"sync:operations:rate{w}",
        error_ratio=f"sync:error_ratio:rate{w}",
        conflict_ratio=f"sync:conflict_ratio:rate{w}",
        quantiles={q: f"sync:duration_seconds:{q}_{w}" for q in ("p50", "p95", "p99")},
    )


def _rate(series: str, window: str, selector: str = "", by: str = BY, offset: str = "") -> str:
    shift = f" offset {offset}" if offset else ""
    return f"sum by ({by}) (rate({series}{selector}[{window}]{shift}))"


def _ratio(numerator: str, denominator: str) -> str:
    """``numerator / denominator`` that is 0 (not absent) when the numerator has no series."""
    return f"(\n  {numerator}\n  or {denominator} * 0\n)\n/ {denominator}"


def recordings(o: RuleOptions) -> list[Recording]:
    """Recording rules: rates, error and conflict ratios, p50/p95/p99 per operation and entity."""
    n = names(o)
    w = o.window
    count = prom("sync.operation.duration", "_count")
    bucket = prom("sync.operation.duration", "_bucket")
    ops = _rate(count, w)
    errors = _rate(count, w, '{sync_outcome="error"}')
    pushes = _rate(count, w, '{sync_operation="push"}')
    conflicts = _rate(count, w, '{sync_operation="push", sync_outcome="conflict"}')
    rules = [
        Recording(n.ops, ops),
        Recording(n.error_ratio, _ratio(errors, ops)),
        Recording(n.conflict_ratio, _ratio(conflicts, pushes)),
    ]
    for q, record in n.quantiles.items():
        quantile = {"p50": "0.5", "p95": "0.95", "p99": "0.99"}[q]
        buckets = _rate(bucket, w, by=BY + ", le")
        rules.append(Recording(record, f"histogram_quantile({quantile}, {buckets})"))
    return rules


OP_ENTITY = "sync {{ $labels.sync_operation }} of entity {{ $labels.sync_entity }}"
"""How an alert's summary names the operation and entity it fired for."""
Add = Callable[..., None]
"""``add(name, expr, for_, severity, summary, description, labels=(operation, entity))``."""


def alerts(o: RuleOptions) -> list[Alert]:
    """The alert rules, thresholds from ``o``."""
    result: list[Alert] = []

    def add(
        name: str,
        expr: str,
        for_: str,
        severity: str,
        summary: str,
        description: str,
        labels: tuple[str, ...] = ("sync_operation", "sync_entity"),
    ) -> None:
        result.append(
            Alert(name, expr, o.for_duration(for_), severity, summary, description, labels)
        )

    for group in (
        _sync_alerts,
        _spike_alerts,
        _client_alerts,
        _outbox_alerts,
        _database_alerts,
        _self_alerts,
    ):
        group(o, add)
    return result


def _guard(o: RuleOptions) -> str:
    """The clause that keeps an alert quiet below ``min_rate`` operations per second."""
    return f"and on ({BY}) {names(o).ops} > {number(o.min_rate)}"


def _sync_alerts(o: RuleOptions, add: Add) -> None:
    """Conflicts, latency and errors of sync operations."""
    n, w, guard, op_entity = names(o), o.window, _guard(o), OP_ENTITY
    add(
        "SyncPushConflictRateHigh",
        f"{n.conflict_ratio} > {number(o.conflict_rate)}\n{guard}",
        "10m",
        "warning",
        f"Push conflict rate above {percent(o.conflict_rate)} for entity "
        "{{ $labels.sync_entity }} ({{ $labels.sync_operation }})",
        f"More than {percent(o.conflict_rate)} of pushes of this entity ended in a conflict "
        f"over the last {w}.",
    )
    add(
        "SyncLatencyP95High",
        f"{n.quantiles['p95']} > {number(o.p95_seconds)}\n{guard}",
        "10m",
        "warning",
        f"p95 latency of {op_entity} above {number(o.p95_seconds)} s",
        f"The 95th percentile of sync operation duration exceeded {number(o.p95_seconds)} s "
        f"over the last {w}.",
    )
    add(
        "SyncErrorRateHigh",
        f"{n.error_ratio} > {number(o.error_rate)}\n{guard}",
        "5m",
        "critical",
        f"Error rate of {op_entity} above {percent(o.error_rate)}",
        f"More than {percent(o.error_rate)} of sync operations failed over the last {w}.",
    )


def _spike_alerts(o: RuleOptions, add: Add) -> None:
    """Volume and idempotency hits against their baseline window."""
    n, w, b, guard, op_entity = names(o), o.window, o.baseline_window, _guard(o), OP_ENTITY
    count = prom("sync.operation.duration", "_count")
    hits = prom("sync.idempotency.hits")
    volume_for = o.for_duration("10m")
    offset = format_duration(o.seconds("window") + _seconds(volume_for))
    add(
        "SyncVolumeSpike",
        f"{n.ops}\n> {number(o.volume_spike_factor)} * {_rate(count, b, offset=offset)}\n"
        f"and {n.ops} > {number(o.min_rate)}",
        "10m",
        "warning",
        f"Volume of {op_entity} above {number(o.volume_spike_factor)}x its {b} baseline",
        f"The {w} operation rate is more than {number(o.volume_spike_factor)} times the rate "
        f"of the {b} before it.",
    )

    idem_for = o.for_duration("10m")
    offset = format_duration(o.seconds("window") + _seconds(idem_for))
    now = f"({_rate(hits, w)} / on ({BY}) {n.ops})"
    base = _ratio(_rate(hits, b, offset=offset), _rate(count, b, offset=offset))
    add(
        "SyncIdempotencyHitSpike",
        f"{now}\n> {number(o.idempotency_spike_factor)} * (\n{base}\n)\n"
        f"and {now} > {number(o.idempotency_min_ratio)}\n{guard}",
        "10m",
        "warning",
        f"Idempotency hits of {op_entity} above "
        f"{number(o.idempotency_spike_factor)}x their {b} baseline",
        f"More than {percent(o.idempotency_min_ratio)} of requests are replays, "
        f"{number(o.idempotency_spike_factor)} times the share of the {b} before: "
        "clients are retrying.",
    )


def _outbox_alerts(o: RuleOptions, add: Add) -> None:
    """The transactional outbox."""
    w = o.window
    add(
        "OutboxOldestMessageTooOld",
        f"max by (outbox_name) ({prom('outbox.oldest_age')}) > {number(o.outbox_age_seconds)}",
        "5m",
        "warning",
        "Outbox {{ $labels.outbox_name }}: oldest unpublished message older than "
        f"{number(o.outbox_age_seconds)} s",
        "The relay is not keeping up, or is stopped: changes reach other clients late.",
        ("outbox_name",),
    )
    add(
        "OutboxProbeFailing",
        f"sum by (outbox_name) ({events(prom('outbox.probe.failures'), w)}) > 0",
        "5m",
        "warning",
        "Outbox {{ $labels.outbox_name }}: the depth and age probe is failing",
        f"The outbox stats probe failed over the last {w}: outbox.depth and outbox.oldest_age "
        "are not reported, so OutboxOldestMessageTooOld cannot fire for this outbox.",
        ("outbox_name",),
    )


def _database_alerts(o: RuleOptions, add: Add) -> None:
    """N+1 and slow queries (counted over their windows: ``events``)."""
    w, op_entity = o.window, OP_ENTITY
    # The hourly threshold scaled to the window (as the Datadog monitor counts them).
    slow_per_window = round(o.slow_queries_per_hour * o.seconds("slow_query_window") / 3600, 6)
    add(
        "SyncNPlusOneDetected",
        f"sum by ({BY}, db_collection_name) ({events(prom('sync.db.n_plus_one'), w)})"
        f" > {number(o.n_plus_one)}",
        "0s",
        "info",
        "N+1 queries on {{ $labels.db_collection_name }} in " + op_entity,
        f"More than {number(o.n_plus_one)} N+1 detections over the last {w}.",
        ("sync_operation", "sync_entity", "db_collection_name"),
    )
    add(
        "SyncQueryPlanFinding",
        f"sum by ({BY}, db_collection_name, sync_db_plan_finding) "
        f"({events(prom('sync.db.plan.findings'), o.plan_window)}) > 0",
        "0s",
        "info",
        "Query plan finding {{ $labels.sync_db_plan_finding }} on "
        "{{ $labels.db_collection_name }} in " + op_entity,
        f"A sync statement's plan showed this finding in the last {o.plan_window}.",
        ("sync_operation", "sync_entity", "db_collection_name", "sync_db_plan_finding"),
    )
    add(
        "SyncSlowQueriesHigh",
        "sum by (db_operation_name, db_collection_name) "
        f"({events(prom('sync.db.slow_queries'), o.slow_query_window)})"
        f" > {number(slow_per_window)}",
        "0s",
        "warning",
        f"More than {number(o.slow_queries_per_hour)} slow queries per hour: "
        "{{ $labels.db_operation_name }} on {{ $labels.db_collection_name }}",
        f"Slow queries (over the sqlalchemy slow-query threshold) at more than "
        f"{number(o.slow_queries_per_hour)} per hour over the last {o.slow_query_window}.",
        ("db_operation_name", "db_collection_name"),
    )


def _self_alerts(o: RuleOptions, add: Add) -> None:
    """syncperf's own health."""
    w = o.window
    add(
        "SyncPerfShedding",
        f"sum by (syncperf_reason) ({events(prom('syncperf.shed'), w)}) > 0",
        "0s",
        "info",
        "syncperf is shedding span work ({{ $labels.syncperf_reason }})",
        "syncperf exceeded its overhead budget and stopped creating spans for its cool-down; "
        "metrics are unaffected.",
        ("syncperf_reason",),
    )
    add(
        "SyncPerfExportFailing",
        f"sum by (syncperf_signal) ({events(prom('syncperf.export.failures'), w)}) > 0",
        "10m",
        "warning",
        "syncperf cannot export {{ $labels.syncperf_signal }}",
        f"OTLP exports failed over the last {w}: telemetry is being dropped.",
        ("syncperf_signal",),
    )


def _client_alerts(o: RuleOptions, add: Add) -> None:
    """What clients see: far behind, changes piling up on devices, their own failures."""
    w = o.window
    staleness, pulls = prom("sync.pull.staleness", "_bucket"), prom("sync.pull.staleness", "_count")
    recent = _rate(staleness, w, "{" + le_matcher(o.stale_hours * 3600) + "}")
    add(
        "SyncClientsFarBehind",
        f"1 - (\n  {recent}\n  / {_rate(pulls, w)}\n) > {number(o.stale_share)}\n"
        f"and {_rate(pulls, w)} > {number(o.min_rate)}",
        "30m",
        "warning",
        f"More than {percent(o.stale_share)} of {{{{ $labels.sync_operation }}}}s of entity "
        f"{{{{ $labels.sync_entity }}}} from clients over {number(o.stale_hours)} h behind",
        f"More than {percent(o.stale_share)} of pulls over the last {w} came from clients whose "
        f"checkpoint was more than {number(o.stale_hours)} hours old.",
    )
    pending = prom("sync.client.pending_changes", "_bucket")
    reports = prom("sync.client.pending_changes", "_count")
    add(
        "SyncClientPendingChangesHigh",
        f"histogram_quantile(0.95, {_rate(pending, w, by=BY + ', le')})"
        f" > {number(o.pending_changes)}\nand {_rate(reports, w)} > {number(o.min_rate)}",
        "15m",
        "warning",
        f"Clients report more than {number(o.pending_changes)} changes waiting "
        "({{ $labels.sync_operation }} of entity {{ $labels.sync_entity }}, p95)",
        f"The 95th percentile of the changes clients report waiting on their devices exceeded "
        f"{number(o.pending_changes)} over the last {w}: pushes are not getting through.",
    )
    measured = prom("sync.client.operation.duration", "_count")
    failed = _rate(measured, w, '{sync_outcome="error"}')
    add(
        "SyncClientFailureRateHigh",
        f"{_ratio(failed, _rate(measured, w))} > {number(o.client_error_rate)}\n"
        f"and {_rate(measured, w)} > {number(o.min_rate)}",
        "15m",
        "warning",
        f"Client-side failure rate of {{{{ $labels.sync_operation }}}} of entity "
        f"{{{{ $labels.sync_entity }}}} above {percent(o.client_error_rate)}",
        f"More than {percent(o.client_error_rate)} of the syncs clients measured themselves "
        f"failed over the last {w} (as they reported them to the client metrics endpoint).",
    )


def _seconds(duration: str) -> float:
    from syncperf._tools.monitoring._options import parse_duration

    return parse_duration("for", duration)
