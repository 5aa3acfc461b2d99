"""The demo's checks of what the clients reported about themselves against what syncperf
recorded: headers, pending changes, checkpoints, posted measurements, resent batches."""

from __future__ import annotations

from collections.abc import Callable

from syncperf._tools.demo._clients import Tally
from syncperf._tools.demo._schema import ENTITIES
from syncperf._tools.demo._stats import Snapshot

__all__ = ["client_checks"]


def client_checks(snap: Snapshot, tally: Tally, check: Callable[[str, float, float], None]) -> None:
    """What the clients reported about themselves against what syncperf recorded."""
    requests = sum(c.requests for c in tally.counts.values())
    check("Sync-Client headers sent", requests, snap.total("sync.client.pending_changes"))
    pending = snap.merged("sync.client.pending_changes")
    check(
        "pending changes reported",
        sum(c.reported_pending for c in tally.counts.values()),
        pending.sum if pending is not None else 0,
    )
    for entity in ENTITIES:
        check(
            f"pulls with a checkpoint ({entity})",
            tally.of("pull", entity).checkpoints,
            snap.total("sync.pull.staleness", {"sync.entity": entity}),
        )
    check(
        "client-side measurements posted",
        tally.client_records,
        snap.total("sync.client.operation.duration"),
    )
    check(
        "client-side failures posted",
        tally.client_errors,
        snap.total("sync.client.operation.duration", {"sync.outcome": "error"}),
    )
    check(
        "client metric batches resent = deduplicated",
        tally.resent_batches,
        snap.total("sync.client.batches", {"sync.client.batch.result": "duplicate"}),
    )
