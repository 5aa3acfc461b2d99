"""Replicache push (v0 and v1) and pull.

Push ``{pushVersion, clientGroupID, mutations: [{id, clientID, name, args, timestamp}]}``
(v0: ``clientID`` on the body, not on each mutation). The push response is empty, or a
refusal (``{error: "ClientStateNotFound" | "VersionNotSupported"}``: nothing applied), and
conflicts are not on the wire: the server re-runs each mutator and decides. A
mutation whose ``id`` is at or below the client's last mutation ID was already processed
(a retried push); only the server knows that number, hence the ``last_mutation_id``
callback.

Pull request ``{pullVersion, clientGroupID, cookie}``; response
``{cookie, lastMutationIDChanges, patch: [{op: "put", key, value} | {op: "del", key} |
{op: "clear"}]}`` (v0: ``lastMutationID``; Replicache 15 also takes an internal
``{op: "update", key, merge, constrain}``), or ``{error: ...}``.

Example::

    from syncperf.adapters import replicache

    @app.post("/replicache/push")
    @syncperf.instrument_sync("push", adapter=replicache.Push(
        last_mutation_id=lambda group, client: store.last_mutation_id(group, client),
        entity={"createTodo": "todo", "updateTodo": "todo", "deleteTodo": "todo"},
        change={"createTodo": "created", "updateTodo": "updated", "deleteTodo": "deleted"},
    ))
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
    CallbackFailed,
    Malformed,
    ProtocolAdapter,
    Tally,
    call,
    check_entity_name,
    defer,
    field,
    name,
    seq,
    token,
    unstash,
)
from syncperf.adapters._names import NameCache
from syncperf.exceptions import ConfigError

__all__ = ["ERRORS", "Pull", "Push", "key_prefix"]

ERRORS = frozenset({"ClientStateNotFound", "VersionNotSupported"})
"""The ``error`` tokens of Replicache's push and pull responses; any other text is exported
as ``_other`` (the client accepts any string, which may quote data)."""

LastMutationID = Callable[[Any, str], "int | None"]
"""``(client_group_id, client_id) -> last processed mutation ID or None``."""


def _mutator_name(mutator: str) -> str | None:
    return mutator


class Push(ProtocolAdapter):
    """Adapter for a Replicache push endpoint (push v0 and v1).

    Records the batch size (mutations in the request) and one item per new mutation (by
    entity and change type). Mutations the server already processed (with the callback: at
    or below the client's last mutation ID, or a copy of one earlier in the push) are not
    items; mutations from the future (past the last ID + 1) and all after them are not
    either (the server stops there, ``sync.replicache.future_mutations``). The resends'
    number is set on the span (``sync.replicache.duplicate_mutations``) and they are *not*
    an idempotency hit: Replicache resends every pending mutation with each push until a
    pull confirms it, so a resend is normal, not a client that missed an answer (Replicache
    does not even read a successful push's answer). Conflicts are decided by your
    mutators: record them with ``syncperf.current_operation().record_conflict()``.
    Items are recorded when the response is read: a push refused in its answer
    (``{error}``: outcome ``error``, ``error.type`` the token) or whose handler raised
    records its batch size only.

    Args:
        last_mutation_id: ``(client_group_id, client_id) -> int | None``, the last
            mutation ID the server processed for that client, read *before* the handler
            runs. Synchronous and cheap (called once per client in the push); v0 pushes
            pass ``None`` as the group. Without it resent mutations count as items again.
        entity: Mutator name -> entity: a mapping (unlisted names get none) or a
            callable. Default: the mutator name itself (mutator names are code, so
            bounded).
        change: Mutator name -> ``"created"``, ``"updated"``, ``"deleted"``: a mapping
            or a callable. Default: unknown.

    Raises:
        ConfigError: an option is not accepted.
    """

    __slots__ = ("_key", "_last_mutation_id", "_names")
    protocol = "replicache push"

    def __init__(
        self,
        *,
        last_mutation_id: LastMutationID | None = None,
        entity: Mapping[str, str] | Callable[[str], str | None] | None = None,
        change: Mapping[str, str] | Callable[[str], str | None] | None = None,
    ) -> None:
        check_callable("last_mutation_id", last_mutation_id)
        self._last_mutation_id = last_mutation_id
        self._names = NameCache(entity, change, _mutator_name)
        self._key = f"syncperf.adapters.replicache.{id(self)}"

    def _request(self, op: SyncOperation, body: Any) -> Tally:
        mutations = seq(field(body, "mutations"), "mutations")
        tally = Tally()
        tally.batch = len(mutations)
        by_name: dict[Any, int] = {}  # mutator name -> new mutations
        last_id = self._last_mutation_id
        if last_id is None:
            for mutation in mutations:
                mutator = (
                    mutation.get("name") if type(mutation) is dict else field(mutation, "name")
                )
                by_name[mutator] = by_name.get(mutator, 0) + 1
        else:
            _new_mutations(body, mutations, last_id, by_name, tally)
        names = self._names
        for mutator, n in by_name.items():
            entity, change = names(name(mutator, "mutation name"))
            tally.item(entity, change, n)
        return defer(op, self._key, tally)

    def _response(self, op: SyncOperation, body: Any) -> Tally | None:
        counted: Tally | None = unstash(op, self._key)
        error = field(body, "error")
        if isinstance(error, str):  # e.g. VersionNotSupported: the server applied nothing
            refused = Tally()
            refused.refuse("sync.replicache.error", token(error, ERRORS))
            return refused
        return counted


def _new_mutations(
    body: Any, mutations: Any, last_id: LastMutationID, by_name: dict[Any, int], tally: Tally
) -> None:
    """Count into ``by_name`` the mutations the server runs, per Replicache's push algorithm:
    each client's next one (its last mutation ID + 1, advanced by every mutation counted, so
    a copy later in the same push is a resend; any ID for a client the callback does not
    know, None). A lower ID was processed already (``sync.replicache.duplicate_mutations``);
    a higher one is from the future: the server stops there and the client resends the gap,
    so neither it nor any mutation after it is an item (``sync.replicache.future_mutations``).
    """
    group = field(body, "clientGroupID")
    v0_client = MISSING if group is not MISSING else field(body, "clientID")
    group = None if group is MISSING else name(group, "clientGroupID")
    known: dict[Any, int | None] = {}
    duplicates = future = 0
    for mutation in mutations:
        if type(mutation) is dict:
            mutator = mutation.get("name")
            mutation_id = mutation.get("id")
            client = mutation.get("clientID") if v0_client is MISSING else v0_client
        else:
            mutator = field(mutation, "name")
            mutation_id = field(mutation, "id")
            client = field(mutation, "clientID") if v0_client is MISSING else v0_client
        if type(mutation_id) is not int:
            raise Malformed("mutation id is not an integer")
        if future:  # the server stopped: read on, to find a malformed mutation
            future += 1
            continue
        last = known.get(client, MISSING)
        if last is MISSING:
            last = known[client] = _last_id(call(last_id, group, name(client, "clientID")))
        if last is not None and mutation_id <= last:
            duplicates += 1
        elif last is not None and mutation_id > last + 1:
            future = 1
        else:
            known[client] = mutation_id
            by_name[mutator] = by_name.get(mutator, 0) + 1
    if duplicates:  # resends, not a lost answer: no idempotency hit (see Push)
        tally.attribute("sync.replicache.duplicate_mutations", duplicates)
    if future:
        tally.attribute("sync.replicache.future_mutations", future)


def _last_id(value: Any) -> int | None:
    if value is None or type(value) is int:
        return value
    raise CallbackFailed(
        TypeError(f"last_mutation_id must return an int or None, got {describe(value)}")
    )


def key_prefix(separator: str = "/") -> Callable[[str], str | None]:
    """Entity of a Replicache key: the part before ``separator`` (``todo/42`` -> ``todo``).

    Keys without the separator have no entity (the operation's entity applies).
    """
    if not isinstance(separator, str) or not separator:
        raise ConfigError("separator", separator, "a non-empty string")

    def prefix(key: str) -> str | None:
        head, sep, _ = key.partition(separator)
        return head if sep and head else None

    return prefix


class Pull(ProtocolAdapter):
    """Adapter for a Replicache pull endpoint (pull v0 and v1).

    Records the batch size (patch operations in the response) and one item per ``put``
    (change unknown: a put is an upsert), ``update`` (``updated``) or ``del`` (``deleted``)
    by the entity of its key.
    A ``clear`` patch is set on the span; an error response (``{error}``) is an ``error``
    outcome, its token the ``error.type``.

    Args:
        entity: Key -> entity name or None. Default: ``key_prefix("/")``.
        cookie_time: Optional ``cookie -> time``: the time the request's ``cookie`` stands
            for (a ``datetime`` or seconds since the epoch; None when it has none, e.g. on
            a first pull), for ``sync.pull.staleness``. The cookie is the application's own
            value, so only the application can map it to a time. With it, the request body
            is read too.

    Raises:
        ConfigError: an option is not accepted.
    """

    __slots__ = ("_cookie_time", "_entity")
    protocol = "replicache pull"

    def __init__(
        self,
        *,
        entity: Callable[[str], str | None] | None = None,
        cookie_time: Callable[[Any], Any] | None = None,
    ) -> None:
        check_callable("entity", entity)
        check_callable("cookie_time", cookie_time)
        self._entity = entity
        self._cookie_time = cookie_time

    @property
    def reads_request(self) -> bool:  # type: ignore[override]
        """Whether the request body is read: only to map the cookie to a time."""
        return self._cookie_time is not None

    def _request(self, op: SyncOperation, body: Any) -> None:
        cookie_time = self._cookie_time
        if cookie_time is None:
            return
        cookie = field(body, "cookie")
        if cookie is MISSING:
            raise Malformed("pull request has no cookie")
        if cookie is not None:
            at = call(cookie_time, cookie)
            if at is not None:
                op.record_checkpoint(at)

    def _response(self, op: SyncOperation, body: Any) -> Tally | None:
        if body is None:  # a 2xx without a body: nothing delivered
            return None
        patch = field(body, "patch")
        tally = Tally()
        if patch is MISSING:
            error = field(body, "error")
            if isinstance(error, str):  # ClientStateNotFound, VersionNotSupported
                tally.refuse("sync.replicache.error", token(error, ERRORS))
                return tally
            raise Malformed("pull response has neither patch nor error")
        patch = seq(patch, "patch")
        tally.batch = len(patch)
        entity_of = self._entity
        counts = tally.items
        for operation in patch:
            if type(operation) is dict:
                kind = operation.get("op")
                key = operation.get("key")
            else:
                kind = field(operation, "op")
                key = field(operation, "key")
            if kind == "put":
                change = None
            elif kind == "del":
                change = "deleted"
            elif kind == "update":  # Replicache 15's internal op: merges into an existing key
                change = "updated"
            elif kind == "clear":
                tally.attribute("sync.replicache.clear", True)
                continue
            else:
                raise Malformed("unknown patch op: " + describe(kind))
            if type(key) is not str or not key:
                key = name(key, "patch key")
            if entity_of is None:
                head, sep, _ = key.partition("/")
                entity = head if sep and head else None
            else:
                entity = check_entity_name(call(entity_of, key), "entity callback")
            counted = (entity, change)
            counts[counted] = counts.get(counted, 0) + 1
        return tally
