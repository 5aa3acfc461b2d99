"""A JSON body nested deeper than the decoder reads is an unreadable body, never raised.

``json.loads`` raises ``RecursionError`` (not ``ValueError``) for nested arrays past a depth
that depends on the Python version (about 1,000 on 3.10 and 3.11, 1,500 on 3.12, 10,000 on
3.13), a body far under ``max_body_bytes``: behind the middleware it is counted as invalid JSON
(``asgi_invalid_json``, strict mode too: docs/asgi.md) and the application still runs; a
decorated handler's returned response is an unparseable payload (docs/adapters.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import syncperf
from syncperf.adapters import couchdb, replicache
from syncperf.asgi import SyncPerfMiddleware, SyncRoute
from syncperf.exceptions import MeasurementError
from syncperf.testing import capture
from tests._adapters import recorded

JSON = {"content-type": "application/json"}
SHALLOW, DEEP = 400, 20_000
"""Depths ``json.loads`` always reads, and never does, whatever the stack's depth and the
Python version (the limit is the interpreter's recursion limit on 3.10 and 3.11, 1,000 frames
shared with the frames below the call; a limit of the C stack's depth since)."""


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _push(args_depth: int) -> bytes:
    """A Replicache push whose one mutation's ``args`` (which the adapter never reads) is
    nested ``args_depth`` arrays deep."""
    head = b'{"pushVersion": 1, "clientGroupID": "g", "mutations": [{"clientID": "c", '
    head += b'"id": 1, "name": "createTodo", "timestamp": 1, "args": '
    return head + _nested(args_depth) + b"}]}"


def _app(seen: list[int]) -> SyncPerfMiddleware:
    async def push(request: Request) -> Response:
        seen.append(len(await request.body()))
        return JSONResponse({})

    inner = Starlette(routes=[Route("/push", push, methods=["POST"])])
    return SyncPerfMiddleware(inner, routes={"/push": SyncRoute("push", adapter=replicache.Push())})


async def _post(app: Any, body: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/push", content=body, headers=JSON)


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_a_deeply_nested_request_body_is_invalid_json_and_the_application_runs(
    strict: bool,
) -> None:
    body = _nested(200_000)  # 400 KB: under max_body_bytes (1 MiB)
    seen: list[int] = []
    with capture(strict=strict) as cap:
        response = asyncio.run(_post(_app(seen), body))
        got = recorded(cap)
    assert response.status_code == 200
    assert seen == [len(body)]  # the application read the whole body
    assert got.dropped == {"asgi_invalid_json": 1}
    assert got.outcomes == {"success": 1}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.integers(1, SHALLOW), st.integers(DEEP, 300_000)))
def test_any_nesting_depth_never_raises_into_the_server(depth: int) -> None:
    body = _push(depth)
    seen: list[int] = []
    with capture() as cap:  # strict
        response = asyncio.run(_post(_app(seen), body))
        got = recorded(cap)
    assert response.status_code == 200
    assert seen == [len(body)]
    assert got.outcomes == {"success": 1}
    if depth <= SHALLOW:
        assert got.dropped == {}
        assert got.items == {("createTodo", None): 1}  # the mutator names the entity
    else:
        assert got.dropped == {"asgi_invalid_json": 1}
        assert got.items == {}


def _deep_answer() -> Response:
    doc = b'{"results": [{"id": "a", "docs": [{"ok": ' + _nested(100_000) + b"}]}]}"
    return Response(doc, media_type="application/json")


@syncperf.instrument_sync("pull", adapter=couchdb.BulkGet())
async def _bulk_get(body: dict[str, Any]) -> Response:
    return _deep_answer()


def test_a_deeply_nested_returned_response_is_an_unparseable_payload() -> None:
    with capture(strict=False) as cap:
        response = asyncio.run(_bulk_get({}))
        got = recorded(cap)
    assert response.status_code == 200
    assert got.dropped == {"unparseable_payload": 1}


def test_strict_mode_raises_measurement_error_for_a_deeply_nested_returned_response() -> None:
    with capture(), pytest.raises(MeasurementError) as raised:
        asyncio.run(_bulk_get({}))
    assert "unparseable_payload" in str(raised.value)
    assert not isinstance(raised.value.__cause__, RecursionError)
