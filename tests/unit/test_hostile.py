"""Hostile input: nothing a client, a handler or a database sends breaks export or escapes.

Every test here failed before the value gate (``syncperf._gate``): a value that one export
could not encode, that raised in ``repr()``/``hash()``, or that quoted request data in a log.
After every hostile call the tests check the invariants of the first promise: no exception
escaped, OTLP encoding and Prometheus exposition still succeed, no exported label is longer
than the bound, and the exact totals of the valid traffic next to it are unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from prometheus_client import CollectorRegistry, generate_latest

import syncperf
from syncperf.adapters import couchdb, powersync, replicache, rxdb, watermelondb, zero
from syncperf.exceptions import MeasurementError
from syncperf.testing import Capture, capture

SECRET = "sk_live_51HostileSecretToken"
MAX_LABEL = 128


class Hostile:
    """Every dunder syncperf might be tempted to call raises."""

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ " + SECRET)

    __str__ = __repr__

    def __hash__(self) -> int:
        raise RuntimeError("__hash__")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("__eq__")

    def __len__(self) -> int:
        raise RuntimeError("__len__")

    def __bool__(self) -> bool:
        raise RuntimeError("__bool__")

    def __index__(self) -> int:
        raise RuntimeError("__index__")

    __int__ = __float__ = __index__  # type: ignore[assignment]


class HostileStr(str):
    def __repr__(self) -> str:
        raise RuntimeError("__repr__")

    def __hash__(self) -> int:
        raise RuntimeError("__hash__")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("__eq__")

    def __str__(self) -> str:
        raise RuntimeError("__str__")


class HostileInt(int):
    def __repr__(self) -> str:
        raise RuntimeError("__repr__")

    def __hash__(self) -> int:
        raise RuntimeError("__hash__")


class CountingList(list[Any]):
    """A list that counts how often syncperf renders it."""

    reprs = 0

    def __repr__(self) -> str:
        CountingList.reprs += 1
        return super().__repr__()


HOSTILE = [
    2**53,
    2**63,
    -(2**63) - 1,
    10**400,
    -1,
    float("nan"),
    float("inf"),
    1e308,
    "\ud800",
    "a\x00b",
    "x" * 100_000,
    "",
    SECRET + "\ud83d",
    Hostile(),
    HostileStr("note"),
    HostileInt(3),
    True,
    b"bytes",
    ["list"],
    {"a": 1},
    None,
]

hostile = (
    st.sampled_from(range(len(HOSTILE))).map(HOSTILE.__getitem__)  # no hashing of the values
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=200)
    | st.text(min_size=129, max_size=300)
    | st.lists(st.integers(), max_size=3)
)


@contextmanager
def lenient() -> Iterator[tuple[Capture, CollectorRegistry]]:
    """A capture that drops misuse (as in production) and also feeds Prometheus."""
    registry = CollectorRegistry()
    with capture(strict=False, prometheus=registry) as cap:
        yield cap, registry


def assert_exportable(cap: Capture, registry: CollectorRegistry) -> None:
    """OTLP and Prometheus still encode everything, and no label exceeds the bound."""
    data = cap._reader.collect()
    encode_metrics(data).SerializeToString()
    encode_spans(cap.spans()).SerializeToString()
    text = generate_latest(registry).decode("utf-8")
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    for value in (point.attributes or {}).values():
                        if isinstance(value, str):
                            assert len(value) <= MAX_LABEL, (metric.name, len(value))
    assert SECRET not in text


def valid_push(n: int = 3) -> None:
    with syncperf.sync_operation("push", entity="todo") as op:
        op.set_batch_size(n)
        op.record_items(n, change="created")
        op.record_conflict(count=1, resolution="server_wins")


def assert_valid_totals(cap: Capture, pushes: int, n: int = 3) -> None:
    assert cap.total("sync.items", {"sync.entity": "todo", "sync.change": "created"}) == n * pushes
    assert cap.total("sync.conflicts", {"sync.entity": "todo"}) == pushes
    conflicted = {"sync.entity": "todo", "sync.outcome": "conflict"}
    assert cap.total("sync.operation.duration", conflicted) == pushes


# --- the cases of the report, one by one ---------------------------------------------------


@pytest.mark.parametrize("n", [2**53, 2**63, 10**400, -1, 1.5, float("nan"), True])
def test_an_unencodable_count_is_dropped_and_export_keeps_working(n: Any) -> None:
    with lenient() as (cap, registry):
        with syncperf.sync_operation("push", entity="todo") as op:
            op.record_items(n)
            op.record_conflict(count=n)
            op.set_batch_size(n)
        valid_push()
        assert_exportable(cap, registry)
        assert_valid_totals(cap, pushes=1)
        assert cap.total("syncperf.dropped") == 3


def test_counts_summing_past_two_to_the_53_within_one_operation_are_dropped() -> None:
    with lenient() as (cap, registry):
        with syncperf.sync_operation("push", entity="todo") as op:
            for _ in range(3):
                op.record_items(2**53 - 1)
        assert_exportable(cap, registry)
        assert cap.total("sync.items") == 2**53 - 1
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_count"}) == 2


def test_a_cumulative_counter_past_int64_is_exported_as_a_double() -> None:
    with lenient() as (cap, registry):
        for _ in range(1100):
            with syncperf.sync_operation("push", entity="todo") as op:
                op.record_items(2**53 - 1)
        assert_exportable(cap, registry)
        assert cap.total("sync.items") == pytest.approx(1100 * (2**53 - 1))


@pytest.mark.parametrize("name", ["\ud800", "a\x00b", "line\nbreak", "x" * 129, ""])
def test_an_entity_that_no_exporter_can_carry_is_dropped_not_exported(name: str) -> None:
    with lenient() as (cap, registry):
        with syncperf.sync_operation("push") as op:
            op.set_entity(name)
            op.record_items(1, entity=name)
            op.record_conflict(entity=name)
        valid_push()
        assert_exportable(cap, registry)
        assert_valid_totals(cap, pushes=1)
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_entity"}) == 3


def test_a_lone_surrogate_table_in_a_watermelondb_push_cannot_break_the_scrape() -> None:
    push = watermelondb.Push(count_existing=lambda table, ids: 0)
    body = {"\ud800": {"created": [{"id": "1"}], "updated": [], "deleted": []}}
    with lenient() as (cap, registry):
        with syncperf.sync_operation("push") as op:
            push.on_request(op, body)
        with syncperf.sync_operation("push") as op:
            push.on_request(op, {"\udfff": {"created": [{"id": "2"}]}})
        valid_push()
        assert_exportable(cap, registry)
        assert_valid_totals(cap, pushes=1)
        entities = {p.attributes.get("sync.entity") for p in cap.points("sync.items")}
        assert entities == {"todo"}


def test_a_hundred_pushes_naming_100_kb_tables_keep_the_scrape_small() -> None:
    push = watermelondb.Push(count_existing=lambda table, ids: 0)
    with lenient() as (cap, registry):
        for i in range(100):
            table = f"{i}" + "t" * 100_000
            with syncperf.sync_operation("push") as op:
                push.on_request(op, {table: {"created": [{"id": "1"}]}})
        assert_exportable(cap, registry)
        assert len(generate_latest(registry)) < 100_000
        assert len(encode_metrics(cap._reader.collect()).SerializeToString()) < 100_000


@pytest.mark.parametrize(
    "call",
    [
        lambda op, v: op.set_batch_size(v),
        lambda op, v: op.record_items(v),
        lambda op, v: op.record_items(1, entity=v),
        lambda op, v: op.record_items(1, change=v),
        lambda op, v: op.record_conflict(count=v),
        lambda op, v: op.record_conflict(entity=v),
        lambda op, v: op.record_conflict(resolution=v),
        lambda op, v: op.set_entity(v),
        lambda op, v: op.set_error(v),
        lambda op, v: op.set_attribute("k", v),
        lambda op, v: op.set_attribute(v, 1),
    ],
)
@pytest.mark.parametrize(
    "value", [Hostile(), HostileStr("note"), HostileInt(2)], ids=["object", "str", "int"]
)
def test_objects_whose_dunders_raise_cannot_escape_into_the_handler(call: Any, value: Any) -> None:
    with lenient() as (cap, registry):
        with syncperf.sync_operation("push", entity="note") as op:
            call(op, value)
        with syncperf.sync_operation("push", entity=value):
            pass
        valid_push()
        assert_exportable(cap, registry)
        assert_valid_totals(cap, pushes=1)


def test_a_str_subclass_such_as_a_str_enum_is_accepted_as_its_plain_value() -> None:
    class Change(str):
        pass

    with capture() as cap:
        with syncperf.sync_operation("push", entity=Change("todo")) as op:
            op.record_items(2, entity=Change("note"), change=Change("created"))
        (point,) = cap.points("sync.items")
        assert dict(point.attributes) == {
            "sync.operation": "push",
            "sync.entity": "note",
            "sync.change": "created",
        }
        assert type(point.attributes["sync.entity"]) is str


def test_strict_mode_raises_a_measurement_error_not_the_hostile_objects_error() -> None:
    with (
        capture(),
        pytest.raises(MeasurementError) as raised,
        syncperf.sync_operation("push") as op,
    ):
        op.set_batch_size(Hostile())
    assert raised.value.reason == "invalid_batch_size"
    assert "Hostile" in str(raised.value)


def test_a_rejected_extractor_value_is_never_rendered() -> None:
    @syncperf.instrument_sync("push", entity="todo", batch_size=lambda body: body["changes"])
    def push(body: dict[str, Any]) -> None:
        pass

    body = {"changes": CountingList(range(10_000))}
    with lenient() as (cap, _):
        for _ in range(50):
            push(body)
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_batch_size"}) == 50
    assert CountingList.reprs == 0


def test_end_is_whole_when_one_recorded_value_was_rejected() -> None:
    with lenient() as (cap, registry):
        with syncperf.sync_operation("push", entity="todo") as op:
            op.set_batch_size(10**400)
            op.record_items(4, change="updated")
            op.record_conflict(count=2)
            op.record_idempotency_hit()
        assert_exportable(cap, registry)
        assert cap.points("sync.batch.size") == []
        assert cap.total("sync.items", {"sync.change": "updated"}) == 4
        assert cap.total("sync.conflicts") == 2
        assert cap.total("sync.idempotency.hits") == 1
        assert cap.total("sync.operation.duration", {"sync.outcome": "conflict"}) == 1
        assert cap.total("syncperf.overhead", {"syncperf.component": "operation"}) == 1
        assert cap.total("syncperf.dropped") == 1


def test_a_non_finite_gauge_value_drops_that_gauge_not_the_collection() -> None:
    with lenient() as (cap, registry):
        cap.runtime.registry.gauge("test.gauge", "1", "", lambda: [({}, float("nan"))])
        cap.runtime.registry.gauge("test.huge", "1", "", lambda: [({}, 10**400)])
        valid_push()
        assert_exportable(cap, registry)
        assert_valid_totals(cap, pushes=1)
        assert cap.total("syncperf.dropped", {"syncperf.reason": "gauge_callback_failed"}) >= 2


def test_a_gauge_attribute_that_cannot_be_exported_drops_that_gauge_not_the_scrape() -> None:
    odd = [{"sync.entity": "\ud800"}, {"sync.entity": "x" * 300}, {"": "a"}, {"k": 1.5}]
    with lenient() as (cap, registry):
        for n, attrs in enumerate(odd):
            cap.runtime.registry.gauge(f"test.odd{n}", "1", "", lambda a=attrs: [(a, 1)])
        valid_push()
        assert_exportable(cap, registry)
        assert_valid_totals(cap, pushes=1)
        assert cap.total("syncperf.dropped", {"syncperf.reason": "gauge_callback_failed"}) >= 4


def test_outbox_lag_from_a_hostile_created_at_is_dropped() -> None:
    from syncperf.outbox import Outbox

    outbox = Outbox("orders")
    with lenient() as (cap, registry):
        with outbox.publish(count=4) as batch:
            for created_at in (float("-inf"), float("nan"), 10**400, Hostile()):
                batch.published(created_at)
        assert_exportable(cap, registry)
        assert cap.total("outbox.messages", {"outbox.event": "published"}) == 4
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_created_at"}) == 4


class _ThirtyHours(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=30)


class _Raising(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError(SECRET)


class _NaT(datetime):
    """Like pandas' NaT: a datetime whose timestamp() raises ValueError."""

    def timestamp(self) -> float:
        raise ValueError("NaTType does not support timestamp")


