"""Behind the middleware, a push's payload counts only once its answer is known.

A push refused with a 4xx (401 from an auth dependency, 413, 422) synced nothing: its items,
batch size and entity names are not recorded, as a decorated handler the framework never
called records nothing. A response replayed from an idempotency store (``Idempotent-Replayed:
true``) applied nothing either: it counts the hit, not the payload again.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Body, Depends, FastAPI, HTTPException
from hypothesis import given, settings
from hypothesis import strategies as st

import syncperf
from syncperf.adapters import powersync, replicache, rxdb, watermelondb
from syncperf.asgi import SyncPerfMiddleware, SyncRoute
from syncperf.testing import Capture, capture
from tests._adapters import PUSHES, TWO_TASKS, recorded

JSON = [(b"content-type", b"application/json")]


def app_answering(status: int, answer: bytes = b"{}", replay: bool = False) -> Any:
    """A raw ASGI app that reads the request and answers ``status`` with ``answer``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        headers = [*JSON, (b"idempotent-replayed", b"true")] if replay else JSON
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


async def call(app: Any, body: Any, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    messages = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(0)
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        return None

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/push",
        "root_path": "",
        "query_string": b"",
        "headers": [*JSON, *headers],
    }
    await app(scope, receive, send)


def middleware(app: Any, adapter: Any) -> Any:
    return SyncPerfMiddleware(app, routes={"/push": SyncRoute("push", adapter=adapter)})


@pytest.mark.parametrize("status", [400, 401, 403, 413, 422])
@pytest.mark.parametrize("name", sorted(PUSHES))
async def test_a_push_refused_with_a_4xx_counts_no_items_and_no_batch(
    name: str, status: int, syncperf_capture: Capture
) -> None:
    adapter, body = PUSHES[name]
    await call(middleware(app_answering(status, b'{"detail": "no"}'), adapter()), body)
    got = recorded(syncperf_capture)
    assert got.items == {}
    assert got.batches == []
    assert got.outcomes == {"error": 1}
    assert got.dropped == {}


@pytest.mark.parametrize("name", sorted(PUSHES))
async def test_a_push_answered_with_a_5xx_still_counts_what_it_carried(
    name: str, syncperf_capture: Capture
) -> None:
    # documented: the handler may have applied some of it before failing
    adapter, body = PUSHES[name]
    await call(middleware(app_answering(503), adapter()), body)
    got = recorded(syncperf_capture)
    assert sum(got.items.values()) == 2
    assert got.batch_count == 1
    assert got.outcomes == {"error": 1}


async def test_a_push_answered_with_a_4xx_after_a_conflict_counts_its_items(
    syncperf_capture: Capture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        syncperf.current_operation().record_conflict(entity="tasks")
        await send({"type": "http.response.start", "status": 400, "headers": JSON})
        await send({"type": "http.response.body", "body": b"{}"})

    await call(middleware(app, watermelondb.Push()), {"changes": TWO_TASKS})
    got = recorded(syncperf_capture)
    assert got.outcomes == {"conflict": 1}
    assert got.items == {("tasks", "created"): 2}
    assert got.batch_count == 1


@pytest.mark.parametrize("mode", ["decorator", "middleware"])
async def test_a_push_refused_by_an_auth_dependency_records_the_same_figures_either_way(
    mode: str, syncperf_capture: Capture
) -> None:
    def refuse() -> None:
        raise HTTPException(status_code=401, detail="Not authenticated")

    async def push(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        return {}

    app = FastAPI()
    route = app.post("/push", dependencies=[Depends(refuse)])
    adapter = watermelondb.Push()
    if mode == "decorator":
        route(syncperf.instrument_sync("push", adapter=adapter)(push))
        served: Any = app
    else:
        route(push)
        served = middleware(app, adapter)
    transport = httpx.ASGITransport(app=served)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/push", json={"changes": TWO_TASKS})
    assert response.status_code == 401
    got = recorded(syncperf_capture)
    assert got.items == {}
    assert got.batches == []


async def test_a_refused_push_leaves_the_entity_budget_to_authenticated_ones(
    syncperf_capture: Capture,
) -> None:
    junk = {f"junk{i}": {"created": [{"id": "x"}]} for i in range(150)}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        allowed = (b"authorization", b"Bearer ok") in scope["headers"]
        status = 200 if allowed else 401
        await send({"type": "http.response.start", "status": status, "headers": JSON})
        await send({"type": "http.response.body", "body": b"{}"})

    served = middleware(app, watermelondb.Push())
    await call(served, {"changes": junk})  # refused: 401
    await call(served, {"changes": TWO_TASKS}, ((b"authorization", b"Bearer ok"),))
    assert recorded(syncperf_capture).items == {("tasks", "created"): 2}


@settings(max_examples=60, deadline=None)
@given(
    status=st.integers(400, 499).filter(lambda status: status != 409),
    tables=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=8, unique=True),
    adapter=st.sampled_from([watermelondb.Push, powersync.Upload]),
)
def test_any_refused_push_records_nothing_of_its_payload(
    status: int, tables: list[str], adapter: Any
) -> None:
    if adapter is watermelondb.Push:
        body: Any = {"changes": {t: {"created": [{"id": "x"}]} for t in tables}}
    else:
        body = {"batch": [{"op": "PUT", "table": t, "id": "x"} for t in tables]}
    with capture(strict=False) as cap:
        asyncio.run(call(middleware(app_answering(status), adapter()), body))
        got = recorded(cap)
        assert got.items == {}
        assert got.batches == []
        assert got.outcomes == {"error": 1}
        assert not cap.runtime.entities.names


REPLAYED: dict[str, tuple[Any, Any, bytes]] = {
    "watermelondb.Push": (watermelondb.Push, {"changes": TWO_TASKS}, b"{}"),
    "powersync.Upload": (powersync.Upload, PUSHES["powersync.Upload"][1], b"{}"),
    "replicache.Push": (
        replicache.Push,
        {
            "pushVersion": 1,
            "clientGroupID": "g",
            "mutations": [
                {"id": i, "clientID": "c", "name": "createTodo", "args": {}, "timestamp": 1}
                for i in (1, 2)
            ],
        },
        b"{}",
    ),
    "rxdb.Push": (rxdb.Push, [{"newDocumentState": {"id": i}} for i in "ab"], b"[]"),
}


@pytest.mark.parametrize("name", sorted(REPLAYED))
async def test_a_replayed_answer_counts_the_hit_but_not_the_items_again(
    name: str, syncperf_capture: Capture
) -> None:
    adapter, body, answer = REPLAYED[name]
    first = middleware(app_answering(200, answer), adapter())
    again = middleware(app_answering(200, answer, replay=True), adapter())
    await call(first, body, ((b"idempotency-key", b"k1"),))
    await call(again, body, ((b"idempotency-key", b"k1"),))
    got = recorded(syncperf_capture)
    assert sum(got.items.values()) == 2
    assert got.batch_count == 1
    assert got.idempotency == 1
    assert got.outcomes == {"success": 2}
