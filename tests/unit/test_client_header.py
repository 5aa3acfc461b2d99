"""The Sync-Client header: an RFC 8941 dictionary, read exactly as a reference parser does."""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

import http_sf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import syncperf
from syncperf._client_header import MAX_HEADER, parse
from syncperf.testing import Capture, capture
from tests.unit.test_hostile import SECRET, assert_exportable, lenient

EXAMPLE = 'pending=12, retries=2, last-sync-age=340, db-size=5242880, app="1.4.2"'


def test_the_documented_example_parses() -> None:
    assert parse(EXAMPLE) == {
        "pending": 12,
        "retries": 2,
        "last-sync-age": 340,
        "db-size": 5242880,
        "app": "1.4.2",
    }


@pytest.mark.parametrize(
    "value",
    [
        "a=1,",
        "a=1,,b=2",
        "A=1",
        "a=1.2345",
        "a=1234567890123456",
        'a="unterminated',
        'a="tab\there"',
        "a=(1 2",
        "a=1 b=2",
        "=1",
        "a=é",
    ],
)
def test_what_is_not_a_dictionary_is_refused_whole(value: str) -> None:
    assert parse(value) is None
    with pytest.raises(ValueError):
        http_sf.parse(value.encode("utf-8"), tltype="dictionary")


def _reference(value: str) -> dict[str, Any] | None:
    """What the reference implementation reads, mapped to what syncperf keeps."""
    try:
        parsed = http_sf.parse(value.encode("ascii"), tltype="dictionary")
    except ValueError:
        return None
    kept: dict[str, Any] = {}
    for key, (item, _params) in parsed.items():
        if type(item) is int or type(item) is str or isinstance(item, http_sf.Token):
            kept[key] = str(item) if isinstance(item, http_sf.Token) else item
        else:
            kept[key] = "other"
    return kept


def _ours(value: str) -> dict[str, Any] | None:
    members = parse(value)
    if members is None:
        return None
    return {k: v if type(v) in (int, str) else "other" for k, v in members.items()}


_keys = st.from_regex(r"[a-z*][a-z0-9_\-.*]{0,8}", fullmatch=True)
_items = st.one_of(
    st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1).map(str),
    st.decimals(min_value=-(10**11), max_value=10**11, places=2, allow_nan=False).map(
        lambda d: str(d.quantize(Decimal("0.01")))
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12).map(
        lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    ),
    st.from_regex(r"[A-Za-z*][A-Za-z0-9:/.*+-]{0,8}", fullmatch=True),
    st.sampled_from(["?0", "?1", ":aGk=:", "@1700000000", '%"caf%c3%a9"', "(1 2)", '("a" b);q=1']),
)
_params = st.lists(st.tuples(_keys, _items.filter(lambda i: not i.startswith("("))), max_size=2)
_members = st.tuples(_keys, st.one_of(st.none(), _items), _params).map(
    lambda m: m[0] + ("" if m[1] is None else "=" + m[1]) + "".join(f";{k}={v}" for k, v in m[2])
)
_dictionaries = st.lists(_members, max_size=6).flatmap(
    lambda ms: st.sampled_from([", ", ",", " ,\t"]).map(lambda sep: sep.join(ms))
)
_junk = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_dictionaries, _junk, _dictionaries.map(lambda d: d + ","), _junk.map(str.lower)))
def test_it_reads_exactly_what_the_reference_parser_reads(value: str) -> None:
    assert _ours(value) == _reference(value)


def _pull_with(header: bytes | str) -> None:
    from syncperf._client_header import read

    with syncperf.sync_operation("pull", entity="todo") as op:
        read(op._rt, header, op.observed())


def test_reported_numbers_become_histograms_by_operation_entity_and_app_version(
    syncperf_capture: Capture,
) -> None:
    _pull_with(EXAMPLE.encode())
    expected = {
        "sync.client.pending_changes": 12,
        "sync.client.retries": 2,
        "sync.client.last_sync_age": 340,
        "sync.client.db_size": 5242880,
    }
    for name, value in expected.items():
        (point,) = syncperf_capture.points(name)
        assert dict(point.attributes) == {
            "sync.operation": "pull",
            "sync.entity": "todo",
            "sync.client.app_version": "1.4.2",
        }
        assert (point.count, point.sum) == (1, value), name
    assert syncperf_capture.total("syncperf.dropped") == 0


@pytest.mark.parametrize(
    ("app", "attribute"),
    [
        ('"v2.0.1-beta+sha.5114f85"', "2.0.1"),
        ('"sk_live_51HostileSecretToken"', "_other"),
        ("build7", "_other"),
        ('"1.2.3.4.5"', "1.2.3.4"),
    ],
)
def test_only_the_numeric_part_of_an_app_version_is_exported(app: str, attribute: str) -> None:
    with capture() as cap:
        _pull_with(f"pending=1, app={app}")
        (point,) = cap.points("sync.client.pending_changes")
        assert point.attributes["sync.client.app_version"] == attribute