class _NaNStamp(datetime):
    """A datetime whose timestamp() is NaN: no lag (it read as 0 before)."""

    def timestamp(self) -> float:
        return float("nan")


@pytest.mark.parametrize(
    "created_at",
    [
        datetime(2024, 1, 1, tzinfo=_ThirtyHours()),
        datetime(2024, 1, 1, tzinfo=_Raising()),
        _NaT(2024, 1, 1, tzinfo=timezone.utc),
        _NaNStamp(2024, 1, 1, tzinfo=timezone.utc),
    ],
    ids=["utcoffset-30h", "utcoffset-raises", "nat", "nan-timestamp"],
)
def test_a_created_at_whose_timestamp_fails_is_dropped_not_raised(
    created_at: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    from syncperf.outbox import Outbox

    outbox = Outbox("orders")
    with lenient() as (cap, registry):
        with outbox.publish(count=1) as batch:
            batch.published(created_at)
        assert_exportable(cap, registry)
        assert cap.total("outbox.messages", {"outbox.event": "published"}) == 1
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_created_at"}) == 1
        assert cap.points("outbox.lag") == []
    assert SECRET not in caplog.text


# --- log lines never quote content -------------------------------------------------------


def test_log_lines_describe_bad_data_by_type_and_size_never_by_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @syncperf.instrument_sync("push", entity="todo", items=lambda body: body[SECRET])
    def push(body: dict[str, Any]) -> None:
        pass

    caplog.set_level(logging.DEBUG, logger="syncperf")
    with lenient():
        push({})  # KeyError quoting the secret
        with syncperf.sync_operation("push") as op:
            op.set_entity(SECRET + "\x00")
            op.set_error(SECRET * 10)
            op.set_batch_size(SECRET)  # type: ignore[arg-type]
            op.record_items(1, change=SECRET)  # type: ignore[arg-type]
            zero.Push().on_request(
                op, {"mutations": [{"name": "_zero_crud", "args": [{"ops": [{"op": SECRET}]}]}]}
            )
            powersync.Upload().on_request(op, {"batch": [{"op": SECRET, "table": "t", "id": "1"}]})
    assert caplog.records
    assert SECRET not in caplog.text


# --- a server's error text is exported only as a protocol token -------------------------

ERROR_TEXT = f"duplicate key value violates unique constraint: Key (email)=(alice@x.org) {SECRET}"


def _refusals(error: Any) -> list[tuple[str, Any, Any, Any, str]]:
    """``(operation, adapter, request, response, span attribute)`` with ``error`` in the body."""
    zero_push = {"clientGroupID": "g", "mutations": []}
    return [
        ("pull", replicache.Pull(), {"cookie": 1}, {"error": error}, "sync.replicache.error"),
        ("push", zero.Push(), zero_push, {"error": error}, "sync.zero.push_error"),
        ("push", zero.Push(), zero_push, ["error", {"kind": error}], "sync.zero.push_error"),
        ("push", couchdb.BulkDocs(), {"docs": []}, {"error": error}, "sync.couchdb.error"),
    ]


KNOWN_ERRORS = {
    "sync.replicache.error": {"ClientStateNotFound", "VersionNotSupported"},
    "sync.zero.push_error": {"unsupportedPushVersion", "InvalidPush", "Unauthorized"},
    "sync.couchdb.error": {"forbidden", "unauthorized", "bad_request"},
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    error=st.sampled_from([ERROR_TEXT, SECRET, "ClientStateNotFound", "InvalidPush", "forbidden"])
    | st.text(max_size=40)
    | st.integers()
)
def test_an_error_text_in_an_answer_is_exported_only_as_a_known_token(error: Any) -> None:
    for operation, adapter, request, response, key in _refusals(error):
        lines = _LogLines()
        logging.getLogger("syncperf").addHandler(lines)
        try:
            with lenient() as (cap, registry):
                with syncperf.sync_operation(operation) as op:
                    adapter.on_request(op, request)
                    adapter.on_response(op, response)
                assert_exportable(cap, registry)
                (span,) = cap.spans()
                exported = encode_spans(cap.spans()).SerializeToString()
                exported += encode_metrics(cap._reader.collect()).SerializeToString()
                exported += generate_latest(registry)
        finally:
            logging.getLogger("syncperf").removeHandler(lines)
        value = (span.attributes or {}).get(key)
        assert value is None or value == "_other" or value in KNOWN_ERRORS[key] | {error}
        if error in (ERROR_TEXT, SECRET):
            assert value == "_other"
        for planted in (SECRET, "alice@x.org"):
            assert planted.encode() not in exported
            assert not any(planted in line for line in lines.lines)


class _LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


# --- fuzzing every entry point -----------------------------------------------------------

CALLS = [
    lambda op, v: op.set_batch_size(v),
    lambda op, v: op.record_items(v),
    lambda op, v: op.record_items(1, entity=v),
    lambda op, v: op.record_items(1, change=v),
    lambda op, v: op.record_conflict(count=v),
    lambda op, v: op.record_conflict(entity=v, resolution=v),
    lambda op, v: op.set_entity(v),
    lambda op, v: op.set_error(v),
    lambda op, v: op.set_attribute("k", v),
    lambda op, v: op.set_attribute(v, v),
]


def test_fuzzed_recorder_calls_never_escape_and_never_break_export() -> None:
    with lenient() as (cap, registry):
        pushes = 0

        @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            calls=st.lists(st.tuples(st.sampled_from(range(len(CALLS))), hostile), max_size=6),
            entity=hostile,
        )
        def example(calls: list[tuple[int, Any]], entity: Any) -> None:
            nonlocal pushes
            with syncperf.sync_operation("push", entity=entity) as op:
                for index, value in calls:
                    CALLS[index](op, value)
            valid_push()
            pushes += 1
            assert_exportable(cap, registry)

        example()
        assert_valid_totals(cap, pushes=pushes)


