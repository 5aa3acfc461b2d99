"""The dashboard's rows and panels, as data: PromQL over the catalogue's names
(``_series.prom``)."""

from __future__ import annotations

from dataclasses import dataclass

from syncperf._tools.monitoring._series import events, prom

RATE = "$__rate_interval"
ENTITY = 'sync_entity=~"$entity"'
DUR_COUNT = prom("sync.operation.duration", "_count")
DUR_BUCKET = prom("sync.operation.duration", "_bucket")
_ALL = f"{{{ENTITY}}}"
_DB_BY = "db_operation_name, db_collection_name"
_POOL_BY = "db_client_connection_pool_name"
_ERRORS = f'{{sync_outcome="error", {ENTITY}}}'
_PUSHES = f'{{sync_operation="push", {ENTITY}}}'
_CONFLICTS = f'{{sync_operation="push", sync_outcome="conflict", {ENTITY}}}'


@dataclass(frozen=True)
class Panel:
    """One time-series panel: title, unit, description and (expr, legend) queries."""

    title: str
    unit: str
    description: str
    queries: tuple[tuple[str, str], ...]
    stack: bool = False


def _q(quantile: str, bucket: str, by: str, selector: str = "") -> str:
    return f"histogram_quantile({quantile}, sum by ({by}, le) (rate({bucket}{selector}[{RATE}])))"


def _rate(series: str, by: str, selector: str = "") -> str:
    return f"sum by ({by}) (rate({series}{selector}[{RATE}]))"


def _quantiles(bucket: str, by: str, selector: str, legend: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (_q(q, bucket, by, selector), f"p{p} {legend}")
        for q, p in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))
    )


def _pool(name: str, suffix: str = "") -> str:
    return prom(name, suffix)


