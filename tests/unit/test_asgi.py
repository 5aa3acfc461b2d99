"""SyncPerfMiddleware through httpx's ASGI transport: sync routes, HTTP metrics, outcomes."""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException, Request, Response, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.routing import Route

import syncperf
from syncperf._metrics.batches import FOLD_AT
from syncperf.adapters import couchdb
from syncperf.asgi import SyncPerfMiddleware, SyncRoute, live_request
from syncperf.testing import Capture, capture
from tests.unit.test_export_contract import ListExporter

ROUTES: dict[str, str | SyncRoute] = {
    "/sync/pull": "pull",
    "/sync/{entity}/push": "push",
    "/sync/items/pull": SyncRoute("pull", entity="item"),
}
KNOWN = {"todo", "note"}


class Boom(Exception):
    """The handler's own error."""


def make_app(**options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/sync/pull")
    async def pull(request: Request) -> Response:
        op = syncperf.current_operation()
        op.set_batch_size(3)
        op.record_items(3, entity="todo", change="updated")
        status = int(request.query_params.get("status", "200"))
        headers = {}
        if request.query_params.get("replayed"):
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse({"changes": []}, status_code=status, headers=headers)

    @app.post("/sync/{entity}/push")
    async def push(entity: str, request: Request) -> dict[str, Any]:
        if entity not in KNOWN:
            raise HTTPException(404)
        body = await request.json()
        if body.get("raise"):
            raise Boom("push failed")
        if body.get("conflict"):
            raise HTTPException(409)
        return {"ok": True}

    @app.get("/sync/items/pull")
    @syncperf.instrument_sync("pull", batch_size=lambda: 7, items=lambda: 7)
    def items_pull() -> dict[str, Any]:
        return {"items": []}

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"x" * 10

        return StreamingResponse(chunks())

    app.add_middleware(SyncPerfMiddleware, routes=ROUTES, **options)
    return app


def client(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, **kwargs), base_url="http://testserver"
    )


def active_total(cap: Capture, name: str) -> float:
    return sum(p.value for p in cap.points(name))


