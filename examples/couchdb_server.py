"""A CouchDB-compatible replication target (revision trees) measured by syncperf.

Enough of CouchDB's replication protocol for PouchDB to replicate to and from it: database
info, ``_local`` checkpoints, ``_revs_diff``, ``_bulk_docs`` (``new_edits: false`` inserts
revision paths as CouchDB does, so concurrent edits leave a document with conflicting
leaf revisions), ``_changes`` (``style=all_docs`` lists every leaf) and ``_bulk_get``.

``syncperf.adapters.couchdb`` reads them: pushed documents by entity and change type, the
conflicting leaves a replicated push left (``open_conflicts``), revisions the client
offered that the server already had (a retry after a lost response), changes listed and
the documents actually pulled through ``_bulk_get``. Document IDs are ``<type>:<id>``, so
deletions (tombstones carry no ``type`` field) keep their entity (``id_separator=":"``).

``create_app(measured_by=...)`` measures the handlers with the decorator or with the ASGI
middleware. Run it::

    pip install "syncperf[demo]"
    uvicorn examples.couchdb_server:app

State lives in memory (one store per ``create_app()``); every database name shares it.
"""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse

import syncperf
from syncperf.adapters import couchdb
from syncperf.asgi import SyncPerfMiddleware, SyncRoute

__all__ = ["Store", "app", "create_app"]


@dataclass
class Rev:
    """One revision of a document: its parent, and its body when it is a leaf."""

    parent: str | None
    body: dict[str, Any] | None = None
    deleted: bool = False


@dataclass
class Doc:
    """A document's revision tree and the sequence number of its last change."""

    revs: dict[str, Rev] = field(default_factory=dict)
    seq: int = 0

    def leaves(self) -> list[str]:
        """Leaf revisions, the winner first (CouchDB's rule: live before deleted, then the
        highest generation, then the highest hash)."""
        parents = {rev.parent for rev in self.revs.values()}
        leaves = [r for r in self.revs if r not in parents]
        return sorted(leaves, key=lambda r: (not self.revs[r].deleted, *_split(r)), reverse=True)

    def open_conflicts(self) -> int:
        """Live leaves besides the winner (what CouchDB lists as ``_conflicts``)."""
        return sum(1 for r in self.leaves()[1:] if not self.revs[r].deleted)

    def path(self, rev: str) -> list[str]:
        """``rev`` and its ancestors, newest first."""
        chain: list[str] = []
        at: str | None = rev
        while at is not None and at in self.revs:
            chain.append(at)
            at = self.revs[at].parent
        return chain


def _split(rev: str) -> tuple[int, str]:
    generation, _, digest = rev.partition("-")
    return int(generation), digest


class Store:
    """Documents with revision trees, one update sequence, ``_local`` documents."""

    def __init__(self) -> None:
        self.docs: dict[str, Doc] = {}
        self.local: dict[str, dict[str, Any]] = {}
        self.seq = 0

    def open_conflicts(self, doc_id: str) -> int:
        """syncperf's ``open_conflicts`` callback."""
        doc = self.docs.get(doc_id)
        return 0 if doc is None else doc.open_conflicts()

    def revs_diff(self, body: dict[str, list[str]]) -> dict[str, Any]:
        """The offered revisions the server does not have."""
        diff = {}
        for doc_id, revs in body.items():
            known = self.docs.get(doc_id, Doc()).revs
            missing = [rev for rev in revs if rev not in known]
            if missing:
                diff[doc_id] = {"missing": missing}
        return diff

    def bulk_docs(self, docs: list[dict[str, Any]], new_edits: bool) -> list[dict[str, Any]]:
        """Store documents: replicated revision paths, or new edits of the winner."""
        results = []
        for body in docs:
            if new_edits:
                results.append(self._edit(body))
            else:
                self._insert(body)
        return results

    def _insert(self, body: dict[str, Any]) -> None:
        doc = self.docs.setdefault(body["_id"], Doc())
        history = body.get("_revisions") or {"start": _split(body["_rev"])[0],
                                              "ids": [_split(body["_rev"])[1]]}  # fmt: skip
        chain = [f"{history['start'] - i}-{h}" for i, h in enumerate(history["ids"])]
        if chain[0] in doc.revs:
            return  # already stored: a retry
        for i, rev in enumerate(chain):
            if rev not in doc.revs:
                doc.revs[rev] = Rev(chain[i + 1] if i + 1 < len(chain) else None)
        clean = {k: v for k, v in body.items() if k != "_revisions"}
        doc.revs[chain[0]] = Rev(doc.revs[chain[0]].parent, clean, bool(body.get("_deleted")))
        self.seq += 1
        doc.seq = self.seq

    def _edit(self, body: dict[str, Any]) -> dict[str, Any]:
        doc = self.docs.setdefault(body["_id"], Doc())
        leaves = doc.leaves()
        winner = leaves[0] if leaves else None
        live = winner is not None and not doc.revs[winner].deleted
        if body.get("_rev") not in ((winner,) if live else (None, winner)):
            return {"id": body["_id"], "error": "conflict", "reason": "Document update conflict."}
        generation = _split(winner)[0] if winner else 0
        digest = hashlib.md5(json.dumps(body, sort_keys=True).encode()).hexdigest()
        rev = f"{generation + 1}-{digest}"
        stored = {**body, "_rev": rev}
        doc.revs[rev] = Rev(winner, stored, bool(body.get("_deleted")))
        self.seq += 1
        doc.seq = self.seq
        return {"ok": True, "id": body["_id"], "rev": rev}

    def changes(self, since: int, limit: int | None, include_docs: bool) -> dict[str, Any]:
        """Documents changed after ``since``, each with all its leaf revisions."""
        changed = sorted((doc.seq, doc_id) for doc_id, doc in self.docs.items() if doc.seq > since)
        page = changed[:limit] if limit else changed
        results = []
        for seq, doc_id in page:
            doc = self.docs[doc_id]
            leaves = doc.leaves()
            result: dict[str, Any] = {
                "seq": seq,
                "id": doc_id,
                "changes": [{"rev": rev} for rev in leaves],
            }
            if doc.revs[leaves[0]].deleted:
                result["deleted"] = True
            if include_docs:
                result["doc"] = doc.revs[leaves[0]].body
            results.append(result)
        last = page[-1][0] if page else since
        return {"results": results, "last_seq": last, "pending": len(changed) - len(page)}

    def bulk_get(self, wanted: list[dict[str, Any]]) -> dict[str, Any]:
        """The requested revisions, each with its ``_revisions`` history."""
        results = []
        for item in wanted:
            doc_id, rev = item["id"], item.get("rev")
            doc = self.docs.get(doc_id)
            if doc is not None and rev is None:
                rev = doc.leaves()[0]
            found = doc is not None and rev in doc.revs and doc.revs[rev].body is not None
            if not found:
                error = {"id": doc_id, "rev": rev, "error": "not_found", "reason": "missing"}
                results.append({"id": doc_id, "docs": [{"error": error}]})
                continue
            assert doc is not None and rev is not None
            chain = doc.path(rev)
            revisions = {"start": _split(rev)[0], "ids": [_split(r)[1] for r in chain]}
            body = {**(doc.revs[rev].body or {}), "_revisions": revisions}
            results.append({"id": doc_id, "docs": [{"ok": body}]})
        return {"results": results}


