"""What ``SyncPerfMiddleware`` reads from the ASGI scope: bounded values, never raised.

A scope is the server's, and the middlewares in front of this one (a proxy-fix middleware
copies ``X-Forwarded-Proto`` into ``scope["scheme"]``): a value of the wrong type is dropped
and counted, one outside the known set is ``_OTHER``, and the application always runs.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace

from syncperf._operation import active_operation
from syncperf.adapters import watermelondb
from syncperf.asgi import SyncPerfMiddleware, SyncRoute
from syncperf.exceptions import MeasurementError
from syncperf.testing import Capture, capture
from tests._asgi import call, http_scope

SECRET = "SECRET-TOKEN"
ROUTES: dict[str, str | SyncRoute] = {
    "/sync/pull": "pull",
    "/sync/wm": SyncRoute("pull", adapter=watermelondb.Pull()),
    "/sync/wm/push": SyncRoute("push", adapter=watermelondb.Push()),  # reads the request
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
                assert call(app, http_scope(path=path, headers=headers))
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
        call(SyncPerfMiddleware(_app, routes=ROUTES), http_scope(scheme=scheme))
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

        scope = http_scope(
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


# --- values of the wrong type ----------------------------------------------------------------

_WRONG = {
    "root_path None": {"root_path": None},
    "root_path bytes": {"root_path": b"/api"},
    "method list": {"method": ["GET"]},
    "method bytes": {"method": b"GET"},
    "scheme list": {"scheme": ["https"]},
    "scheme bytes": {"scheme": b"https"},
    "http_version list": {"http_version": ["1", "1"]},
    "path bytes": {"path": b"/sync/pull"},
    "path missing": {"path": None},
    "query str": {"query_string": "live=true"},
    "headers int": {"headers": 5},
    "header 3-tuple": {"headers": [(b"x", b"y", b"z")]},
    "header str value": {"headers": [(b"accept", "text/event-stream")]},
    "header int": {"headers": [7, (b"content-length", b"0")]},
    "idempotency key str": {"headers": [(b"idempotency-key", "k")]},
    "sync-client str": {"headers": [(b"sync-client", "pending=1")]},
    "traceparent str": {"headers": [(b"traceparent", "00-x")]},
    "content-length str": {"headers": [(b"content-length", "\u00b2")]},
}


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("fields", _WRONG.values(), ids=list(_WRONG))
def test_a_scope_value_of_the_wrong_type_is_dropped_and_the_app_runs(
    fields: dict[str, Any], strict: bool
) -> None:
    with capture(strict=strict) as cap:
        for path in ("/sync/pull", "/sync/wm"):
            app = SyncPerfMiddleware(_app, routes=ROUTES)
            scope = http_scope(**{"path": path, **fields})
            assert [m["type"] for m in call(app, scope)] == [
                "http.response.start",
                "http.response.body",
            ]
        assert cap.total("http.server.request.duration") == 2
        assert _dropped(cap, "asgi_http_metrics_failed") == 0
        assert sum(p.value for p in cap.points("http.server.active_requests")) == 0
        assert sum(p.value for p in cap.points("sync.operations.active")) == 0
        for point in cap.points("http.server.request.duration"):
            assert point.attributes["http.request.method"] in METHODS | {"_OTHER"}
            assert point.attributes["url.scheme"] in SCHEMES


@pytest.mark.parametrize(("params", "route"), [({"y": "1"}, "/mnt/x/{y}"), ([["y"]], None)])
def test_path_params_of_the_wrong_type_leave_http_route_out(params: Any, route: Any) -> None:
    async def mounted(scope: Any, receive: Any, send: Any) -> None:
        # what Starlette's router leaves in the scope, with path_params of another type
        scope.update(
            root_path="/mnt",
            path_params=params,
            route=SimpleNamespace(path_format="/x/{y}", param_convertors={"y": None}),
        )
        await _app(scope, receive, send)

    with capture() as cap:
        call(SyncPerfMiddleware(mounted), http_scope(path="/mnt/x/1"))
        (point,) = cap.points("http.server.request.duration")
        assert point.attributes.get("http.route") == route
        assert _dropped(cap, "asgi_http_metrics_failed") == 0


def test_a_value_of_the_wrong_type_is_counted_and_logged_once_without_its_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with capture(strict=False) as cap:
        app = SyncPerfMiddleware(_app, routes=ROUTES)
        for _ in range(3):
            call(app, http_scope(method=[SECRET], http_version=[SECRET]))
        assert _dropped(cap, "asgi_invalid_scope") == 6
        assert cap.total("http.server.request.duration") == 3
        (point,) = cap.points("http.server.request.duration")
        assert point.attributes["http.request.method"] == "_OTHER"
        assert "network.protocol.version" not in point.attributes
    logged = [r.getMessage() for r in caplog.records if "asgi_invalid_scope" in r.getMessage()]
    assert len(logged) == 2  # once per scope key
    assert "method" in logged[0] and "a list of length 1" in logged[0]
    assert all(SECRET not in line for line in logged)


# --- hostile scopes --------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(codec=None), max_size=20)  # lone surrogates included
_planted = st.builds(lambda a, b: a + SECRET + b, _text, _text)
_huge = st.sampled_from(["x", SECRET, "\ud800"]).map(lambda s: s * 20_000)
_planted_bytes = _planted.map(lambda s: s.encode("utf-8", "surrogatepass"))
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    _text,
    _planted,
    _huge,
    _planted_bytes,
    st.binary(max_size=20),
)
_hostile = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.tuples(inner, inner), st.dictionaries(_text, inner)
    ),
    max_leaves=6,
)
_names = st.sampled_from(
    [
        b"content-length",
        b"idempotency-key",
        b"sync-client",
        b"accept",
        b"traceparent",
        b"tracestate",
        b"baggage",
        b"x-forwarded-proto",
        b"expect",
    ]
)
_header_values = st.one_of(
    _planted_bytes,
    st.sampled_from([b"12", b"text/event-stream", b"pending=1", b"100-continue"]),
    st.just(b"\xff").map(lambda b: b * 600),
    _hostile,
)
_header = st.one_of(
    st.tuples(_names, _header_values),
    st.lists(st.one_of(_names, _header_values), min_size=0, max_size=3).map(tuple),
    _hostile,
)
_headers = st.one_of(st.lists(_header, max_size=6), _hostile)


def _field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, _hostile)


_scopes = st.fixed_dictionaries(
    {
        "method": _field(st.sampled_from(["GET", "POST", "OPTIONS", "get"])),
        "scheme": _field(st.sampled_from(["http", "https", "HTTPS"])),
        "path": _field(
            st.sampled_from(["/sync/pull", "/sync/wm", "/sync/wm/push", "/other", "/api/sync/pull"])
        ),
        # the server's configuration, part of url.path: hostile, but no planted secret
        "root_path": st.one_of(
            st.sampled_from(["", "/api"]), _hostile.filter(lambda v: SECRET not in repr(v))
        ),
        "query_string": _field(st.sampled_from([b"", b"live=true", b"last_pulled_at=1"])),
        "headers": _headers,
        "http_version": _field(st.sampled_from(["1.1", "2"])),
        "path_params": _hostile,
        "route": _hostile,
        "fastapi": _hostile,
    },
    optional={"client": _hostile, "server": _hostile},
)


_KEYS = ["method", "scheme", "path", "root_path", "query_string", "headers", "http_version"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scopes, st.sets(st.sampled_from(_KEYS), max_size=3))
def test_a_hostile_scope_never_raises_nor_exports_a_planted_secret(
    fields: dict[str, Any], missing: set[str]
) -> None:
    scope = {"type": "http", **{k: v for k, v in fields.items() if k not in missing}}
    with capture(strict=False) as cap:
        sent = call(SyncPerfMiddleware(_app, routes=ROUTES), scope)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        assert SECRET not in _exported(cap)
        assert sum(p.value for p in cap.points("http.server.active_requests")) == 0
        assert sum(p.value for p in cap.points("sync.operations.active")) == 0
        (point,) = cap.points("http.server.response.body.size")  # live: no duration
        assert point.attributes["http.request.method"] in METHODS | {"_OTHER"}
        assert point.attributes["url.scheme"] in SCHEMES
        for span in cap.spans():
            for value in (span.attributes or {}).values():
                if isinstance(value, str):  # bounded, and valid UTF-8 for every exporter
                    assert len(value) <= 1024 and value.encode("utf-8")
