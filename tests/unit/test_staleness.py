"""Staleness and change age: how far behind clients are, bounded against wrong clocks."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import syncperf
from syncperf._metrics.catalogue import AGE_BOUNDS
from syncperf._staleness import MAX_AGE, MAX_SKEW, from_millis
from syncperf.exceptions import MeasurementError
from syncperf.testing import Capture, capture


def staleness(cap: Capture, **attrs: Any) -> list[Any]:
    return cap.points("sync.pull.staleness", attrs)


def test_a_checkpoint_records_now_minus_its_time_by_operation_and_entity(
    syncperf_capture: Capture,
) -> None:
    with syncperf.sync_operation("pull", entity="todo") as op:
        op.record_checkpoint(time.time() - 7000)
    (point,) = staleness(syncperf_capture)
    assert dict(point.attributes) == {"sync.operation": "pull", "sync.entity": "todo"}
    assert point.count == 1
    assert point.sum == pytest.approx(7000, abs=1)
    assert point.bucket_counts[AGE_BOUNDS.index(7200.0)] == 1  # (3600, 7200]


def test_a_datetime_checkpoint_counts_and_a_naive_one_means_utc(syncperf_capture: Capture) -> None:
    now = datetime.now(timezone.utc)
    with syncperf.sync_operation("pull") as op:
        op.record_checkpoint(now - timedelta(hours=3))
    with syncperf.sync_operation("pull") as op:
        op.record_checkpoint((now - timedelta(hours=1)).replace(tzinfo=None))
    (point,) = staleness(syncperf_capture)
    assert point.count == 2
    assert point.sum == pytest.approx(4 * 3600, abs=2)


def test_the_entity_named_after_the_checkpoint_is_the_one_recorded(
    syncperf_capture: Capture,
) -> None:
    with syncperf.sync_operation("pull") as op:
        op.record_checkpoint(time.time() - 60)
        op.set_entity("note")
    (point,) = staleness(syncperf_capture)
    assert point.attributes["sync.entity"] == "note"


def test_the_oldest_change_of_a_push_is_its_change_age(syncperf_capture: Capture) -> None:
    now = time.time()
    with syncperf.sync_operation("push", entity="todo") as op:
        for age in (30, 4000, 10):
            op.record_change_time(now - age)
    (point,) = syncperf_capture.points("sync.push.change_age")
    assert point.count == 1
    assert point.sum == pytest.approx(4000, abs=1)


@pytest.mark.parametrize("never", [0, 0.0, -5, datetime(1960, 1, 1, tzinfo=timezone.utc)])
def test_a_checkpoint_of_zero_means_never_synced_and_records_nothing(
    never: Any, syncperf_capture: Capture
) -> None:
    with syncperf.sync_operation("pull") as op:
        op.record_checkpoint(never)
    assert staleness(syncperf_capture) == []
    assert syncperf_capture.total("syncperf.dropped") == 0


def test_a_clock_a_little_ahead_counts_as_age_zero_never_negative(
    syncperf_capture: Capture,
) -> None:
    with syncperf.sync_operation("pull") as op:
        op.record_checkpoint(time.time() + MAX_SKEW / 2)
    (point,) = staleness(syncperf_capture)
    assert (point.count, point.sum, point.min) == (1, 0.0, 0.0)


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(MAX_SKEW + 60, "checkpoint_in_future"), (-MAX_AGE - 86400, "checkpoint_too_old")],
)
def test_a_wrong_clock_is_dropped_and_counted_even_in_strict_mode(
    offset: float, reason: str, syncperf_capture: Capture
) -> None:
    with syncperf.sync_operation("pull") as op:
        op.record_checkpoint(time.time() + offset)
        op.record_change_time(time.time() + offset)
    assert staleness(syncperf_capture) == []
    assert syncperf_capture.points("sync.push.change_age") == []
    assert syncperf_capture.total("syncperf.dropped", {"syncperf.reason": reason}) == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1700000000", True, None, [1]])
def test_a_checkpoint_that_is_not_a_time_is_misuse(bad: Any) -> None:
    with capture(), syncperf.sync_operation("pull") as op, pytest.raises(MeasurementError):
        op.record_checkpoint(bad)
    with capture(strict=False) as cap, syncperf.sync_operation("pull") as op:
        op.record_checkpoint(bad)
    assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_checkpoint"}) == 1


class _LazyProxy:
    """An object whose ``__class__`` raises (a lazy proxy not loaded)."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # type: ignore[override]
        raise RuntimeError("lazy proxy not loaded")


@pytest.mark.parametrize("method", ["record_checkpoint", "record_change_time"])
def test_a_time_whose_class_raises_is_rejected_not_raised(method: str) -> None:
    with capture(strict=False) as cap, syncperf.sync_operation("pull") as op:
        getattr(op, method)(_LazyProxy())
    assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_checkpoint"}) == 1
    with capture(), syncperf.sync_operation("pull") as op, pytest.raises(MeasurementError):
        getattr(op, method)(_LazyProxy())


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.datetimes(timezones=st.just(timezone.utc)),
    )
)
def test_no_checkpoint_ever_records_a_negative_or_absurd_age(at: Any) -> None:
    with capture(strict=False) as cap:
        with syncperf.sync_operation("pull") as op:
            op.record_checkpoint(at)
            op.record_change_time(at)
        for name in ("sync.pull.staleness", "sync.push.change_age"):
            for point in cap.points(name):
                assert 0 <= point.min <= point.max <= MAX_AGE


def test_outside_an_operation_the_recorder_is_a_no_op() -> None:
    with capture() as cap:
        op = syncperf.current_operation()
        op.record_checkpoint(time.time() - 60)
        op.record_change_time(float("nan"))
        assert cap.metrics() == []


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1_700_000_000_123, 1_700_000_000.123),
        ("1700000000123", 1_700_000_000.123),
        ("1700000000123.5", 1_700_000_000.1235),
        ("-1", -0.001),
        (0, 0.0),
    ],
)
def test_milliseconds_from_a_payload_or_query_become_seconds(value: Any, seconds: float) -> None:
    assert from_millis(value) == pytest.approx(seconds)


@pytest.mark.parametrize("junk", ["", "-", "1e3", "١٢٣", "1.", "+1", None, True, float("nan")])
def test_what_is_not_milliseconds_is_none(junk: Any) -> None:
    assert from_millis(junk) is None
