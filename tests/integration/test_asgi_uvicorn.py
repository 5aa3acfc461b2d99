"""SyncPerfMiddleware behind a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

import syncperf
from syncperf.adapters import replicache
from syncperf.asgi import SyncPerfMiddleware, SyncRoute
from syncperf.testing import Capture
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

STREAM_STARTED = threading.Event()
STREAM_ENDED = threading.Event()


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/sync/{entity}/push")
    async def push(entity: str, body: dict[str, Any]) -> dict[str, Any]:
        op = syncperf.current_operation()
        op.set_batch_size(len(body["changes"]))
        op.record_items(len(body["changes"]), change="created")
        await asyncio.sleep(0.001)
        return {"ok": True}

    @app.get("/sync/pull")
    async def pull() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                STREAM_STARTED.set()
                for _ in range(1000):
                    yield b"x" * 1024
                    await asyncio.sleep(0.01)
            finally:
                STREAM_ENDED.set()

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    @app.post("/replicache/push")
    async def replicache_push(request: Request) -> PlainTextResponse:
        if request.headers.get("authorization") != "Bearer ok":
            return PlainTextResponse("unauthorized", status_code=401)  # the body is never read
        await request.body()
        return PlainTextResponse("ok")

    routes = {
        "/sync/pull": "pull",
        "/sync/{entity}/push": "push",
        "/replicache/push": SyncRoute("push", adapter=replicache.Push()),
    }
    app.add_middleware(SyncPerfMiddleware, routes=routes)
    return app


@pytest.fixture
def server(syncperf_capture: Capture) -> Iterator[str]:
    """uvicorn serving the app on 127.0.0.1 in a thread; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(
        make_app(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        loop="asyncio",
        http="h11",
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not instance.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(10)


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def active(cap: Capture, name: str) -> float:
    return sum(p.value for p in cap.points(name))


async def test_500_concurrent_pushes_over_real_http_are_counted_exactly(
    server: str, syncperf_capture: Capture
) -> None:
    cap = syncperf_capture
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=server, limits=limits, timeout=30) as client:
        responses = await asyncio.gather(
            *[
                client.post(
                    f"/sync/{'todo' if n % 2 else 'note'}/push", json={"changes": [{"id": n}] * 3}
                )
                for n in range(500)
            ]
        )
    assert {r.status_code for r in responses} == {200}
    # the server ends an operation just after its response is sent: wait for the last one
    wait_for(lambda: active(cap, "http.server.active_requests") == 0)
    assert cap.total("sync.operation.duration", {"sync.operation": "push"}) == 500
    assert cap.total("sync.operation.duration", {"sync.entity": "todo"}) == 250
    assert cap.total("sync.items", {"sync.change": "created"}) == 1500
    assert (
        cap.total(
            "http.server.request.duration",
            {"http.route": "/sync/{entity}/push", "http.response.status_code": 200},
        )
        == 500
    )
    assert active(cap, "sync.operations.active") == 0
    assert active(cap, "http.server.active_requests") == 0
    spans = cap.spans()
    assert len(spans) == 500
    assert {s.name for s in spans} == {"sync push"}


def test_a_client_disconnect_mid_stream_ends_the_operation(
    server: str, syncperf_capture: Capture
) -> None:
    cap = syncperf_capture
    STREAM_STARTED.clear()
    STREAM_ENDED.clear()
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /sync/pull HTTP/1.1\r\nHost: test\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert STREAM_STARTED.wait(5)
        sock.recv(8192)  # a few chunks arrived, then the client goes away
    assert STREAM_ENDED.wait(10)
    wait_for(lambda: cap.total("sync.operation.duration", {"sync.operation": "pull"}) == 1)
    (point,) = cap.points("sync.operation.duration", {"sync.operation": "pull"})
    assert point.attributes["sync.outcome"] == "error"
    assert point.attributes["error.type"] in {"client_disconnected", "incomplete_response"}
    wait_for(lambda: active(cap, "http.server.active_requests") == 0)
    assert active(cap, "sync.operations.active") == 0
    (size,) = cap.points("http.server.response.body.size")
    assert 0 < size.sum < 1000 * 1024


def test_a_client_gone_mid_upload_is_client_disconnected_not_a_400(
    server: str, syncperf_capture: Capture
) -> None:
    # FastAPI answers the ClientDisconnect its body parameter met with a 400, which uvicorn
    # drops (the client is gone): the request still ended with the client's disconnect
    cap = syncperf_capture
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /sync/todo/push HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b'Content-Length: 5000000\r\n\r\n{"changes": ['
        )
        time.sleep(0.3)  # the phone lost its network mid-upload
    wait_for(lambda: cap.total("sync.operation.duration") == 1)
    (point,) = cap.points("sync.operation.duration")
    assert point.attributes["sync.outcome"] == "error"
    assert point.attributes["error.type"] == "client_disconnected"
    wait_for(lambda: active(cap, "http.server.active_requests") == 0)
    (http,) = cap.points("http.server.request.duration")
    assert http.attributes["error.type"] == "client_disconnected"


_EXPECTING = (
    b"POST /replicache/push HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    b"Expect: 100-continue\r\n"
)


def test_expect_100_continue_refused_unread_is_answered_before_any_upload(
    server: str, syncperf_capture: Capture
) -> None:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(_EXPECTING + b"Content-Length: 800000\r\n\r\n")
        assert sock.recv(200).startswith(b"HTTP/1.1 401")  # not "100 Continue"
    wait_for(lambda: syncperf_capture.total("sync.operation.duration") == 1)
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert point.attributes["error.type"] == "401"
    assert syncperf_capture.points("syncperf.dropped") == []


def test_expect_100_continue_accepted_feeds_the_adapter_the_uploaded_body(
    server: str, syncperf_capture: Capture
) -> None:
    body = b'{"clientGroupID": "g", "mutations": [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}]}'
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        head = b"Authorization: Bearer ok\r\nContent-Length: %d\r\n\r\n" % len(body)
        sock.sendall(_EXPECTING + head)
        assert sock.recv(200).startswith(b"HTTP/1.1 100")
        sock.sendall(body)
        assert sock.recv(200).startswith(b"HTTP/1.1 200")
    wait_for(lambda: syncperf_capture.total("sync.operation.duration") == 1)
    (batch,) = syncperf_capture.points("sync.batch.size")
    assert batch.sum == 2


async def test_an_incoming_traceparent_over_http_is_continued(
    server: str, syncperf_capture: Capture
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with httpx.AsyncClient(base_url=server) as client:
        response = await client.post(
            "/sync/todo/push",
            json={"changes": []},
            headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
        )
    assert response.status_code == 200
    wait_for(lambda: syncperf_capture.spans())  # ended just after the response was sent
    (span,) = syncperf_capture.spans()
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.attributes["http.response.status_code"] == 200  # type: ignore[index]
