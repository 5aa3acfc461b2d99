"""What the HTTP semantic conventions and the ASGI spec ask of ``SyncPerfMiddleware``:
``http.route`` from the server's root, span status on 4xx, ``http.response.pathsend``, and
request bodies read only when an adapter reads them (never ahead of ``Expect: 100-continue``)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Response
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse
from starlette.routing import Route

import syncperf
from syncperf.adapters import couchdb, replicache
from syncperf.asgi import SyncPerfMiddleware, SyncRoute
from syncperf.testing import Capture


def _client(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, **kwargs), base_url="http://testserver"
    )


def _team() -> FastAPI:
    """A sub-app instrumented by its own team, mounted by an app that is not."""
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @app.get("/sync/pull")
    async def pull() -> dict[str, Any]:
        return {"changes": []}

    app.add_middleware(SyncPerfMiddleware, routes={"/sync/pull": "pull"})
    return app


def _routes(cap: Capture) -> dict[str, float]:
    return {
        p.attributes["http.route"]: p.count
        for p in cap.points("http.server.request.duration")
        if "http.route" in p.attributes
    }


async def test_sub_apps_mounted_with_their_own_middleware_report_routes_from_the_server_root(
    syncperf_capture: Capture,
) -> None:
    main = FastAPI()
    main.mount("/notes", _team())
    main.mount("/todos", _team())
    async with _client(main) as c:
        for path in ("/notes/items/1", "/todos/items/2", "/notes/sync/pull", "/todos/sync/pull"):
            assert (await c.get(path)).status_code == 200
    assert _routes(syncperf_capture) == {
        "/notes/items/{item_id}": 1,
        "/todos/items/{item_id}": 1,
        "/notes/sync/pull": 1,
        "/todos/sync/pull": 1,
    }
    spans = {s.attributes["url.path"]: s.attributes["http.route"] for s in syncperf_capture.spans()}  # type: ignore[index]
    assert spans == {"/notes/sync/pull": "/notes/sync/pull", "/todos/sync/pull": "/todos/sync/pull"}


async def test_a_server_root_path_stays_out_of_the_route_of_a_mounted_sub_app(
    syncperf_capture: Capture,
) -> None:
    main = FastAPI()
    main.mount("/notes", _team())
    async with _client(main, root_path="/api") as c:
        assert (await c.get("/api/notes/items/1")).status_code == 200
        assert (await c.get("/api/notes/sync/pull")).status_code == 200
    assert _routes(syncperf_capture) == {"/notes/items/{item_id}": 1, "/notes/sync/pull": 1}
    (span,) = syncperf_capture.spans()
    assert span.attributes["http.route"] == "/notes/sync/pull"  # type: ignore[index]
    assert span.attributes["url.path"] == "/api/notes/sync/pull"  # type: ignore[index]


async def test_a_sub_app_mounted_at_a_path_with_parameters_keeps_their_values_out_of_the_route(
    syncperf_capture: Capture,
) -> None:
    """A mount such as ``/t/{tenant}`` has no literal path to add: the route stays relative
    to the mounted app (one series for every tenant), never the path's values."""
    main = FastAPI()
    main.mount("/t/{tenant}", _team())
    tenants = ("acme", "globex", "user@example.com")
    async with _client(main) as c:
        for tenant in tenants:
            assert (await c.get(f"/t/{tenant}/sync/pull")).status_code == 200
            assert (await c.get(f"/t/{tenant}/items/{tenant}")).status_code == 200
    assert _routes(syncperf_capture) == {"/items/{item_id}": 3, "/sync/pull": 3}
    assert {s.attributes["http.route"] for s in syncperf_capture.spans()} == {"/sync/pull"}  # type: ignore[index]


def _refusing_app() -> FastAPI:
    app = FastAPI()

    @app.post("/sync/push")
    async def push(status: int = 401) -> dict[str, Any]:
        raise HTTPException(status, "refused")

    app.add_middleware(SyncPerfMiddleware, routes={"/sync/push": "push"})
    return app


async def test_a_4xx_leaves_the_server_span_status_unset_but_keeps_the_error_type(
    syncperf_capture: Capture,
) -> None:
    async with _client(_refusing_app()) as c:
        assert (await c.post("/sync/push?status=401")).status_code == 401
    (span,) = syncperf_capture.spans()
    assert span.kind is SpanKind.SERVER
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes["error.type"] == "401"  # type: ignore[index]
    assert span.attributes["sync.outcome"] == "error"  # type: ignore[index]
    (op,) = syncperf_capture.points("sync.operation.duration")
    assert op.attributes["error.type"] == "401"


async def test_a_5xx_still_sets_the_server_span_status_to_error(
    syncperf_capture: Capture,
) -> None:
    async with _client(_refusing_app()) as c:
        assert (await c.post("/sync/push?status=503")).status_code == 503
    (span,) = syncperf_capture.spans()
    assert span.status.status_code is StatusCode.ERROR


def test_an_internal_span_refused_with_a_4xx_keeps_status_error(
    syncperf_capture: Capture,
) -> None:
    @syncperf.instrument_sync("push")
    def push() -> Response:
        return Response(status_code=401)

    push()
    (span,) = syncperf_capture.spans()
    assert span.kind is SpanKind.INTERNAL
    assert span.status.status_code is StatusCode.ERROR


def _pathsend(app: Any, path: str = "/file") -> list[str]:
    sent: list[str] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message["type"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "extensions": {"http.response.pathsend": {}},
    }
    asyncio.run(app(scope, receive, send))
    return sent