def test_fuzzed_extractors_never_escape_into_the_handler() -> None:
    with lenient() as (cap, registry):
        calls = 0

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(value=hostile, other=hostile)
        def example(value: Any, other: Any) -> None:
            nonlocal calls

            @syncperf.instrument_sync(
                "push",
                entity=lambda body: body["e"],
                batch_size=lambda body: body["v"],
                items=lambda body: {body["e"]: body["v"]},
                conflicts=lambda result: result,
                idempotency_hit=lambda result: result,
            )
            def push(body: dict[str, Any]) -> Any:
                return other

            assert push({"e": value, "v": value}) is other
            calls += 1
            assert_exportable(cap, registry)

        example()
        assert cap.total("sync.operation.duration") == calls


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["\ud800", "x" * 5000, "todo", "put", "PUT", "created", "a\x00"])
)
json_like = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(json_scalars.filter(lambda v: isinstance(v, str)), children, max_size=4)
    ),
    max_leaves=20,
)
ADAPTERS: dict[str, Any] = {
    "watermelondb.Push": lambda: watermelondb.Push(count_existing=lambda table, ids: 0),
    "watermelondb.Pull": watermelondb.Pull,
    "rxdb.Push": rxdb.Push,
    "rxdb.Pull": rxdb.Pull,
    "couchdb.BulkDocs": couchdb.BulkDocs,
    "couchdb.Changes": couchdb.Changes,
    "powersync.Upload": powersync.Upload,
    "zero.Push": zero.Push,
}


