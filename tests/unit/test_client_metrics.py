"""The client metrics batch endpoint: bounded, validated, deduplicated, rate-limited."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncperf.asgi import SyncPerfMiddleware, client_metrics_app
from syncperf.asgi._client_metrics import RateLimit
from syncperf.exceptions import ConfigError
from syncperf.testing import Capture, capture
from tests.unit.test_hostile import SECRET, assert_exportable, lenient

RECORD = {
    "operation": "push",
    "entity": "todo",
    "duration": 0.84,
    "outcome": "error",
    "pending": 12,
    "retries": 2,
    "last-sync-age": 340,
    "db-size": 5242880,
}


async def post(app: Any, body: Any, *, client: str = "device-1", raw: bytes | None = None) -> Any:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        content = raw if raw is not None else json.dumps(body).encode()
        return await http.post(
            "/",
            content=content,
            headers={"content-type": "application/json", "sync-client-id": client},
        )


def batch(batch_id: str = "b-1", records: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"batch": batch_id, "app": "1.4.2", "records": records or [RECORD], **extra}


def results(cap: Capture) -> dict[str, float]:
    return {
        p.attributes["sync.client.batch.result"]: p.value for p in cap.points("sync.client.batches")
    }


async def test_a_batch_is_recorded_by_operation_entity_app_version_and_outcome(
    syncperf_capture: Capture,
) -> None:
    answer = await post(client_metrics_app(), batch())
    assert answer.status_code == 202
    assert answer.json() == {"accepted": 1, "rejected": 0}
    attrs = {"sync.operation": "push", "sync.entity": "todo", "sync.client.app_version": "1.4.2"}
    for name, value in [
        ("sync.client.pending_changes", 12),
        ("sync.client.retries", 2),
        ("sync.client.last_sync_age", 340),
        ("sync.client.db_size", 5242880),
    ]:
        (point,) = syncperf_capture.points(name)
        assert dict(point.attributes) == attrs
        assert (point.count, point.sum) == (1, value)
    (point,) = syncperf_capture.points("sync.client.operation.duration")
    assert dict(point.attributes) == {**attrs, "sync.outcome": "error"}
    assert (point.count, point.sum) == (1, 0.84)
    assert results(syncperf_capture) == {"accepted": 1}


async def test_a_resent_batch_records_nothing_and_is_answered_202(
    syncperf_capture: Capture,
) -> None:
    app = client_metrics_app()
    await post(app, batch("b-7"))
    again = await post(app, batch("b-7"))
    other_client = await post(app, batch("b-7"), client="device-2")
    assert again.status_code == 202
    assert again.json()["duplicate"] is True
    assert other_client.json() == {"accepted": 1, "rejected": 0}
    assert syncperf_capture.total("sync.client.pending_changes") == 2
    assert results(syncperf_capture) == {"accepted": 2, "duplicate": 1}


async def test_a_bad_record_is_rejected_whole_and_counted_beside_good_ones() -> None:
    records = [
        RECORD,
        {**RECORD, "pending": -1},
        {**RECORD, "operation": "not_declared"},
        {**RECORD, "duration": float("inf")},
        {**RECORD, "outcome": "lost"},
        {"operation": "pull", "duration": 0.1},
        {"operation": "pull"},
        "not a record",
    ]
    with capture() as cap:  # strict: client data is dropped and counted, never raised
        answer = await post(client_metrics_app(), batch(records=records))
        assert answer.json() == {"accepted": 1, "rejected": 7}
        assert cap.total("sync.client.pending_changes") == 1
        reason = {"syncperf.reason": "invalid_client_metric"}
        assert cap.total("syncperf.dropped", reason) == 7


_bad_fields = st.sampled_from(
    [
        {},  # no value at all
        {"pending": -1},
        {"pending": 3, "retries": "2"},
        {"db-size": 1.5},
        {"duration": 0.1},  # no outcome
        {"outcome": "success"},  # no duration
        {"duration": float("inf"), "outcome": "success"},
        {"duration": -1, "outcome": "error"},
        {"duration": 0.1, "outcome": "lost", "pending": 1},
        {"operation": "not_declared", "pending": 1},
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
            lambda name: name != "todo"
        ),
        min_size=1,
        max_size=8,
        unique=True,
    ),
    st.data(),
)
def test_rejected_records_take_no_entity_slot(entities: list[str], data: Any) -> None:
    records = [{"operation": "pull", "entity": e, **data.draw(_bad_fields)} for e in entities]

    async def run() -> None:
        app = client_metrics_app()
        junk = await post(app, batch("junk", records))
        assert junk.json() == {"accepted": 0, "rejected": len(records)}
        real = await post(
            app, batch("real", [{"operation": "pull", "entity": "todo", "pending": 3}])
        )
        assert real.json() == {"accepted": 1, "rejected": 0}

    with capture(max_entities=1) as cap:
        asyncio.run(run())
        (point,) = cap.points("sync.client.pending_changes")
        assert point.attributes["sync.entity"] == "todo"


async def test_a_rejected_batch_leaves_the_entity_bound_to_the_sync_routes() -> None:
    async def sync_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    junk = [{"operation": "pull", "entity": f"junk{i}"} for i in range(3)]
    middleware = SyncPerfMiddleware(sync_app, routes={"/sync/{entity}/pull": "pull"})
    with capture(max_entities=3) as cap:
        await post(client_metrics_app(), batch(records=junk))
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            assert (await http.get("/sync/todo/pull")).status_code == 200
        (point,) = cap.points("sync.operation.duration")
        assert point.attributes["sync.entity"] == "todo"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"not json", 400),
        (b"[]", 400),
        (b'{"records": []}', 400),
        (b'{"batch": "", "records": []}', 400),
        (b'{"batch": "b", "records": {}}', 400),
        (b'{"batch": "b", "app": 7, "records": []}', 400),
        (b"[" * 100_000, 413),
        (json.dumps(batch(records=[RECORD] * 501)).encode(), 413),
    ],
)
async def test_a_malformed_or_oversized_batch_is_refused(raw: bytes, status: int) -> None:
    with capture() as cap:
        answer = await post(client_metrics_app(), None, raw=raw)
        assert answer.status_code == status
        assert results(cap) == {"invalid" if status == 400 else "too_large": 1}
        assert cap.total("sync.client.pending_changes") == 0


async def test_a_refused_batch_id_is_not_remembered() -> None:
    app = client_metrics_app()
    with capture():
        await post(app, None, raw=b'{"batch": "b-9", "records": 3}')
        answer = await post(app, batch("b-9"))
        assert answer.json() == {"accepted": 1, "rejected": 0}


async def test_a_client_over_its_rate_gets_429_with_retry_after() -> None:
    app = client_metrics_app(rate=0.5, burst=2)
    with capture() as cap:
        statuses = [(await post(app, batch(f"b-{i}"))).status_code for i in range(3)]
        assert statuses == [202, 202, 429]
        limited = await post(app, batch("b-9"))
        assert limited.headers["retry-after"] == "2"
        assert (await post(app, batch("b-9"), client="device-2")).status_code == 202
        assert results(cap) == {"accepted": 3, "rate_limited": 2}


def test_the_rate_limit_refills_and_forgets_the_least_recent_clients() -> None:
    limit = RateLimit(rate=1.0, burst=1, max_clients=2)
    assert limit.wait("a", now=0.0) == 0
    assert limit.wait("a", now=0.5) == pytest.approx(0.5)
    assert limit.wait("a", now=1.6) == 0
    limit.wait("b", now=2.0)
    limit.wait("c", now=2.0)
    assert list(limit._buckets) == ["b", "c"]


async def test_only_post_is_accepted() -> None:
    transport = httpx.ASGITransport(app=client_metrics_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        answer = await http.get("/")
    assert (answer.status_code, answer.headers["allow"]) == (405, "POST")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_body_bytes", 0),
        ("rate", 0),
        ("burst", True),
        ("client_id_header", ""),
        ("dedupe_ttl", -1),
    ],
)
def test_bad_options_raise_config_error(option: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=option):
        client_metrics_app(**{option: value})


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_field = st.sampled_from(
    [
        "operation",
        "entity",
        "duration",
        "outcome",
        "pending",
        "retries",
        "last-sync-age",
        "db-size",
        SECRET,
    ]
)
_records = st.lists(
    st.dictionaries(
        _field,
        _json | st.sampled_from(["push", "pull", "error", "todo", SECRET, "\ud800", "x" * 300]),
        max_size=8,
    ),
    max_size=5,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        _json,
        st.fixed_dictionaries({"batch": _json, "app": _json, "records": _records}),
        st.fixed_dictionaries(
            {
                "batch": st.text(min_size=1, max_size=20),
                "app": st.text(max_size=30) | st.just(SECRET),
                "records": _records,
            }
        ),
    )
)
def test_hostile_batches_never_break_export_or_leak(body: Any) -> None:
    logs = _Lines()
    logger = logging.getLogger("syncperf")
    logger.addHandler(logs)
    try:
        with lenient() as (cap, registry):
            raw = json.dumps(body).encode("utf-8", "surrogatepass")
            answer = asyncio.run(post(client_metrics_app(), None, raw=raw))
            assert answer.status_code in (202, 400, 413)
            assert_exportable(cap, registry)
            exported = repr(cap._reader.collect())
            assert SECRET not in exported
            assert "\\ud800" not in exported
    finally:
        logger.removeHandler(logs)
    assert not any(SECRET in line for line in logs.lines)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