def test_a_file_sent_with_pathsend_counts_its_size(
    syncperf_capture: Capture, tmp_path: Path
) -> None:
    file = tmp_path / "export.bin"
    file.write_bytes(b"z" * 50_000)

    async def download(request: Request) -> FileResponse:
        return FileResponse(file)

    app = SyncPerfMiddleware(Starlette(routes=[Route("/file", download)]))
    assert _pathsend(app) == ["http.response.start", "http.response.pathsend"]
    (point,) = syncperf_capture.points("http.server.response.body.size")
    assert point.sum == 50_000


def test_a_pathsend_of_a_file_gone_meanwhile_never_raises(
    syncperf_capture: Capture, tmp_path: Path
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": os.fspath(tmp_path / "gone")})

    assert _pathsend(SyncPerfMiddleware(app))[-1] == "http.response.pathsend"
    (point,) = syncperf_capture.points("http.server.response.body.size")
    assert point.sum == 0


class Recording:
    """An adapter that keeps what it is fed."""

    def __init__(self, reads_request: bool = True) -> None:
        self.reads_request = reads_request
        self.requests: list[Any] = []

    def on_request(self, op: Any, request: Any) -> None:
        self.requests.append(request)

    def on_response(self, op: Any, response: Any) -> None:
        pass


def _body_app(seen: list[bytes]) -> Any:
    async def handler(request: Request) -> PlainTextResponse:
        if request.headers.get("authorization") != "ok":
            return PlainTextResponse("unauthorized", status_code=401)  # the body is never read
        seen.append(await request.body())
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/push", handler, methods=["POST"])])


async def test_a_pull_adapter_never_has_its_request_body_parsed(
    syncperf_capture: Capture,
) -> None:
    seen: list[bytes] = []
    routes = {"/push": SyncRoute("pull", adapter=couchdb.BulkGet())}
    app = SyncPerfMiddleware(_body_app(seen), routes=routes, max_body_bytes=10)
    async with _client(app) as c:
        for body in (b"{not json", b'{"docs": []}' * 10):
            response = await c.post("/push", content=body, headers={"authorization": "ok"})
            assert response.status_code == 200
    assert seen == [b"{not json", b'{"docs": []}' * 10]
    assert syncperf_capture.points("syncperf.dropped") == []


async def test_an_adapter_that_does_not_read_the_request_is_not_fed_it(
    syncperf_capture: Capture,
) -> None:
    adapter = Recording(reads_request=False)
    routes = {"/push": SyncRoute("push", adapter=adapter)}  # type: ignore[arg-type]
    async with _client(SyncPerfMiddleware(_body_app([]), routes=routes)) as c:
        await c.post("/push", content=b"{}", headers={"authorization": "ok"})
    assert adapter.requests == []
    assert replicache.Pull().reads_request is False


async def _expecting(app: Any, body: bytes, authorized: bool) -> tuple[int, list[str]]:
    """One ``Expect: 100-continue`` request; the status and the order of what happened."""
    events: list[str] = []
    chunks = [body[:3], body[3:]]

    async def receive() -> Any:
        events.append("receive")  # a server sends ``100 Continue`` on the first receive()
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    status = 0

    async def send(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            events.append("start")

    headers = [(b"content-length", str(len(body)).encode()), (b"expect", b"100-Continue")]
    if authorized:
        headers.append((b"authorization", b"ok"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/push",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
    }
    await app(scope, receive, send)
    return status, events


async def test_expect_100_continue_refused_without_reading_is_never_read_ahead(
    syncperf_capture: Capture,
) -> None:
    adapter = Recording()
    routes = {"/push": SyncRoute("push", adapter=adapter)}  # type: ignore[arg-type]
    app = SyncPerfMiddleware(_body_app([]), routes=routes)
    assert await _expecting(app, b'{"mutations": []}', authorized=False) == (401, ["start"])
    assert adapter.requests == []
    (op,) = syncperf_capture.points("sync.operation.duration")
    assert op.attributes["error.type"] == "401"


async def test_expect_100_continue_feeds_the_adapter_the_body_the_app_reads(
    syncperf_capture: Capture,
) -> None:
    adapter, seen = Recording(), []
    routes = {"/push": SyncRoute("push", adapter=adapter)}  # type: ignore[arg-type]
    app = SyncPerfMiddleware(_body_app(seen), routes=routes)
    status, events = await _expecting(app, b'{"mutations": [1, 2]}', authorized=True)
    assert (status, events) == (200, ["receive", "receive", "start"])
    assert seen == [b'{"mutations": [1, 2]}']
    assert adapter.requests == [{"mutations": [1, 2]}]
    (size,) = syncperf_capture.points("http.server.request.body.size")
    assert size.sum == 21


async def test_expect_100_continue_past_max_body_bytes_is_not_parsed(
    syncperf_capture: Capture,
) -> None:
    adapter = Recording()
    routes = {"/push": SyncRoute("push", adapter=adapter)}  # type: ignore[arg-type]
    app = SyncPerfMiddleware(_body_app([]), routes=routes, max_body_bytes=8)
    assert (await _expecting(app, b'{"mutations": [1, 2]}', authorized=True))[0] == 200
    assert adapter.requests == []
    assert syncperf_capture.total("syncperf.dropped", {"syncperf.reason": "asgi_body_too_large"})