def test_fuzzed_payloads_with_hostile_names_never_break_export() -> None:
    with lenient() as (cap, registry):

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            name=st.sampled_from(sorted(ADAPTERS)),
            table=json_scalars,
            request=json_like,
            response=json_like,
        )
        def example(name: str, table: Any, request: Any, response: Any) -> None:
            adapter = ADAPTERS[name]()
            shaped = {
                table if isinstance(table, str) else "t": {"created": [{"id": "1", "type": table}]}
            }
            with syncperf.sync_operation("push") as op:
                adapter.on_request(op, request)
                adapter.on_request(op, shaped)
                adapter.on_response(op, response)
            assert_exportable(cap, registry)

        example()


# --- names from outside: the middleware ----------------------------------------------------


def entity_app(**options: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from syncperf.asgi import SyncPerfMiddleware

    async def push(request: Any) -> Any:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/sync/{entity}/push", push, methods=["POST"])])
    return SyncPerfMiddleware(app, routes={"/sync/{entity}/push": "push"}, **options)


def post(app: Any, *paths: str) -> None:
    import asyncio

    import httpx

    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for path in paths:
                assert (await client.post(path, json={})).status_code == 200

    asyncio.run(go())


def test_a_path_parameter_value_never_reaches_url_path_on_the_span() -> None:
    with capture() as cap:
        post(entity_app(entities=["todo"]), "/sync/alice%40example.com/push")
        (span,) = cap.spans()
        labels = repr([p.attributes for p in cap.points("sync.operation.duration")])
    assert span.attributes["url.path"] == "/sync/{entity}/push"
    assert span.attributes["sync.entity"] == "_other"
    assert "alice" not in repr(dict(span.attributes)) + labels


def test_the_middleware_entities_option_keeps_path_values_to_the_allow_list() -> None:
    with capture() as cap:
        post(entity_app(entities=["todo"]), "/sync/todo/push", "/sync/whatever/push")
        entities = {p.attributes["sync.entity"] for p in cap.points("sync.operation.duration")}
    assert entities == {"todo", "_other"}


def test_path_entities_without_an_allow_list_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    with capture():
        post(entity_app(), "/sync/a/push", "/sync/b/push")
    warnings = [r for r in caplog.records if "allow-list" in r.getMessage()]
    assert len(warnings) == 1
    assert "SYNCPERF_ENTITIES" in warnings[0].getMessage()


def test_path_entities_with_a_configured_allow_list_do_not_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with capture(entities={"a"}) as cap:
        post(entity_app(), "/sync/a/push", "/sync/b/push")
        entities = {p.attributes["sync.entity"] for p in cap.points("sync.operation.duration")}
    assert entities == {"a", "_other"}
    assert not [r for r in caplog.records if "allow-list" in r.getMessage()]


def test_payload_entities_without_an_allow_list_warn_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    push = watermelondb.Push(count_existing=lambda table, ids: 0)
    with capture():
        for table in ("a", "b"):
            with syncperf.sync_operation("push") as op:
                push.on_request(op, {table: {"created": [{"id": "1"}]}})
    assert len([r for r in caplog.records if "allow-list" in r.getMessage()]) == 1


def test_fuzzed_paths_never_break_the_middleware_or_export() -> None:
    app = entity_app()
    with lenient() as (cap, registry):

        @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
        @given(  # "." and ".." are path steps the client resolves, not segments
            segment=st.text(min_size=1, max_size=300).filter(
                lambda s: "/" not in s and s not in (".", "..")
            )
        )
        def example(segment: str) -> None:
            from urllib.parse import quote

            post(app, "/sync/" + quote(segment.encode("utf-8", "surrogatepass"), safe="") + "/push")
            assert_exportable(cap, registry)

        example()


def test_attributes_the_application_sets_on_the_sync_span_stay_encodable() -> None:
    from opentelemetry import trace

    with lenient() as (cap, registry):
        with syncperf.sync_operation("push", entity="todo") as op:
            span = trace.get_current_span()
            span.set_attribute("app.name", "\ud800" + "x" * 5000)
            span.set_attribute("app.count", 2**70)
            span.set_attribute("app.list", ["a", "\udfff"])
            op.set_attribute("app.other", "\ud83d")
            span.add_event("app.event", {"text": "\ud800", "n": 2**70, "ok": 1})
        assert_exportable(cap, registry)
        (exported,) = cap.spans()
    attrs = dict(exported.attributes or {})
    assert "app.count" not in attrs
    assert len(attrs["app.name"]) == 1024
    assert attrs["app.list"] == ("a", "?")
    assert attrs["app.other"] == "?"


def adapter_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from syncperf.asgi import SyncPerfMiddleware, SyncRoute

    async def push(request: Any) -> Any:
        await request.body()
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/sync/push", push, methods=["POST"])])
    route = SyncRoute("push", adapter=watermelondb.Push(count_existing=lambda table, ids: 0))
    return SyncPerfMiddleware(app, routes={"/sync/push": route}, idempotency_ttl=60)


header_values = st.binary(max_size=300).filter(lambda b: b"\r" not in b and b"\n" not in b)


def test_fuzzed_headers_and_bodies_never_break_the_middleware_or_export() -> None:
    import asyncio

    app = adapter_app()
    with lenient() as (cap, registry):
        requests = 0

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            body=json_like.map(lambda v: {"changes": v}) | st.binary(max_size=2000).map(bytes),
            headers=st.lists(
                st.tuples(
                    st.sampled_from(
                        [
                            b"idempotency-key",
                            b"traceparent",
                            b"tracestate",
                            b"baggage",
                            b"content-length",
                            b"accept",
                            b"x-any",
                        ]
                    ),
                    header_values,
                ),
                max_size=6,
            ),
        )
        def example(body: Any, headers: list[tuple[bytes, bytes]]) -> None:
            import json

            nonlocal requests
            raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8", "replace")
            sent: list[Any] = []

            async def receive() -> Any:
                return {"type": "http.request", "body": raw, "more_body": False}

            async def send(message: Any) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/sync/push",
                "raw_path": b"/sync/push",
                "root_path": "",
                "query_string": b"",
                "headers": headers,
                "server": ("t", 80),
                "client": ("c", 1),
            }
            asyncio.run(app(scope, receive, send))
            requests += 1
            assert sent[0]["status"] == 200
            assert_exportable(cap, registry)

        example()
        assert cap.total("sync.operation.duration") == requests


