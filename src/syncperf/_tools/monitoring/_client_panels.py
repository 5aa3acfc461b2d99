"""The dashboard row of what clients see: staleness, their queues, their own failures."""

from __future__ import annotations

from syncperf._tools.monitoring._panels import DUR_BUCKET, ENTITY, Panel, _q, _quantiles, _rate
from syncperf._tools.monitoring._series import le_matcher, prom

__all__ = ["CLIENT_ROW"]

_ALL = f"{{{ENTITY}}}"
STALE_BUCKET = prom("sync.pull.staleness", "_bucket")
CLIENT_COUNT = prom("sync.client.operation.duration", "_count")

CLIENT_ROW: tuple[str, tuple[Panel, ...]] = (
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
                    + _rate(STALE_BUCKET, "sync_entity", f"{{{le_matcher(86400)}, {ENTITY}}}")
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
)
"""Staleness, pending changes on devices, client-side failures and latency."""
