"""Zero push (custom and CRUD mutators).

Request ``{clientGroupID, mutations: [{type, id, clientID, name, args, timestamp}],
pushVersion, requestID}``. CRUD mutations are named ``_zero_crud`` with
``args: [{ops: [{op: insert|upsert|update|delete, tableName, primaryKey, value}]}]``
(older releases: ``op: create|set|update|delete`` with ``entityType``). Response
``{mutations: [{id: {id, clientID}, result: {} | {error: "app" | "alreadyProcessed" |
"oooMutation", ...}}]}``, or a push-level error: zero-server's ``{kind: "PushFailed", origin,
reason, message, mutationIDs}``, ``["error", {kind, ...}]`` or (older releases) ``{error}``.

Example::

    from syncperf.adapters import zero

    @app.post("/api/zero/push")
    @syncperf.instrument_sync("push", adapter=zero.Push())
    async def push(body: dict) -> dict: ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from syncperf._config import check_callable
from syncperf._gate import describe
from syncperf._operation import SyncOperation
from syncperf.adapters._base import (
    MISSING,
    Malformed,
    ProtocolAdapter,
    Tally,
    call,
    defer,
    field,
    name,
    seq,
    stash,
    token,
    unstash,
)
from syncperf.adapters._names import NameCache
from syncperf.adapters.replicache import LastMutationID, _last_id

__all__ = ["CLEANUP_MUTATION", "CRUD_MUTATION", "ERRORS", "Push", "mutator_namespace"]

ERRORS = frozenset(
    {  # ``{error}`` (older releases) and the ``kind`` of ``["error", {kind, ...}]``
        "unsupportedPushVersion", "unsupportedSchemaVersion", "http", "zeroPusher",
        "AuthInvalidated", "ClientNotFound", "InvalidConnectionRequest",
        "InvalidConnectionRequestBaseCookie", "InvalidConnectionRequestLastMutationID",
        "InvalidConnectionRequestClientDeleted", "InvalidMessage", "InvalidPush", "PushFailed",
        "MutationFailed", "MutationRateLimited", "Rebalance", "Rehome", "TransformFailed",
        "Unauthorized", "VersionNotSupported", "SchemaVersionNotSupported", "ServerOverloaded",
        "Internal",
    }
)  # fmt: skip
"""Zero's push-level error tokens; any other text is exported as ``_other``."""