def test_fuzzed_outbox_calls_never_escape_and_never_break_export() -> None:
    from syncperf.outbox import Outbox

    outbox = Outbox("orders")
    with lenient() as (cap, registry):
        published = 0

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(a=hostile, b=hostile, c=hostile)
        def example(a: Any, b: Any, c: Any) -> None:
            nonlocal published
            outbox.enqueue(a)
            outbox.enqueue(a, session=b)
            with outbox.publish(count=a) as batch:
                batch.published(a, traceparent=b, attempt=c)
                batch.published(1.0e9)
                batch.failed(a, traceparent=b, attempt=c, dead_letter=c)
                batch.dead_lettered(a)
            published += 1
            assert_exportable(cap, registry)

        example()
        assert cap.total("outbox.messages", {"outbox.event": "published"}) >= published


@pytest.mark.parametrize("table", ['"' + "t" * 300 + '"', '"a\ud800"', '"a\x01b"'])
def test_a_table_name_no_exporter_can_carry_is_no_db_collection_name(table: str) -> None:
    from syncperf._sql import classify

    classified = classify(f"SELECT * FROM {table} WHERE id = 1")
    assert classified.operation == "SELECT"
    assert classified.collection is None


# --- found by review, 2026-12-02 -------------------------------------------------------------


class RaisingStatus:
    """A returned object whose ``status_code`` raises (a detached ORM object's lazy load)."""

    @property
    def status_code(self) -> int:
        raise RuntimeError("lazy load " + SECRET)


