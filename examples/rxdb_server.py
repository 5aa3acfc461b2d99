"""An RxDB HTTP replication backend for one collection (``todos``) measured by syncperf.

RxDB's HTTP replication (``replicateRxCollection`` with fetch-based handlers) pulls
``GET /todos/pull?id&updatedAt&batchSize`` -> ``{documents, checkpoint}`` and pushes
``POST /todos/push`` with ``[{assumedMasterState, newDocumentState}]`` rows, answered with
the master documents that conflicted. ``syncperf.adapters.rxdb`` reads both: batch sizes,
items by change type, conflicts, and a row retried after its response was lost (the
master already equals it) as a duplicate instead of a conflict or a second item.

The handlers hold no measurement code; ``create_app(measured_by=...)`` measures them
either with the decorator or with the ASGI middleware (the same figures either way).

Run it::

    pip install "syncperf[demo]"
    uvicorn examples.rxdb_server:app

State lives in memory (one store per ``create_app()``).
"""

from typing import Annotated, Any

from fastapi import Body, FastAPI

import syncperf
from syncperf.adapters import rxdb
from syncperf.asgi import SyncPerfMiddleware, SyncRoute

__all__ = ["Store", "app", "create_app"]


class Store:
    """Documents by primary key, each stamped with a strictly increasing ``updatedAt``."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.clock = 0

    def pull(self, doc_id: str, updated_at: int, batch_size: int) -> dict[str, Any]:
        """Documents after the checkpoint ``(updatedAt, id)``, oldest first."""
        after = [
            doc
            for doc in self.docs.values()
            if (doc["updatedAt"], doc["id"]) > (updated_at, doc_id)
        ]
        after.sort(key=lambda doc: (doc["updatedAt"], doc["id"]))
        page = after[:batch_size]
        last = page[-1] if page else None
        checkpoint = (
            {"id": last["id"], "updatedAt": last["updatedAt"]}
            if last
            else {"id": doc_id, "updatedAt": updated_at}
        )
        return {"documents": page, "checkpoint": checkpoint}

    def push(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply rows whose assumed master state is current; return the others' masters."""
        conflicts = []
        for row in rows:
            new = row["newDocumentState"]
            master = self.docs.get(new["id"])
            assumed = row.get("assumedMasterState")
            if master is not None and (assumed is None or not _same(master, assumed)):
                conflicts.append(master)
                continue
            self.clock += 1
            self.docs[new["id"]] = {**new, "updatedAt": self.clock}
        return conflicts


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ignored = {"_meta", "_rev", "_attachments", "updatedAt"}
    keys = (a.keys() | b.keys()) - ignored
    return all(a.get(k) == b.get(k) for k in keys) and bool(a.get("_deleted")) == bool(
        b.get("_deleted")
    )


def create_app(store: Store | None = None, *, measured_by: str = "decorator") -> FastAPI:
    """The app serving ``GET /todos/pull`` and ``POST /todos/push``.

    Args:
        store: The state (a new one by default).
        measured_by: ``"decorator"`` (``instrument_sync`` on each handler) or
            ``"middleware"`` (``SyncPerfMiddleware`` routes with the same adapters).
    """
    if measured_by not in ("decorator", "middleware"):
        raise ValueError(f"measured_by must be 'decorator' or 'middleware', not {measured_by!r}")
    store = store or Store()
    app = FastAPI(title="RxDB replication backend (syncperf example)")
    app.state.store = store
    decorated = measured_by == "decorator"
    # The server stamps updatedAt on every write (the pull checkpoint): a returned master
    # equal to a pushed row but for it is that row, already applied (a retry).
    push_adapter = rxdb.Push(server_fields=["updatedAt"])

    async def pull(
        id: str = "",
        updatedAt: int = 0,
        batchSize: int = 50,
    ) -> dict[str, Any]:
        return store.pull(id, updatedAt, batchSize)

    async def push(rows: Annotated[list[dict[str, Any]], Body()]) -> list[dict[str, Any]]:
        return store.push(rows)

    if decorated:
        pull = syncperf.instrument_sync("pull", entity="todo", adapter=rxdb.Pull())(pull)
        push = syncperf.instrument_sync("push", entity="todo", adapter=push_adapter)(push)
    app.get("/todos/pull")(pull)
    app.post("/todos/push")(push)
    if not decorated:
        app.add_middleware(
            SyncPerfMiddleware,
            routes={
                "/todos/pull": SyncRoute("pull", entity="todo", adapter=rxdb.Pull()),
                "/todos/push": SyncRoute("push", entity="todo", adapter=push_adapter),
            },
        )
    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