CRUD_MUTATION = "_zero_crud"
CLEANUP_MUTATION = "_zero_cleanupResults"
"""zero-cache's housekeeping mutation: after a client acknowledged its mutation results,
zero-cache pushes this one (id 0) to the app's push URL to delete the stored results."""
_CRUD_CHANGES: dict[Any, Any] = {
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
    one per custom mutator by entity) of the mutations the answer says were applied (an ok
    result: zero-server stops at an ``oooMutation``, older releases at any error, and
    answers none after it: ``sync.zero.unanswered`` on the span), conflicts (mutations the
    server answered with ``error: "app"``, resolution ``rejected``, by the mutation's
    entity: not items, their writes were rolled back) and an idempotency hit when a
    mutation was ``alreadyProcessed`` or is at or below the client's last mutation ID.
    zero-cache's own ``_zero_cleanupResults`` mutation (``CLEANUP_MUTATION``) is
    housekeeping: neither in the batch size nor an item nor a duplicate, only counted on the
    span (``sync.zero.cleanup``); a push of nothing else records no batch size. Items are
    recorded when the response is read: a push refused as a whole (``{kind: "PushFailed",
    ...}``, ``["error", {kind}]``, ``{error}``: outcome ``error``, the token as
    ``error.type``, never the message) or whose handler raised records its batch size only.

    Args:
        last_mutation_id: Optional ``(client_group_id, client_id) -> int | None`` read
            before the handler runs; mutations at or below it, or at or below one the
            push carried before them for that client, are duplicates and are not counted
            as items; one past the client's last ID + 1 is out of order: neither it nor
            any mutation after it is an item (``sync.zero.future_mutations``). Without it
            duplicates are seen only in the response (``alreadyProcessed``).
        entity: Custom mutator name -> entity (mapping or callable). Default:
            ``mutator_namespace``.
        change: Custom mutator name -> change type (mapping or callable). Default: unknown.

    Raises:
        ConfigError: an option is not accepted.
    """

    __slots__ = ("_key", "_last_mutation_id", "_names", "_sent_key")
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
        self._sent_key = self._key + ".sent"

    def _request(self, op: SyncOperation, body: Any) -> Tally:
        mutations = seq(field(body, "mutations"), "mutations")
        tally = Tally()
        last_id = self._last_mutation_id
        group: Any = None
        known: dict[Any, int | None] = {}
        if last_id is not None:
            group = name(field(body, "clientGroupID"), "clientGroupID")
        keys: list[tuple[Any, Any] | None] = []  # per mutation; None for a cleanup
        counted: list[int] = []  # the mutations the server is to apply, by index
        by_name: dict[Any, int] = {}  # custom mutator name -> mutations counted
        duplicates = cleanups = future = 0
        for index, mutation in enumerate(mutations):
            mutator = mutation.get("name") if type(mutation) is dict else field(mutation, "name")
            if mutator == CLEANUP_MUTATION:  # zero-cache's, not a client's: no work to count
                cleanups += 1
                keys.append(None)
                continue
            if type(mutation) is dict:  # the common case inline: a plain JSON object
                key = (mutation.get("clientID"), mutation.get("id"))
                if type(key[1]) is not int or type(key[0]) is not str or not key[0]:
                    key = _checked(key, "mutation")
            else:
                key = _ident(mutation, "mutation")
            keys.append(key)
            if future:  # the server stopped: read on, to find a malformed mutation
                future += 1
                continue
            if last_id is not None:
                client, mutation_id = key
                last = known.get(client, MISSING)
                if last is MISSING:
                    last = known[client] = _last_id(call(last_id, group, client))
                if last is not None and mutation_id <= last:
                    duplicates += 1
                    continue
                if last is not None and mutation_id > last + 1:  # from the future: the
                    future = 1  # server answers oooMutation and stops (the client resends)
                    continue
                known[client] = mutation_id  # a later copy in this push is a duplicate
            counted.append(index)
            if mutator == CRUD_MUTATION:
                _crud_items(tally.items, mutation)
            else:
                by_name[mutator] = by_name.get(mutator, 0) + 1
        self._count_named(tally, by_name)
        if duplicates:
            tally.duplicate = True
            tally.attribute("sync.zero.duplicate_mutations", duplicates)
        if future:
            tally.attribute("sync.zero.future_mutations", future)
        if cleanups:
            tally.attribute("sync.zero.cleanup", cleanups)
        if cleanups < len(mutations) or not mutations:
            tally.batch = len(mutations) - cleanups
        stash(op, self._sent_key, (mutations, keys, counted))
        return defer(op, self._key, tally)

    def _count(self, tally: Tally, mutations: Any, indices: list[int]) -> None:
        """Count the items of ``mutations[i]`` for each ``i`` of ``indices`` into ``tally``."""
        by_name: dict[Any, int] = {}  # custom mutator name -> mutations
        for index in indices:
            mutation = mutations[index]
            mutator = mutation.get("name") if type(mutation) is dict else field(mutation, "name")
            if mutator == CRUD_MUTATION:
                _crud_items(tally.items, mutation)
            else:
                by_name[mutator] = by_name.get(mutator, 0) + 1
        self._count_named(tally, by_name)

    def _count_named(self, tally: Tally, by_name: dict[Any, int]) -> None:
        """Count the custom mutations of ``by_name`` (name -> mutations) into ``tally``."""
        names = self._names
        for mutator, n in by_name.items():
            entity, change = names(name(mutator, "mutation name"))
            tally.item(entity, change, n)

    def _entity(self, mutation: Any) -> str | None:
        """The entity a mutation's conflict is counted under (its first table for CRUD)."""
        mutator = field(mutation, "name")
        if mutator == CRUD_MUTATION:
            return _crud_items({}, mutation)
        return self._names(name(mutator, "mutation name"))[0]

    def _response(self, op: SyncOperation, body: Any) -> Tally | None:
        sent: Any = unstash(op, self._sent_key)
        tally: Tally = unstash(op, self._key) or Tally()  # what the request carried
        if body is None:  # a 2xx without a body
            return tally
        kind = _refusal(body)
        if kind is not MISSING:  # refused as a whole: nothing applied
            refused = Tally()
            refused.refuse("sync.zero.push_error", token(kind, ERRORS))
            return refused
        mutations, keys, counted = sent or ((), [], [])
        by_id: dict[Any, Any] | None = None
        answered: list[tuple[Any, Any]] = []  # the key of each entry
        not_ok: list[int] = []  # the position of each entry without an ok result
        processed = out_of_order = 0
        for position, response in enumerate(seq(field(body, "mutations"), "mutations")):
            plain = type(response) is dict
            result = response.get("result", MISSING) if plain else field(response, "result")
            if result is MISSING:
                raise Malformed("mutation response has no result")
            ident = response.get("id") if plain else field(response, "id")
            if type(ident) is dict:  # checked below unless it matches a mutation's key
                key = (ident.get("clientID"), ident.get("id"))
            else:
                key = _ident(ident, "response")
            answered.append(key)
            error = result.get("error") if type(result) is dict else field(result, "error")
            if error is MISSING or error is None:
                continue
            not_ok.append(position)
            if error == "app":  # the mutator's writes were rolled back: rejected
                if position < len(keys) and keys[position] == key:  # answered in order
                    mutation = mutations[position]
                else:
                    if by_id is None:
                        by_id = {k: m for k, m in zip(keys, mutations, strict=True) if k}
                    mutation = by_id.get(_checked(key, "response"), MISSING)
                tally.conflict(None if mutation is MISSING else self._entity(mutation), "rejected")
            elif error == "alreadyProcessed":
                processed += 1
            elif error == "oooMutation":
                out_of_order += 1
            else:
                raise Malformed("unknown mutation error: " + describe(error))
        sent_keys: list[Any] = keys if None not in keys else [k for k in keys if k is not None]
        if answered == sent_keys and len(counted) == len(keys):  # one answer per mutation,
            missed, unanswered = [counted[p] for p in not_ok], []  # in order, all counted
        else:
            for key in answered:  # no longer each the key of the mutation it answers
                _checked(key, "response")
            missed = self._missed(keys, counted, answered, not_ok)
            unanswered = _unmatched(sent_keys, answered)
        if missed:
            self._uncount(tally, mutations, missed)
        if processed:
            tally.duplicate = True
            tally.attribute("sync.zero.already_processed", processed)
        if out_of_order:
            tally.attribute("sync.zero.out_of_order", out_of_order)
        if unanswered:
            tally.attribute("sync.zero.unanswered", len(unanswered))
        return tally

    def _missed(
        self, keys: Any, counted: list[int], answered: list[tuple[Any, Any]], not_ok: list[int]
    ) -> list[int]:
        """The counted mutations (indices) the answer does not say were applied (an ok
        result): rejected, out of order, already processed or unanswered."""
        rejected = set(not_ok)
        applied = [key for p, key in enumerate(answered) if p not in rejected]
        counted_keys = [keys[i] for i in counted]
        return [counted[n] for n in _unmatched(counted_keys, applied)]

    def _uncount(self, tally: Tally, mutations: Any, missed: list[int]) -> None:
        """Take the items of ``mutations[i]`` for each ``i`` of ``missed`` out of ``tally``."""
        gone = Tally()
        self._count(gone, mutations, missed)
        items = tally.items
        for item, n in gone.items.items():
            left = items.get(item, 0) - n
            if left > 0:
                items[item] = left
            else:
                items.pop(item, None)