def test_app_versions_are_bounded() -> None:
    with capture() as cap:
        for minor in range(30):
            _pull_with(f'pending=1, app="1.{minor}"')
        versions = {
            p.attributes["sync.client.app_version"]
            for p in cap.points("sync.client.pending_changes")
        }
        assert len(versions) == 21
        assert "_other" in versions


@pytest.mark.parametrize(
    ("header", "kept", "dropped"),
    [
        ("pending=-3, retries=1", {"sync.client.retries": 1}, 1),
        ("pending=1.5, retries=1", {"sync.client.retries": 1}, 1),
        ('pending="12", db-size=?1', {}, 2),
        ("pending=12, app=?1", {"sync.client.pending_changes": 12}, 1),
        ("pending=12, future-member=(1 2);x, other", {"sync.client.pending_changes": 12}, 0),
        ("pending=12,", {}, 1),
        ("pending=" + "1" * MAX_HEADER, {}, 1),
        ('pending=12, app="caf\xe9"', {}, 1),
    ],
)
def test_a_bad_member_or_header_is_dropped_and_counted_even_in_strict_mode(
    header: str, kept: dict[str, int], dropped: int, syncperf_capture: Capture
) -> None:
    _pull_with(header.encode("latin-1"))
    for name in ("sync.client.pending_changes", "sync.client.retries", "sync.client.db_size"):
        points = syncperf_capture.points(name)
        if name in kept:
            assert [p.sum for p in points] == [kept[name]]
        else:
            assert points == []
    reason = {"syncperf.reason": "invalid_client_header"}
    assert syncperf_capture.total("syncperf.dropped", reason) == dropped


def test_a_hostile_header_costs_bounded_time() -> None:
    # The best of five parses per value: a loaded machine preempts one call for tens of
    # milliseconds now and then, while a catastrophic (backtracking) parse is slow every time.
    worst = 0.0
    for body in ("(" + " 1" * 250, "1;" + "b;" * 250, "x" * 500 + '"', '"' + "x" * 500):
        value = ("a=" + body)[:MAX_HEADER]
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            parse(value)
            best = min(best, time.perf_counter() - t)
        worst = max(worst, best)
    assert worst < 0.01


_header_text = st.one_of(
    st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=80),
    st.lists(
        st.tuples(
            st.sampled_from(["pending", "retries", "last-sync-age", "db-size", "app", "x"]),
            st.sampled_from(
                ["-1", "1.5", "?1", f'"{SECRET}"', SECRET, "(1 2)", "9" * 16, '"1.2"', "12"]
            ),
        ),
        max_size=6,
    ).map(lambda ms: ", ".join(f"{k}={v}" for k, v in ms)),
)


@settings(max_examples=200, deadline=None)
@given(_header_text)
def test_hostile_headers_never_raise_break_export_or_leak(value: str) -> None:
    from syncperf._client_header import read

    logs: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logs.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("syncperf")
    logger.addHandler(handler)
    try:
        with capture() as cap, syncperf.sync_operation("pull") as op:  # strict: still no raise
            read(op._rt, value.encode("latin-1"), op.observed())
        with lenient() as (cap, registry):
            with syncperf.sync_operation("pull") as op:
                read(op._rt, value.encode("latin-1"), op.observed())
            assert_exportable(cap, registry)
            assert SECRET not in repr(cap._reader.collect())
    finally:
        logger.removeHandler(handler)
    assert not any(SECRET in line for line in logs)


def _app(**routes: str) -> Any:
    from fastapi import FastAPI

    from syncperf.asgi import SyncPerfMiddleware

    app = FastAPI()

    @app.get("/sync/{entity}/pull")
    def pull(entity: str) -> dict[str, Any]:
        return {}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {}

    app.add_middleware(SyncPerfMiddleware, routes={"/sync/{entity}/pull": "pull"})
    return app


async def _get(app: Any, path: str, headers: list[tuple[str, str]]) -> None:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get(path, headers=headers)).status_code == 200


async def test_the_middleware_reads_the_header_on_sync_routes_only(
    syncperf_capture: Capture,
) -> None:
    app = _app()
    await _get(
        app,
        "/sync/todo/pull",
        [("Sync-Client", 'pending=4, app="3.0"'), ("Sync-Client", "retries=1")],
    )
    await _get(app, "/health", [("Sync-Client", "pending=99")])
    (pending,) = syncperf_capture.points("sync.client.pending_changes")
    assert dict(pending.attributes) == {
        "sync.operation": "pull",
        "sync.entity": "todo",
        "sync.client.app_version": "3.0",
    }
    assert (pending.count, pending.sum) == (1, 4)
    (retries,) = syncperf_capture.points("sync.client.retries")
    assert retries.sum == 1  # a second header line is the same list (RFC 9110)