PANELS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Sync traffic",
        (
            Panel(
                "Pull / push rate",
                "reqps",
                "Sync operations per second by operation.",
                ((_rate(DUR_COUNT, "sync_operation", _ALL), "{{sync_operation}}"),),
            ),
            Panel(
                "Latency p50 / p95 / p99",
                "s",
                "Sync operation duration quantiles (exact bucket bounds at 0.2 s, 2 s, 5 s).",
                _quantiles(DUR_BUCKET, "sync_operation", _ALL, "{{sync_operation}}"),
            ),
            Panel(
                "Errors by type",
                "reqps",
                "Failed sync operations per second by error.type.",
                (
                    (
                        _rate(
                            DUR_COUNT,
                            "sync_operation, error_type",
                            f'{{sync_outcome="error", {ENTITY}}}',
                        ),
                        "{{sync_operation}} {{error_type}}",
                    ),
                ),
                stack=True,
            ),
            Panel(
                "Error rate",
                "percentunit",
                "Share of sync operations that failed.",
                (
                    (
                        _rate(DUR_COUNT, "sync_operation", _ERRORS)
                        + " / "
                        + _rate(DUR_COUNT, "sync_operation", _ALL),
                        "{{sync_operation}}",
                    ),
                ),
            ),
            Panel(
                "Active operations",
                "short",
                "Sync operations in progress.",
                (
                    (
                        f"sum by (sync_operation) ({prom('sync.operations.active')})",
                        "{{sync_operation}}",
                    ),
                ),
            ),
        ),
    ),
    (
        "Conflicts and replays",
        (
            Panel(
                "Push conflict rate by entity",
                "percentunit",
                "Share of pushes whose outcome is conflict, per entity.",
                (
                    (
                        _rate(DUR_COUNT, "sync_entity", _CONFLICTS)
                        + " / "
                        + _rate(DUR_COUNT, "sync_entity", _PUSHES),
                        "{{sync_entity}}",
                    ),
                ),
            ),
            Panel(
                "Conflicts by resolution",
                "short",
                "Conflicts per second by entity and resolution.",
                (
                    (
                        _rate(
                            prom("sync.conflicts"), "sync_entity, sync_conflict_resolution", _ALL
                        ),
                        "{{sync_entity}} {{sync_conflict_resolution}}",
                    ),
                ),
                stack=True,
            ),
            Panel(
                "Idempotency hits",
                "reqps",
                "Replayed (duplicate) sync requests per second.",
                (
                    (
                        _rate(prom("sync.idempotency.hits"), "sync_operation, sync_entity", _ALL),
                        "{{sync_operation}} {{sync_entity}}",
                    ),
                ),
            ),
            Panel(
                "Batch size p50 / p95",
                "short",
                "Items per sync request or response.",
                _quantiles(
                    prom("sync.batch.size", "_bucket"), "sync_operation", _ALL, "{{sync_operation}}"
                )[:2],
            ),
            Panel(
                "Items synced",
                "short",
                "Items per second by change type.",
                (
                    (
                        _rate(prom("sync.items"), "sync_operation, sync_change", _ALL),
                        "{{sync_operation}} {{sync_change}}",
                    ),
                ),
                stack=True,
            ),
        ),
    ),
    (
        "Database",
        (
            Panel(
                "Queries per operation",
                "short",
                "Database queries per sync operation (mean and p95).",
                (
                    (
                        _rate(prom("sync.db.queries", "_sum"), "sync_operation", _ALL)
                        + " / "
                        + _rate(prom("sync.db.queries", "_count"), "sync_operation", _ALL),
                        "mean {{sync_operation}}",
                    ),
                    (
                        _q("0.95", prom("sync.db.queries", "_bucket"), "sync_operation", _ALL),
                        "p95 {{sync_operation}}",
                    ),
                ),
            ),
            Panel(
                "DB time per operation p95",
                "s",
                "Database time spent inside one sync operation.",
                (
                    (
                        _q("0.95", prom("sync.db.duration", "_bucket"), "sync_operation", _ALL),
                        "{{sync_operation}}",
                    ),
                ),
            ),
            Panel(
                "N+1 detections",
                "short",
                "N+1 query patterns detected per second.",
                (
                    (
                        _rate(
                            prom("sync.db.n_plus_one"),
                            "sync_operation, sync_entity, db_collection_name",
                            _ALL,
                        ),
                        "{{sync_operation}} {{sync_entity}} {{db_collection_name}}",
                    ),
                ),
            ),
            Panel(
                "Slow queries per hour",
                "short",
                "Queries over the slow-query threshold.",
                (
                    (
                        _rate(prom("sync.db.slow_queries"), _DB_BY) + " * 3600",
                        "{{db_operation_name}} {{db_collection_name}}",
                    ),
                ),
            ),
            Panel(
                "Query duration p95",
                "s",
                "Database client operation duration (semconv).",
                (
                    (
                        _q(
                            "0.95",
                            prom("db.client.operation.duration", "_bucket"),
                            "db_operation_name, db_collection_name",
                        ),
                        "{{db_operation_name}} {{db_collection_name}}",
                    ),
                ),
            ),
            Panel(
                "Connection pool usage",
                "short",
                "Connections by state, and the pool maximum.",
                (
                    (
                        f"sum by (db_client_connection_pool_name, db_client_connection_state) "
                        f"({_pool('db.client.connection.count')})",
                        "{{db_client_connection_pool_name}} {{db_client_connection_state}}",
                    ),
                    (
                        f"sum by ({_POOL_BY}) ({_pool('db.client.connection.max')})",
                        "{{db_client_connection_pool_name}} max",
                    ),
                    (
                        f"sum by (db_client_connection_pool_name) "
                        f"({_pool('db.client.connection.pending_requests')})",
                        "{{db_client_connection_pool_name}} pending",
                    ),
                ),
            ),
            Panel(
                "Connection waits",
                "s",
                "Time to obtain a connection (p95) and pool timeouts.",
                (
                    (
                        _q(
                            "0.95",
                            _pool("db.client.connection.wait_time", "_bucket"),
                            "db_client_connection_pool_name",
                        ),
                        "p95 wait {{db_client_connection_pool_name}}",
                    ),
                    (
                        _rate(
                            _pool("db.client.connection.timeouts"), "db_client_connection_pool_name"
                        ),
                        "timeouts/s {{db_client_connection_pool_name}}",
                    ),
                ),
            ),
        ),
    ),
    (
        "Query plans",
        (
            Panel(
                "Plan findings (last 30 min)",
                "short",
                "Findings in the plans of sync statements (plans=True, docs/plans.md) by sync "
                "operation, table and kind; an unfixed one recurs at each plan (every 5 min).",
                (
                    (
                        "sum by (sync_operation, db_collection_name, sync_db_plan_finding) "
                        f"({events(prom('sync.db.plan.findings'), '30m', _ALL)})",
                        "{{sync_operation}} {{sync_db_plan_finding}} {{db_collection_name}}",
                    ),
                ),
            ),
        ),
    ),
    (
        "Outbox",
        (
            Panel(
                "Outbox depth",
                "short",
                "Unpublished messages per outbox.",
                ((f"max by (outbox_name) ({prom('outbox.depth')})", "{{outbox_name}}"),),
            ),
            Panel(
                "Outbox oldest age",
                "s",
                "Age of the oldest unpublished message.",
                ((f"max by (outbox_name) ({prom('outbox.oldest_age')})", "{{outbox_name}}"),),
            ),
            Panel(
                "Outbox messages",
                "short",
                "Messages per second by event.",
                (
                    (
                        _rate(prom("outbox.messages"), "outbox_name, outbox_event"),
                        "{{outbox_name}} {{outbox_event}}",
                    ),
                ),
                stack=True,
            ),
            Panel(
                "Outbox lag p95",
                "s",
                "Enqueue-to-publish time.",
                ((_q("0.95", prom("outbox.lag", "_bucket"), "outbox_name"), "{{outbox_name}}"),),
            ),
        ),
    ),
    (
        "HTTP",
        (
            Panel(
                "HTTP request duration p95",
                "s",
                "http.server.request.duration by route.",
                (
                    (
                        _q("0.95", prom("http.server.request.duration", "_bucket"), "http_route"),
                        "{{http_route}}",
                    ),
                ),
            ),
            Panel(
                "HTTP requests by status",
                "reqps",
                "Requests per second by route and status.",
                (
                    (
                        _rate(
                            prom("http.server.request.duration", "_count"),
                            "http_route, http_response_status_code",
                        ),
                        "{{http_route}} {{http_response_status_code}}",
                    ),
                ),
            ),
        ),
    ),
    (
        "syncperf itself",
        (
            Panel(
                "syncperf overhead p50 / p99",
                "s",
                "syncperf's own time per operation, by component.",
                (
                    (
                        _q("0.5", prom("syncperf.overhead", "_bucket"), "syncperf_component"),
                        "p50 {{syncperf_component}}",
                    ),
                    (
                        _q("0.99", prom("syncperf.overhead", "_bucket"), "syncperf_component"),
                        "p99 {{syncperf_component}}",
                    ),
                ),
            ),
            Panel(
                "Shedding, drops and export failures",
                "short",
                "Times syncperf shed span work, dropped measurements or failed to export.",
                (
                    (
                        f"sum by (syncperf_reason) ({events(prom('syncperf.shed'), RATE)})",
                        "shed {{syncperf_reason}}",
                    ),
                    (
                        f"sum by (syncperf_reason) ({events(prom('syncperf.dropped'), RATE)})",
                        "dropped {{syncperf_reason}}",
                    ),
                    (
                        f"sum by (syncperf_signal) "
                        f"({events(prom('syncperf.export.failures'), RATE)})",
                        "export failed {{syncperf_signal}}",
                    ),
                ),
            ),
        ),
    ),
)
"""Rows of the dashboard and their panels."""
