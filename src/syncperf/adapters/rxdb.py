"""RxDB HTTP replication: pull and push.

Pull (``GET /pull?id&updatedAt&batchSize``) answers ``{documents: [...], checkpoint}``;
a document with ``_deleted: true`` is a deletion. Push sends an array of
``{assumedMasterState, newDocumentState}`` rows and answers ``200`` with the array of
master documents that conflicted. RxDB usually has one endpoint per collection, so the
entity comes from the route (``instrument_sync(..., entity="todo")`` or ``{entity}``).
The ``/pullStream`` server-sent-events endpoint is long-lived and not an operation.

Example::

    from syncperf.adapters import rxdb

    @app.post("/todos/push")
    @syncperf.instrument_sync("push", entity="todo", adapter=rxdb.Push())
    async def push(rows: list[dict]) -> list[dict]: ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from syncperf._operation import SyncOperation
from syncperf.adapters._base import (
    MISSING,
    Malformed,
    ProtocolAdapter,
    Tally,
    field,
    is_mapping,
    seq,
    snake_case,
    stash,
    to_plain,
    unstash,
)
from syncperf.adapters._checkpoints import checkpoint_ms
from syncperf.exceptions import ConfigError

__all__ = ["IGNORED_FIELDS", "Pull", "Push"]

IGNORED_FIELDS = frozenset({"_meta", "_rev", "_attachments"})
"""Fields left out when comparing a returned master document with the pushed state."""
_NOT_COMPARED = IGNORED_FIELDS | {"_deleted"}  # compared as a boolean, absent = False


def _documents(body: Any, key: str, what: str) -> list[Any] | tuple[Any, ...]:
    """A bare array, or the array under ``key`` (``{documents}``, ``{conflicts}``)."""
    if isinstance(body, (list, tuple)):
        return body
    inner = field(body, key)
    if inner is MISSING:
        return seq(body, what)
    return seq(inner, what)


class Pull(ProtocolAdapter):
    """Adapter for an RxDB HTTP pull endpoint.

    Records the batch size (documents in the response) and items: ``deleted`` for
    documents with ``_deleted: true``, change unknown for the rest (a pulled document
    may be new or changed). The request body is not read.

    Args:
        checkpoint_ms: The query parameter carrying the checkpoint's time in milliseconds
            since the epoch, when your checkpoint has one (e.g. ``"updatedAt"`` stamped with
            ``Date.now()``): it records ``sync.pull.staleness``. RxDB's checkpoint is the
            application's, so by default nothing is read. A handler parameter of the same
            name (or its snake_case form) works behind the decorator.

    Raises:
        ConfigError: an option is not accepted.
    """

    __slots__ = ("query",)
    protocol = "rxdb pull"

    def __init__(self, *, checkpoint_ms: str | None = None) -> None:
        if checkpoint_ms is not None and (not isinstance(checkpoint_ms, str) or not checkpoint_ms):
            raise ConfigError("checkpoint_ms", checkpoint_ms, "a query parameter name or None")
        names = () if checkpoint_ms is None else (checkpoint_ms, snake_case(checkpoint_ms))
        self.query: tuple[str, ...] = tuple(dict.fromkeys(names))

    def _query(self, op: SyncOperation, params: Mapping[str, Any]) -> None:
        checkpoint_ms(op, params, self.query)

    def _response(self, op: SyncOperation, body: Any) -> Tally | None:
        if body is None:  # a 2xx without a body: nothing delivered
            return None
        documents = _documents(body, "documents", "documents")
        tally = Tally()
        tally.batch = len(documents)
        deleted = 0
        for doc in documents:
            if type(doc) is dict:
                gone = doc.get("_deleted")
            elif is_mapping(doc):
                gone = field(doc, "_deleted")
            else:
                raise Malformed(f"document is not an object but {type(doc).__name__}")
            if gone is True:
                deleted += 1
        tally.item(None, "deleted", deleted)
        tally.item(None, None, len(documents) - deleted)
        return tally


class Push(ProtocolAdapter):
    """Adapter for an RxDB HTTP push endpoint.

    Records the batch size (rows), items (``created`` when ``assumedMasterState`` is
    absent, ``deleted`` when the new state has ``_deleted: true``, else ``updated``) and
    the returned conflicts. A returned master document equal to the state this push wanted
    to write (a retried push whose first attempt was applied) is an idempotency hit,
    neither a conflict nor an item again. Items are recorded when the response is read:
    a push whose handler raised records its batch size but no items.

    Args:
        primary_key: The collection's primary key field, to match returned documents
            with pushed rows. Default ``"id"``.
        server_fields: Fields your server sets on every write (e.g. ``"updatedAt"`` for
            the pull checkpoint); left out, with ``IGNORED_FIELDS``, when comparing a
            returned master with the pushed state.

    Raises:
        ConfigError: an option is not accepted.
    """

    __slots__ = ("_ignored", "_key", "_primary_key")
    protocol = "rxdb push"

    def __init__(self, *, primary_key: str = "id", server_fields: Iterable[str] = ()) -> None:
        if not isinstance(primary_key, str) or not primary_key:
            raise ConfigError("primary_key", primary_key, "a non-empty string")
        if isinstance(server_fields, (str, bytes)) or not isinstance(server_fields, Iterable):
            raise ConfigError("server_fields", server_fields, "field names (strings)")
        fields = tuple(server_fields)  # read once: an iterator is used up by the check
        if not all(isinstance(f, str) and f for f in fields):
            raise ConfigError("server_fields", fields, "field names (strings)")
        self._primary_key = primary_key
        self._ignored = _NOT_COMPARED | frozenset(fields)
        self._key = f"syncperf.adapters.rxdb.{id(self)}"

    def _request(self, op: SyncOperation, body: Any) -> Tally:
        rows = _documents(body, "rows", "push rows")
        tally = Tally()
        tally.batch = len(rows)
        changes: list[str] = []
        for row in rows:
            if type(row) is dict:
                new_state = row.get("newDocumentState")
                assumed = row.get("assumedMasterState")
            else:
                new_state = field(row, "newDocumentState")
                assumed = field(row, "assumedMasterState")
            if new_state is MISSING or new_state is None:
                raise Malformed("push row has no newDocumentState")
            gone = (
                new_state.get("_deleted")
                if type(new_state) is dict
                else field(new_state, "_deleted")
            )
            if gone is True:
                changes.append("deleted")
            elif assumed is MISSING or assumed is None:
                changes.append("created")
            else:
                changes.append("updated")
        # Items wait for the response: a row the server had already applied (a retry after
        # a lost response) comes back as a master equal to it and is not an item again.
        stash(op, self._key, (rows, changes))
        return tally

    def _response(self, op: SyncOperation, body: Any) -> Tally | None:
        pushed = unstash(op, self._key)
        rows, changes = pushed if pushed is not None else ((), [])
        tally = Tally()
        if body is None:  # the handler returned nothing: no conflicts
            _count(tally, changes)
            return tally
        conflicts = _documents(body, "conflicts", "conflicts")
        if not conflicts:
            _count(tally, changes)
            return tally
        pk = self._primary_key
        masters: list[tuple[Any, Any]] = []
        for doc in conflicts:
            master = to_plain(doc)
            key = field(master, pk)
            if key is MISSING:
                raise Malformed(f"conflict document has no {pk!r}")
            masters.append((key, master))
        keys = {key for key, _ in masters}
        wanted: dict[Any, tuple[Any, int]] = {}  # key -> (pushed state, row index)
        for index, row in enumerate(rows):
            state = field(row, "newDocumentState")
            key = field(state, pk)
            if key in keys:
                wanted[key] = (to_plain(state), index)
        real = duplicates = 0
        applied: set[int] = set()
        for key, master in masters:
            found = wanted.get(key)
            if found is not None and _same(master, found[0], self._ignored):
                duplicates += 1
                applied.add(found[1])
            else:
                real += 1
        _count(tally, [c for i, c in enumerate(changes) if i not in applied])
        if real:
            tally.conflict(None, None, real)
        if duplicates:
            tally.duplicate = True
            tally.attribute("sync.rxdb.applied_conflicts", duplicates)
        return tally


def _count(tally: Tally, changes: list[str]) -> None:
    for change in changes:
        tally.item(None, change)


def _same(master: Any, state: Any, ignored: frozenset[str]) -> bool:
    if not isinstance(master, dict) or not isinstance(state, dict):
        return bool(master == state)
    if bool(master.get("_deleted")) != bool(state.get("_deleted")):
        return False
    keys = (master.keys() | state.keys()) - ignored
    return all(master.get(k, MISSING) == state.get(k, MISSING) for k in keys)
