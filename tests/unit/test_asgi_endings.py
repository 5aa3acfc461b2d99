"""How a request through the middleware ends: an answer cut short, a handler that raised after
its 500 was sent, a client gone before the answer it never received."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from syncperf.adapters import watermelondb
from syncperf.asgi import SyncPerfMiddleware, SyncRoute
from syncperf.testing import Capture, capture
from tests._adapters import recorded

JSON = [(b"content-type", b"application/json")]
PULLED = json.dumps(
    {"changes": {"tasks": {"created": [{"id": str(i)} for i in range(50)]}}, "timestamp": 1}
).encode()


def scope(method: str = "GET", path: str = "/pull") -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": list(JSON),
    }


async def serve(app: Any, messages: list[dict[str, Any]], fail_on: int = 0) -> None:
    """Run ``app`` once; ``fail_on``: the send (1-based) the server fails with ``OSError``."""
    sent = 0

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(0)
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        nonlocal sent
        sent += 1
        if sent == fail_on:
            raise OSError("the client is gone")

    with contextlib.suppress(OSError, RuntimeError):  # the client gone, the app's failure
        await app(scope(), receive, send)


def pull_route(app: Any) -> Any:
    return SyncPerfMiddleware(app, routes={"/pull": SyncRoute("pull", adapter=watermelondb.Pull())})


async def cut_short(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": JSON})
    await send({"type": "http.response.body", "body": PULLED[:100], "more_body": True})
    raise RuntimeError("the cursor died mid-stream")


async def in_two(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": JSON})
    await send({"type": "http.response.body", "body": PULLED[:-10], "more_body": True})
    await send({"type": "http.response.body", "body": PULLED[-10:]})


async def test_an_answer_the_application_cut_short_is_not_read_as_a_malformed_body() -> None:
    with capture(strict=False) as cap:
        await serve(pull_route(cut_short), [{"type": "http.request", "body": b""}])
    got = recorded(cap)
    assert got.dropped == {}
    assert got.items == {}
    assert got.outcomes == {"error": 1}


async def test_an_answer_the_client_never_had_in_full_counts_no_pulled_items() -> None:
    with capture(strict=False) as cap:
        await serve(pull_route(in_two), [{"type": "http.request", "body": b""}], fail_on=3)
    got = recorded(cap)
    assert got.items == {}
    assert got.outcomes == {"error": 1}


async def test_the_whole_answer_still_counts_its_pulled_items(syncperf_capture: Capture) -> None:
    await serve(pull_route(in_two), [{"type": "http.request", "body": b""}])
    assert recorded(syncperf_capture).items == {("tasks", "created"): 50}


@pytest.mark.parametrize("wrapped", [True, False], ids=["wrapping the app", "add_middleware"])
async def test_a_handler_that_raised_is_its_failure_whichever_way_the_middleware_is_added(
    wrapped: bool,
) -> None:
    app = FastAPI()

    @app.post("/push")
    async def push(request: Request) -> None:
        await request.json()
        raise RuntimeError("the database is down")

    routes = {"/push": SyncRoute("push", adapter=watermelondb.Push())}
    served: Any = app
    if wrapped:  # outside Starlette's ServerErrorMiddleware, which sends the 500 then raises
        served = SyncPerfMiddleware(app, routes=routes)
    else:
        app.add_middleware(SyncPerfMiddleware, routes=routes)
    with capture(strict=False) as cap:
        transport = httpx.ASGITransport(app=served, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.post("/push", json={"changes": {}})).status_code == 500
    assert recorded(cap).dropped == {}
    (point,) = cap.points("sync.operation.duration")
    assert (point.attributes or {})["error.type"] == "RuntimeError"
    (point,) = cap.points("http.server.request.duration")
    assert (point.attributes or {})["error.type"] == "RuntimeError"
    assert (point.attributes or {})["http.response.status_code"] == 500


async def test_a_status_the_client_left_before_is_not_recorded(syncperf_capture: Capture) -> None:
    async def refuse_the_rest(scope: Any, receive: Any, send: Any) -> None:
        while (await receive())["type"] == "http.request":
            pass  # the client left mid-upload: FastAPI answers 400, the server drops it
        await send({"type": "http.response.start", "status": 400, "headers": JSON})
        await send({"type": "http.response.body", "body": b'{"detail": "no body"}'})

    served = SyncPerfMiddleware(refuse_the_rest, routes={"/pull": "pull"})
    await serve(served, [{"type": "http.request", "body": b"{", "more_body": True}])
    (point,) = syncperf_capture.points("http.server.request.duration")
    attributes = dict(point.attributes or {})
    assert attributes["error.type"] == "client_disconnected"
    assert "http.response.status_code" not in attributes
    (span,) = syncperf_capture.spans()
    assert "http.response.status_code" not in (span.attributes or {})