def _ident(obj: Any, what: str) -> tuple[str, int]:
    """A mutation's ``(clientID, id)`` (or a response's ``id`` object's)."""
    return _checked((field(obj, "clientID"), field(obj, "id")), what)


def _checked(key: tuple[Any, Any], what: str) -> tuple[str, int]:
    """``key`` when it is a ``(clientID, id)`` pair: a non-empty string and an integer."""
    client, mutation_id = key
    if type(mutation_id) is not int:
        raise Malformed(what + " id is not an integer")
    if type(client) is str and client:
        return key
    return name(client, what + " clientID"), mutation_id


def _unmatched(keys: list[tuple[Any, Any]], matches: list[tuple[Any, Any]]) -> list[int]:
    """Positions in ``keys`` left once each of ``matches`` took the first of its key."""
    if keys == matches:
        return []
    left_over: dict[tuple[Any, Any], int] = {}
    for key in matches:
        left_over[key] = left_over.get(key, 0) + 1
    left = []
    for position, key in enumerate(keys):
        n = left_over.get(key, 0)
        if n:
            left_over[key] = n - 1
        else:
            left.append(position)
    return left


def _refusal(body: Any) -> Any:
    """What refused a push as a whole: the ``kind`` of zero-server's bare
    ``{kind: "PushFailed", origin, reason, message, mutationIDs}`` or of
    ``["error", {kind, ...}]``, or the ``error`` of ``{error}`` (older releases); MISSING for
    an answer per mutation.

    Raises:
        Malformed: none of these.
    """
    if isinstance(body, (list, tuple)) and body and body[0] == "error":
        return field(body[1], "kind") if len(body) > 1 else None
    if field(body, "mutations") is not MISSING:
        return MISSING
    error = field(body, "error")
    if isinstance(error, str):
        return error
    kind = field(body, "kind")
    if isinstance(kind, str):
        return kind
    raise Malformed("push response has neither mutations nor error")


def _crud_items(counts: dict[tuple[str | None, str | None], int], mutation: Any) -> str | None:
    """Count a CRUD mutation's ops into ``counts``; return the table of its first op."""
    args = mutation.get("args") if type(mutation) is dict else field(mutation, "args")
    first: str | None = None
    for arg in seq(args, "CRUD args"):
        ops = arg.get("ops") if type(arg) is dict else field(arg, "ops")
        for crud in seq(ops, "CRUD ops"):
            if type(crud) is dict:
                kind = crud.get("op")
                table = crud.get("tableName", MISSING)
            else:
                kind = field(crud, "op")
                table = field(crud, "tableName")
            change = _CRUD_CHANGES.get(kind, MISSING)
            if change is MISSING:
                raise Malformed("unknown CRUD op: " + describe(kind))
            if table is MISSING:
                table = field(crud, "entityType")
            if type(table) is not str or not table:
                table = name(table, "CRUD tableName")
            if first is None:
                first = table
            key = (table, change)
            counts[key] = counts.get(key, 0) + 1
    return first