NOT_FOUND = {"error": "not_found", "reason": "missing"}


def create_app(store: Store | None = None, *, measured_by: str = "decorator") -> FastAPI:
    """The app serving a CouchDB replication endpoint set under ``/{db}/``.

    Args:
        store: The state (a new one by default).
        measured_by: ``"decorator"`` or ``"middleware"``.
    """
    if measured_by not in ("decorator", "middleware"):
        raise ValueError(f"measured_by must be 'decorator' or 'middleware', not {measured_by!r}")
    store = store or Store()
    app = FastAPI(title="CouchDB replication target (syncperf example)")
    app.state.store = store
    bulk_docs_adapter = couchdb.BulkDocs(id_separator=":", open_conflicts=store.open_conflicts)
    changes_adapter = couchdb.Changes(id_separator=":")
    bulk_get_adapter = couchdb.BulkGet(id_separator=":")
    revs_diff_adapter = couchdb.RevsDiff()
    measure = measured_by == "decorator"

    def sync(operation: str, adapter: Any) -> Any:
        if measure:
            return syncperf.instrument_sync(operation, adapter=adapter)
        return lambda fn: fn

    @app.get("/")
    async def welcome() -> dict[str, Any]:
        return {"couchdb": "Welcome", "version": "3.3.3", "uuid": "syncperf-example"}

    @app.get("/{db}/")
    async def info(db: str) -> dict[str, Any]:
        return {"db_name": db, "doc_count": len(store.docs), "update_seq": store.seq,
                "instance_start_time": "0"}  # fmt: skip

    @app.put("/{db}/", status_code=201)
    async def create(db: str) -> dict[str, Any]:
        return {"ok": True}

    @app.get("/{db}/_local/{local_id}")
    async def get_local(db: str, local_id: str) -> Any:
        found = store.local.get(f"{db}/{local_id}")
        return found if found is not None else JSONResponse(NOT_FOUND, status_code=404)

    @app.put("/{db}/_local/{local_id}", status_code=201)
    async def put_local(
        db: str, local_id: str, body: Annotated[dict[str, Any], Body()]
    ) -> dict[str, Any]:
        rev = f"0-{int(str(body.get('_rev', '0-0')).split('-')[-1] or 0) + 1}"
        store.local[f"{db}/{local_id}"] = {**body, "_id": f"_local/{local_id}", "_rev": rev}
        return {"ok": True, "id": f"_local/{local_id}", "rev": rev}

    @app.post("/{db}/_revs_diff")
    @sync("revs_diff", revs_diff_adapter)
    async def revs_diff(db: str, body: Annotated[dict[str, list[str]], Body()]) -> Any:
        return store.revs_diff(body)

    @app.post("/{db}/_bulk_docs", status_code=201)
    @sync("push", bulk_docs_adapter)
    async def bulk_docs(db: str, body: Annotated[dict[str, Any], Body()]) -> Any:
        return store.bulk_docs(body["docs"], body.get("new_edits", True) is not False)

    @app.get("/{db}/_changes")
    @sync("pull", changes_adapter)
    async def changes(
        db: str, since: int = 0, limit: int | None = None, include_docs: bool = False
    ) -> Any:
        return store.changes(since, limit, include_docs)

    @app.post("/{db}/_bulk_get")
    @sync("pull", bulk_get_adapter)
    async def bulk_get(db: str, body: Annotated[dict[str, Any], Body()]) -> Any:
        return store.bulk_get(body["docs"])

    if not measure:
        app.add_middleware(
            SyncPerfMiddleware,
            routes={
                "/{db}/_revs_diff": SyncRoute("revs_diff", adapter=revs_diff_adapter),
                "/{db}/_bulk_docs": SyncRoute("push", adapter=bulk_docs_adapter),
                "/{db}/_changes": SyncRoute("pull", adapter=changes_adapter),
                "/{db}/_bulk_get": SyncRoute("pull", adapter=bulk_get_adapter),
            },
        )
    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
