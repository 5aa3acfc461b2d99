"""A compressed body (``Content-Encoding`` other than ``identity``) is not JSON to parse: the
middleware leaves it unread and counts it as ``unsupported_encoding`` (docs/asgi.md), never as
invalid JSON, and the application gets it unchanged."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import zlib
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncperf.adapters import watermelondb
from syncperf.asgi import SyncPerfMiddleware, SyncRoute
from syncperf.testing import capture
from tests._adapters import recorded

CHANGES = {"tasks": {"created": [{"id": "a"}, {"id": "b"}], "updated": [], "deleted": []}}
PUSH = json.dumps({"changes": CHANGES, "lastPulledAt": 1}).encode()
PULL_ANSWER = json.dumps({"changes": CHANGES, "timestamp": 2}).encode()
SECRET = "sk_live_planted_4242"


def _app(seen: list[bytes], answer: Response | None = None) -> SyncPerfMiddleware:
    async def push(request: Request) -> Response:
        seen.append(await request.body())
        return JSONResponse({})

    async def pull(request: Request) -> Response:
        assert answer is not None
        return answer

    inner = Starlette(
        routes=[Route("/push", push, methods=["POST"]), Route("/pull", pull, methods=["GET"])]
    )
    routes = {
        "/push": SyncRoute("push", adapter=watermelondb.Push()),
        "/pull": SyncRoute("pull", adapter=watermelondb.Pull()),
    }
    return SyncPerfMiddleware(inner, routes=routes)


async def _call(app: Any, method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.request(method, path, content=body, headers=headers)
        return response.status_code


def _push(body: bytes, encoding: str | None, *, strict: bool = True) -> tuple[Any, list[bytes]]:
    headers = {"content-type": "application/json"}
    if encoding is not None:
        headers["content-encoding"] = encoding
    seen: list[bytes] = []
    with capture(strict=strict) as cap:
        assert asyncio.run(_call(_app(seen), "POST", "/push", body, headers)) == 200
        return recorded(cap), seen


COMPRESSED = {
    "gzip": gzip.compress(PUSH),
    "deflate": zlib.compress(PUSH),
    "br": b"\x1b\x8b\x00\xf8\x25\x00\xa2",  # a few brotli-looking bytes: only the header tells
}


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
@pytest.mark.parametrize("encoding", sorted(COMPRESSED))
def test_a_compressed_request_body_is_dropped_as_unsupported_encoding(
    encoding: str, strict: bool
) -> None:
    got, seen = _push(COMPRESSED[encoding], encoding, strict=strict)
    assert got.dropped == {"unsupported_encoding": 1}
    assert got.items == {}
    assert got.outcomes == {"success": 1}
    assert seen == [COMPRESSED[encoding]]  # the application got the body as sent


@pytest.mark.parametrize("encoding", [None, "identity", " Identity ", ""])
def test_an_identity_encoded_request_body_is_read(encoding: str | None) -> None:
    got, _ = _push(PUSH, encoding)
    assert got.dropped == {}
    assert got.items == {("tasks", "created"): 2}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    encoding=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30
    ),
    body=st.one_of(st.just(PUSH), st.binary(max_size=64)),
)
def test_any_content_encoding_never_raises_and_is_never_logged(encoding: str, body: bytes) -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("syncperf")
    logger.addHandler(handler)
    try:
        got, seen = _push(body, SECRET + encoding)
    finally:
        logger.removeHandler(handler)
    assert seen == [body]
    assert got.dropped == ({"unsupported_encoding": 1} if body else {})
    assert got.items == {}
    assert not any(SECRET in r.getMessage() for r in records)


ANSWERS = {
    "gzip": gzip.compress(PULL_ANSWER),
    "deflate": zlib.compress(PULL_ANSWER),
    "br": COMPRESSED["br"],
    " BR ": COMPRESSED["br"],
}


@pytest.mark.parametrize("encoding", sorted(ANSWERS))
def test_a_compressed_answer_is_dropped_as_unsupported_encoding(encoding: str) -> None:
    answer = Response(
        ANSWERS[encoding],
        headers={"content-encoding": encoding},
        media_type="application/json",
    )
    with capture() as cap:
        assert asyncio.run(_call(_app([], answer), "GET", "/pull", b"", {})) == 200
        got = recorded(cap)
    assert got.dropped == {"unsupported_encoding": 1}
    assert got.items == {}


def test_an_identity_encoded_answer_is_read() -> None:
    answer = Response(
        PULL_ANSWER, headers={"content-encoding": "identity"}, media_type="application/json"
    )
    with capture() as cap:
        assert asyncio.run(_call(_app([], answer), "GET", "/pull", b"", {})) == 200
        got = recorded(cap)
    assert got.dropped == {}
    assert got.items == {("tasks", "created"): 2}


def test_a_compressed_body_among_headers_of_the_wrong_shape_is_still_found() -> None:
    """A server's header list with junk in it is read again, its pairs of bytes only: the
    ``Content-Encoding`` after the junk still leaves the body unparsed."""
    body = COMPRESSED["br"]  # no magic number: only the header tells
    headers = [(b"host", b"test"), 7, ("content-type", "x"), (b"content-encoding", b"br")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/push",
        "raw_path": b"/push",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "server": ("test", 80),
        "client": ("c", 1),
    }
    seen: list[bytes] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with capture(strict=False) as cap:
        asyncio.run(_app(seen)(scope, receive, send))
        got = recorded(cap)
    assert sent[0]["status"] == 200
    assert seen == [body]
    assert got.dropped.get("unsupported_encoding") == 1
    assert "invalid_json" not in got.dropped
