"""CouchDB replication endpoints: ``_bulk_docs``, ``_revs_diff``, ``_changes``, ``_bulk_get``.

* ``POST _bulk_docs {docs: [...], new_edits}`` answers ``201`` with one result per
  document: ``{id, rev, ok}`` or ``{id, error: "conflict" | "forbidden" | ..., reason}``.
* ``POST _revs_diff {docid: [revs]}`` answers ``{docid: {missing: [revs]}}``; the
  revisions offered but not missing are already on the server.
* ``_changes`` answers ``{results: [{seq, id, changes: [{rev}], deleted, doc}],
  last_seq, pending}`` (normal and longpoll feeds; a continuous feed is a stream).
* ``POST _bulk_get {docs: [{id, rev}]}`` answers ``{results: [{id, docs: [{ok: doc}]}]}``:
  the revisions a replicating client (PouchDB) actually pulls.

CouchDB has no tables: a document's entity comes from its ``type`` field by default, or
from an ``entity(doc_id, doc)`` callback (``doc`` is None where only the ID is known), or
from the ID's prefix (``id_separator=":"`` reads ``todo`` from ``todo:42``). A deletion
(a tombstone ``{_id, _rev, _deleted: true}``) has no type field: only the callback or the
ID prefix can name its entity.

Example::

    from syncperf.adapters import couchdb

    @app.post("/{db}/_bulk_docs", status_code=201)
    @syncperf.instrument_sync("push", adapter=couchdb.BulkDocs(), request="body")
    async def bulk_docs(db: str, body: dict) -> list[dict]: ...
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
    count,
    entries,
    field,
    is_mapping,
    name,
    seq,
    stash,
    token,
    unstash,
)
from syncperf.adapters._documents import Documents, EntityOf, first_generation

__all__ = ["ERRORS", "BulkDocs", "BulkGet", "Changes", "RevsDiff"]

ERRORS = frozenset(
    {
        "bad_request", "unauthorized", "forbidden", "not_found", "conflict", "file_exists",
        "missing_stub", "doc_validation", "illegal_docid", "bad_content_type", "too_large",
        "method_not_allowed", "not_implemented", "unknown_error", "internal_server_error",
        "timeout",
    }
)  # fmt: skip
"""CouchDB's ``error`` tokens; any other text (a validation function's) is exported as
``_other``."""

OpenConflicts = Callable[[str], int]
"""``(doc_id) -> conflicting leaf revisions the server holds for it (``_conflicts``)``."""


class BulkDocs(Documents):
    """Adapter for ``_bulk_docs``.

    Records the batch size (documents), items by entity and change type (``deleted`` for
    ``_deleted: true``; otherwise ``created`` without ``_rev`` and ``updated`` with one;
    with ``new_edits: false`` (replication) a first-generation revision is ``created``),
    and conflicts by entity from ``error: "conflict"`` results (resolution ``rejected``).
    Other per-document errors (``forbidden``, ``unauthorized``) are set on the span.

    A replicating client (``new_edits: false``, how PouchDB pushes) never gets a conflict
    error: a revision on another branch is stored as a second leaf and the document is
    left conflicted. Give ``open_conflicts`` to count those: each increase of a
    document's conflicting leaves across the handler is a conflict (no resolution).

    Args:
        entity: ``(doc_id, doc) -> entity``. Default: the document's ``type_field``,
            else the ID's prefix before ``id_separator``.
        type_field: Field naming a document's entity when ``entity`` is not given
            (default ``"type"``; None for no entity).
        id_separator: When set, a document without the type field (a tombstone) gets
            the part of its ID before this separator as its entity.
        open_conflicts: Optional ``(doc_id) -> int``: how many conflicting leaf
            revisions the server holds for the document (the length of its
            ``_conflicts``); called for each document of a ``new_edits: false`` push
            before the handler runs and again when its response is read.

    Raises:
        ConfigError: an option is not accepted.
    """

    __slots__ = ("_open_conflicts",)
    protocol = "couchdb _bulk_docs"

    def __init__(
        self,
        *,
        entity: EntityOf | None = None,
        type_field: str | None = "type",
        id_separator: str | None = None,
        open_conflicts: OpenConflicts | None = None,
    ) -> None:
        super().__init__(entity=entity, type_field=type_field, id_separator=id_separator)
        check_callable("open_conflicts", open_conflicts)
        self._open_conflicts = open_conflicts

    def _request(self, op: SyncOperation, body: Any) -> Tally:
        docs = seq(field(body, "docs"), "docs")
        new_edits = field(body, "new_edits")
        if new_edits is MISSING or new_edits is None:
            new_edits = True
        elif not isinstance(new_edits, bool):
            raise Malformed("new_edits is not a boolean")
        tally = Tally()
        tally.batch = len(docs)
        sent: list[tuple[Any, str | None]] = []
        counts = tally.items
        entity_fn, type_field = self._entity, self._type_field
        for doc in docs:
            if type(doc) is dict:
                doc_id = doc.get("_id", MISSING)
                gone = doc.get("_deleted")
                rev = doc.get("_rev")
                kind = doc.get(type_field) if type_field is not None else None
            elif is_mapping(doc):
                doc_id = field(doc, "_id")
                gone = field(doc, "_deleted")
                rev = field(doc, "_rev")
                kind = field(doc, type_field) if type_field is not None else None
            else:
                raise Malformed(f"document is not an object but {type(doc).__name__}")
            if gone is True:
                change: str | None = "deleted"
            elif new_edits:
                change = "created" if rev is MISSING or rev is None else "updated"
            else:
                first = first_generation(rev)
                change = None if first is None else "created" if first else "updated"
            if type(kind) is str and kind and entity_fn is None:
                entity: str | None = kind
            else:
                entity = self._entity_of(None if doc_id is MISSING else doc_id, doc)
            key = (entity, change)
            counts[key] = counts.get(key, 0) + 1
            sent.append((doc_id, entity))
        before: dict[str, int] | None = None
        if not new_edits and self._open_conflicts is not None:
            before = self._leaves(sent)
        stash(op, self._key, (sent, before))
        return tally

    def _leaves(self, sent: list[tuple[Any, str | None]]) -> dict[str, int]:
        """``open_conflicts`` of every document ID in the push (one call per ID)."""
        found: dict[str, int] = {}
        fn = self._open_conflicts
        for doc_id, _ in sent:
            if isinstance(doc_id, str) and doc_id not in found:
                n = call(fn, doc_id)  # type: ignore[arg-type]
                if type(n) is not int or n < 0:
                    raise CallbackFailed(
                        TypeError(f"open_conflicts must return an int >= 0, got {describe(n)}")
                    )
                found[doc_id] = n
        return found

    def _response(self, op: SyncOperation, body: Any) -> Tally | None:
        sent, before = unstash(op, self._key) or ([], None)
        tally = Tally()
        if before:  # replication: a conflicting revision is stored as another leaf
            entities = {doc_id: entity for doc_id, entity in sent if isinstance(doc_id, str)}
            for doc_id, n in self._leaves(sent).items():
                if n > before.get(doc_id, 0):
                    tally.conflict(entities.get(doc_id), None, n - before.get(doc_id, 0))
        if body is None:  # a 2xx without a body: the server state above still tells
            return tally
        if not isinstance(body, (list, tuple)):
            error = field(body, "error")
            if isinstance(error, str):
                tally.attribute("sync.couchdb.error", token(error, ERRORS))
                return tally
        results = seq(body, "_bulk_docs results")
        by_id: dict[Any, str | None] | None = None
        rejected = 0
        for index, result in enumerate(results):
            error = result.get("error") if type(result) is dict else field(result, "error")
            if error is MISSING or error is None:
                continue
            if error != "conflict":
                rejected += 1
                continue
            doc_id = field(result, "id")
            if index < len(sent) and sent[index][0] == doc_id:
                entity = sent[index][1]
            else:
                if by_id is None:
                    by_id = {i: e for i, e in sent if isinstance(i, str)}
                entity = by_id.get(doc_id) if isinstance(doc_id, str) else None
            tally.conflict(entity, "rejected")
        if rejected:
            tally.attribute("sync.couchdb.rejected_docs", rejected)
        return tally


class Changes(Documents):
    """Adapter for ``_changes`` (normal or longpoll feed).

    Records the batch size (changes listed) and, for results that carry their document
    (``include_docs=true``), one item by entity and change type: ``deleted`` for
    deletions, ``created`` when the winning revision is a first generation, ``updated``
    otherwise. A result without its document delivers nothing yet: a replicating client
    fetches the revisions it lacks through ``_bulk_get`` (see ``BulkGet``), which counts
    them, so pulled items equal the documents the client received. Results listing more
    than one leaf revision (``style=all_docs``) under a live winner are counted on the span
    (``sync.couchdb.conflicted_docs``): an upper bound, as the feed does not mark deleted
    leaves, so a conflict resolved by deleting its losing revision still counts there.
    ``pending`` is set on the span too.

    Args:
        entity: ``(doc_id, doc_or_None) -> entity``. Default: the document's
            ``type_field``, else the ID's prefix before ``id_separator``.
        type_field: See ``BulkDocs``.
        id_separator: See ``BulkDocs``.
        since_time: Optional ``since -> time``: the time the request's ``since`` query
            parameter stands for (a ``datetime`` or seconds since the epoch; None when
            unknown), for ``sync.pull.staleness``. A CouchDB sequence is not a time: only a
            server that keeps one per sequence can map it.

    Raises:
        ConfigError: an option is not accepted.
    """

    __slots__ = ("_since_time", "query")
    protocol = "couchdb _changes"

    def __init__(
        self,
        *,
        entity: EntityOf | None = None,
        type_field: str | None = "type",
        id_separator: str | None = None,
        since_time: Callable[[str], Any] | None = None,
    ) -> None:
        super().__init__(entity=entity, type_field=type_field, id_separator=id_separator)
        check_callable("since_time", since_time)
        self._since_time = since_time
        self.query: tuple[str, ...] = () if since_time is None else ("since",)

    def _query(self, op: SyncOperation, params: Mapping[str, Any]) -> None:
        since, since_time = params.get("since"), self._since_time
        if since_time is not None and since not in (None, "", "0", "now", 0):
            at = call(since_time, since)
            if at is not None:
                op.record_checkpoint(at)

    def _response(self, op: SyncOperation, body: Any) -> Tally | None:
        if body is None:  # a 2xx without a body: nothing delivered
            return None
        results = seq(field(body, "results"), "results")
        tally = Tally()
        tally.batch = len(results)
        conflicted = 0
        for result in results:
            revs = field(result, "changes")
            revs = () if revs is MISSING or revs is None else seq(revs, "changes")
            deleted = field(result, "deleted") is True
            if len(revs) > 1 and not deleted:
                conflicted += 1
            doc = field(result, "doc")
            if doc is MISSING or doc is None:
                continue
            if deleted:
                change: str | None = "deleted"
            else:
                first = first_generation(field(revs[0], "rev")) if revs else None
                if first is None:
                    first = first_generation(field(doc, "_rev"))
                change = None if first is None else "created" if first else "updated"
            doc_id = field(result, "id")
            tally.item(self._entity_of(None if doc_id is MISSING else doc_id, doc), change)
        if conflicted:
            tally.attribute("sync.couchdb.conflicted_docs", conflicted)
        pending = field(body, "pending")
        if type(pending) is int:
            tally.attribute("sync.couchdb.pending", pending)
        return tally


class BulkGet(Documents):
    """Adapter for ``_bulk_get``: the documents a replicating client actually pulls.

    Request ``{docs: [{id, rev}]}``; response ``{results: [{id, docs: [{ok: doc} |
    {error: {...}}]}]}``. Records the batch size (documents returned) and one item per
    returned revision by entity and change type (``deleted`` for a tombstone, ``created``
    for a first-generation revision, else ``updated``). Revisions answered with an error
    (``not_found``) are set on the span (``sync.couchdb.missing_docs``).

    Args:
        entity: ``(doc_id, doc) -> entity``. Default: the document's ``type_field``, else
            the ID's prefix before ``id_separator``.
        type_field: See ``BulkDocs``.
        id_separator: See ``BulkDocs``.

    Raises:
        ConfigError: an option is not accepted.
    """

    __slots__ = ()
    protocol = "couchdb _bulk_get"

    def _response(self, op: SyncOperation, body: Any) -> Tally | None:
        if body is None:  # a 2xx without a body: nothing delivered
            return None
        results = seq(field(body, "results"), "results")
        tally = Tally()
        returned = missing = 0
        for result in results:
            for answer in seq(field(result, "docs"), "docs"):
                doc = field(answer, "ok")
                if doc is MISSING or doc is None:
                    missing += 1
                    continue
                if not is_mapping(doc):
                    raise Malformed(f"document is not an object but {type(doc).__name__}")
                returned += 1
                if field(doc, "_deleted") is True:
                    change: str | None = "deleted"
                else:
                    first = first_generation(field(doc, "_rev"))
                    change = None if first is None else "created" if first else "updated"
                doc_id = field(doc, "_id")
                tally.item(self._entity_of(None if doc_id is MISSING else doc_id, doc), change)
        tally.batch = returned
        if missing:
            tally.attribute("sync.couchdb.missing_docs", missing)
        return tally


class RevsDiff(ProtocolAdapter):
    """Adapter for ``_revs_diff``.

    Records the batch size (revisions offered) and, on the span, how many of them are
    already on the server (``sync.couchdb.revs_present``). That is no idempotency hit:
    PouchDB offers back the revisions it just pulled (a device that only reads still pushes
    them), so overlap is normal replication, not a client that missed an answer. No items:
    ``_revs_diff`` only negotiates.
    """

    __slots__ = ("_key",)
    protocol = "couchdb _revs_diff"

    def __init__(self) -> None:
        self._key = f"syncperf.adapters.couchdb.revs.{id(self)}"

    def _request(self, op: SyncOperation, body: Any) -> Tally:
        offered = 0
        for doc_id, revs in entries(body, "_revs_diff request"):
            name(doc_id, "document id")
            offered += count(revs, "revisions")
        tally = Tally()
        tally.batch = offered
        stash(op, self._key, offered)
        return tally

    def _response(self, op: SyncOperation, body: Any) -> Tally | None:
        offered = unstash(op, self._key)
        if body is None:  # the response was not seen
            return None
        missing = 0
        for doc_id, diff in entries(body, "_revs_diff response"):
            name(doc_id, "document id")
            missing += count(field(diff, "missing"), "missing")
        tally = Tally()
        if offered is not None and offered > missing:  # on the span: not an idempotency hit
            tally.attribute("sync.couchdb.revs_present", offered - missing)
        return tally
