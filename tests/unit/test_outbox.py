"""syncperf.outbox: enqueue, publish batches, retries, dead letters, spans and links."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

import syncperf
from syncperf._staleness import MAX_SKEW
from syncperf.exceptions import ConfigError, MeasurementError
from syncperf.outbox import (
    LAG_BOUNDS,
    MAX_NAMES,
    Outbox,
    current_batch,
    current_traceparent,
    parse_traceparent,
)
from syncperf.testing import Capture, capture


class BrokerDown(Exception):
    pass


def events(cap: Capture, name: str = "orders") -> dict[str, float]:
    """``outbox.messages`` totals by event for outbox ``name``."""
    return {
        event: cap.total("outbox.messages", {"outbox.name": name, "outbox.event": event})
        for event in ("enqueued", "published", "failed", "retried", "dead_lettered")
    }


def spans_named(cap: Capture, name: str) -> list[Any]:
    return [s for s in cap.spans() if s.name == name]


# --- enqueue ------------------------------------------------------------------------------


def test_enqueue_counts_messages(syncperf_capture: Capture) -> None:
    outbox = Outbox("orders")
    outbox.enqueue()
    outbox.enqueue(3)
    assert events(syncperf_capture)["enqueued"] == 4


def test_enqueue_in_a_push_returns_the_traceparent_of_a_create_span_under_the_push(
    syncperf_capture: Capture,
) -> None:
    outbox = Outbox("orders", destination="orders.events", system="kafka")
    with syncperf.sync_operation("push", entity="order"):
        traceparent = outbox.enqueue()
    (create,) = spans_named(syncperf_capture, "create orders.events")
    (push,) = spans_named(syncperf_capture, "sync push")
    assert create.kind is SpanKind.PRODUCER
    assert create.parent is not None and create.parent.span_id == push.context.span_id
    assert create.attributes["messaging.operation.type"] == "create"
    assert create.attributes["messaging.system"] == "kafka"
    assert create.attributes["messaging.destination.name"] == "orders.events"
    assert "messaging.batch.message_count" not in create.attributes
    context = parse_traceparent(traceparent)
    assert context is not None
    assert (context.trace_id, context.span_id) == (create.context.trace_id, create.context.span_id)


def test_enqueue_of_several_messages_is_one_create_span_with_the_batch_count(
    syncperf_capture: Capture,
) -> None:
    Outbox("orders").enqueue(5)
    (create,) = spans_named(syncperf_capture, "create orders")
    assert create.attributes["messaging.batch.message_count"] == 5


def test_enqueue_whose_span_the_sampler_dropped_returns_its_unsampled_traceparent() -> None:
    with capture(sampler=ALWAYS_OFF) as cap:
        outbox = Outbox("orders")
        stored = outbox.enqueue()
        assert stored is not None and stored.endswith("-02")  # unsampled, random ids
        assert cap.spans() == []
        assert events(cap)["enqueued"] == 1


def test_enqueue_rejects_a_negative_count_in_strict_mode(syncperf_capture: Capture) -> None:
    with pytest.raises(MeasurementError):
        Outbox("orders").enqueue(-1)


def test_enqueue_drops_an_invalid_count_outside_strict_mode() -> None:
    with capture(strict=False) as cap:
        Outbox("orders").enqueue("3")  # type: ignore[arg-type]
        assert events(cap)["enqueued"] == 0
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_count"}) == 1


# --- publish ------------------------------------------------------------------------------


def test_published_messages_record_count_lag_duration_and_batch_size(
    syncperf_capture: Capture,
) -> None:
    outbox = Outbox("orders")
    created = datetime.now(timezone.utc) - timedelta(seconds=30)
    with outbox.publish(count=2) as batch:
        batch.published(created)
        batch.published(time.time() - 3)
    assert events(syncperf_capture)["published"] == 2
    (lag,) = syncperf_capture.points("outbox.lag", {"outbox.name": "orders"})
    assert lag.count == 2
    assert 32 < lag.sum < 40
    assert tuple(lag.explicit_bounds) == LAG_BOUNDS
    (duration,) = syncperf_capture.points("outbox.publish.duration", {"outbox.name": "orders"})
    assert duration.count == 1
    assert "error.type" not in duration.attributes
    (size,) = syncperf_capture.points("outbox.batch.size", {"outbox.name": "orders"})
    assert (size.count, size.sum) == (1, 2)


def test_lag_takes_naive_datetimes_as_utc(syncperf_capture: Capture) -> None:
    naive_utc = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=60)
    with Outbox("orders").publish() as batch:
        batch.published(naive_utc)
    (lag,) = syncperf_capture.points("outbox.lag", {"outbox.name": "orders"})
    assert 59 < lag.sum < 65


def test_send_span_links_to_each_creation_context_with_its_attempt(
    syncperf_capture: Capture,
) -> None:
    outbox = Outbox("orders")
    with syncperf.sync_operation("push"):
        first = outbox.enqueue()
        second = outbox.enqueue()
    with outbox.publish() as batch:
        batch.published(traceparent=first)
        batch.published(traceparent=second, attempt=2)
    (send,) = spans_named(syncperf_capture, "send orders")
    (push,) = spans_named(syncperf_capture, "sync push")
    assert send.kind is SpanKind.CLIENT
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.batch.message_count"] == 2
    assert send.attributes["outbox.attempt"] == 2
    assert send.context.trace_id != push.context.trace_id  # its own trace, linked
    linked = {(link.context.span_id, link.attributes["outbox.attempt"]) for link in send.links}
    creates = {s.context.span_id for s in spans_named(syncperf_capture, "create orders")}
    assert {span_id for span_id, _ in linked} == creates
    assert {attempt for _, attempt in linked} == {1, 2}
    assert all(link.context.trace_id == push.context.trace_id for link in send.links)


def test_single_message_send_span_has_no_batch_count(syncperf_capture: Capture) -> None:
    with Outbox("orders").publish() as batch:
        batch.published()
    (send,) = spans_named(syncperf_capture, "send orders")
    assert "messaging.batch.message_count" not in send.attributes


def test_attempts_after_the_first_count_as_retried(syncperf_capture: Capture) -> None:
    with Outbox("orders").publish() as batch:
        batch.published(attempt=1)
        batch.published(attempt=3)
        batch.failed(BrokerDown(), attempt=2)
    counts = events(syncperf_capture)
    assert (counts["published"], counts["failed"], counts["retried"]) == (2, 1, 2)


def test_failed_attempts_carry_error_type_and_may_dead_letter(
    syncperf_capture: Capture,
) -> None:
    with Outbox("orders").publish() as batch:
        batch.failed(BrokerDown("down"))
        batch.failed("timeout", attempt=5, dead_letter=True)
        batch.published()
    error_name = f"{BrokerDown.__module__}.BrokerDown"
    failed = {
        p.attributes["error.type"]: p.value
        for p in syncperf_capture.points("outbox.messages", {"outbox.event": "failed"})
    }
    assert failed == {error_name: 1, "timeout": 1}
    assert events(syncperf_capture)["dead_lettered"] == 1
    (send,) = spans_named(syncperf_capture, "send orders")
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes["error.type"] == error_name
    assert send.attributes["outbox.failed"] == 2


def test_dead_lettered_without_an_attempt_counts_only_the_dead_letter(
    syncperf_capture: Capture,
) -> None:
    with Outbox("orders").publish() as batch:
        batch.dead_lettered(2)
    counts = events(syncperf_capture)
    assert (counts["dead_lettered"], counts["failed"], counts["published"]) == (2, 0, 0)


def test_a_raising_block_turns_its_published_messages_into_failures(
    syncperf_capture: Capture,
) -> None:
    outbox = Outbox("orders")
    error = BrokerDown("connection reset")
    with pytest.raises(BrokerDown) as raised, outbox.publish(count=5) as batch:
        batch.published(time.time())
        batch.published(time.time())
        batch.failed("timeout", attempt=2, dead_letter=True)
        raise error
    assert raised.value is error
    counts = events(syncperf_capture)
    # 2 published (rolled back) + 2 never reported -> exception type; 1 explicit timeout
    assert (counts["published"], counts["dead_lettered"], counts["retried"]) == (0, 0, 1)
    by_type = {
        p.attributes["error.type"]: p.value
        for p in syncperf_capture.points("outbox.messages", {"outbox.event": "failed"})
    }
    assert by_type == {f"{BrokerDown.__module__}.BrokerDown": 4, "timeout": 1}
    assert syncperf_capture.points("outbox.lag") == []
    (duration,) = syncperf_capture.points("outbox.publish.duration", {"outbox.name": "orders"})
    assert duration.attributes["error.type"] == f"{BrokerDown.__module__}.BrokerDown"
    (send,) = spans_named(syncperf_capture, "send orders")
    assert send.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in send.events)


def test_an_empty_batch_records_no_metrics(syncperf_capture: Capture) -> None:
    with Outbox("orders").publish():
        pass
    assert syncperf_capture.points("outbox.publish.duration") == []
    assert syncperf_capture.points("outbox.batch.size") == []


def test_the_send_span_is_current_inside_the_block(syncperf_capture: Capture) -> None:
    with Outbox("orders").publish() as batch:
        assert current_traceparent() is not None
        assert current_batch() is batch
        batch.published()
    assert not current_batch().recording


def test_publish_decorates_functions(syncperf_capture: Capture) -> None:
    outbox = Outbox("orders")

    @outbox.publish
    def relay(n: int) -> int:
        for _ in range(n):
            current_batch().published()
        return n

    @outbox.publish(count=2)
    async def relay_async() -> str:
        current_batch().published()
        current_batch().published(attempt=2)
        return "done"

    assert relay(3) == 3
    assert relay(1) == 1
    assert asyncio.run(relay_async()) == "done"
    assert relay.__name__ == "relay"
    counts = events(syncperf_capture)
    assert (counts["published"], counts["retried"]) == (6, 1)
    assert syncperf_capture.total("outbox.publish.duration", {"outbox.name": "orders"}) == 3


async def test_async_with_publish(syncperf_capture: Capture) -> None:
    async with Outbox("orders").publish() as batch:
        await asyncio.sleep(0)
        batch.published()
    assert events(syncperf_capture)["published"] == 1


def test_invalid_reports_raise_in_strict_mode(syncperf_capture: Capture) -> None:
    with Outbox("orders").publish() as batch:
        with pytest.raises(MeasurementError):
            batch.published(attempt=0)
        with pytest.raises(MeasurementError):
            batch.published("yesterday")
        with pytest.raises(MeasurementError):
            batch.dead_lettered(-1)


def test_invalid_reports_are_dropped_outside_strict_mode() -> None:
    with capture(strict=False) as cap:
        with Outbox("orders").publish() as batch:
            batch.published(attempt="2")  # type: ignore[arg-type]  # counted, not retried
            batch.published("yesterday")  # counted, without a lag
        assert events(cap)["published"] == 2
        assert events(cap)["retried"] == 0
        assert cap.points("outbox.lag") == []
        assert cap.total("syncperf.dropped") == 2


def test_a_dead_letter_that_is_no_bool_is_dropped_and_the_failure_still_counts() -> None:
    """Only ``True`` and ``False`` (compared by identity: no ``__bool__`` is called), so a
    truthy look-alike such as ``numpy.bool_(True)`` is dropped too."""

    class BoolLike:
        def __bool__(self) -> bool:
            raise AssertionError("__bool__ called")

    with capture(strict=False) as cap:
        with Outbox("orders").publish() as batch:
            batch.failed("timeout", dead_letter=BoolLike())  # type: ignore[arg-type]
            batch.failed("timeout", dead_letter="yes")  # type: ignore[arg-type]
            batch.failed("timeout", dead_letter=1)  # type: ignore[arg-type]
            batch.failed("timeout", dead_letter=True)
            batch.failed("timeout", dead_letter=False)
        assert events(cap)["failed"] == 5
        assert events(cap)["dead_lettered"] == 1
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_dead_letter"}) == 3
    with capture(), Outbox("orders").publish() as batch, pytest.raises(MeasurementError):
        batch.failed("timeout", dead_letter=None)  # type: ignore[arg-type]


def test_a_created_at_far_in_the_future_is_dropped_not_read_as_lag_0(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Epoch milliseconds (``Date.now()``) read as seconds lie thousands of years ahead: a lag
    clamped to 0 would hide a stalled relay for good. Up to MAX_SKEW ahead is clock skew."""
    millis = int((time.time() - 7200) * 1000)  # two hours ago, in milliseconds
    ahead = datetime.now(timezone.utc) + timedelta(hours=1)
    with capture(strict=False) as cap:
        with Outbox("orders").publish() as batch:
            batch.published(millis)
            batch.published(ahead)
            batch.published(time.time() + MAX_SKEW / 2)  # another host's clock runs ahead
        assert events(cap)["published"] == 3
        (lag,) = cap.points("outbox.lag")
        assert (lag.count, lag.sum) == (1, 0)
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_created_at"}) == 2
    (record,) = [r for r in caplog.records if "invalid_created_at" in r.getMessage()]
    assert "milliseconds" in record.getMessage()
    assert str(millis) not in caplog.text and str(millis // 1000) not in caplog.text
    with capture(), Outbox("orders").publish() as batch, pytest.raises(MeasurementError):
        batch.published(millis)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=365 * 86400, max_value=253402300799).map(lambda s: s * 1000))