class RaisingStatusError(Exception):
    @property
    def status_code(self) -> int:
        raise RuntimeError("lazy load " + SECRET)


def test_a_result_or_exception_whose_status_code_raises_still_ends_its_operation() -> None:
    with lenient() as (cap, registry):

        @syncperf.instrument_sync("push", entity="todo")
        def push() -> Any:
            return RaisingStatus()

        @syncperf.instrument_sync("push", entity="todo")
        async def push_async() -> Any:
            return RaisingStatus()

        @syncperf.instrument_sync("push", entity="todo")
        def fail() -> Any:
            raise RaisingStatusError()

        import asyncio

        assert isinstance(push(), RaisingStatus)
        assert isinstance(asyncio.run(push_async()), RaisingStatus)
        with pytest.raises(RaisingStatusError):
            fail()
        assert not syncperf.current_operation().recording  # nothing left open
        valid_push()
        assert_exportable(cap, registry)
        assert_valid_totals(cap, pushes=1)
        success = {"sync.entity": "todo", "sync.outcome": "success"}
        assert cap.total("sync.operation.duration", success) == 2
        error = {"sync.outcome": "error", "error.type": f"{__name__}.RaisingStatusError"}
        assert cap.total("sync.operation.duration", error) == 1
        assert cap.total("sync.operations.active") == 0


