"""PowerSync-style batch upload (the app-defined endpoint ``uploadData()`` calls).

The common shapes: ``{batch: [entry, ...]}``, a ``CrudTransaction``
(``{crud: [entry, ...], transactionId}``) or a bare array of entries, each entry a
``CrudEntry`` (``{op_id, op: "PUT" | "PATCH" | "DELETE", type, id, tx_id, data}``) or the
shorter ``{op, table, id, data}``. PowerSync asks backends to answer 2xx even when a write
is rejected (a 4xx would block the upload queue, a 5xx is retried), so rejections are
app-defined: the ``conflicts`` callback reads them from your response. A retried upload
resends the whole transaction; the ``last_tx_id`` callback spots it.

Example::

    from syncperf.adapters import powersync

    @app.post("/api/upload")
    @syncperf.instrument_sync("push", adapter=powersync.Upload(
        last_tx_id=lambda body: store.last_tx_id(current_user()),
        conflicts=lambda response: response.get("rejected_per_table"),
    ))
    async def upload(body: dict) -> dict: ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    field,
    integer,
    name,
    seq,
)

__all__ = ["Upload"]

_CHANGES: dict[Any, Any] = {"PUT": "created", "PATCH": "updated", "DELETE": "deleted"}

LastTxID = Callable[[Any], "int | None"]
"""``(request_body) -> the last transaction ID applied for this client, or None``."""
Conflicts = Callable[[Any], "int | Mapping[str, int] | None"]
"""``(response) -> rejected writes: a count, or table -> count``."""


def _entries(body: Any) -> tuple[list[Any] | tuple[Any, ...], int | None]:
    """The CRUD entries of an upload and the transaction ID given at its top level."""
    if isinstance(body, (list, tuple)):
        return body, None
    for key in ("batch", "crud"):
        found = field(body, key)
        if found is not MISSING:
            return seq(found, key), integer(field(body, "transactionId"))
    raise Malformed("upload has neither batch nor crud")


class Upload(ProtocolAdapter):
    """Adapter for a PowerSync-style upload endpoint.

    Records the batch size (CRUD entries), items by table and change type (``PUT`` is
    ``created``, ``PATCH`` ``updated``, ``DELETE`` ``deleted``), an idempotency hit when
    entries belong to transactions already applied (not counted as items), and the
    conflicts your ``conflicts`` callback finds in the response.

    Args:
        last_tx_id: Optional ``(body) -> int | None``: the highest transaction ID already
            applied for the uploading client (find the client in the body or in your
            request context). Entries with ``tx_id`` at or below it are duplicates.
        conflicts: Optional ``(response) -> int | Mapping[str, int] | None``: rejected
            writes in your response, in total or per table (resolution ``rejected``).

    Raises:
        ConfigError: an option is not accepted.
    """

    __slots__ = ("_conflicts", "_last_tx_id")
    protocol = "powersync upload"

    def __init__(
        self, *, last_tx_id: LastTxID | None = None, conflicts: Conflicts | None = None
    ) -> None:
        check_callable("last_tx_id", last_tx_id)
        check_callable("conflicts", conflicts)
        self._last_tx_id = last_tx_id
        self._conflicts = conflicts

    def _request(self, op: SyncOperation, body: Any) -> Tally:
        batch, top_tx = _entries(body)
        tally = Tally()
        tally.batch = len(batch)
        last: int | None = None
        if self._last_tx_id is not None:
            last = call(self._last_tx_id, body)
            if last is not None and type(last) is not int:
                raise CallbackFailed(
                    TypeError(f"last_tx_id must return an int or None, got {describe(last)}")
                )
        duplicates = 0
        counts = tally.items
        for entry in batch:
            if type(entry) is dict:
                kind = entry.get("op")
                table = entry.get("table", MISSING)
                if table is MISSING:
                    table = entry.get("type", MISSING)
                tx_id = entry.get("tx_id") if last is not None else None
            else:
                kind = field(entry, "op")
                table = field(entry, "table")
                if table is MISSING:
                    table = field(entry, "type")
                tx_id = field(entry, "tx_id") if last is not None else None
            change = _CHANGES.get(kind, MISSING)
            if change is MISSING:
                change = _CHANGES.get(kind.upper(), MISSING) if isinstance(kind, str) else MISSING
                if change is MISSING:
                    raise Malformed("unknown CRUD op: " + describe(kind))
            if type(table) is not str or not table:
                table = name(table, "table")
            if last is not None:
                if type(tx_id) is not int:
                    tx_id = top_tx
                if tx_id is not None and tx_id <= last:
                    duplicates += 1
                    continue
            key = (table, change)
            counts[key] = counts.get(key, 0) + 1
        if duplicates:
            tally.duplicate = True
            tally.attribute("sync.powersync.duplicate_entries", duplicates)
        return tally

    def _response(self, op: SyncOperation, body: Any) -> Tally | None:
        conflicts_fn = self._conflicts
        if conflicts_fn is None or body is None:  # None: a 2xx without a body to read
            return None
        found = call(conflicts_fn, body)
        if found is None:
            return None
        tally = Tally()
        if type(found) is int and found >= 0:
            if found:
                tally.conflict(None, "rejected", found)
            return tally
        if isinstance(found, Mapping):
            for table, n in found.items():
                if not isinstance(table, str) or not table or type(n) is not int or n < 0:
                    break
                if n:
                    tally.conflict(table, "rejected", n)
            else:
                return tally
        raise CallbackFailed(
            TypeError(
                "conflicts must return an int >= 0, a mapping table -> int or None, got "
                + describe(found)
            )
        )
