"""``syncperf dashboard``: a Grafana dashboard (JSON) over syncperf's Prometheus metrics.

Built with ``grafana-foundation-sdk`` (Python >= 3.11). Every query names metrics through
``_series.prom``, so the dashboard can only show metrics syncperf emits; a test parses each
expression with promtool. Usage::

    syncperf dashboard > syncperf-dashboard.json     # import in Grafana, pick a Prometheus source
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from syncperf._tools.monitoring._series import prom
from syncperf.cli import Parser, write_output

__all__ = ["PANELS", "Panel", "build", "main", "render"]

RATE = "$__rate_interval"
ENTITY = 'sync_entity=~"$entity"'
DUR_COUNT = prom("sync.operation.duration", "_count")
DUR_BUCKET = prom("sync.operation.duration", "_bucket")
STALE_BUCKET = prom("sync.pull.staleness", "_bucket")
CLIENT_COUNT = prom("sync.client.operation.duration", "_count")
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
        "What clients see",
        (
            Panel(
                "Staleness p50 / p95 / p99",
                "s",
                "How far behind clients are when they pull: now minus their checkpoint.",
                _quantiles(STALE_BUCKET, "sync_entity", _ALL, "{{sync_entity}}"),
            ),
            Panel(
                "Pulls from clients over a day behind",
                "percentunit",
                "Share of pulls whose checkpoint was more than 24 hours old.",
                (
                    (
                        "1 - "
                        + _rate(STALE_BUCKET, "sync_entity", f'{{le="86400.0", {ENTITY}}}')
                        + " / "
                        + _rate(prom("sync.pull.staleness", "_count"), "sync_entity", _ALL),
                        "{{sync_entity}}",
                    ),
                ),
            ),
            Panel(
                "Pending changes on devices p95",
                "short",
                "Changes waiting on the devices, as clients report them (Sync-Client header, "
                "batches), by app version.",
                (
                    (
                        _q(
                            "0.95",
                            prom("sync.client.pending_changes", "_bucket"),
                            "sync_entity, sync_client_app_version",
                            _ALL,
                        ),
                        "{{sync_entity}} {{sync_client_app_version}}",
                    ),
                ),
            ),
            Panel(
                "Client-side failure rate",
                "percentunit",
                "Share of the syncs clients measured themselves that failed (offline attempts "
                "included), by app version.",
                (
                    (
                        _rate(
                            CLIENT_COUNT,
                            "sync_operation, sync_client_app_version",
                            f'{{sync_outcome="error", {ENTITY}}}',
                        )
                        + " / "
                        + _rate(CLIENT_COUNT, "sync_operation, sync_client_app_version", _ALL),
                        "{{sync_operation}} {{sync_client_app_version}}",
                    ),
                ),
            ),
            Panel(
                "Client-side latency p95 / server p95",
                "s",
                "Sync duration as clients measured it, next to the server's.",
                (
                    (
                        _q(
                            "0.95",
                            prom("sync.client.operation.duration", "_bucket"),
                            "sync_operation",
                            _ALL,
                        ),
                        "client {{sync_operation}}",
                    ),
                    (_q("0.95", DUR_BUCKET, "sync_operation", _ALL), "server {{sync_operation}}"),
                ),
            ),
            Panel(
                "Age of pushed changes p95",
                "s",
                "How long the oldest change of a push waited on the device.",
                (
                    (
                        _q("0.95", prom("sync.push.change_age", "_bucket"), "sync_entity", _ALL),
                        "{{sync_entity}}",
                    ),
                ),
            ),
            Panel(
                "Client metric batches",
                "short",
                "Batches posted to the client metrics endpoint per second, by result.",
                (
                    (
                        _rate(prom("sync.client.batches"), "sync_client_batch_result"),
                        "{{sync_client_batch_result}}",
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
                        f"sum by (syncperf_reason) (increase({prom('syncperf.shed')}[{RATE}]))",
                        "shed {{syncperf_reason}}",
                    ),
                    (
                        f"sum by (syncperf_reason) (increase({prom('syncperf.dropped')}[{RATE}]))",
                        "dropped {{syncperf_reason}}",
                    ),
                    (
                        f"sum by (syncperf_signal) "
                        f"(increase({prom('syncperf.export.failures')}[{RATE}]))",
                        "export failed {{syncperf_signal}}",
                    ),
                ),
            ),
        ),
    ),
)
"""Rows of the dashboard and their panels."""


INSTALL_HINT = (
    "syncperf dashboard needs grafana-foundation-sdk (Python >= 3.11): "
    "pip install 'syncperf[ops]' (or pip install grafana-foundation-sdk)"
)
"""The message ``syncperf dashboard`` prints when the SDK is missing."""


def build(title: str = "syncperf: sync endpoints", uid: str = "syncperf") -> Any:
    """The dashboard as a ``grafana_foundation_sdk`` model.

    Raises:
        RuntimeError: ``grafana-foundation-sdk`` is not installed (needs Python >= 3.11).
    """
    try:
        from grafana_foundation_sdk.builders import common as cb
        from grafana_foundation_sdk.builders import dashboard as db
        from grafana_foundation_sdk.builders import prometheus, timeseries
        from grafana_foundation_sdk.models import common as cm
        from grafana_foundation_sdk.models import dashboard as dm
    except ImportError as exc:
        raise RuntimeError(INSTALL_HINT) from exc

    source = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
    board = (
        db.Dashboard(title)
        .uid(uid)
        .tags(["syncperf", "sync"])
        .description(
            "Pull/push traffic, latency, errors, conflicts, database, outbox and "
            "syncperf's own overhead. Generated by `syncperf dashboard`."
        )
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            db.QueryVariable("entity")
            .label("Entity")
            .datasource(source)
            .query(f"label_values({DUR_COUNT}, sync_entity)")
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
        )
    )
    next_id = 0
    for row_title, panels in PANELS:
        next_id += 1
        board = board.with_row(db.Row(row_title).id(next_id))
        for panel in panels:
            next_id += 1
            builder = (
                timeseries.Panel()
                .id(next_id)
                .title(panel.title)
                .description(panel.description)
                .unit(panel.unit)
                .datasource(source)
                .height(8)
                .span(12)
                .line_width(1)
                .fill_opacity(10 if not panel.stack else 40)
                .legend(
                    cb.VizLegendOptions()
                    .display_mode(cm.LegendDisplayMode("list"))
                    .placement(cm.LegendPlacement.BOTTOM)
                    .show_legend(True)
                )
            )
            if panel.stack:
                builder = builder.stacking(
                    cb.StackingConfig().mode(cm.StackingMode("normal")).group("A")
                )
            for index, (expr, legend) in enumerate(panel.queries):
                builder = builder.with_target(
                    prometheus.Dataquery()
                    .expr(expr)
                    .legend_format(legend)
                    .ref_id(chr(ord("A") + index))
                    .datasource(source)
                )
            board = board.with_panel(builder)
    return board.build()


def render() -> str:
    """The dashboard JSON (deterministic: sorted keys, two-space indent, final newline).

    Raises:
        RuntimeError: ``grafana-foundation-sdk`` is not installed (needs Python >= 3.11).
    """
    try:
        from grafana_foundation_sdk.cog.encoder import JSONEncoder
    except ImportError as exc:
        raise RuntimeError(INSTALL_HINT) from exc

    return str(JSONEncoder(sort_keys=True, indent=2).encode(build())) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``syncperf dashboard``; writes JSON to stdout (or ``--output``)."""
    parser = Parser(
        prog="syncperf dashboard",
        description="Write a Grafana dashboard (JSON) over syncperf's Prometheus metrics.",
    )
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    namespace = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        text = render()
    except ImportError as exc:  # an SDK too old or partly installed
        print(f"syncperf dashboard: {INSTALL_HINT} ({exc})", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"syncperf dashboard: {exc}", file=sys.stderr)
        return 2
    return write_output("syncperf dashboard", namespace.output, text)