@pytest.mark.parametrize("name", ["\ud800", "a\x00b", "line\nbreak", "x" * 129])
def test_a_sync_operation_entity_no_exporter_can_carry_is_dropped_not_exported(name: str) -> None:
    with lenient() as (cap, registry):
        with syncperf.sync_operation("push", entity=name) as op:
            op.record_items(1)
        assert_exportable(cap, registry)
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_entity"}) == 1
        (span,) = cap.spans()
        assert "sync.entity" not in (span.attributes or {})
        assert cap.total("sync.items") == 1


@pytest.mark.parametrize("at", [10**400, 10**309, 2**64, -(10**400)])
@pytest.mark.parametrize("method", ["record_checkpoint", "record_change_time"])
def test_a_client_time_as_a_huge_int_is_dropped_not_raised(at: int, method: str) -> None:
    with lenient() as (cap, registry):
        with syncperf.sync_operation("pull", entity="todo") as op:
            getattr(op, method)(at)
        assert_exportable(cap, registry)
        dropped = cap.total("syncperf.dropped", {"syncperf.reason": "checkpoint_in_future"})
        assert dropped == (1 if at > 0 else 0)  # a time before the epoch: never synced
        assert cap.metric("sync.pull.staleness") is None
        assert cap.metric("sync.push.change_age") is None


@pytest.mark.parametrize(
    "value",
    [
        b"s" * 1_000_000,
        {f"k{i}": "v" * 2000 for i in range(10_000)},
        ["x" * 5000] * 1000,
        [[["x" * 5000] * 200] * 200] * 200,
        {"a": {"b": {"c": ["x" * 5000] * 200}}},
    ],
    ids=["megabyte bytes", "ten thousand keys", "a thousand strings", "nested lists", "nested"],
)
@pytest.mark.parametrize("setter", ["recorder", "span"])
def test_a_huge_span_attribute_is_cut_to_its_bounds(value: Any, setter: str) -> None:
    from opentelemetry import trace

    with lenient() as (cap, registry):
        with syncperf.sync_operation("push", entity="todo") as op:
            if setter == "recorder":
                op.set_attribute("app.value", value)
            else:
                trace.get_current_span().set_attribute("app.value", value)
        assert_exportable(cap, registry)
        (span,) = cap.spans()
    assert len(encode_spans([span]).SerializeToString()) < 300_000


def test_item_counts_summing_past_two_to_the_53_across_changes_are_dropped() -> None:
    with lenient() as (cap, registry):
        with syncperf.sync_operation("push", entity="todo") as op:
            for change in ("created", "updated", "deleted", None):
                op.record_items(2**53 - 1, change=change)
            op.record_items(2**53 - 1, entity="other")
        assert_exportable(cap, registry)
        assert cap.total("sync.items") == 2**53 - 1
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_count"}) == 4
        (span,) = cap.spans()
        assert (span.attributes or {})["sync.items"] < 2**53


@pytest.mark.parametrize("length", [b"9" * 5000, b"9" * 401, b"9" * 31, b"-5", b"1_0", b" 12"])
def test_a_content_length_that_is_no_size_is_ignored(length: bytes) -> None:
    import asyncio

    from syncperf.asgi import SyncPerfMiddleware, SyncRoute

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    wrapped = SyncPerfMiddleware(app, routes={"/sync/push": SyncRoute("push")})
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/sync/push",
        "raw_path": b"/sync/push",
        "query_string": b"",
        "headers": [(b"content-length", length), (b"content-type", b"application/json")],
        "scheme": "http",
        "server": ("t", 80),
        "http_version": "1.1",
    }

    async def receive() -> Any:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        pass

    with lenient() as (cap, registry):
        asyncio.run(wrapped(scope, receive, send))
        assert_exportable(cap, registry)
        assert cap.total("sync.operation.duration", {"sync.outcome": "success"}) == 1
        size = cap.points("http.server.request.body.size")
        assert all(point.sum <= 2 for point in size)
        assert cap.total("syncperf.dropped") == 0
        assert cap.total("syncperf.internal_errors") == 0


# --- found by review, 2026-12-02: exception classes with a hostile metaclass -----------------


def _raise(*args: Any) -> Any:
    raise RuntimeError("hostile " + SECRET)


def _names_raise(cls: type, attribute: str) -> Any:
    if attribute in ("__qualname__", "__module__", "__name__"):
        raise RuntimeError(attribute)
    return type.__getattribute__(cls, attribute)


