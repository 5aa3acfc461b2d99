"""A client's trace headers are parsed by OpenTelemetry's propagators, whose parsers log a
malformed list-member verbatim: while ``SyncPerfMiddleware`` extracts, those records are
dropped and counted (``propagation_log_suppressed``, logged once without content), so a
secret planted in a header never reaches a log line; the application's own extraction logs
as before."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from opentelemetry import propagate
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from syncperf.asgi import SyncPerfMiddleware
from syncperf.testing import capture

SECRET = "Bearer_SECRET_TOKEN_42"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
HEADERS = {
    "traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01",
    "baggage": SECRET,  # not a key=value list-member
    "tracestate": f"ok=1,{SECRET}",  # nor a tracestate member
}
REASON = {"syncperf.reason": "propagation_log_suppressed"}


def make_app() -> Starlette:
    async def pull(request: Request) -> JSONResponse:
        return JSONResponse({"changes": []})

    app = Starlette(routes=[Route("/sync/pull", pull, methods=["POST"])])
    app.add_middleware(SyncPerfMiddleware, routes={"/sync/pull": "pull"})
    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_a_secret_in_a_malformed_trace_header_never_reaches_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with capture() as cap:
        async with client(make_app()) as c:
            for _ in range(3):
                assert (await c.post("/sync/pull", headers=HEADERS)).status_code == 200
        assert cap.total("syncperf.dropped", REASON) == 6  # a baggage and a tracestate record
        spans = cap.spans()
    assert [f"{span.context.trace_id:032x}" for span in spans] == [TRACE_ID] * 3  # continued
    assert SECRET not in caplog.text
    (line,) = [r for r in caplog.records if "propagation_log_suppressed" in r.getMessage()]
    assert line.name == "syncperf"


def test_the_applications_own_extraction_still_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with capture():
        make_app()  # the middleware is loaded
        propagate.extract({"baggage": "not-a-member"})
    assert "not-a-member" in caplog.text
