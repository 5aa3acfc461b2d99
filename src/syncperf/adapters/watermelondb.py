"""WatermelonDB sync: pull and push.

Changes ``{table: {created: [records], updated: [records], deleted: [ids]}}``. Pull
(``GET ?last_pulled_at&schema_version&migration``) answers ``{changes, timestamp}``, or in
turbo mode ``{syncJson: "<the JSON text>"}`` whose counts are unknown without parsing it
(syncperf does not). Push (``POST ?last_pulled_at``) sends the changes object (or
``{changes, lastPulledAt}``) and may answer ``{experimentalRejectedIds: {table: [ids]}}``.

Example::

    from syncperf.adapters import watermelondb

    @app.get("/sync")
    @syncperf.instrument_sync("pull", adapter=watermelondb.Pull())  # reads the response only
    async def pull(last_pulled_at: int | None = None, schema_version: int = 1) -> dict: ...

    @app.post("/sync")
    @syncperf.instrument_sync("push", adapter=watermelondb.Push(count_existing=existing))
    async def push(body: dict, last_pulled_at: int) -> dict: ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from syncperf._config import check_callable
from syncperf._gate import describe
from syncperf._operation import SyncOperation
from syncperf.adapters._base import (
    MISSING,
    CallbackFailed,
    Malformed,
    ProtocolAdapter,
    Tally,
    call,
    count,
    entries,
    field,
    is_mapping,
    name,
    seq,
)
from syncperf.adapters._checkpoints import checkpoint_ms

__all__ = ["Pull", "Push"]

_KINDS = ("created", "updated", "deleted")

CountExisting = Callable[[str, Sequence[Any]], int]
"""``(table, created_ids) -> how many of those IDs already exist on the server``."""


def _changes_of(body: Any) -> Any:
    """The changes object of a push body: the body itself, or its ``changes`` field."""
    inner = field(body, "changes")
    if (
        inner is not MISSING
        and is_mapping(inner)
        and not any(field(inner, kind) is not MISSING for kind in _KINDS)
    ):
        return inner
    return body


def _tally_changes(changes: Any, tally: Tally) -> dict[str, Sequence[Any]]:
    """Count every table's created/updated/deleted; return created records per table."""
    total = 0
    created_by_table: dict[str, Sequence[Any]] = {}
    for table, table_changes in entries(changes, "changes"):
        table = name(table, "table name")
        if table_changes is None:
            continue
        created = field(table_changes, "created")
        n_created = count(created, "created")
        n_updated = count(field(table_changes, "updated"), "updated")
        n_deleted = count(field(table_changes, "deleted"), "deleted")
        if n_created:
            tally.item(table, "created", n_created)
            created_by_table[table] = seq(created, "created")
        if n_updated:
            tally.item(table, "updated", n_updated)
        if n_deleted:
            tally.item(table, "deleted", n_deleted)
        total += n_created + n_updated + n_deleted
    tally.batch = total
    return created_by_table


class Pull(ProtocolAdapter):
    """Adapter for a WatermelonDB pull endpoint.

    Records the batch size (records in the response), items per table and change type, and
    how far behind the client is (``sync.pull.staleness``, from the ``last_pulled_at`` query
    parameter: the server timestamp of the client's previous pull, in milliseconds; absent
    or ``null`` on a first sync). A turbo response (``{syncJson}``, or the JSON text
    itself) records nothing but ``sync.watermelondb.turbo`` on the span: its counts are
    unknown without a second parse.
    The request body is not read.
    """

    __slots__ = ()
    protocol = "watermelondb pull"
    query = ("last_pulled_at", "lastPulledAt")

    def _query(self, op: SyncOperation, params: Mapping[str, Any]) -> None:
        checkpoint_ms(op, params, self.query)

    def _response(self, op: SyncOperation, body: Any) -> Tally | None:
        if body is None:  # a 2xx without a body: nothing delivered
            return None
        tally = Tally()
        if isinstance(body, (str, bytes, bytearray)) or field(body, "syncJson") is not MISSING:
            tally.attribute("sync.watermelondb.turbo", True)
            return tally
        changes = field(body, "changes")
        if changes is MISSING:
            raise Malformed("pull response has no changes")
        _tally_changes(changes, tally)
        return tally


class Push(ProtocolAdapter):
    """Adapter for a WatermelonDB push endpoint.

    Records the batch size (records pushed), items per table and change type, conflicts
    per table from ``experimentalRejectedIds`` (resolution ``rejected``) and an
    idempotency hit when created records already exist on the server (a retried push).

    A push that conflicts as a whole (the protocol's default: a record changed after
    ``lastPulledAt`` aborts the push with an error) is an error outcome; to count it as a
    conflict call ``syncperf.current_operation().record_conflict()`` before raising.

    Args:
        count_existing: Optional ``(table, created_records) -> int``: how many of the
            records pushed as created already exist server-side, called before the handler
            for each table with created records. Those are counted as duplicates, not as
            created items.

    Raises:
        ConfigError: an option is not accepted.
    """

    __slots__ = ("_count_existing",)
    protocol = "watermelondb push"

    def __init__(self, *, count_existing: CountExisting | None = None) -> None:
        check_callable("count_existing", count_existing)
        self._count_existing = count_existing

    def _request(self, op: SyncOperation, body: Any) -> Tally:
        tally = Tally()
        created = _tally_changes(_changes_of(body), tally)
        existing_fn = self._count_existing
        if existing_fn is not None and created:
            duplicates = 0
            for table, records in created.items():
                existing = call(existing_fn, table, records)
                if type(existing) is not int or not 0 <= existing <= len(records):
                    raise CallbackFailed(
                        ValueError(
                            f"count_existing must return an int between 0 and "
                            f"{len(records)}, got {describe(existing)}"
                        )
                    )
                if existing:
                    duplicates += existing
                    tally.item(table, "created", -existing)
            if duplicates:
                tally.duplicate = True
                tally.attribute("sync.watermelondb.existing_created", duplicates)
        return tally

    def _response(self, op: SyncOperation, body: Any) -> Tally | None:
        if body is None:
            return None
        rejected = field(body, "experimentalRejectedIds")
        if rejected is MISSING or rejected is None:
            if is_mapping(body):
                return None
            raise Malformed(f"push response is {type(body).__name__}, not an object")
        tally = Tally()
        total = 0
        for table, ids in entries(rejected, "experimentalRejectedIds"):
            n = count(ids, "rejected ids")
            if n:
                tally.conflict(name(table, "table name"), "rejected", n)
                total += n
        if total:
            tally.attribute("sync.watermelondb.rejected", total)
        return tally