CLASS_TRAITS: dict[str, tuple[str, dict[str, Any]]] = {
    # trait -> (namespace it goes to: the metaclass's or the class's, what it adds)
    "unhashable": ("meta", {"__eq__": lambda cls, other: cls is other}),  # __hash__ = None
    "hash raises": ("meta", {"__hash__": _raise}),
    "eq raises": ("meta", {"__eq__": _raise, "__hash__": type.__hash__}),
    "names raise": ("meta", {"__getattribute__": _names_raise}),
    "str raises": ("class", {"__str__": _raise, "__repr__": _raise}),
    "traceback raises": ("class", {"__traceback__": property(_raise)}),
}


def hostile_exception_class(traits: frozenset[str]) -> type[Exception]:
    namespaces: dict[str, dict[str, Any]] = {"meta": {}, "class": {}}
    for trait in sorted(traits):
        where, members = CLASS_TRAITS[trait]
        namespaces[where].update(members)
    meta = type("HostileMeta", (type,), namespaces["meta"])
    cls: type[Exception] = meta("HostileError", (Exception,), namespaces["class"])
    return cls


def run_without_loop(coroutine: Any) -> None:
    """Run a coroutine that never suspends. Not ``asyncio.run``: its task's repr (for the
    SIGINT handler under pytest) renders the exception, whose ``__repr__`` may raise."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    finally:
        coroutine.close()
    raise AssertionError("the coroutine suspended")


def raise_through(where: str, error: Exception) -> None:
    """Raise ``error`` (or report it) inside syncperf's instrumentation at ``where``."""
    from syncperf.asgi import SyncPerfMiddleware
    from syncperf.outbox import Outbox

    if where == "sync_operation":
        with syncperf.sync_operation("push", entity="todo"):
            raise error
    elif where in ("decorator", "async decorator"):

        @syncperf.instrument_sync("push", entity="todo")
        def push() -> None:
            raise error

        @syncperf.instrument_sync("push", entity="todo")
        async def push_async() -> None:
            raise error

        push() if where == "decorator" else run_without_loop(push_async())
    elif where == "middleware":

        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise error

        async def receive() -> Any:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: Any) -> None:
            pass

        scope = {"type": "http", "method": "POST", "path": "/sync/todo/push", "headers": []}
        wrapped = SyncPerfMiddleware(app, routes={"/sync/{entity}/push": "push"})
        run_without_loop(wrapped(scope, receive, send))
    elif where == "outbox block":
        with Outbox("orders").publish(count=1):
            raise error
    else:
        with Outbox("orders").publish(count=1) as batch:
            batch.failed(error)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    traits=st.frozensets(st.sampled_from(sorted(CLASS_TRAITS)), min_size=1),
    where=st.sampled_from(
        ["sync_operation", "decorator", "async decorator", "middleware", "outbox block", "failed"]
    ),
)
def test_an_exception_class_with_a_hostile_metaclass_is_measured_and_never_replaced(
    traits: frozenset[str], where: str
) -> None:
    cls = hostile_exception_class(traits)
    with lenient() as (cap, registry):
        outcome = "nothing raised"
        try:
            raise_through(where, cls())
        except cls:
            outcome = "the application's exception"
        except Exception as other:  # named here: pytest cannot render the hostile chain
            outcome = f"replaced by {type(other).__qualname__}"
        raised = "nothing raised" if where == "failed" else "the application's exception"
        assert outcome == raised
        assert_exportable(cap, registry)
        assert cap.total("syncperf.dropped") == 0  # no hook failed: metrics and span whole
        assert cap.total("syncperf.internal_errors") == 0
        (span,) = cap.spans()
        outbox = where in ("outbox block", "failed")
        metric = "outbox.messages" if outbox else "sync.operation.duration"
        (point,) = [p for p in cap.points(metric) if "error.type" in (p.attributes or {})]
        etype = point.attributes["error.type"]
        assert etype == ("_OTHER" if "names raise" in traits else f"{__name__}.HostileError")
        if where != "failed":
            (event,) = [e for e in span.events if e.name == "exception"]
            assert event.attributes["exception.type"] == etype


@pytest.mark.parametrize("trait", ["unhashable", "hash raises", "eq raises"])
def test_a_handler_may_return_an_object_of_an_unhashable_class(trait: str) -> None:
    returned = hostile_exception_class(frozenset({trait}))()  # any class: an exception's will do

    @syncperf.instrument_sync("push", entity="todo")
    def push() -> Any:
        return returned

    @syncperf.instrument_sync("push", entity="todo")
    async def push_async() -> Any:
        return returned

    with lenient() as (cap, registry):
        assert push() is returned
        run_without_loop(push_async())
        assert_exportable(cap, registry)
        assert cap.total("syncperf.dropped") == 0
        assert cap.total("sync.operation.duration", {"sync.outcome": "success"}) == 2
