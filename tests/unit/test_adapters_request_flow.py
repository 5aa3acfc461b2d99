"""Adapters in the request flow: when they see the request, and what the response's status means.

The same handler measured by the decorator and by the middleware must report the same
figures: server-state callbacks read the state *before* the handler changes it, a conflict
answered with a 4xx is a conflict, a returned ``Response`` object is read like a returned
dict, and a request the framework rejects before the handler is never a success.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import Body, FastAPI, HTTPException, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, computed_field

import syncperf
from syncperf.adapters import couchdb, powersync, replicache, rxdb, watermelondb
from syncperf.asgi import SyncPerfMiddleware, SyncRoute
from syncperf.sqlalchemy import instrument_engine
from syncperf.testing import Capture, capture
from tests._adapters import recorded

MODES = ("decorator", "middleware")
JSON = {"content-type": "application/json"}


async def post(app: Any, path: str, body: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(path, json=body)


def build(mode: str, path: str, operation: str, adapter: Any, handler: Callable[..., Any]) -> Any:
    """A FastAPI app serving ``handler`` at ``path``, measured by ``mode``."""
    app = FastAPI()
    if mode == "decorator":
        app.post(path)(syncperf.instrument_sync(operation, adapter=adapter)(handler))
        return app
    app.post(path)(handler)
    return SyncPerfMiddleware(app, routes={path: SyncRoute(operation, adapter=adapter)})


# --- 1. server-state callbacks run before the handler, behind the middleware too ----------


@pytest.mark.parametrize("mode", MODES)
async def test_replicache_last_mutation_id_is_read_before_the_push_is_applied(
    mode: str, syncperf_capture: Capture
) -> None:
    last: dict[str, int] = {}

    async def push(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        for mutation in body["mutations"]:
            last[mutation["clientID"]] = mutation["id"]
        return {}

    adapter = replicache.Push(last_mutation_id=lambda group, client: last.get(client))
    app = build(mode, "/push", "push", adapter, push)
    mutations = [{"id": i, "clientID": "c", "name": "createTodo", "args": {}} for i in (1, 2, 3)]
    body = {"pushVersion": 1, "clientGroupID": "g", "mutations": mutations}
    assert (await post(app, "/push", body)).status_code == 200
    assert (await post(app, "/push", body)).status_code == 200  # the retry: all known
    got = recorded(syncperf_capture)
    assert got.items == {("createTodo", None): 3}
    assert got.idempotency == 0  # a Replicache resend is normal: on the span only
    resent = [
        (s.attributes or {}).get("sync.replicache.duplicate_mutations")
        for s in syncperf_capture.spans()
    ]
    assert resent == [None, 3]


@pytest.mark.parametrize("mode", MODES)
async def test_watermelondb_count_existing_is_read_before_the_push_is_applied(
    mode: str, syncperf_capture: Capture
) -> None:
    rows: set[str] = set()

    async def push(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        rows.update(record["id"] for record in body["tasks"]["created"])
        return {}

    adapter = watermelondb.Push(
        count_existing=lambda table, records: sum(r["id"] in rows for r in records)
    )
    app = build(mode, "/sync", "push", adapter, push)
    body = {"tasks": {"created": [{"id": "a"}, {"id": "b"}], "updated": [], "deleted": []}}
    await post(app, "/sync", body)
    got = recorded(syncperf_capture)
    assert got.items == {("tasks", "created"): 2}
    assert got.idempotency == 0


@pytest.mark.parametrize("mode", MODES)
async def test_powersync_last_tx_id_is_read_before_the_upload_is_applied(
    mode: str, syncperf_capture: Capture
) -> None:
    applied: list[int] = []

    async def upload(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        applied.extend(entry["tx_id"] for entry in body["batch"])
        return {}

    adapter = powersync.Upload(last_tx_id=lambda body: max(applied, default=None))
    app = build(mode, "/upload", "push", adapter, upload)
    batch = [{"op": "PUT", "table": "lists", "id": "l1", "tx_id": 7, "data": {}}]
    await post(app, "/upload", {"batch": batch})
    got = recorded(syncperf_capture)
    assert got.items == {("lists", "created"): 1}
    assert got.idempotency == 0


async def test_the_application_still_reads_the_whole_body_after_syncperf_did(
    syncperf_capture: Capture,
) -> None:
    seen: list[int] = []

    async def push(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        seen.append(len(body["mutations"]))
        return {}

    app = build("middleware", "/push", "push", replicache.Push(), push)
    mutations = [
        {"id": i, "clientID": "c", "name": "m", "args": {"t": "x" * 500}} for i in range(200)
    ]
    body = {"pushVersion": 1, "clientGroupID": "g", "mutations": mutations}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        # a streamed body arrives in several http.request messages
        response = await client.post("/push", content=_chunks(body), headers=JSON)
    assert response.status_code == 200
    assert seen == [200]
    assert recorded(syncperf_capture).batches == [(1, 200)]


async def _chunks(body: Any) -> AsyncIterator[bytes]:
    data = json.dumps(body).encode()
    for start in range(0, len(data), 4096):
        yield data[start : start + 4096]


async def test_a_body_over_max_body_bytes_reaches_the_application_unread(
    syncperf_capture: Capture,
) -> None:
    seen: list[int] = []

    async def push(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        seen.append(len(body["mutations"]))
        return {}

    app = FastAPI()
    app.post("/push")(push)
    wrapped = SyncPerfMiddleware(
        app, routes={"/push": SyncRoute("push", adapter=replicache.Push())}, max_body_bytes=1000
    )
    mutations = [{"id": i, "clientID": "c", "name": "m", "args": {}} for i in range(100)]
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            "/push",
            content=_chunks({"pushVersion": 1, "clientGroupID": "g", "mutations": mutations}),
            headers=JSON,
        )
    assert response.status_code == 200
    assert seen == [100]
    got = recorded(syncperf_capture)
    assert got.dropped == {"asgi_body_too_large": 1}
    assert got.batches == []


@pytest.mark.parametrize(
    ("pieces", "cap", "disconnect", "replayed"),
    [
        (100_000, 1_048_576, False, [(b"x" * 100_000, False)]),  # one message, not 100,000
        (3000, 1000, False, [(b"x" * 1001, True), *[(b"x", True)] * 1998, (b"x", False)]),
        (3, 1000, True, [(b"xx", True), (None, None)]),  # what was read, then the disconnect
    ],
)
async def test_a_body_read_ahead_is_replayed_as_one_message_of_its_bytes(
    pieces: int, cap: int, disconnect: bool, replayed: list[tuple[bytes | None, bool | None]]
) -> None:
    """A client dribbling its body one byte a message (one a TCP segment or an HTTP/2 frame)
    costs linear time: the read-ahead keeps bytes, not messages, and replays them at once."""
    seen: list[tuple[bytes | None, bool | None]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append((message.get("body"), message.get("more_body")))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        sent += 1
        if disconnect and sent == pieces:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b"x", "more_body": sent < pieces}

    async def send(message: Any) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": "/push", "headers": []}
    routes = {"/push": SyncRoute("push", adapter=replicache.Push())}
    wrapped = SyncPerfMiddleware(app, routes=routes, max_body_bytes=cap)
    with capture(strict=False) as cap_:
        started = asyncio.get_running_loop().time()
        await wrapped(scope, receive, send)
        assert asyncio.get_running_loop().time() - started < 2  # quadratic: ~10 s
        assert seen == replayed
        (size,) = cap_.points("http.server.request.body.size")
        assert size.sum == pieces - disconnect


# --- 2. and 3. a conflict answered with a 4xx; a returned Response object -----------------


def conflicting_push(answer: str) -> Callable[..., Any]:
    async def push(body: Annotated[dict[str, Any], Body()]) -> Any:
        syncperf.current_operation().record_conflict(entity="tasks")
        if answer == "raise":
            raise HTTPException(status_code=409, detail="changed since last pull")
        return JSONResponse({"error": "changed since last pull"}, status_code=409)

    return push


@pytest.mark.parametrize("answer", ["raise", "return"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_recorded_conflict_answered_with_409_is_a_conflict(
    mode: str, answer: str, syncperf_capture: Capture
) -> None:
    app = build(mode, "/sync", "push", watermelondb.Push(), conflicting_push(answer))
    body = {"tasks": {"created": [], "updated": [{"id": "a"}], "deleted": []}}
    assert (await post(app, "/sync", body)).status_code == 409
    got = recorded(syncperf_capture)
    assert got.outcomes == {"conflict": 1}
    assert got.conflicts == {("tasks", None): 1}
    assert got.items == {("tasks", "updated"): 1}
    assert got.dropped == {}
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert "error.type" not in (point.attributes or {})


@pytest.mark.parametrize("mode", MODES)
async def test_a_409_without_a_recorded_conflict_counts_one(
    mode: str, syncperf_capture: Capture
) -> None:
    async def push(body: Annotated[dict[str, Any], Body()]) -> Any:
        raise HTTPException(status_code=409)

    app = build(mode, "/sync", "push", watermelondb.Push(), push)
    await post(app, "/sync", {"tasks": {"updated": [{"id": "a"}]}})
    got = recorded(syncperf_capture)
    assert got.outcomes == {"conflict": 1}
    assert sum(got.conflicts.values()) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_a_returned_response_object_is_read_like_a_returned_dict(
    mode: str, syncperf_capture: Capture
) -> None:
    async def push(body: Annotated[dict[str, Any], Body()]) -> Any:
        return JSONResponse({"experimentalRejectedIds": {"tasks": ["a"]}})

    app = build(mode, "/sync", "push", watermelondb.Push(), push)
    await post(app, "/sync", {"tasks": {"updated": [{"id": "a"}, {"id": "b"}]}})
    got = recorded(syncperf_capture)
    assert got.conflicts == {("tasks", "rejected"): 1}
    assert got.outcomes == {"conflict": 1}
    assert got.dropped == {}


@pytest.mark.parametrize("mode", MODES)
async def test_a_returned_non_json_response_is_not_a_malformed_payload(
    mode: str, syncperf_capture: Capture
) -> None:
    from fastapi.responses import PlainTextResponse

    async def push(body: Annotated[dict[str, Any], Body()]) -> Any:
        return PlainTextResponse("ok")

    app = build(mode, "/sync", "push", watermelondb.Push(), push)
    await post(app, "/sync", {"tasks": {"updated": [{"id": "a"}]}})
    got = recorded(syncperf_capture)
    assert got.outcomes == {"success": 1}
    assert got.dropped == {}


class Table(BaseModel):
    created: list[dict[str, Any]] = Field(default_factory=list)
    updated: list[dict[str, Any]] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)


class Tables(BaseModel):
    tasks: Table = Field(default_factory=Table)
    projects: Table = Field(default_factory=Table, serialization_alias="projectRows")
    drafts: Table = Field(default_factory=Table, exclude=True)  # never on the wire

    @computed_field  # type: ignore[prop-decorator]
    @property
    def labels(self) -> Table:
        return Table(updated=[{"id": "l1"}])


class Pulled(BaseModel):
    changes: Tables
    timestamp: int


@pytest.mark.parametrize("mode", MODES)
async def test_a_returned_model_counts_what_it_serialises_not_only_the_fields_set(
    mode: str, syncperf_capture: Capture
) -> None:
    # tables left at their default factories and filled afterwards are not in
    # model_fields_set, but FastAPI serialises every field: the client gets them
    async def pull(body: Annotated[dict[str, Any], Body()]) -> Pulled:
        changes = Tables()
        changes.tasks.created.extend([{"id": "a"}, {"id": "b"}])
        changes.projects.deleted.append("p1")
        changes.drafts.created.append({"id": "d"})
        return Pulled(changes=changes, timestamp=1)

    app = build(mode, "/pull", "pull", watermelondb.Pull(), pull)
    answer = (await post(app, "/pull", {})).json()
    assert set(answer["changes"]) == {"tasks", "projectRows", "labels"}
    got = recorded(syncperf_capture)
    assert got.items == {
        ("tasks", "created"): 2,
        ("projectRows", "deleted"): 1,
        ("labels", "updated"): 1,
    }
    assert got.batches == [(1, 4)]
    assert got.dropped == {}


# --- 3b. an error answer is not the protocol's answer ---------------------------------------

PULL_ADAPTERS = {
    "replicache.Pull": replicache.Pull,
    "rxdb.Pull": rxdb.Pull,
    "watermelondb.Pull": watermelondb.Pull,
    "couchdb.Changes": couchdb.Changes,
    "couchdb.BulkGet": couchdb.BulkGet,
}


async def unauthorized(body: Annotated[dict[str, Any], Body()]) -> Any:
    raise HTTPException(status_code=401, detail="Not authenticated")


async def couch_not_found(body: Annotated[dict[str, Any], Body()]) -> Any:
    return JSONResponse({"error": "not_found", "reason": "Database does not exist."}, 404)


async def unavailable(body: Annotated[dict[str, Any], Body()]) -> Any:
    return JSONResponse({"detail": "database is restarting"}, status_code=503)


@pytest.mark.parametrize("handler", [unauthorized, couch_not_found, unavailable])
@pytest.mark.parametrize("adapter", sorted(PULL_ADAPTERS))
@pytest.mark.parametrize("mode", MODES)
async def test_a_json_error_answer_is_an_error_not_an_unparseable_payload(
    mode: str, adapter: str, handler: Callable[..., Any], syncperf_capture: Capture
) -> None:
    # strict mode (the fixture's) raised MeasurementError here: a user's own 401 test failed
    app = build(mode, "/pull", "pull", PULL_ADAPTERS[adapter](), handler)
    assert (await post(app, "/pull", {"cookie": None})).status_code >= 400
    got = recorded(syncperf_capture)
    assert got.outcomes == {"error": 1}
    assert got.dropped == {}
    assert got.items == {}


# --- 3c. a 2xx answer without a JSON body -------------------------------------------------

ROWS = [{"newDocumentState": {"id": f"t{i}", "title": "x", "_deleted": False}} for i in range(3)]


async def applied_no_content(rows: Annotated[list[dict[str, Any]], Body()]) -> None:
    return None


async def applied_text(rows: Annotated[list[dict[str, Any]], Body()]) -> Any:
    return PlainTextResponse("ok")


async def applied_empty(rows: Annotated[list[dict[str, Any]], Body()]) -> Any:
    return Response(status_code=204)


@pytest.mark.parametrize(
    ("handler", "status_code"),
    [(applied_no_content, 204), (applied_text, 200), (applied_empty, 200)],
    ids=["204 from the route", "text/plain", "a returned 204 Response"],
)
@pytest.mark.parametrize("mode", MODES)
async def test_an_rxdb_push_answered_without_a_json_body_counts_its_rows(
    mode: str, handler: Callable[..., Any], status_code: int, syncperf_capture: Capture
) -> None:
    # rxdb.Push counts rows when it reads the answer: behind the middleware a 204 lost them
    app = FastAPI()
    decorate = syncperf.instrument_sync("push", entity="todo", adapter=rxdb.Push())
    app.post("/todos/push", status_code=status_code)(
        decorate(handler) if mode == "decorator" else handler
    )
    if mode == "middleware":
        route = SyncRoute("push", entity="todo", adapter=rxdb.Push())
        app = SyncPerfMiddleware(app, routes={"/todos/push": route})  # type: ignore[assignment]
    assert (await post(app, "/todos/push", ROWS)).status_code in (200, 204)
    got = recorded(syncperf_capture)
    assert got.items == {("todo", "created"): 3}
    assert got.outcomes == {"success": 1}
    assert got.dropped == {}


# --- 4. a decorated handler joining an operation: one source of counts ----------------------

TWO_CREATED = {"tasks": {"created": [{"id": "a"}, {"id": "b"}], "updated": [], "deleted": []}}


async def rejecting_push(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    return {"experimentalRejectedIds": {"tasks": ["a"]}}


def assert_counted_once(cap: Capture) -> None:
    got = recorded(cap)
    assert got.outcomes == {"conflict": 1}
    assert got.batches == [(1, 2)]
    assert got.items == {("tasks", "created"): 2}  # not 4
    assert got.conflicts == {("tasks", "rejected"): 1}  # not 2
    assert got.dropped == {}


@pytest.mark.parametrize(
    "options",
    [
        {"adapter": watermelondb.Push()},
        {"items": lambda body: 2, "conflicts": lambda result: 1, "batch_size": lambda body: 9},
        {"adapter": watermelondb.Push(), "items": lambda body: 2},
    ],
    ids=["adapter", "extractors", "both"],
)
async def test_a_decorated_handler_inside_a_route_with_an_adapter_counts_nothing_twice(
    options: dict[str, Any], syncperf_capture: Capture
) -> None:
    app = FastAPI()
    app.post("/sync")(syncperf.instrument_sync("push", **options)(rejecting_push))
    wrapped = SyncPerfMiddleware(
        app, routes={"/sync": SyncRoute("push", adapter=watermelondb.Push())}
    )
    assert (await post(wrapped, "/sync", TWO_CREATED)).status_code == 200
    assert_counted_once(syncperf_capture)


async def test_a_decorated_handler_with_an_adapter_feeds_a_route_without_one(
    syncperf_capture: Capture,
) -> None:
    adapter = watermelondb.Push()

    @syncperf.instrument_sync("push", adapter=adapter)  # a helper the handler calls
    def apply(body: dict[str, Any]) -> dict[str, Any]:
        return {"experimentalRejectedIds": {"tasks": ["a"]}}

    async def push(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        return apply(body)

    app = FastAPI()
    app.post("/sync")(syncperf.instrument_sync("push", adapter=adapter)(push))
    wrapped = SyncPerfMiddleware(app, routes={"/sync": "push"})
    assert (await post(wrapped, "/sync", TWO_CREATED)).status_code == 200
    assert_counted_once(syncperf_capture)


def test_nested_decorated_functions_with_adapters_count_once(syncperf_capture: Capture) -> None:
    adapter = watermelondb.Push()

    @syncperf.instrument_sync("push", adapter=adapter)
    def inner(body: dict[str, Any]) -> dict[str, Any]:
        return {"experimentalRejectedIds": {"tasks": ["a"]}}

    @syncperf.instrument_sync("push", adapter=adapter, idempotency_hit=lambda body: True)
    def outer(body: dict[str, Any]) -> dict[str, Any]:
        return inner(body)

    outer(TWO_CREATED)
    assert_counted_once(syncperf_capture)
    assert recorded(syncperf_capture).idempotency == 1


async def test_a_joined_handler_still_names_the_entity_and_flags_a_replay(
    syncperf_capture: Capture,
) -> None:
    app = FastAPI()
    decorate = syncperf.instrument_sync(
        "push", entity=lambda body: "task", idempotency_hit=lambda body: True, items=lambda body: 5
    )
    app.post("/sync")(decorate(rejecting_push))
    wrapped = SyncPerfMiddleware(
        app, routes={"/sync": SyncRoute("push", adapter=watermelondb.Push())}
    )
    await post(wrapped, "/sync", {"x": {"created": [{"id": "a"}]}})
    got = recorded(syncperf_capture)
    assert got.items == {("x", "created"): 1}
    assert got.idempotency == 1  # a flag, never counted twice: it still applies
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert (point.attributes or {})["sync.entity"] == "task"


# --- 7. GET handlers need no request= ------------------------------------------------------


def test_a_pull_adapter_that_never_reads_the_request_needs_no_request_parameter(
    syncperf_capture: Capture,
) -> None:
    @syncperf.instrument_sync("pull", entity="todo", adapter=rxdb.Pull())
    def pull(id: str | None = None, updatedAt: int | None = None, batchSize: int = 10) -> Any:
        return {"documents": [{"id": "a", "_deleted": False}], "checkpoint": None}

    pull(None, None, 10)
    assert recorded(syncperf_capture).items == {("todo", None): 1}


# --- 8. the path entity is known while the handler runs -------------------------------------


async def test_query_metrics_during_the_handler_carry_the_path_entity(
    syncperf_capture: Capture,
) -> None:
    engine = sa.create_engine("sqlite://")
    handle = instrument_engine(engine, n_plus_one_threshold=3)
    seen: list[str | None] = []

    async def push(entity: str, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        seen.append(syncperf.current_operation().entity)
        with engine.connect() as conn:
            for i in range(5):
                conn.execute(sa.text("SELECT :i"), {"i": i})
        return {}

    app = FastAPI()
    app.post("/sync/{entity}/push")(push)
    wrapped = SyncPerfMiddleware(app, routes={"/sync/{entity}/push": "push"})
    try:
        await post(wrapped, "/sync/todo/push", {})
    finally:
        handle.uninstrument()
    assert seen == ["todo"]
    (point,) = syncperf_capture.points("sync.db.n_plus_one")
    assert (point.attributes or {}).get("sync.entity") == "todo"


# --- 9. rejected before the handler ---------------------------------------------------------


class Changes(BaseModel):
    changes: dict[str, Any]


async def test_a_request_rejected_before_the_handler_is_an_error_not_a_success(
    syncperf_capture: Capture,
) -> None:
    async def push(entity: str, body: Changes) -> dict[str, Any]:
        return {}

    app = FastAPI()
    app.post("/sync/{entity}/push")(push)
    wrapped = SyncPerfMiddleware(app, routes={"/sync/{entity}/push": "push"})
    response = await post(wrapped, "/sync/todo/push", {"not": "changes"})
    assert response.status_code == 422
    got = recorded(syncperf_capture)
    assert got.outcomes == {"error": 1}
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert (point.attributes or {})["error.type"] == "422"


async def test_a_decorated_handler_the_framework_never_called_records_nothing(
    syncperf_capture: Capture,
) -> None:
    app = FastAPI()

    @app.post("/sync/push")
    @syncperf.instrument_sync("push")
    async def push(body: Changes) -> dict[str, Any]:
        return {}

    assert (await post(app, "/sync/push", {"not": "changes"})).status_code == 422
    assert recorded(syncperf_capture).outcomes == {}


class Reply(BaseModel):
    status_code: int  # a data field that happens to share the name


async def test_a_plain_decorated_handler_answering_409_is_a_conflict(
    syncperf_capture: Capture,
) -> None:
    @syncperf.instrument_sync("push", entity="todo")
    async def push() -> Any:
        return JSONResponse({}, status_code=409)

    await push()
    assert recorded(syncperf_capture).outcomes == {"conflict": 1}


async def test_a_returned_model_with_a_status_code_field_is_data_not_a_response(
    syncperf_capture: Capture,
) -> None:
    @syncperf.instrument_sync("push", entity="todo")
    async def push() -> Reply:
        return Reply(status_code=404)

    await push()
    assert recorded(syncperf_capture).outcomes == {"success": 1}


@syncperf.instrument_sync("push", entity="todo", items=lambda rows: len(rows))
def _apply_rows(rows: list[int]) -> None:
    """A helper decorated with a count extractor, called once per batch of a request."""


@syncperf.instrument_sync("push", entity="todo", items=lambda rows: len(rows))
async def _apply_rows_async(rows: list[int]) -> None:
    """The same, ``async def``; the calls of one ``gather`` overlap here."""
    await asyncio.sleep(0.01)


_BOTH_INSIDE = threading.Barrier(2, timeout=5)


@syncperf.instrument_sync("push", entity="todo", items=lambda rows: len(rows))
def _apply_rows_at_once(rows: list[int]) -> None:
    """The same, in two threads that are inside it at the same time."""
    _BOTH_INSIDE.wait()


def test_a_decorated_helper_called_once_per_batch_counts_every_call() -> None:
    """Only an outer layer that feeds the operation makes a joining decorator skip its
    counts; a sibling call that fed it before does not (each call is its own batch)."""

    @syncperf.instrument_sync("push")  # an outer handler with no count extractors
    def handler(batches: list[list[int]]) -> None:
        for rows in batches:
            _apply_rows(rows)

    async def in_async_handler() -> None:
        with syncperf.sync_operation("push"):
            await _apply_rows_async([1, 2, 3])
            await _apply_rows_async([4, 5])

    async def gathered() -> None:  # the calls at once, each in its own task
        with syncperf.sync_operation("push"):
            await asyncio.gather(_apply_rows_async([1, 2, 3]), _apply_rows_async([4, 5]))

    def in_threads() -> None:  # each batch in a thread, in a copy of the request's context
        with syncperf.sync_operation("push"):
            threads = [
                threading.Thread(
                    target=contextvars.copy_context().run, args=(_apply_rows_at_once, rows)
                )
                for rows in ([1, 2, 3], [4, 5])
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    with capture() as cap:
        with syncperf.sync_operation("push"):
            _apply_rows([1, 2, 3])
            _apply_rows([4, 5])
        handler([[1, 2, 3], [4, 5]])
        asyncio.run(in_async_handler())
        asyncio.run(gathered())
        in_threads()
        assert cap.total("sync.items") == 25
        assert cap.total("sync.operation.duration") == 5
