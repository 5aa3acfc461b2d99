"""CouchDB replication endpoints: ``_bulk_docs``, ``_revs_diff`` and ``_changes``.

* ``POST _bulk_docs {docs: [...], new_edits}`` answers ``201`` with one result per
  document: ``{id, rev, ok}`` or ``{id, error: "conflict" | "forbidden" | ..., reason}``.
* ``POST _revs_diff {docid: [revs]}`` answers ``{docid: {missing: [revs]}}``; the
  revisions offered but not missing are already on the server (duplicates).
* ``_changes`` answers ``{results: [{seq, id, changes: [{rev}], deleted, doc}],
  last_seq, pending}`` (normal and longpoll feeds; a continuous feed is a stream).

CouchDB has no tables: a document's entity comes from its ``type`` field by default, or
from an ``entity(doc_id, doc)`` callback (``doc`` is None where only the ID is known).

Example::

    from syncperf.adapters import couchdb

    @app.post("/{db}/_bulk_docs", status_code=201)
    @syncperf.instrument_sync("push", adapter=couchdb.BulkDocs(), request="body")
    async def bulk_docs(db: str, body: dict) -> list[dict]: ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from syncperf._operation import SyncOperation
from syncperf.adapters._base import (
    MISSING,
    Malformed,
    ProtocolAdapter,
    Tally,
    call,
    check_callable,
    check_entity_name,
    count,
    entries,
    field,
    is_mapping,
    name,
    seq,
    stash,
    unstash,
)
from syncperf.exceptions import ConfigError

__all__ = ["BulkDocs", "Changes", "RevsDiff"]

EntityOf = Callable[[Any, Any], "str | None"]
"""``(doc_id, doc_or_None) -> entity name or None``."""


class _Documents(ProtocolAdapter):
    __slots__ = ("_entity", "_key", "_type_field")

    def __init__(self, *, entity: EntityOf | None = None, type_field: str | None = "type") -> None:
        check_callable("entity", entity)
        if type_field is not None and (not isinstance(type_field, str) or not type_field):
            raise ConfigError("type_field", type_field, "a non-empty string or None")
        self._entity = entity
        self._type_field = type_field
        self._key = f"syncperf.adapters.couchdb.{id(self)}"

    def _entity_of(self, doc_id: Any, doc: Any) -> str | None:
        entity_fn = self._entity
        if entity_fn is not None:
            return check_entity_name(call(entity_fn, doc_id, doc), "entity callback")
        type_field = self._type_field
        if doc is None or type_field is None:
            return None
        value = field(doc, type_field)
        return value if isinstance(value, str) and value else None


def _first_generation(rev: Any) -> bool | None:
    """Whether revision ``N-hash`` is a document's first (None when not a revision)."""
    if not isinstance(rev, str):
        return None
    generation, sep, _ = rev.partition("-")
    if not sep:
        return None
    return generation == "1"


class BulkDocs(_Documents):
    """Adapter for ``_bulk_docs``.

    Records the batch size (documents), items by entity and change type (``deleted`` for
    ``_deleted: true``; otherwise ``created`` without ``_rev`` and ``updated`` with one;
    with ``new_edits: false`` (replication) a first-generation revision is ``created``),
    and conflicts by entity from ``error: "conflict"`` results (resolution ``rejected``).
    Other per-document errors (``forbidden``, ``unauthorized``) are set on the span.

    Args:
        entity: ``(doc_id, doc) -> entity``. Default: the document's ``type_field``.
        type_field: Field naming a document's entity when ``entity`` is not given
            (default ``"type"``; None for no entity).

    Raises:
        ConfigError: an option is not accepted.
    """

    __slots__ = ()
    protocol = "couchdb _bulk_docs"

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
                first = _first_generation(rev)
                change = None if first is None else "created" if first else "updated"
            if entity_fn is not None:
                entity = check_entity_name(
                    call(entity_fn, None if doc_id is MISSING else doc_id, doc), "entity callback"
                )
            else:
                entity = kind if type(kind) is str and kind else None
            key = (entity, change)
            counts[key] = counts.get(key, 0) + 1
            sent.append((doc_id, entity))
        stash(op, self._key, sent)
        return tally

    def _response(self, op: SyncOperation, body: Any) -> Tally | None:
        sent: list[tuple[Any, str | None]] = unstash(op, self._key) or []
        if body is None:  # the response was not seen
            return None
        tally = Tally()
        if not isinstance(body, (list, tuple)):
            error = field(body, "error")
            if isinstance(error, str):
                tally.attribute("sync.couchdb.error", error)
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


class Changes(_Documents):
    """Adapter for ``_changes`` (normal or longpoll feed).

    Records the batch size (results) and items by entity and change type: ``deleted``
    for deletions, ``created`` when the winning revision is a first generation,
    ``updated`` otherwise. With ``include_docs=true`` the entity comes from the document;
    without, only an ``entity`` callback (given the ID) can name it. ``pending`` is set
    on the span.

    Args:
        entity: ``(doc_id, doc_or_None) -> entity``. Default: the document's
            ``type_field`` when docs are included.
        type_field: See ``BulkDocs``.

    Raises:
        ConfigError: an option is not accepted.
    """

    __slots__ = ()
    protocol = "couchdb _changes"

    def _response(self, op: SyncOperation, body: Any) -> Tally:
        results = seq(field(body, "results"), "results")
        tally = Tally()
        tally.batch = len(results)
        for result in results:
            doc = field(result, "doc")
            doc_id = field(result, "id")
            if field(result, "deleted") is True:
                change: str | None = "deleted"
            else:
                revs = field(result, "changes")
                first = None
                if revs is not MISSING and revs is not None:
                    revs = seq(revs, "changes")
                    if revs:
                        first = _first_generation(field(revs[0], "rev"))
                change = None if first is None else "created" if first else "updated"
            entity = self._entity_of(
                None if doc_id is MISSING else doc_id, None if doc is MISSING else doc
            )
            tally.item(entity, change)
        pending = field(body, "pending")
        if type(pending) is int:
            tally.attribute("sync.couchdb.pending", pending)
        return tally


class RevsDiff(ProtocolAdapter):
    """Adapter for ``_revs_diff``.

    Records the batch size (revisions offered) and an idempotency hit when some offered
    revisions are already on the server; their number is set on the span
    (``sync.couchdb.revs_present``). No items: ``_revs_diff`` only negotiates.
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
        if offered is not None and offered > missing:
            tally.duplicate = True
            tally.attribute("sync.couchdb.revs_present", offered - missing)
        return tally
