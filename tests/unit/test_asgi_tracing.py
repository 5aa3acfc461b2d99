"""The span ``SyncPerfMiddleware`` makes for a sync request in the edge cases of tracing: the
first request after tracing turns on, a global propagator that raises, and a span rescued
after head sampling dropped it (it carries what a sampled span carries)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import propagate
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from syncperf.asgi import SyncPerfMiddleware
from syncperf.asgi._http import key_hash
from syncperf.testing import capture

SECRET = "Bearer_SECRET_TOKEN_42"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
UNSAMPLED = f"00-{TRACE_ID}-b7ad6b7169203331-00"


def make_app(ran: list[str] | None = None) -> Starlette:
    async def pull(request: Request) -> JSONResponse:
        if ran is not None:
            ran.append(request.url.path)
        status = int(request.query_params.get("status", "200"))
        return JSONResponse({"changes": []}, status_code=status)

    async def item(request: Request) -> JSONResponse:
        return JSONResponse({}, status_code=503)

    app = Starlette(
        routes=[
            Route("/sync/pull", pull, methods=["POST"]),
            Route("/sync/items/{item_id}", item, methods=["POST"]),
        ]
    )
    routes = {"/sync/pull": "pull", "/sync/{anything:path}": "items"}
    app.add_middleware(SyncPerfMiddleware, routes=routes)
    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://testserver",
    )


# --- the first request after tracing turns on ----------------------------------------------


async def test_the_first_request_after_tracing_turns_on_continues_the_incoming_trace() -> None:
    with capture() as cap:
        tracing = cap.runtime.tracing
        tracing.active, tracing.next_check = False, 0  # off, and due to be looked at again
        async with client(make_app()) as c:
            assert (await c.post("/sync/pull", headers={"traceparent": PARENT})).status_code == 200
        assert tracing.active
        (span,) = cap.spans()
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None and span.parent.is_remote
    assert span.attributes["http.route"] == "/sync/pull"  # type: ignore[index]
    assert span.attributes["http.request.method"] == "POST"  # type: ignore[index]


# --- a global propagator that raises -------------------------------------------------------


class Fragile(TextMapPropagator):
    """A vendor propagator that chokes on a hostile header value (quoting it)."""

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        value = getter.get(carrier, "x-vendor-trace") if getter is not None else None
        if value:
            raise ValueError(f"bad vendor trace header {value[0]!r}")
        return context

    def inject(self, *args: Any, **kwargs: Any) -> None:
        return None

    @property
    def fields(self) -> set[str]:
        return {"x-vendor-trace"}


@pytest.fixture
def fragile() -> Iterator[None]:
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), Fragile()]))
    try:
        yield
    finally:
        propagate.set_global_textmap(before)


REASON = {"syncperf.reason": "propagation_failed"}


@pytest.mark.usefixtures("fragile")
async def test_a_propagator_that_raises_leaves_the_request_without_a_parent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ran: list[str] = []
    headers = {"traceparent": PARENT, "x-vendor-trace": SECRET}
    with capture(strict=False) as cap:
        async with client(make_app(ran)) as c:
            for _ in range(2):
                assert (await c.post("/sync/pull", headers=headers)).status_code == 200
        assert ran == ["/sync/pull"] * 2
        assert cap.total("syncperf.dropped", REASON) == 2
        spans = cap.spans()
    assert [(s.kind, s.parent) for s in spans] == [(SpanKind.SERVER, None)] * 2
    assert SECRET not in caplog.text
    (line,) = [r for r in caplog.records if "propagation_failed" in r.getMessage()]
    assert line.name == "syncperf"


@pytest.mark.usefixtures("fragile")
async def test_strict_mode_raises_what_the_propagator_raised() -> None:
    with capture() as cap:
        async with client(make_app()) as c:
            response = await c.post("/sync/pull", headers={"x-vendor-trace": "zz"})
        assert response.status_code == 500
        assert cap.total("sync.operation.duration") == 0
        assert cap.total("http.server.request.duration") == 1  # the request is still recorded


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
def test_any_vendor_header_value_reaches_the_application(fragile: None, value: str) -> None:
    ran: list[str] = []

    async def run() -> None:
        with capture(strict=False):
            async with client(make_app(ran)) as c:
                headers = {"x-vendor-trace": value, "traceparent": value}
                assert (await c.post("/sync/pull", headers=headers)).status_code == 200

    asyncio.run(run())
    assert ran == ["/sync/pull"]


# --- rescued spans -------------------------------------------------------------------------


def _one_span(path: str, headers: dict[str, str], sampler: Any) -> Any:
    """The span of one request to ``path`` (run in its own capture)."""

    async def run() -> Any:
        with capture(sampler=sampler) as cap:
            async with client(make_app()) as c:
                await c.post(path, headers=headers)
            (span,) = cap.spans()
        return span

    return asyncio.run(run())


@pytest.mark.parametrize("traceparent", [PARENT, UNSAMPLED])
def test_a_rescued_server_span_carries_what_a_sampled_one_does(traceparent: str) -> None:
    headers = {"traceparent": traceparent, "Idempotency-Key": "k-123"}
    span = _one_span("/sync/pull?status=503", headers, ParentBased(ALWAYS_OFF))
    assert span.kind is SpanKind.SERVER
    assert span.attributes.get("syncperf.rescued", False) is (traceparent == UNSAMPLED)
    assert span.attributes["http.response.status_code"] == 503
    assert span.attributes["sync.idempotency.key_hash"] == key_hash(b"k-123")
    assert span.attributes["http.route"] == "/sync/pull"


def test_a_rescued_span_carries_the_route_the_framework_matched() -> None:
    span = _one_span("/sync/items/7", {}, ALWAYS_OFF)
    assert span.attributes["syncperf.rescued"] is True
    assert span.attributes["http.route"] == "/sync/items/{item_id}"
    assert span.attributes["http.response.status_code"] == 503


def test_a_slow_success_rescued_carries_its_status() -> None:
    async def run() -> Any:
        with capture(sampler=ALWAYS_OFF, slow_threshold=1e-9) as cap:
            async with client(make_app()) as c:
                await c.post("/sync/pull", headers={"Idempotency-Key": "k-1"})
            (span,) = cap.spans()
        return span

    span = asyncio.run(run())
    assert span.attributes["syncperf.rescued"] is True
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["sync.idempotency.key_hash"] == key_hash(b"k-1")


def test_a_sampled_out_success_hashes_no_idempotency_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from syncperf.asgi import _finish

    hashed: list[bytes] = []
    monkeypatch.setattr(_finish, "key_hash", lambda key: hashed.append(key) or "h")

    async def run() -> None:
        with capture(sampler=ALWAYS_OFF) as cap:
            async with client(make_app()) as c:
                await c.post("/sync/pull", headers={"Idempotency-Key": "k-1"})
                await c.post("/sync/pull?status=503", headers={"Idempotency-Key": "k-2"})
            assert len(cap.spans()) == 1

    asyncio.run(run())
    assert hashed == [b"k-2"]  # the rescued one only