def test_no_time_in_epoch_milliseconds_since_1971_reads_as_a_lag(millis: int) -> None:
    with capture(strict=False) as cap:
        with Outbox("orders").publish() as batch:
            batch.published(millis)
            batch.published(float(millis))
        assert cap.points("outbox.lag") == []
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_created_at"}) == 2


def test_a_failed_batch_is_traced_even_when_sampled_out() -> None:
    with capture(sampler=ALWAYS_OFF) as cap:
        outbox = Outbox("orders")
        with outbox.publish() as batch:
            batch.published()
        with outbox.publish() as batch:
            batch.failed("timeout", traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
        (send,) = spans_named(cap, "send orders")
        assert send.attributes["syncperf.rescued"] is True
        assert send.attributes["error.type"] == "timeout"
        assert send.links[0].context.trace_id == int("1" * 32, 16)


def test_disabled_syncperf_records_nothing() -> None:
    with capture(enabled=False) as cap:
        outbox = Outbox("orders")
        outbox.enqueue()
        with outbox.publish() as batch:
            batch.published()
        assert not batch.recording
        assert cap.metric("outbox.messages") is None


def test_outbox_names_are_bounded_per_runtime(syncperf_capture: Capture) -> None:
    for index in range(MAX_NAMES + 5):
        Outbox(f"box{index}").enqueue()
    names = {p.attributes["outbox.name"] for p in syncperf_capture.points("outbox.messages")}
    assert len(names) == MAX_NAMES + 1
    assert "_other" in names


def test_series_follow_the_current_runtime() -> None:
    outbox = Outbox("orders")
    with capture() as first:
        outbox.enqueue()
    with capture() as second:
        outbox.enqueue(2)
    assert events(first)["enqueued"] == 1
    assert events(second)["enqueued"] == 2


# --- configuration and helpers -----------------------------------------------------------


@pytest.mark.parametrize("name", ["", "9lives", "orders/{id}", "x" * 65, None])
def test_outbox_rejects_unbounded_looking_names(name: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        Outbox(name)
    assert raised.value.option == "name"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("stats", 42),
        ("stats_timeout", 0),
        ("stats_timeout", True),
        ("stats_timeout", 1e300),  # a thread wait of that long overflows
        ("destination", ""),
    ],
)
def test_outbox_rejects_bad_options(option: str, value: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        Outbox("orders", **{option: value})
    assert raised.value.option == option


def test_traceparent_round_trips_and_junk_parses_to_none() -> None:
    value = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    context = parse_traceparent(value)
    assert context is not None and context.is_remote and context.trace_flags.sampled
    assert context.trace_id == int("ab" * 16, 16)
    for junk in (None, "", "garbage", "00-" + "0" * 32 + "-" + "cd" * 8 + "-01", 42):
        assert parse_traceparent(junk) is None
