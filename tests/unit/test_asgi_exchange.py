"""A request through ``SyncPerfMiddleware`` on the compiled path (``_speedups``: ``enter``,
``new_exchange`` and ``open_exchange``, its start; ``finish``, its end) records exactly what
the pure-Python ``Exchange`` and ``finish_py`` record, and raises what they raise, for any way
a request can start and end: request headers (a propagated parent, an idempotency key,
``Sync-Client``, an event stream, encoded bodies, headers that are not bytes), live requests
and live predicates that raise, path entities with and without an allow-list, a span
current when the request arrives, any status, an application that raises before or after
its response, a client gone early, hostile ``scope`` fields (``http_version``, the
framework's matched route, mounts), a handler that records an error or conflicts, sampled,
dropped and rescued spans, strict mode and not, and series bound or not yet.

CI runs the unit tests with the compiled path and with ``SYNCPERF_NO_EXTENSIONS=1``: without
it, the compiled names are their Python twins and these tests compare them with themselves.
"""

from __future__ import annotations

import asyncio
import sys
import tracemalloc
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind

import syncperf
from syncperf import asgi
from syncperf._accel import speedups
from syncperf._metrics.batches import FOLD_AT
from syncperf._operation import HELD, NOOP, hold
from syncperf.asgi import SyncPerfMiddleware, _exchange, _finish, live_request
from syncperf.asgi._exchange import Exchange
from syncperf.asgi._scope import VERSIONS
from syncperf.testing import Capture, capture

ROUTES = {"/sync/{entity}/push": "push", "/sync/pull": "pull"}
METRICS = (
    "sync.operation.duration",
    "sync.conflicts",
    "sync.items",
    "sync.idempotency.hits",
    "sync.batch.size",
    "http.server.request.duration",
    "http.server.request.body.size",
    "http.server.response.body.size",
    "http.server.active_requests",
    "sync.operations.active",
    "syncperf.dropped",
    "syncperf.overhead",
)


class Boom(Exception):
    """The application's own error."""


class Halt(BaseException):
    """Not an ``Exception``: what no ``except Exception`` catches."""


class Route:
    """What a framework leaves in ``scope["route"]``: a ``path_format``, or one that raises."""

    original_route: Any = None

    def __init__(self, template: Any) -> None:
        self._template = template

    @property
    def path_format(self) -> Any:
        if isinstance(self._template, BaseException):
            raise self._template
        return self._template


class Tally:
    """What an adapter holds until the answer decides it (``HELD``): items, committed or not."""

    conflicts = 0

    def commit(self, op: Any, replayed: bool) -> None:
        op.record_items(3, entity="todo", change="created")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Does what the request's plan (``scope["plan"]``) says."""
    plan = scope["plan"]
    for _ in range(plan["read"]):  # 0: the body is never read (its size is not known)
        await receive()
    if "route" in plan:
        scope["route"] = Route(plan["route"])
    mounted = dict(plan["mounted"])  # what a mount or a router leaves in the scope
    if mounted.pop("included", False):  # FastAPI's router included with a prefix
        context = Route("/included" + str(plan.get("route")))
        context.original_route = scope.get("route")
        mounted["fastapi"] = {"effective_route_context": context}
    scope.update(mounted)
    op = syncperf.current_operation()
    if plan["held"] and op is not NOOP:
        hold(op)
        op.scratch[HELD].append(Tally())
    if plan["error"]:
        op.set_error("handler_error")
    if plan.get("junk_token") and op is not NOOP and op._series.operation != "outer":
        op._ctx_token = "junk"  # what makes the middleware's operation's end() fail
    if plan["conflicts"]:
        op.record_conflict(entity="todo", count=plan["conflicts"])
    if plan["raise"] == "before":
        raise Boom("before the response")
    if plan["status"] is not None:
        headers = [(b"idempotent-replayed", b"true")] if plan["replayed"] else []
        await send({"type": "http.response.start", "status": plan["status"], "headers": headers})
        more = plan["partial"]  # True: the response never completes
        await send({"type": "http.response.body", "body": b"x" * plan["sent"], "more_body": more})
    if plan["raise"] == "after":
        raise Boom("after the response")


