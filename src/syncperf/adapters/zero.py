"""Zero push (custom and CRUD mutators).

Request ``{clientGroupID, mutations: [{type, id, clientID, name, args, timestamp}],
pushVersion, requestID}``. CRUD mutations are named ``_zero_crud`` with
``args: [{ops: [{op: insert|upsert|update|delete, tableName, primaryKey, value}]}]``
(older releases: ``op: create|set|update|delete`` with ``entityType``). Response
``{mutations: [{id: {id, clientID}, result: {} | {error: "app" | "alreadyProcessed" |
"oooMutation", ...}}]}``, or a push-level error (``{error: ...}`` or ``["error", {...}]``).

Example::

    from syncperf.adapters import zero

    @app.post("/api/zero/push")
    @syncperf.instrument_sync("push", adapter=zero.Push())
    async def push(body: dict) -> dict: ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from syncperf._operation import SyncOperation
from syncperf.adapters._base import (
    MISSING,
    Malformed,
    NameCache,
    ProtocolAdapter,
    Tally,
    call,
    check_callable,
    field,
    integer,
    name,
    seq,
    stash,
    unstash,
)
from syncperf.adapters.replicache import LastMutationID, _last_id

__all__ = ["CRUD_MUTATION", "Push", "mutator_namespace"]

CRUD_MUTATION = "_zero_crud"
_CRUD_CHANGES = {
    "insert": "created",
    "create": "created",
    "update": "updated",
    "delete": "deleted",
    "upsert": None,
    "set": None,
}


def mutator_namespace(mutator: str) -> str:
    """Entity of a custom mutator: its namespace (``issue.create`` or ``issue|create`` ->
    ``issue``), or the whole name when it has none."""
    for separator in (".", "|"):
        head, sep, _ = mutator.partition(separator)
        if sep and head:
            return head
    return mutator


class Push(ProtocolAdapter):
    """Adapter for a Zero push endpoint.

    Records the batch size (mutations), items (one per CRUD op by table and change type;
    one per custom mutation by entity), conflicts (mutations the server answered with
    ``error: "app"``, resolution ``rejected``, by the mutation's entity) and an
    idempotency hit when a mutation was ``alreadyProcessed`` or is at or below the
    client's last mutation ID.

    Args:
        last_mutation_id: Optional ``(client_group_id, client_id) -> int | None`` read
            before the handler runs; mutations at or below it are duplicates and are
            not counted as items. Without it duplicates are seen only in the response
            (``alreadyProcessed``), after their items were counted.
        entity: Custom mutator name -> entity (mapping or callable). Default:
            ``mutator_namespace``.
        change: Custom mutator name -> change type (mapping or callable). Default: unknown.

    Raises:
        ConfigError: an option is not accepted.
    """

    __slots__ = ("_key", "_last_mutation_id", "_names")
    protocol = "zero push"

    def __init__(
        self,
        *,
        last_mutation_id: LastMutationID | None = None,
        entity: Mapping[str, str] | Callable[[str], str | None] | None = None,
        change: Mapping[str, str] | Callable[[str], str | None] | None = None,
    ) -> None:
        check_callable("last_mutation_id", last_mutation_id)
        self._last_mutation_id = last_mutation_id
        self._names = NameCache(entity, change, mutator_namespace)
        self._key = f"syncperf.adapters.zero.{id(self)}"

    def _request(self, op: SyncOperation, body: Any) -> Tally:
        mutations = seq(field(body, "mutations"), "mutations")
        tally = Tally()
        tally.batch = len(mutations)
        last_id = self._last_mutation_id
        group: Any = None
        known: dict[str, int | None] = {}
        if last_id is not None:
            group = name(field(body, "clientGroupID"), "clientGroupID")
        names = self._names
        entities: list[tuple[Any, Any, str | None]] = []
        duplicates = 0
        for mutation in mutations:
            mutator = name(field(mutation, "name"), "mutation name")
            if last_id is not None:
                mutation_id = integer(field(mutation, "id"))
                if mutation_id is None:
                    raise Malformed("mutation id is not an integer")
                client = name(field(mutation, "clientID"), "clientID")
                if client in known:
                    last = known[client]
                else:
                    last = known[client] = _last_id(call(last_id, group, client))
                if last is not None and mutation_id <= last:
                    duplicates += 1
                    continue
            if mutator == CRUD_MUTATION:
                entity = _crud_items(tally, mutation)
            else:
                entity, change = names(mutator)
                tally.item(entity, change)
            entities.append((field(mutation, "clientID"), field(mutation, "id"), entity))
        if duplicates:
            tally.duplicate = True
            tally.attribute("sync.zero.duplicate_mutations", duplicates)
        stash(op, self._key, entities)
        return tally

    def _response(self, op: SyncOperation, body: Any) -> Tally | None:
        sent: list[tuple[Any, Any, str | None]] | None = unstash(op, self._key)
        if body is None:  # the response was not seen
            return None
        tally = Tally()
        if isinstance(body, (list, tuple)) and body and body[0] == "error":
            tally.attribute("sync.zero.push_error", _error_kind(body[1] if len(body) > 1 else None))
            return tally
        results = field(body, "mutations")
        if results is MISSING:
            error = field(body, "error")
            if isinstance(error, str):
                tally.attribute("sync.zero.push_error", error)
                return tally
            raise Malformed("push response has neither mutations nor error")
        by_id: dict[tuple[Any, Any], str | None] | None = None
        rejected = processed = out_of_order = 0
        for response in seq(results, "mutations"):
            result = field(response, "result")
            if result is MISSING:
                raise Malformed("mutation response has no result")
            error = field(result, "error")
            if error is MISSING or error is None:
                continue
            if error == "app":
                if by_id is None:
                    by_id = {(c, i): e for c, i, e in sent} if sent else {}
                ident = field(response, "id")
                entity = by_id.get((field(ident, "clientID"), field(ident, "id")))
                tally.conflict(entity, "rejected")
                rejected += 1
            elif error == "alreadyProcessed":
                processed += 1
            elif error == "oooMutation":
                out_of_order += 1
            else:
                raise Malformed(f"unknown mutation error {error!r}")
        if processed:
            tally.duplicate = True
            tally.attribute("sync.zero.already_processed", processed)
        if out_of_order:
            tally.attribute("sync.zero.out_of_order", out_of_order)
        return tally


def _crud_items(tally: Tally, mutation: Any) -> str | None:
    """Count a CRUD mutation's ops; return the table of its first op."""
    args = seq(field(mutation, "args"), "CRUD args")
    first: str | None = None
    for arg in args:
        for crud in seq(field(arg, "ops"), "CRUD ops"):
            kind = field(crud, "op")
            if kind not in _CRUD_CHANGES:
                raise Malformed(f"unknown CRUD op {kind!r}")
            table = field(crud, "tableName")
            if table is MISSING:
                table = field(crud, "entityType")
            table = name(table, "CRUD tableName")
            if first is None:
                first = table
            tally.item(table, _CRUD_CHANGES[kind])
    return first


def _error_kind(detail: Any) -> str:
    kind = field(detail, "kind")
    return kind if isinstance(kind, str) else "error"
