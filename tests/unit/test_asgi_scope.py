"""What ``SyncPerfMiddleware`` reads from the ASGI scope: bounded values.

A scope is the server's, and the middlewares in front of this one (a proxy-fix middleware
copies ``X-Forwarded-Proto`` into ``scope["scheme"]``): a value outside the known set is
``_OTHER``, never what a client sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace

from syncperf._operation import active_operation
from syncperf.adapters import watermelondb
from syncperf.asgi import SyncPerfMiddleware, SyncRoute
from syncperf.exceptions import MeasurementError
from syncperf.testing import Capture, capture

SECRET = "SECRET-TOKEN"
ROUTES: dict[str, str | SyncRoute] = {
    "/sync/pull": "pull",
    "/sync/wm": SyncRoute("pull", adapter=watermelondb.Pull()),
}
METHODS = {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
SCHEMES = {"http", "https", "ws", "wss", "_OTHER"}


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"changes": {}, "timestamp": 1}'})


def _scope(**fields: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/sync/pull",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        **fields,
    }


def _call(app: Any, scope: dict[str, Any]) -> list[Any]:
    """One request; the messages the application sent."""
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def _exported(cap: Capture) -> str:
    return "\n".join([str(m) for m in cap.metrics()] + [s.to_json() for s in cap.spans()])


def _dropped(cap: Capture, reason: str) -> float:
    return cap.total("syncperf.dropped", {"syncperf.reason": reason})


class _ProxyFix:
    """hypercorn's ``ProxyFixMiddleware`` (legacy mode), abridged: ``X-Forwarded-Proto``
    becomes ``scope["scheme"]``, whatever the client sent."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        for name, value in scope["headers"]:
            if name == b"x-forwarded-proto":
                scope = dict(scope, scheme=value.decode("latin-1").split(",")[-1].strip())
        await self.app(scope, receive, send)


# --- url.scheme ------------------------------------------------------------------------------


def test_url_scheme_is_a_known_scheme_or_other_never_what_a_client_forwarded() -> None:
    with capture(strict=False) as cap:
        app = _ProxyFix(SyncPerfMiddleware(_app, routes=ROUTES))
        forwarded = [f"Bearer-{SECRET}-" + "x" * 5000, "https", "HTTPS"]
        forwarded += [f"junk{i}" for i in range(50)]
        for path in ("/sync/pull", "/other"):
            for proto in forwarded:
                headers = [(b"x-forwarded-proto", proto.encode())]
                assert _call(app, _scope(path=path, headers=headers))
        assert SECRET not in _exported(cap)
        points = cap.points("http.server.request.duration")
        schemes = {p.attributes["url.scheme"] for p in points}
        assert schemes == {"https", "_OTHER"}  # HTTPS is https: schemes are case-insensitive
        assert len(points) == 4  # two routes, two schemes
        active = cap.points("http.server.active_requests")
        assert {p.attributes["url.scheme"] for p in active} == {"https", "_OTHER"}
        assert {(s.attributes or {})["url.scheme"] for s in cap.spans()} == {"https", "_OTHER"}


@pytest.mark.parametrize(
    ("scheme", "reported"),
    [("http", "http"), ("https", "https"), ("wss", "wss"), (None, "http"), ("", "http")],
)
def test_a_known_or_missing_scheme_is_reported_as_asgi_defines_it(
    scheme: str | None, reported: str
) -> None:
    with capture() as cap:
        _call(SyncPerfMiddleware(_app, routes=ROUTES), _scope(scheme=scheme))
        (point,) = cap.points("http.server.request.duration")
        assert point.attributes["url.scheme"] == reported


# --- strict mode ---------------------------------------------------------------------------


async def test_strict_mode_ends_the_operation_before_raising_a_refused_query() -> None:
    traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with capture() as cap:  # strict
        app = SyncPerfMiddleware(_app, routes=ROUTES)
        sent: list[Any] = []

        async def receive() -> Any:
            return {"type": "http.request", "body": b""}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = _scope(
            path="/sync/wm",
            query_string=b"last_pulled_at=notatime",
            headers=[(b"traceparent", traceparent)],
        )
        with pytest.raises(MeasurementError):
            await app(scope, receive, send)
        assert not sent  # the application did not run
        assert active_operation() is None
        assert not trace.get_current_span().get_span_context().is_valid  # context detached
        assert [p.value for p in cap.points("sync.operations.active")] == [0]
        assert [p.value for p in cap.points("http.server.active_requests")] == [0]
        (duration,) = cap.points("sync.operation.duration")
        assert duration.attributes["sync.outcome"] == "error"
        (http,) = cap.points("http.server.request.duration")
        assert http.attributes["http.response.status_code"] == 500
        (span,) = cap.spans()
        assert f"{span.context.trace_id:032x}" == traceparent.decode()[3:35]
