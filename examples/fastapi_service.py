"""A FastAPI sync service for an offline-first todo app, observed by ``SyncPerfMiddleware``.

Endpoints (all state in memory):

* ``GET  /sync/pull?cursor=N``: changes since a cursor; ``&live=true`` long-polls up to
  ``timeout`` seconds for the next change (kept out of the latency histograms as
  ``pull_live``).
* ``POST /sync/{entity}/push``: ``{"changes": [{"id", "version", "title"}]}`` with
  optimistic versions; stale versions are conflicts (409 when every change conflicted).
  An ``Idempotency-Key`` header makes retries safe: a replay answers the stored response
  with ``Idempotent-Replayed: true``, which syncperf counts as an idempotency hit.
* ``POST /watermelon/sync``: a WatermelonDB push, measured by the protocol adapter from the
  body alone (the handler records nothing itself).
* ``GET /health`` (HTTP metrics only) and ``GET /metrics`` (Prometheus text format).

Run it::

    python examples/fastapi_service.py --port 8000
    curl -s -XPOST localhost:8000/sync/todo/push -H 'content-type: application/json' \\
         -d '{"changes": [{"id": "1", "version": 0, "title": "milk"}]}'
    curl -s localhost:8000/metrics | grep sync_operation_duration
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import prometheus_client
import uvicorn
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse

import syncperf
from syncperf.adapters import watermelondb
from syncperf.asgi import SyncPerfMiddleware, SyncRoute

ENTITIES = ("todo", "list")
REGISTRY = prometheus_client.CollectorRegistry()


@dataclass
class Store:
    """Records by (entity, id), a change log for cursors, and stored idempotent responses."""

    records: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    replies: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    changed: asyncio.Condition | None = None

    def condition(self) -> asyncio.Condition:
        if self.changed is None:
            self.changed = asyncio.Condition()
        return self.changed


def create_app() -> FastAPI:
    """The service, with the middleware mapping its sync routes."""
    store = Store()
    app = FastAPI(title="syncperf example sync service")

    @app.get("/sync/pull")
    async def pull(cursor: int = 0, live: bool = False, timeout: float = 5.0) -> dict[str, Any]:
        if live and cursor >= len(store.log):
            condition = store.condition()
            async with condition:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        condition.wait_for(lambda: len(store.log) > cursor), timeout
                    )
        changes = store.log[cursor:]
        op = syncperf.current_operation()
        op.set_batch_size(len(changes))
        for change in changes:
            op.record_items(1, entity=change["entity"], change=change["change"])
        return {"changes": changes, "cursor": len(store.log)}

    @app.post("/sync/{entity}/push")
    async def push(
        entity: str,
        request: Request,
        idempotency_key: str | None = Header(default=None),
    ) -> JSONResponse:
        if entity not in ENTITIES:
            return JSONResponse({"error": "unknown entity"}, status_code=404)
        if idempotency_key is not None and idempotency_key in store.replies:
            status, body = store.replies[idempotency_key]
            return JSONResponse(body, status_code=status, headers={"Idempotent-Replayed": "true"})
        payload = await request.json()
        changes = payload.get("changes", [])
        op = syncperf.current_operation()
        op.set_batch_size(len(changes))
        applied, conflicts = [], []
        for change in changes:
            key = (entity, str(change["id"]))
            current = store.records.get(key)
            version = current["version"] if current else 0
            if change.get("version", 0) != version:
                conflicts.append(change["id"])
                continue
            kind = "updated" if current else "created"
            store.records[key] = {
                "id": change["id"],
                "title": change.get("title"),
                "version": version + 1,
            }
            store.log.append({"entity": entity, "change": kind, **store.records[key]})
            op.record_items(1, change=kind)
            applied.append(change["id"])
        if conflicts:
            op.record_conflict(count=len(conflicts), resolution="server_wins")
        if applied:
            condition = store.condition()
            async with condition:
                condition.notify_all()
        status = 409 if conflicts and not applied else 200
        body = {"applied": applied, "conflicts": conflicts}
        if idempotency_key is not None:
            store.replies[idempotency_key] = (status, body)
        return JSONResponse(body, status_code=status)

    @app.post("/watermelon/sync")
    async def watermelon_push(request: Request) -> dict[str, Any]:
        await request.json()  # a real server would apply the changes here
        return {}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            prometheus_client.generate_latest(REGISTRY),
            media_type=prometheus_client.CONTENT_TYPE_LATEST,
        )

    app.add_middleware(
        SyncPerfMiddleware,
        routes={
            "/sync/pull": "pull",
            "/sync/{entity}/push": "push",
            "/watermelon/sync": SyncRoute("push", adapter=watermelondb.Push()),
        },
    )
    return app


app = create_app()


def main(argv: list[str] | None = None) -> None:
    """Serve the example with uvicorn; syncperf's metrics on ``/metrics``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    syncperf.configure(prometheus=REGISTRY)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
