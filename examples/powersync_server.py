"""A PowerSync upload endpoint (the backend ``uploadData()`` calls) measured by syncperf.

PowerSync clients stream reads from the PowerSync service and send their writes to your
backend: each ``uploadData()`` call posts one CRUD transaction, here as
``{client_id, batch: [{op: "PUT" | "PATCH" | "DELETE", table, id, data, tx_id}]}``.
``syncperf.adapters.powersync.Upload`` reads it: entries by table and change type, an
upload retried after its response was lost (its ``tx_id`` is already applied: the
``last_tx_id`` callback, read before the handler) as a duplicate, and the writes the
handler rejected (answered 2xx, as PowerSync asks) as conflicts.

Rejections here: a ``PATCH`` of a row that does not exist (deleted by another client).

``create_app(measured_by=...)`` measures the handler with the decorator or with the ASGI
middleware. Run it::

    pip install "syncperf[demo]"
    uvicorn examples.powersync_server:app

State lives in memory (one store per ``create_app()``).
"""

from typing import Annotated, Any

from fastapi import Body, FastAPI

import syncperf
from syncperf.adapters import powersync
from syncperf.asgi import SyncPerfMiddleware, SyncRoute

__all__ = ["Store", "app", "create_app"]


class Store:
    """Rows per table, and the last transaction applied per client."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict[str, Any]]] = {}
        self.applied: dict[str, int] = {}

    def last_tx_id(self, body: Any) -> int | None:
        """The last transaction applied for the uploading client (syncperf's callback)."""
        return self.applied.get(body.get("client_id")) if isinstance(body, dict) else None

    def upload(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a transaction once; answer the rejected writes per table."""
        client = body["client_id"]
        rejected: dict[str, int] = {}
        for entry in body["batch"]:
            if entry["tx_id"] <= self.applied.get(client, -1):
                continue  # a retried upload: already applied
            rows = self.tables.setdefault(entry["table"], {})
            if entry["op"] == "PUT":
                rows[entry["id"]] = dict(entry.get("data") or {})
            elif entry["op"] == "PATCH":
                if entry["id"] not in rows:
                    rejected[entry["table"]] = rejected.get(entry["table"], 0) + 1
                    continue
                rows[entry["id"]].update(entry.get("data") or {})
            else:
                rows.pop(entry["id"], None)
        if body["batch"]:
            self.applied[client] = max(self.applied.get(client, -1), body["batch"][-1]["tx_id"])
        return {"rejected": rejected}


def create_app(store: Store | None = None, *, measured_by: str = "decorator") -> FastAPI:
    """A FastAPI app serving ``POST /api/upload``.

    Args:
        store: The state (a new one by default).
        measured_by: ``"decorator"`` or ``"middleware"``.
    """
    if measured_by not in ("decorator", "middleware"):
        raise ValueError(f"measured_by must be 'decorator' or 'middleware', not {measured_by!r}")
    store = store or Store()
    app = FastAPI(title="PowerSync upload endpoint (syncperf example)")
    app.state.store = store
    adapter = powersync.Upload(
        last_tx_id=store.last_tx_id, conflicts=lambda response: response.get("rejected")
    )

    async def upload(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        return store.upload(body)

    if measured_by == "decorator":
        upload = syncperf.instrument_sync("push", adapter=adapter)(upload)
    else:
        app.add_middleware(
            SyncPerfMiddleware, routes={"/api/upload": SyncRoute("push", adapter=adapter)}
        )
    app.post("/api/upload")(upload)
    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