async def test_a_pull_is_one_sync_operation_with_a_server_span(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    async with client(make_app()) as c:
        response = await c.get("/sync/pull")
    assert response.status_code == 200
    (point,) = cap.points("sync.operation.duration")
    assert point.attributes == {"sync.operation": "pull", "sync.outcome": "success"}
    assert point.count == 1
    assert cap.total("sync.items", {"sync.entity": "todo", "sync.change": "updated"}) == 3
    (span,) = cap.spans()
    assert span.name == "sync pull"
    assert span.kind is SpanKind.SERVER
    attrs = dict(span.attributes or {})
    assert attrs["http.request.method"] == "GET"
    assert attrs["http.route"] == "/sync/pull"
    assert attrs["url.path"] == "/sync/pull"
    assert attrs["http.response.status_code"] == 200
    assert attrs["sync.batch.size"] == 3


async def test_http_server_metrics_follow_the_semantic_conventions(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    async with client(make_app()) as c:
        await c.post("/sync/todo/push", json={"a": 1})
    duration = cap.metric("http.server.request.duration")
    assert duration is not None and duration.unit == "s"
    (point,) = duration.data.data_points
    assert point.attributes == {
        "http.request.method": "POST",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "http.route": "/sync/{entity}/push",
        "network.protocol.version": "1.1",
    }
    assert {0.2, 2.0, 5.0, 0.005, 10.0} <= set(point.explicit_bounds)
    (request_size,) = cap.points("http.server.request.body.size")
    assert request_size.sum == len(json.dumps({"a": 1}).replace(" ", ""))
    (response_size,) = cap.points("http.server.response.body.size")
    assert response_size.sum == len(b'{"ok":true}')
    (active,) = cap.points("http.server.active_requests")
    assert active.attributes == {"http.request.method": "POST", "url.scheme": "http"}
    assert active.value == 0
    assert cap.metric("http.server.active_requests").unit == "{request}"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("claimed", "messages", "recorded"),
    [
        (b"999999999999999", [], []),  # claimed, never sent, never read: unknown, not 1 PB
        (b"1000", [{"type": "http.request", "body": b"x" * 10, "more_body": True}], [10]),
        (b"3", [{"type": "http.request", "body": b"abc", "more_body": False}], [3]),
        (b"0", [{"type": "http.request", "body": b"", "more_body": False}], [0]),
    ],
)
async def test_the_request_body_size_is_what_arrived_not_what_was_claimed(
    claimed: bytes, messages: list[dict[str, Any]], recorded: list[int]
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for _ in messages:
            await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    pending = [*messages, {"type": "http.disconnect"}]

    async def receive() -> Any:
        return pending.pop(0)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/sync/pull",
        "headers": [(b"content-length", claimed)],
    }
    with capture(strict=False) as cap:
        await SyncPerfMiddleware(app, routes={"/sync/pull": "pull"})(scope, receive, _discard)
        assert [p.sum for p in cap.points("http.server.request.body.size")] == recorded


async def test_a_head_answer_sends_no_body(syncperf_capture: Capture) -> None:
    app = FastAPI()

    @app.head("/items")
    async def items() -> dict[str, Any]:
        return {"items": [1, 2, 3]}  # the server sends the headers only

    app.add_middleware(SyncPerfMiddleware, routes={})
    async with client(app) as c:
        assert (await c.head("/items")).status_code == 200
    (size,) = syncperf_capture.points("http.server.response.body.size")
    assert (size.count, size.sum) == (1, 0)


async def test_the_entity_comes_from_the_path_parameter(syncperf_capture: Capture) -> None:
    async with client(make_app()) as c:
        await c.post("/sync/todo/push", json={})
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert point.attributes["sync.entity"] == "todo"
    assert point.attributes["sync.operation"] == "push"


async def test_a_rejected_path_entity_never_becomes_a_metric_attribute(
    syncperf_capture: Capture,
) -> None:
    async with client(make_app()) as c:
        for n in range(5):
            assert (await c.post(f"/sync/junk{n}/push", json={})).status_code == 404
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert "sync.entity" not in point.attributes
    assert point.count == 5
    assert syncperf_capture.runtime.entities.names == set()


@pytest.mark.parametrize("entity", ["x" * 200, "%F0%9F%98%80" * 130, "a%0Ab"])
async def test_a_path_entity_that_is_no_name_is_dropped_even_in_strict_mode(
    syncperf_capture: Capture, entity: str
) -> None:
    # A URL is client data: in strict mode too it is counted, never raised, and the request's
    # operation ends (a raise left it current and every later request of the context lost).
    async with client(make_app()) as c:
        assert (await c.post(f"/sync/{entity}/push", json={})).status_code in (200, 404)
        assert not syncperf.current_operation().recording
        await c.post("/sync/todo/push", json={})
    cap = syncperf_capture
    assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_entity"}) == 1
    assert cap.total("sync.operation.duration") == 2
    assert cap.total("sync.operations.active") == 0


async def test_a_decorated_handler_joins_the_middleware_operation(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    async with client(make_app()) as c:
        await c.get("/sync/items/pull")
    (point,) = cap.points("sync.operation.duration")
    assert point.count == 1
    assert point.attributes["sync.entity"] == "item"
    (batch,) = cap.points("sync.batch.size")
    assert batch.sum == 7
    # the route has no adapter: the decorator's extractors are the one source of counts
    assert cap.total("sync.items") == 7
    assert len(cap.spans()) == 1
    assert active_total(cap, "sync.operations.active") == 0


async def test_a_5xx_response_is_an_error_with_the_status_as_error_type(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    async with client(make_app()) as c:
        await c.get("/sync/pull?status=503")
    (point,) = cap.points("sync.operation.duration")
    assert point.attributes["sync.outcome"] == "error"
    assert point.attributes["error.type"] == "503"
    (http,) = cap.points("http.server.request.duration")
    assert http.attributes["error.type"] == "503"
    (span,) = cap.spans()
    assert span.status.status_code is StatusCode.ERROR


async def test_a_4xx_response_without_conflicts_is_an_error_named_by_its_status(
    syncperf_capture: Capture,
) -> None:
    async with client(make_app()) as c:
        await c.get("/sync/pull?status=400")
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert point.attributes["sync.outcome"] == "error"
    assert point.attributes["error.type"] == "400"


async def test_a_409_response_is_a_conflict(syncperf_capture: Capture) -> None:
    cap = syncperf_capture
    async with client(make_app()) as c:
        assert (await c.post("/sync/todo/push", json={"conflict": True})).status_code == 409
    (point,) = cap.points("sync.operation.duration")
    assert point.attributes["sync.outcome"] == "conflict"
    assert cap.total("sync.conflicts", {"sync.entity": "todo"}) == 1


async def test_an_exception_propagates_unchanged_and_is_an_error(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    async with client(make_app()) as c:
        with pytest.raises(Boom, match="push failed"):
            await c.post("/sync/todo/push", json={"raise": True})
    (point,) = cap.points("sync.operation.duration")
    assert point.attributes["error.type"] == f"{__name__}.Boom"
    (http,) = cap.points("http.server.request.duration")
    assert http.attributes["http.response.status_code"] == 500
    assert http.attributes["error.type"] == f"{__name__}.Boom"
    assert active_total(cap, "sync.operations.active") == 0
    assert active_total(cap, "http.server.active_requests") == 0
    (span,) = cap.spans()
    assert span.events[0].name == "exception"


async def test_the_exception_object_is_the_handlers_own() -> None:
    raised = Boom("mine")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise raised

    middleware = SyncPerfMiddleware(app, routes={"/sync/pull": "pull"})
    with capture(), pytest.raises(Boom) as info:
        await middleware(
            {"type": "http", "method": "GET", "path": "/sync/pull", "headers": []},
            _no_body,
            _discard,
        )
    assert info.value is raised


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _discard(message: Any) -> None:
    return None


class HookBroke(Exception):
    """A helper of syncperf's failed."""


def _broken(*args: Any, **kwargs: Any) -> Any:
    raise HookBroke("syncperf helper failed")


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("helper", ["framework_route", "overhead_for", "bound"])
async def test_a_failing_http_metrics_helper_never_replaces_the_apps_exception(
    monkeypatch: pytest.MonkeyPatch, helper: str, strict: bool
) -> None:
    import syncperf.asgi._finish
    import syncperf.asgi._http
    from syncperf._runtime import Runtime

    if helper == "framework_route":
        monkeypatch.setattr(syncperf.asgi._finish, "framework_route", _broken)
    elif helper == "overhead_for":
        original = Runtime.overhead_for

        def overhead_for(self: Runtime, component: str) -> Any:
            return _broken() if component == "asgi" else original(self, component)

        monkeypatch.setattr(Runtime, "overhead_for", overhead_for)
    else:
        monkeypatch.setattr(syncperf.asgi._http.HttpSeries, "bound", _broken)
    with capture(strict=strict) as cap:
        async with client(make_app()) as c:
            with pytest.raises(Boom, match="push failed"):
                await c.post("/sync/todo/push", json={"raise": True})
            with pytest.raises(Boom):
                await c.post("/sync/todo/push", json={"raise": True})
            if strict:  # no exception of the app's to keep: strict mode surfaces syncperf's
                with pytest.raises(HookBroke):
                    await c.get("/items/3")
            else:
                assert (await c.get("/items/3")).status_code == 200
        assert active_total(cap, "http.server.active_requests") == 0
        assert active_total(cap, "sync.operations.active") == 0
        dropped = cap.total("syncperf.dropped", {"syncperf.reason": "asgi_http_metrics_failed"})
        if helper == "framework_route":  # asked once per request: on sync routes, while
            # finishing the operation (whose HTTP metrics are then kept, with the template)
            dropped += cap.total("syncperf.dropped", {"syncperf.reason": "asgi_outcome_failed"})
        assert dropped == (2 if strict else 3)


async def test_an_operation_end_failing_in_strict_mode_still_ends_the_http_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import syncperf.asgi._finish

    monkeypatch.setattr(syncperf.asgi._finish, "end", _broken)
    with capture() as cap:
        async with client(make_app()) as c:
            with pytest.raises(HookBroke):
                await c.get("/sync/pull")
            with pytest.raises(Boom):  # the app's own exception wins over syncperf's
                await c.post("/sync/todo/push", json={"raise": True})
        (http,) = cap.points("http.server.request.duration", {"http.route": "/sync/pull"})
        assert http.count == 1
        assert active_total(cap, "http.server.active_requests") == 0


async def test_background_tasks_are_not_part_of_the_operation_duration(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    app = FastAPI()
    ran: list[float] = []

    async def background() -> None:
        await asyncio.sleep(0.2)
        # the operation is still current: background work (e.g. DB queries) attaches to it
        syncperf.current_operation().record_items(2, entity="todo", change="created")
        ran.append(0.2)

    @app.post("/sync/push")
    async def push(tasks: BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(background)
        return {"ok": True}

    app.add_middleware(SyncPerfMiddleware, routes={"/sync/push": "push"})
    async with client(app) as c:
        assert (await c.post("/sync/push")).status_code == 200
    assert ran == [0.2]
    (point,) = cap.points("sync.operation.duration")
    assert point.attributes["sync.outcome"] == "success"
    assert point.sum < 0.15
    (http,) = cap.points("http.server.request.duration")
    assert http.sum < 0.15
    assert cap.total("sync.items", {"sync.entity": "todo", "sync.change": "created"}) == 2
    (span,) = cap.spans()
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 < 0.15
    assert active_total(cap, "sync.operations.active") == 0


class NotifyFailed(Exception):
    """A background task's own error."""


@pytest.mark.parametrize("strict", [True, False])
async def test_a_background_task_failing_after_a_complete_response_keeps_its_outcome(
    strict: bool, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()

    def notify_other_devices() -> None:
        raise NotifyFailed("secret-token-in-message")

    @app.post("/sync/push")
    async def push(tasks: BackgroundTasks) -> dict[str, int]:
        tasks.add_task(notify_other_devices)
        return {"applied": 3}

    app.add_middleware(SyncPerfMiddleware, routes={"/sync/push": "push"})
    with capture(strict=strict) as cap:
        async with client(app) as c:
            with pytest.raises(NotifyFailed):  # re-raised unchanged, to the server
                await c.post("/sync/push")
        (point,) = cap.points("sync.operation.duration")
        assert point.attributes["sync.outcome"] == "success"  # the client got its answer
        (http,) = cap.points("http.server.request.duration")
        assert http.attributes["http.response.status_code"] == 200
        assert "error.type" not in http.attributes
        reason = {"syncperf.reason": "background_task_failed"}
        assert cap.total("syncperf.dropped", reason) == 1
        assert active_total(cap, "http.server.active_requests") == 0
    assert "NotifyFailed" in caplog.text
    assert "secret-token" not in caplog.text  # its type and where it was raised, never its text


async def test_other_routes_get_http_metrics_with_the_template_and_no_span(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    async with client(make_app()) as c:
        await c.get("/items/42")
        await c.get("/no/such/path")
    routes = {p.attributes.get("http.route") for p in cap.points("http.server.request.duration")}
    assert routes == {"/items/{item_id}", None}
    assert all("42" not in str(p.attributes) for p in cap.points("http.server.request.duration"))
    assert cap.spans() == []
    assert cap.metric("sync.operation.duration") is None


async def test_a_mounted_app_reports_the_full_template(syncperf_capture: Capture) -> None:
    outer = FastAPI()
    inner = FastAPI()

    @inner.get("/x/{y}")
    async def x(y: str) -> dict[str, str]:
        return {}

    outer.mount("/sub", inner)
    outer.add_middleware(SyncPerfMiddleware, routes={})
    async with client(outer) as c:
        await c.get("/sub/x/abc")
    (point,) = syncperf_capture.points("http.server.request.duration")
    assert point.attributes["http.route"] == "/sub/x/{y}"


async def test_routes_of_included_routers_report_their_prefixed_templates(
    syncperf_capture: Capture,
) -> None:
    from fastapi import APIRouter

    app = FastAPI()
    v1, v2, inner = APIRouter(), APIRouter(), APIRouter()
    for router in (v1, v2, inner):

        @router.get("/items/{item_id}")
        async def item(item_id: str) -> dict[str, str]:
            return {}

    @inner.post("/sync/{entity}/push")
    async def push(entity: str) -> dict[str, str]:
        return {}

    async def plain(request: Request) -> Response:
        return Response("ok")

    inner.add_route("/plain/{p}", plain)
    v1.include_router(inner, prefix="/inner")  # nested: FastAPI joins both prefixes
    app.include_router(v1, prefix="/api/v1")
    app.include_router(v2, prefix="/api/v2")
    app.add_middleware(SyncPerfMiddleware, routes={"/api/v1/inner/sync/{entity}/push": "push"})
    async with client(app) as c:
        for path in ("/api/v1/items/1", "/api/v2/items/2", "/api/v1/inner/items/3"):
            assert (await c.get(path)).status_code == 200
        assert (await c.get("/api/v1/inner/plain/4")).status_code == 200
        assert (await c.post("/api/v1/inner/sync/todo/push")).status_code == 200
    routes = {
        p.attributes.get("http.route"): p.count
        for p in syncperf_capture.points("http.server.request.duration")
    }
    assert routes == {
        "/api/v1/items/{item_id}": 1,
        "/api/v2/items/{item_id}": 1,
        "/api/v1/inner/items/{item_id}": 1,
        "/api/v1/inner/plain/{p}": 1,
        "/api/v1/inner/sync/{entity}/push": 1,
    }
    (span,) = syncperf_capture.spans()
    assert span.attributes["http.route"] == "/api/v1/inner/sync/{entity}/push"  # type: ignore[index]


async def test_a_mounted_app_with_its_own_middleware_counts_each_request_once(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    inner, outer = FastAPI(), FastAPI()

    @inner.get("/sync/pull")
    async def pull() -> dict[str, Any]:
        return {"changes": []}

    @inner.get("/status")
    async def status() -> dict[str, Any]:
        return {}

    @outer.get("/health")
    async def health() -> dict[str, Any]:
        return {}

    inner.add_middleware(SyncPerfMiddleware, routes={"/sync/pull": "pull"})  # each team its own
    outer.mount("/notes", inner)
    outer.add_middleware(SyncPerfMiddleware, routes={"/notes/sync/pull": "pull", "/x": "push"})
    async with client(outer) as c:
        for path in ("/notes/sync/pull", "/notes/status", "/health"):
            assert (await c.get(path)).status_code == 200
    routes = {
        p.attributes.get("http.route"): p.count for p in cap.points("http.server.request.duration")
    }
    assert routes == {"/notes/sync/pull": 1, "/notes/status": 1, "/health": 1}
    assert cap.total("http.server.response.body.size") == 3
    assert cap.total("sync.operation.duration") == 1
    assert len(cap.spans()) == 1
    assert active_total(cap, "http.server.active_requests") == 0


async def test_a_mounted_app_measures_the_sync_routes_its_outer_middleware_does_not_know(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    inner, outer = FastAPI(), FastAPI()

    @inner.get("/sync/pull")
    async def pull() -> dict[str, Any]:
        return {"changes": []}

    inner.add_middleware(SyncPerfMiddleware, routes={"/sync/pull": "pull"})
    outer.mount("/notes", inner)
    outer.add_middleware(SyncPerfMiddleware)  # HTTP metrics only
    async with client(outer) as c:
        assert (await c.get("/notes/sync/pull")).status_code == 200
    (op,) = cap.points("sync.operation.duration")
    assert op.attributes["sync.outcome"] == "success"
    (span,) = cap.spans()
    assert span.kind is SpanKind.SERVER
    (http,) = cap.points("http.server.request.duration")
    assert http.attributes["http.route"] == "/notes/sync/pull"
    assert active_total(cap, "http.server.active_requests") == 0


async def test_a_raw_asgi_mount_reports_the_mount_template_under_starlette(
    syncperf_capture: Capture,
) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    async def legacy(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"r"})

    app = Starlette(routes=[Mount("/legacy", app=legacy)])
    app.add_middleware(SyncPerfMiddleware)
    async with client(app) as c:
        assert (await c.get("/legacy/anything/42")).status_code == 200
    (point,) = syncperf_capture.points("http.server.request.duration")
    assert point.attributes["http.route"] == "/legacy/{path}"  # docs/asgi.md, Route templates


async def test_http_metrics_can_be_switched_off(syncperf_capture: Capture) -> None:
    async with client(make_app(http_metrics=False)) as c:
        await c.get("/sync/pull")
        await c.get("/items/1")
    assert syncperf_capture.metric("http.server.request.duration") is None
    assert syncperf_capture.total("sync.operation.duration") == 1


async def test_a_replayed_response_header_counts_an_idempotency_hit(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    async with client(make_app()) as c:
        await c.get("/sync/pull?replayed=1", headers={"Idempotency-Key": "k-1"})
        await c.get("/sync/pull", headers={"Idempotency-Key": "k-2"})
    assert cap.total("sync.idempotency.hits", {"sync.operation": "pull"}) == 1
    hit, fresh = cap.spans()
    assert hit.attributes["sync.idempotency.hit"] is True  # type: ignore[index]
    assert fresh.attributes["sync.idempotency.hit"] is False  # type: ignore[index]


async def test_the_idempotency_key_is_exported_only_as_a_hash(syncperf_capture: Capture) -> None:
    async with client(make_app()) as c:
        await c.get("/sync/pull", headers={"Idempotency-Key": "secret-key-123"})
    (span,) = syncperf_capture.spans()
    digest = span.attributes["sync.idempotency.key_hash"]  # type: ignore[index]
    assert isinstance(digest, str) and len(digest) == 16
    assert "secret-key-123" not in repr(dict(span.attributes or {}))
    exported = repr([m.data for m in syncperf_capture.metrics()])
    assert "secret-key-123" not in exported and digest not in exported


async def test_a_repeated_key_within_the_ttl_counts_as_a_hit_when_opted_in(
    syncperf_capture: Capture,
) -> None:
    async with client(make_app(idempotency_ttl=60)) as c:
        for key in ("a", "b", "a", "a"):
            await c.get("/sync/pull", headers={"Idempotency-Key": key})
    assert syncperf_capture.total("sync.idempotency.hits") == 2


async def test_repeated_keys_are_not_hits_without_the_opt_in(syncperf_capture: Capture) -> None:
    async with client(make_app()) as c:
        for _ in range(3):
            await c.get("/sync/pull", headers={"Idempotency-Key": "a"})
    assert syncperf_capture.total("sync.idempotency.hits") == 0


async def test_live_requests_stay_out_of_the_latency_histograms(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    async with client(make_app()) as c:
        await c.get("/sync/pull?live=true")
        await c.get("/sync/pull", headers=[("accept", "application/json"), ("accept", SSE)])
        await c.get("/sync/pull")
    ops = {p.attributes["sync.operation"]: p.count for p in cap.points("sync.operation.duration")}
    assert ops == {"pull": 1, "pull_live": 2}
    assert cap.total("http.server.request.duration") == 1
    assert cap.total("http.server.response.body.size") == 3
    assert active_total(cap, "sync.operations.active") == 0


async def test_http_histograms_count_every_request_exactly_across_batches(
    syncperf_capture: Capture,
) -> None:
    # A request's values are queued and recorded in batches (``_metrics.batches``): whatever
    # is read, before or after a batch records itself, counts every request once.
    cap = syncperf_capture
    rounds = FOLD_AT // 4 + 20  # four values per request: past one batch
    async with client(make_app()) as c:
        for index in range(rounds):
            await c.get("/sync/pull?live=true")  # no duration; no request body
            await c.post("/sync/todo/push", json={"a": index % 10})  # a 7-byte body
            await c.request("GET", "/items/3", headers={"content-length": "0"})
            if index == 3:  # read while values are queued
                assert cap.total("http.server.response.body.size") == 12
    assert cap.total("http.server.request.duration") == 2 * rounds
    assert not cap.points("http.server.request.duration", {"http.route": "/sync/pull"})
    sizes = cap.points("http.server.request.body.size")
    assert sorted((p.count, p.sum) for p in sizes) == [(rounds, 0), (rounds, 7 * rounds)]
    assert cap.total("http.server.response.body.size") == 3 * rounds
    (overhead,) = cap.points("syncperf.overhead", {"syncperf.component": "asgi"})
    assert overhead.count == 3 * rounds
    assert active_total(cap, "http.server.active_requests") == 0


SSE = "text/event-stream"


async def test_a_live_predicate_of_ones_own_replaces_the_default(
    syncperf_capture: Capture,
) -> None:
    app = make_app(live=lambda scope: scope.get("query_string") == b"watch")
    async with client(app) as c:
        await c.get("/sync/pull?watch")
        await c.get("/sync/pull?live=true", headers={"accept": SSE})
    points = syncperf_capture.points("sync.operation.duration")
    assert {p.attributes["sync.operation"]: p.count for p in points} == {
        "pull": 1,
        "pull_live": 1,
    }


def test_the_default_live_predicate_reads_the_query_and_accept_header() -> None:
    def scope(query: bytes = b"", accept: bytes = b"*/*") -> dict[str, Any]:
        return {"query_string": query, "headers": [(b"accept", accept)]}

    assert live_request(scope(b"cursor=3&live=true"))
    assert live_request(scope(b"live=1"))
    assert not live_request(scope(b"live=false"))
    assert not live_request(scope(b"alive=true"))
    assert live_request(scope(accept=b"text/event-stream"))
    assert not live_request(scope())


@pytest.mark.parametrize("feed", [b"longpoll", b"continuous", b"eventsource"])
def test_the_default_live_predicate_takes_couchdbs_live_feeds(feed: bytes) -> None:
    # PouchDB's live replication: _changes?style=all_docs&feed=longpoll&heartbeat=10000&since=5
    query = b"style=all_docs&feed=" + feed + b"&heartbeat=10000&since=5"
    assert live_request({"query_string": query, "headers": []})


@pytest.mark.parametrize("query", [b"feed=normal", b"since=5", b"xfeed=longpoll", b"feed=long"])
def test_a_normal_changes_feed_is_not_live(query: bytes) -> None:
    assert not live_request({"query_string": query, "headers": []})


LIVE_PARTS = {b"live=true", b"live=1", b"feed=longpoll", b"feed=continuous", b"feed=eventsource"}


@settings(max_examples=300, deadline=None)
@given(
    query=st.one_of(
        st.binary(max_size=80),
        st.lists(
            st.sampled_from([*LIVE_PARTS, b"feed=", b"live=", b"=", b"", b"feed=normal", b"&"]),
            max_size=5,
        ).map(b"&".join),
        st.text(max_size=20),
        st.none(),
        st.integers(),
    )
)
def test_the_default_live_predicate_reads_any_query_string_without_raising(query: Any) -> None:
    expected = type(query) is bytes and any(part in LIVE_PARTS for part in query.split(b"&"))
    assert live_request({"query_string": query, "headers": []}) is expected


async def test_a_couchdb_long_poll_is_live_and_out_of_the_request_duration(
    syncperf_capture: Capture,
) -> None:
    async def changes(request: Request) -> Response:
        return JSONResponse({"results": [], "last_seq": "5", "pending": 0})

    app = SyncPerfMiddleware(
        Starlette(routes=[Route("/db/_changes", changes)]),
        routes={"/db/_changes": SyncRoute("pull", adapter=couchdb.Changes())},
    )
    async with client(app) as c:
        await c.get("/db/_changes?style=all_docs&feed=longpoll&heartbeat=10000&since=5")
        await c.get("/db/_changes?style=all_docs&since=5")
    points = syncperf_capture.points("sync.operation.duration")
    assert {p.attributes["sync.operation"]: p.count for p in points} == {
        "pull": 1,
        "pull_live": 1,
    }
    assert syncperf_capture.total("http.server.request.duration") == 1


async def test_an_incoming_traceparent_is_continued(syncperf_capture: Capture) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    parent = "b7ad6b7169203331"
    async with client(make_app()) as c:
        await c.get("/sync/pull", headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    (span,) = syncperf_capture.spans()
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None and f"{span.parent.span_id:016x}" == parent
    assert span.parent.is_remote


async def test_a_streaming_response_passes_through_chunk_by_chunk(
    syncperf_capture: Capture,
) -> None:
    async with client(make_app()) as c, c.stream("GET", "/stream") as response:
        chunks = [chunk async for chunk in response.aiter_raw()]
    assert b"".join(chunks) == b"x" * 30
    (size,) = syncperf_capture.points("http.server.response.body.size")
    assert size.sum == 30
    assert active_total(syncperf_capture, "http.server.active_requests") == 0


async def test_500_concurrent_requests_end_with_exact_counts_and_idle_gauges(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    async with client(make_app()) as c:
        responses = await asyncio.gather(
            *[c.post("/sync/todo/push", json={"conflict": n % 5 == 0}) for n in range(250)],
            *[c.get("/sync/pull") for _ in range(250)],
        )
    assert sorted({r.status_code for r in responses}) == [200, 409]
    assert cap.total("sync.operation.duration", {"sync.operation": "push"}) == 250
    assert cap.total("sync.operation.duration", {"sync.outcome": "conflict"}) == 50
    assert cap.total("sync.operation.duration", {"sync.operation": "pull"}) == 250
    assert cap.total("sync.items") == 750
    assert cap.total("http.server.request.duration") == 500
    assert active_total(cap, "sync.operations.active") == 0
    assert active_total(cap, "http.server.active_requests") == 0
    assert len(cap.spans()) == 500


async def test_a_client_disconnect_mid_response_leaves_no_request_active(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        assert (await receive())["type"] == "http.request"
        message = await receive()
        assert message["type"] == "http.disconnect"
        release.set()  # the app notices the disconnect and stops sending

    messages = iter(
        [{"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}]
    )

    async def receive() -> Any:
        return next(messages)

    middleware = SyncPerfMiddleware(app, routes={"/sync/pull": "pull"})
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/sync/pull",
        "headers": [],
        "scheme": "http",
        "http_version": "1.1",
    }
    await middleware(scope, receive, _discard)
    assert release.is_set()
    (point,) = cap.points("sync.operation.duration")
    assert point.attributes["error.type"] == "client_disconnected"
    (http,) = cap.points("http.server.request.duration")
    assert http.attributes["error.type"] == "client_disconnected"
    assert active_total(cap, "sync.operations.active") == 0
    assert active_total(cap, "http.server.active_requests") == 0


async def test_a_disconnect_the_server_reports_by_raising_from_send_is_client_disconnected(
    syncperf_capture: Capture,
) -> None:
    # ASGI 2.4 servers (uvicorn's ClientDisconnected is an OSError) raise from send() once
    # the client is gone; the app's framework then raises its own exception.
    cap = syncperf_capture

    class Gone(Exception):  # what the framework raises when send() failed (ClientDisconnect)
        pass

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        try:
            await send({"type": "http.response.body", "body": b"more", "more_body": True})
        except OSError as error:
            raise Gone() from error

    sent = 0

    async def send(message: Any) -> None:
        nonlocal sent
        sent += 1
        if sent == 3:
            raise OSError("the client is gone")

    middleware = SyncPerfMiddleware(app, routes={"/sync/pull": "pull"})
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "method": "GET",
        "path": "/sync/pull",
        "headers": [],
        "scheme": "http",
        "http_version": "1.1",
    }
    with pytest.raises(Gone):
        await middleware(scope, _never_receive, send)
    (point,) = cap.points("sync.operation.duration")
    assert point.attributes["error.type"] == "client_disconnected"
    (http,) = cap.points("http.server.request.duration")
    assert http.attributes["error.type"] == "client_disconnected"
    assert active_total(cap, "sync.operations.active") == 0


async def test_a_client_gone_mid_upload_is_client_disconnected_whatever_the_app_answered(
    syncperf_capture: Capture,
) -> None:
    # Starlette's request.body() raises ClientDisconnect; its ServerErrorMiddleware answers
    # it with a 500 (that the server drops: the client is gone), then raises it again
    cap = syncperf_capture

    async def push(request: Request) -> Response:
        return JSONResponse({"n": len(await request.body())})

    app = Starlette(routes=[Route("/sync/push", push, methods=["POST"])])
    messages = [
        {"type": "http.request", "body": b'{"changes": [', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Any:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/sync/push",
        "headers": [(b"content-length", b"5000")],
        "scheme": "http",
        "http_version": "1.1",
    }
    with pytest.raises(ClientDisconnect):
        await SyncPerfMiddleware(app, routes={"/sync/push": "push"})(scope, receive, _discard)
    (point,) = cap.points("sync.operation.duration")
    assert point.attributes["sync.outcome"] == "error"
    assert point.attributes["error.type"] == "client_disconnected"
    (http,) = cap.points("http.server.request.duration")
    assert http.attributes["error.type"] == "client_disconnected"
    assert active_total(cap, "sync.operations.active") == 0


async def _never_receive() -> Any:
    await asyncio.Event().wait()


async def test_a_cancelled_request_leaves_no_request_active(syncperf_capture: Capture) -> None:
    started = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        await asyncio.sleep(30)

    middleware = SyncPerfMiddleware(app, routes={"/sync/pull": "pull"})
    scope = {"type": "http", "method": "GET", "path": "/sync/pull", "headers": []}
    task = asyncio.ensure_future(middleware(scope, _no_body, _discard))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cap = syncperf_capture
    assert active_total(cap, "sync.operations.active") == 0
    assert active_total(cap, "http.server.active_requests") == 0
    (point,) = cap.points("sync.operation.duration")
    assert point.attributes["sync.outcome"] == "error"


async def test_websocket_and_lifespan_pass_through(syncperf_capture: Capture) -> None:
    seen: list[tuple[str, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["type"], receive, send))

    middleware = SyncPerfMiddleware(app, routes={"/sync/pull": "pull"})
    for kind in ("websocket", "lifespan"):
        await middleware({"type": kind, "path": "/sync/pull"}, _no_body, _discard)
    assert seen[0] == ("websocket", _no_body, _discard)
    assert seen[1][:2] == ("lifespan", _no_body)  # send: wrapped to flush at shutdown
    assert syncperf_capture.metrics() == []


async def test_the_lifespan_shutdown_exports_before_the_server_is_told() -> None:
    exporter = ListExporter()
    with capture(metric_exporters=[exporter], export_interval=3600):
        with syncperf.sync_operation("push"):
            pass
        told: list[tuple[str, int]] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "lifespan.shutdown.complete"})

        async def receive() -> dict[str, Any]:
            return {"type": "lifespan.shutdown"}

        async def send(message: dict[str, Any]) -> None:
            told.append((message["type"], len(exporter.batches)))

        await SyncPerfMiddleware(app)({"type": "lifespan"}, receive, send)
    assert told == [("lifespan.shutdown.complete", 1)]  # exported once, before the server knew


async def test_a_websocket_route_works_behind_the_middleware(syncperf_capture: Capture) -> None:
    app = FastAPI()

    @app.websocket("/sync/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text((await websocket.receive_text()).upper())
        await websocket.close()

    app.add_middleware(SyncPerfMiddleware, routes={"/sync/ws": "pull"})
    incoming = iter([{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hello"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> Any:
        return next(incoming)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/sync/ws",
        "raw_path": b"/sync/ws",
        "root_path": "",
        "headers": [],
        "query_string": b"",
        "scheme": "ws",
        "subprotocols": [],
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "HELLO"
    assert syncperf_capture.metric("sync.operation.duration") is None
    assert syncperf_capture.metric("http.server.request.duration") is None


async def test_preflight_requests_are_not_sync_operations(syncperf_capture: Capture) -> None:
    async with client(make_app()) as c:
        await c.options("/sync/pull")
    assert syncperf_capture.metric("sync.operation.duration") is None
    assert syncperf_capture.total("http.server.request.duration") == 1


async def test_sampled_out_errors_are_rescued_as_server_spans() -> None:
    with capture(sampler=ALWAYS_OFF) as cap:
        async with client(make_app()) as c:
            await c.get("/sync/pull")
            await c.get("/sync/pull?status=500")
        (span,) = cap.spans()
        assert span.kind is SpanKind.SERVER
        assert span.attributes["syncperf.rescued"] is True  # type: ignore[index]
        assert cap.total("sync.operation.duration") == 2


async def test_the_middleware_records_its_own_overhead(syncperf_capture: Capture) -> None:
    async with client(make_app()) as c:
        await c.get("/sync/pull")
        await c.get("/items/1")
    (point,) = syncperf_capture.points("syncperf.overhead", {"syncperf.component": "asgi"})
    assert point.count == 2
    assert 0 < point.sum < 0.05


async def test_a_disabled_syncperf_is_a_pass_through() -> None:
    with capture(enabled=False) as cap:
        async with client(make_app()) as c:
            assert (await c.get("/sync/pull")).status_code == 200
        assert cap.metrics() == []


def test_configuration_mistakes_raise_config_error() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    bad: list[dict[str, Any]] = [
        {"routes": ["/sync/pull"]},
        {"routes": {"sync/pull": "pull"}},
        {"routes": {"/sync/pull": "Pull!"}},
        {"routes": {"/sync/pull": 3}},
        {"routes": {"/sync/{entity:bogus}/push": "push"}},
        {"routes": {"/sync/{entity}/push": SyncRoute("push", entity="todo")}},
        {"routes": {"/sync/{a}/{a}": "push"}},
        {"http_metrics": "yes"},
        {"idempotency_ttl": 0},
        {"idempotency_ttl": float("inf")},  # would overflow as nanoseconds
        {"idempotency_max_keys": 0},
        {"live": "live=true"},
        {"max_body_bytes": -1},
        {"replay_header": ""},
    ]
    for options in bad:
        with pytest.raises(syncperf.ConfigError):
            SyncPerfMiddleware(app, **options)
    with pytest.raises(syncperf.ConfigError):
        SyncRoute("pull", adapter=object())  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/sync/pull", "/other"])
async def test_active_requests_return_to_zero_when_collected_mid_request(path: str) -> None:
    with capture() as cap:

        async def app(scope: Any, receive: Any, send: Any) -> None:
            assert active_total(cap, "http.server.active_requests") == 1  # a collection
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        async with client(SyncPerfMiddleware(app, routes={"/sync/pull": "pull"})) as c:
            assert (await c.get(path)).status_code == 200
        assert active_total(cap, "http.server.active_requests") == 0
        assert active_total(cap, "sync.operations.active") == 0


async def test_a_str_subclass_sync_route_counts_as_its_plain_values(
    syncperf_capture: Capture,
) -> None:
    class Entity(str, enum.Enum):
        NOTE = "note"

    class Operation(str, enum.Enum):
        PULL = "pull"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    route = SyncRoute(Operation.PULL, entity=Entity.NOTE)
    assert type(route.operation) is str and type(route.entity) is str
    async with client(SyncPerfMiddleware(app, routes={"/notes/pull": route})) as c:
        assert (await c.get("/notes/pull")).status_code == 200
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert point.attributes == {
        "sync.operation": "pull",
        "sync.entity": "note",
        "sync.outcome": "success",
    }
