"""A WatermelonDB sync backend whose metrics come entirely from syncperf's adapter.

The handlers contain no measurement code: ``syncperf.adapters.watermelondb`` reads the
changes the handlers already receive and return, and records batch sizes, items per table
and change type, rejected records as conflicts, retried pushes as idempotency hits and how
far behind each client is (``last_pulled_at``). The ``request`` parameters let the decorator
read the clients' ``Sync-Client`` header (the middleware reads it anyway).

Run it::

    pip install "syncperf[demo]"
    uvicorn examples.watermelondb_server:app

Conflicts use WatermelonDB's ``experimentalRejectedIds``: an update to a record that
changed on the server after the client's ``last_pulled_at`` is rejected (server wins). A
push retried after its response was lost re-sends ``created`` records that already exist;
they are upserted, and the ``count_existing`` callback lets syncperf count the retry.
State lives in memory (one store per ``create_app()``).
"""

import time
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request

import syncperf
from syncperf.adapters import watermelondb
from syncperf.asgi import SyncPerfMiddleware, SyncRoute

__all__ = ["Store", "app", "create_app"]


class Store:
    """Tables of records, each with the server time it was created and last changed."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict[str, Any]]] = {}
        self._last_ms = 0

    def now(self) -> int:
        """A strictly increasing server timestamp in milliseconds."""
        self._last_ms = max(self._last_ms + 1, time.time_ns() // 1_000_000)
        return self._last_ms

    def changes_since(self, last_pulled_at: int) -> dict[str, dict[str, list[Any]]]:
        """WatermelonDB changes: what was created, updated and deleted after the timestamp."""
        changes: dict[str, dict[str, list[Any]]] = {}
        for table, rows in self.tables.items():
            created: list[Any] = []
            updated: list[Any] = []
            deleted: list[Any] = []
            for row_id, row in rows.items():
                if row["changed_at"] <= last_pulled_at:
                    continue
                if row["deleted"]:
                    deleted.append(row_id)
                elif row["created_at"] > last_pulled_at:
                    created.append(row["record"])
                else:
                    updated.append(row["record"])
            changes[table] = {"created": created, "updated": updated, "deleted": deleted}
        return changes

    def count_existing(self, table: str, records: Sequence[Any]) -> int:
        """How many records pushed as created already exist (syncperf's callback)."""
        rows = self.tables.get(table, {})
        return sum(1 for record in records if record.get("id") in rows)

    def apply(self, changes: dict[str, Any], last_pulled_at: int) -> dict[str, list[str]]:
        """Apply a push; return the IDs rejected per table (changed since last pull)."""
        now = self.now()
        rejected: dict[str, list[str]] = {}
        for table, kinds in changes.items():
            rows = self.tables.setdefault(table, {})
            for record in kinds.get("created", []):
                row = rows.get(record["id"])
                if row is None or not row["deleted"]:  # an existing ID is upserted (a retry)
                    self._write(rows, record, now)
            for record in kinds.get("updated", []):
                row = rows.get(record["id"])
                if row is not None and row["changed_at"] > last_pulled_at:
                    rejected.setdefault(table, []).append(record["id"])
                else:
                    self._write(rows, record, now)
            for row_id in kinds.get("deleted", []):
                row = rows.get(row_id)
                if row is not None:
                    row.update(deleted=True, changed_at=now)
        return rejected

    @staticmethod
    def _write(rows: dict[str, dict[str, Any]], record: dict[str, Any], now: int) -> None:
        clean = {k: v for k, v in record.items() if k not in ("_status", "_changed")}
        row = rows.get(clean["id"])
        if row is None:
            rows[clean["id"]] = {"record": clean, "created_at": now, "changed_at": now,
                                 "deleted": False}  # fmt: skip
        else:
            row.update(record=clean, changed_at=now)


def create_app(store: Store | None = None, *, measured_by: str = "decorator") -> FastAPI:
    """A FastAPI app serving ``GET /sync/pull`` and ``POST /sync/push``.

    Args:
        store: The state (a new one by default).
        measured_by: ``"decorator"`` (``instrument_sync`` on each handler) or
            ``"middleware"`` (``SyncPerfMiddleware`` routes with the same adapters).
    """
    if measured_by not in ("decorator", "middleware"):
        raise ValueError(f"measured_by must be 'decorator' or 'middleware', not {measured_by!r}")
    store = store or Store()
    app = FastAPI(title="WatermelonDB sync backend (syncperf example)")
    app.state.store = store
    pull_adapter = watermelondb.Pull()
    push_adapter = watermelondb.Push(count_existing=store.count_existing)

    async def pull(
        request: Request,
        last_pulled_at: int | None = None,
        schema_version: int = 1,
        migration: str | None = None,
    ) -> dict[str, Any]:
        timestamp = store.now()
        return {"changes": store.changes_since(last_pulled_at or 0), "timestamp": timestamp}

    async def push(
        body: Annotated[dict[str, Any], Body()], request: Request, last_pulled_at: int | None = None
    ) -> dict[str, Any]:
        rejected = store.apply(body, last_pulled_at or 0)
        return {"experimentalRejectedIds": rejected} if rejected else {}

    if measured_by == "decorator":
        pull = syncperf.instrument_sync("pull", adapter=pull_adapter)(pull)
        push = syncperf.instrument_sync("push", adapter=push_adapter)(push)
    else:
        app.add_middleware(
            SyncPerfMiddleware,
            routes={
                "/sync/pull": SyncRoute("pull", adapter=pull_adapter),
                "/sync/push": SyncRoute("push", adapter=push_adapter),
            },
        )
    app.get("/sync/pull")(pull)
    app.post("/sync/push")(push)
    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