def test_the_decorator_reads_the_header_from_the_request_parameter(
    syncperf_capture: Capture,
) -> None:
    from starlette.requests import Request

    @syncperf.instrument_sync("push", entity="todo")
    def push(request: Request) -> int:
        return 1

    @syncperf.instrument_sync("push", entity="note")
    def push_plain(body: dict[str, Any]) -> int:  # no request object: nothing to read
        return 1

    headers = [(b"sync-client", b"pending=7, db-size=1024")]
    push(Request({"type": "http", "headers": headers}))
    push_plain({})
    (pending,) = syncperf_capture.points("sync.client.pending_changes")
    assert dict(pending.attributes) == {"sync.operation": "push", "sync.entity": "todo"}
    assert pending.sum == 7
    assert [p.sum for p in syncperf_capture.points("sync.client.db_size")] == [1024]


def test_the_decorator_reads_every_sync_client_header_line_as_one_list(
    syncperf_capture: Capture,
) -> None:
    from starlette.requests import Request

    @syncperf.instrument_sync("push", entity="todo")
    def push(request: Request) -> int:
        return 1

    headers = [(b"sync-client", b"pending=12"), (b"sync-client", b"retries=2")]
    push(Request({"type": "http", "headers": headers}))
    assert syncperf_capture.total("sync.client.pending_changes") == 1
    (retries,) = syncperf_capture.points("sync.client.retries")
    assert retries.sum == 2  # the second line is the same list (RFC 9110), as in the middleware


async def test_many_header_lines_cost_linear_time_and_count_one_drop(
    syncperf_capture: Capture,
) -> None:
    lines = [(b"sync-client", b"pending=1")] * 50_000  # a client stuffing its request headers
    scope = {"type": "http", "method": "GET", "path": "/sync/todo/pull", "headers": lines}
    messages: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        messages.append(message)

    from syncperf.asgi import SyncPerfMiddleware

    middleware = SyncPerfMiddleware(_echo, routes={"/sync/{entity}/pull": "pull"})
    started = time.thread_time()  # CPU time: a loaded machine's preemptions are not the cost
    await middleware(scope, receive, send)
    assert time.thread_time() - started < 0.5  # quadratic: seconds
    assert messages[0]["status"] == 200
    reason = {"syncperf.reason": "invalid_client_header"}
    assert syncperf_capture.total("syncperf.dropped", reason) == 1  # one value, too long
    assert syncperf_capture.points("sync.client.pending_changes") == []
    assert syncperf_capture.total("sync.operation.duration") == 1


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _decorated_app(adapter: bool, asynchronous: bool) -> Any:
    """A sync route behind the middleware whose handler, decorated, takes the request."""
    from urllib.parse import parse_qsl

    from starlette.requests import Request

    from syncperf.adapters import watermelondb
    from syncperf.asgi import SyncPerfMiddleware, SyncRoute

    decorate = syncperf.instrument_sync("pull", adapter=watermelondb.Pull() if adapter else None)

    @decorate
    async def pull_async(request: Request, last_pulled_at: str | None = None) -> Any:
        return {"changes": {}, "timestamp": 1}

    @decorate
    def pull(request: Request, last_pulled_at: str | None = None) -> Any:
        return {"changes": {}, "timestamp": 1}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        query = dict(parse_qsl(scope["query_string"].decode()))
        if asynchronous:
            await pull_async(Request(scope), **query)
        else:
            pull(Request(scope), **query)
        await _echo(scope, receive, send)

    route = SyncRoute("pull", adapter=watermelondb.Pull()) if adapter else "pull"
    return SyncPerfMiddleware(app, routes={"/sync/pull": route})


@pytest.mark.parametrize("asynchronous", [False, True], ids=["def", "async_def"])
@pytest.mark.parametrize("adapter", [False, True], ids=["plain", "adapter"])
async def test_a_decorated_handler_behind_the_middleware_reads_the_header_no_second_time(
    syncperf_capture: Capture, adapter: bool, asynchronous: bool
) -> None:
    app = _decorated_app(adapter, asynchronous)
    await _get(app, "/sync/pull", [("Sync-Client", "pending=-1, retries=2")])
    assert syncperf_capture.total("sync.operation.duration") == 1
    reason = {"syncperf.reason": "invalid_client_header"}
    assert syncperf_capture.total("syncperf.dropped", reason) == 1
    (retries,) = syncperf_capture.points("sync.client.retries")
    assert (retries.count, retries.sum) == (1, 2)


def test_a_decorated_handler_joining_a_block_that_read_no_header_reads_it(
    syncperf_capture: Capture,
) -> None:
    from starlette.requests import Request

    @syncperf.instrument_sync("push")
    def push(request: Request) -> int:
        return 1

    @syncperf.instrument_sync("push")
    def outer(request: Request) -> int:  # it reads the header: the inner one reads it no more
        return push(request)

    request = Request({"type": "http", "headers": [(b"sync-client", b"pending=-1, retries=2")]})
    with syncperf.sync_operation("push", entity="todo"):
        push(request)
    outer(request)
    reason = {"syncperf.reason": "invalid_client_header"}
    assert syncperf_capture.total("syncperf.dropped", reason) == 2  # once per operation
    retries = syncperf_capture.points("sync.client.retries")  # by entity: todo, then none
    assert [(p.count, p.sum) for p in retries] == [(1, 2), (1, 2)]