def scope_of(plan: dict[str, Any]) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "method": plan["method"],
        "scheme": "http",
        "path": plan["path"],
        "raw_path": plan["path"].encode(),
        "query_string": plan["query"],
        "root_path": plan.get("root", ""),  # a server's --root-path
        "plan": plan,
        "headers": [*plan["headers"]],
    }
    length = {"body": str(len(plan["body"])), "zero": "0", "absent": None}[plan["length"]]
    if length is not None:
        scope["headers"].append((b"content-length", length.encode()))
    if plan["version"] != "absent":
        scope["http_version"] = plan["version"]
    if plan.get("app_root") is not None:  # the app is mounted (Starlette's ``app_root_path``)
        scope["app_root_path"] = plan["app_root"]
    return scope


async def request(mw: Any, plan: dict[str, Any]) -> str | None:
    """One request; the name of what it raised, or None."""
    messages = [{"type": "http.request", "body": plan["body"], "more_body": False}]
    if plan["gone"]:
        messages.insert(0, {"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    try:
        await mw(scope_of(plan), receive, send)
    except BaseException as error:  # (a Halt too)
        return type(error).__name__ + ": " + str(error)
    return None


def summary(cap: Capture) -> dict[str, Any]:
    """What was recorded, without the times (counts, sizes, values; span names, attributes)."""
    found: dict[str, Any] = {}
    for name in METRICS:
        for point in cap.points(name):
            key = (name, tuple(sorted(point.attributes.items())))
            if hasattr(point, "count"):
                times = name.endswith("duration") or name == "syncperf.overhead"
                found[key] = (point.count, None if times else point.sum)
            else:
                found[key] = point.value
    found["spans"] = sorted(
        (span.name, str(span.status.status_code), sorted(dict(span.attributes or {}).items()))
        for span in cap.spans()
    )
    return found


@contextmanager
def path(compiled: bool) -> Iterator[None]:
    """The compiled request path, or the Python one."""
    saved = _exchange.finish, _exchange.open_exchange, asgi.new_exchange, asgi.enter
    if not compiled:
        _exchange.finish, _exchange.open_exchange = _finish.finish_py, Exchange.open
        asgi.new_exchange, asgi.enter = Exchange, asgi.enter_py  # type: ignore[attr-defined]
    try:
        yield
    finally:
        _exchange.finish, _exchange.open_exchange, asgi.new_exchange, asgi.enter = saved


def live_raises(scope: Any) -> bool:
    raise RuntimeError("the live predicate failed")


LIVE = {"default": live_request, "none": None, "raises": live_raises, "always": lambda s: True}
OUTER = TracerProvider().get_tracer("outer")


def run(
    plans: list[dict[str, Any]], options: dict[str, Any], compiled: bool
) -> tuple[list[str | None], dict[str, Any]]:
    sampler = {"on": ALWAYS_ON, "off": ParentBased(ALWAYS_OFF)}[options["sampler"]]
    slow = 1e-9 if options["slow"] else 60.0
    with capture(sampler=sampler, strict=options["strict"], slow_threshold=slow) as cap:
        inner = SyncPerfMiddleware(app, routes=ROUTES) if options["nested"] else app
        mw = SyncPerfMiddleware(
            inner,
            routes=ROUTES,
            entities=options["entities"],
            replay_header="Idempotent-Replayed",
            live=LIVE[options["live"]],
            excluded_urls=options["excluded"],
            http_metrics=options["http_metrics"],
        )
        loop = asyncio.new_event_loop()
        try:
            with path(compiled), ExitStack() as outer:
                if options["outer"] == "sync":  # a sync operation measures the request
                    outer.enter_context(syncperf.sync_operation("outer"))
                elif options["outer"] is not None:  # a span current when it arrives
                    kind = {"server": SpanKind.SERVER, "internal": SpanKind.INTERNAL}
                    span = OUTER.start_as_current_span("outer", kind=kind[options["outer"]])
                    outer.enter_context(span)
                raised = [loop.run_until_complete(request(mw, plan)) for plan in plans]
        finally:
            loop.close()
        return raised, summary(cap)


# Mostly requests the compiled finish takes, so that later ones find bound series; the rest
# every other way a request can end
common = st.sampled_from([200, 201, 204, 302, 304])
statuses = st.one_of(
    common,
    common,
    common,
    st.sampled_from([400, 404, 409, 422, 500, 503, None]),
    st.integers(100, 599),
)
versions = st.one_of(
    st.sampled_from([*sorted(VERSIONS), "absent"]),
    st.sampled_from(["0.9", "", None, 2, b"1.1"]),
    st.text(max_size=3),
)
routes = st.one_of(
    st.sampled_from(["/sync/{entity}/push", "/sync/pull", "/elsewhere", "", None, 7]),
    st.sampled_from([RuntimeError("route"), Halt("halt")]),
    st.text(max_size=5),
)
HEADERS = [
    (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
    (b"traceparent", b"junk"),
    (b"idempotency-key", b"key-1"),
    (b"sync-client", b"app=todo; version=1.2.3"),
    (b"accept", b"text/event-stream"),
    (b"content-encoding", b"gzip"),
    (b"expect", b"100-continue"),
    (b"x-other", "not bytes"),
    ("x-other", b"a str name"),
]
fields = {
    "path": st.sampled_from(
        ["/sync/pull"] * 3 + ["/sync/todo/push", "/sync/junk/push", "/other", "/m/sync/pull"]
    ),
    "method": st.sampled_from(["GET", "POST", "HEAD", "PATCH", "OPTIONS"]),
    "query": st.sampled_from([b"", b"live=true"]),
    "body": st.sampled_from([b"", b"{}", b"x" * 100]),
    "read": st.integers(0, 2),
    "length": st.sampled_from(["body", "zero", "absent"]),
    "status": statuses,
    "sent": st.integers(0, 50),
    "raise": st.sampled_from([None] * 6 + ["before", "after"]),
    "gone": st.sampled_from([False] * 6 + [True]),
    "error": st.sampled_from([False] * 4 + [True]),
    "conflicts": st.sampled_from([0] * 4 + [1, 2]),
    "held": st.booleans(),
    "junk_token": st.sampled_from([False] * 8 + [True]),
    "replayed": st.sampled_from([False] * 4 + [True]),
    "partial": st.sampled_from([False] * 6 + [True]),
    "version": versions,
    "headers": st.lists(st.sampled_from(HEADERS), max_size=3),
    "route": routes,
    "root": st.sampled_from(["", "", "/m"]),
    "app_root": st.sampled_from([None, None, "", "/m"]),
    "mounted": st.sampled_from(
        [
            {},
            {},
            {"root_path": "/api"},
            {"root_path": "/api", "app_root_path": ""},
            {"app_root_path": "/api"},
            {"fastapi": {}},
            {"fastapi": {"effective_route_context": Route("/included")}},
            {"included": True},
            {"app_root_path": ""},
            {"root_path": 7},
            {"route": None},
        ]
    ),
}


@st.composite
def request_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A first request, then others that each differ from it in one field or none: most find
    the series an earlier one bound, under the same or another route."""
    first = draw(st.fixed_dictionaries(fields))
    if draw(st.booleans()):
        del first["route"]
    one = st.sampled_from(sorted(fields)).flatmap(lambda k: fields[k].map(lambda v: {k: v}))
    changes = draw(st.lists(st.one_of(st.just({}), one), max_size=5))
    return [first, *({**first, **change} for change in changes)]


options = st.fixed_dictionaries(
    {
        "sampler": st.sampled_from(["on", "off", "off"]),
        "slow": st.sampled_from([False, False, True]),
        "strict": st.booleans(),
        "entities": st.sampled_from([["todo"], ["todo"], None]),
        "live": st.sampled_from(["default", "default", "none", "raises", "always"]),
        "outer": st.sampled_from([None, None, None, "server", "internal", "sync"]),
        "excluded": st.sampled_from([None, None, "/other,/m"]),
        "http_metrics": st.sampled_from([True, True, False]),
        "nested": st.sampled_from([False, False, True]),  # a middleware inside another
    }
)


OPTIONS = {
    "sampler": "off", "slow": False, "strict": True, "entities": ["todo"], "live": "default",
    "outer": None, "excluded": None, "http_metrics": True, "nested": False,
}  # fmt: skip
PLAIN = {
    "path": "/sync/todo/push", "method": "POST", "query": b"", "body": b"{}", "read": 1,
    "length": "body",
    "status": 200, "sent": 10, "raise": None, "gone": False, "error": False, "conflicts": 0,
    "held": False, "replayed": False, "partial": False, "version": "1.1", "mounted": {},
    "headers": [],
}  # fmt: skip
PULL = {**PLAIN, "path": "/sync/pull"}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans=request_lists(), options=options)
@example(plans=[{**PULL, "replayed": True}] * 2, options=OPTIONS)  # an idempotency hit
@example(plans=[{**PULL, "junk_token": True, "route": "/framework"}] * 2, options=OPTIONS)
@example(plans=[PULL, {**PULL, "path": "/other"}], options={**OPTIONS, "nested": True})
@example(plans=[{**PULL, "headers": [(b"accept", b"text/event-stream")]}] * 2, options=OPTIONS)
@example(plans=[{**PULL, "held": True}] * 2, options=OPTIONS)  # tallies the answer commits
@example(plans=[PULL, {**PULL, "route": "/pulled"}, {**PULL, "route": "/pulled"}], options=OPTIONS)
@example(plans=[{**PULL, "route": "/x", "mounted": {"root_path": "/api"}}] * 2, options=OPTIONS)
@example(plans=[{**PULL, "route": "/x", "mounted": {"included": True}}] * 2, options=OPTIONS)
@example(
    plans=[{**PULL, "root": "/m", "route": "/x", "mounted": {"app_root_path": ""}}] * 2,
    options=OPTIONS,
)
@example(
    plans=[{**PLAIN, "path": "/other", "route": "/x", "mounted": {"root_path": "/a"}}] * 2,
    options=OPTIONS,
)
def test_the_compiled_path_records_what_the_python_one_records(
    plans: list[dict[str, Any]], options: dict[str, Any]
) -> None:
    """Several requests in one runtime: later ones find series the earlier ones bound."""
    assert run(plans, options, compiled=True) == run(plans, options, compiled=False)


@pytest.mark.skipif(speedups is None, reason="the compiled path is not built")
@pytest.mark.parametrize("sampler", ["off", "on"])
@pytest.mark.parametrize("path", ["/sync/todo/push", "/sync/pull", "/other"])
def test_a_plain_request_is_finished_without_the_python_helpers(path: str, sampler: str) -> None:
    """Past its first (which binds the series), a request that ended as most do is finished
    in C, its span traced or not: neither ``finish_py``, ``finish_operation`` nor
    ``record_http`` runs. (A path entity changes the operation's entity:
    ``finish_operation`` ends it, in ``end``.)"""
    called: list[str] = []

    def counted(name: str) -> Any:
        def call(*args: Any) -> Any:
            called.append(name)
            return getattr(_finish, name)(*args)

        return call

    namespace = {**vars(_finish)}
    namespace.update({name: counted(name) for name in ("finish_operation", "record_http")})
    assert speedups is not None
    speedups.bind_finish(namespace, counted("finish_py"), VERSIONS, FOLD_AT)
    n = FOLD_AT + 3
    try:
        raised, found = run(
            [{**PLAIN, "path": path}] * n, {**OPTIONS, "sampler": sampler}, compiled=True
        )
    finally:
        speedups.bind_finish(vars(_finish), _finish.finish_py, VERSIONS, FOLD_AT)
    assert raised == [None] * n
    ended = []
    if path == "/sync/todo/push":  # the first holds its path entity (``Bounded.hold``); the
        # others' traced spans are told the outcome here and ended by ``end`` (the entity)
        ended = ["finish_operation"] * (n if sampler == "off" else 1)
    assert sorted(called) == [*ended, "record_http"]  # the first binds the series
    (duration,) = [v for k, v in found.items() if k[0] == "http.server.request.duration"]
    assert duration == (n, None)
    (sizes,) = [v for k, v in found.items() if k[0] == "http.server.response.body.size"]
    assert sizes == (n, 10 * n)
    if path != "/other":
        (ended,) = [v for k, v in found.items() if k[0] == "sync.operation.duration"]
        assert ended == (n, None)
    spans = found["spans"]
    assert len(spans) == (n if sampler == "on" and path != "/other" else 0)
    for _, _, attributes in spans:
        assert ("http.response.status_code", 200) in attributes


@pytest.mark.skipif(speedups is None, reason="the compiled path is not built")
@pytest.mark.parametrize(
    "headers",
    [[], [HEADERS[0]], [HEADERS[3], HEADERS[4]], [(b"x-other", "not bytes")]],
    ids=["none", "traceparent", "key-client", "not-bytes"],
)
@pytest.mark.parametrize("path", ["/sync/todo/push", "/sync/pull", "/other"])
def test_a_plain_request_starts_without_the_python_exchange(
    monkeypatch: pytest.MonkeyPatch, path: str, headers: list[Any]
) -> None:
    """A request nothing else instruments is decided, made and opened in C: neither
    ``enter_py`` (but for the middleware's first request), ``Exchange.__init__`` nor
    ``Exchange.open`` runs, traced or not."""
    called: list[str] = []
    init, opened = Exchange.__init__, Exchange.open

    def counted_init(self: Exchange, *args: Any) -> None:
        called.append("__init__")
        init(self, *args)

    def counted_open(ex: Exchange, *args: Any) -> None:
        called.append("open")
        opened(ex, *args)

    def counted_enter(mw: Any, scope: Any) -> Any:
        called.append("enter_py")
        return asgi.enter_py(mw, scope)

    monkeypatch.setattr(Exchange, "__init__", counted_init)
    assert speedups is not None
    speedups.bind_exchange(vars(_exchange), Exchange, counted_open, _exchange._KNOWN)
    speedups.bind_enter(vars(asgi), counted_enter, asgi._METERED)
    try:
        for sampler in ("on", "off"):
            plan = {**PLAIN, "path": path, "headers": headers}
            raised, found = run([plan] * 3, {**OPTIONS, "sampler": sampler}, compiled=True)
            assert raised == [None] * 3
            (duration,) = [v for k, v in found.items() if k[0] == "http.server.request.duration"]
            assert duration == (3, None)
    finally:
        speedups.bind_exchange(vars(_exchange), Exchange, Exchange.open, _exchange._KNOWN)
        speedups.bind_enter(vars(asgi), asgi.enter_py, asgi._METERED)
    assert called == ["enter_py", "enter_py"]  # a middleware's first request: it looks around


@pytest.mark.skipif(speedups is None, reason="the compiled path is not built")
def test_a_request_before_any_runtime_is_decided_by_python_and_leaks_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No runtime yet (the first request of a process, or after a ``capture()`` with none
    outside it): ``enter_py`` decides, and the compiled ``enter`` gives back what it took."""
    from syncperf import _runtime

    assert speedups is not None
    mw = SyncPerfMiddleware(app, routes=ROUTES)
    monkeypatch.setattr(_runtime, "installed", None)
    speedups.bind_enter(vars(asgi), lambda mw, scope: None, asgi._METERED)
    try:
        before = sys.getrefcount(None)
        for _ in range(10_000):
            assert speedups.enter(mw, scope_of(PLAIN)) is None
        after = sys.getrefcount(None)
    finally:
        speedups.bind_enter(vars(asgi), asgi.enter_py, asgi._METERED)
    assert abs(after - before) < 100  # (a reference to None lost per call: 10,000)


class Entity(str):
    """A ``{entity}`` value that is a str subclass (a ``RouteTable`` of the application's)."""


@pytest.mark.skipif(speedups is None, reason="the compiled path is not built")
def test_an_entity_that_is_no_exact_str_is_opened_by_python() -> None:
    with capture(sampler=ParentBased(ALWAYS_OFF)) as cap:
        mw = SyncPerfMiddleware(app, routes=ROUTES, entities=["todo"])
        mw._contrib = False
        compiled, _ = mw._routes.match("/sync/todo/push")
        rt = cap.runtime
        ex = asgi.new_exchange(mw, rt, rt.state(_finish.AsgiState), scope_of(PLAIN), 1)
        _exchange.open_exchange(ex, (compiled, Entity("todo")), True)  # (no SystemError)
        assert ex.op is not None
        assert ex.op.entity == "todo"
        _finish.finish(ex, None)
    assert cap.total("sync.operation.duration") == 1


@pytest.mark.skipif(speedups is None, reason="the compiled path is not built")
def test_a_patched_helper_sends_the_request_to_the_python_finish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Any] = []
    real = _finish.http_key

    def http_key(*args: Any) -> Any:
        seen.append(args[0])
        return real(*args)

    monkeypatch.setattr(_finish, "http_key", http_key)
    raised, _ = run([PLAIN] * 3, OPTIONS, compiled=True)
    assert raised == [None] * 3
    assert len(seen) == 3


@pytest.mark.skipif(speedups is None, reason="the compiled path is not built")
def test_a_request_holds_no_reference_or_memory_afterwards() -> None:
    """The compiled start and end, a propagated parent and an idempotency key included (an
    unsampled parent: the capture keeps every span it exports)."""
    plan = {**PLAIN, "headers": [HEADERS[1], HEADERS[3]]}
    method, template = "POST", "/sync/{entity}/push"
    with capture(sampler=ParentBased(ALWAYS_OFF)):
        mw = SyncPerfMiddleware(app, routes={template: "push"}, entities=["todo"])
        loop = asyncio.new_event_loop()
        try:
            for _ in range(500):
                loop.run_until_complete(request(mw, plan))
            refs = sys.getrefcount(method), sys.getrefcount(template)
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(5000):
                loop.run_until_complete(request(mw, plan))
            grown = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            assert (sys.getrefcount(method), sys.getrefcount(template)) == refs
        finally:
            loop.close()
    assert grown < 64 * 1024
