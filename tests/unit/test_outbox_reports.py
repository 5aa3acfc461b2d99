"""PublishBatch reports: unusable attempts, created-at values, batches shared by threads."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import syncperf
from syncperf.outbox import Outbox
from syncperf.outbox._gauges import age_of
from syncperf.testing import Capture, capture


def events(cap: Capture, name: str = "orders") -> dict[str, float]:
    """``outbox.messages`` totals by event for outbox ``name``."""
    return {
        event: cap.total("outbox.messages", {"outbox.name": name, "outbox.event": event})
        for event in ("published", "failed", "retried", "dead_lettered")
    }


UNUSABLE_ATTEMPTS = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=2**53),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attempt=UNUSABLE_ATTEMPTS)
def test_a_report_with_an_unusable_attempt_still_counts_the_message_without_a_retry(
    attempt: Any,
) -> None:
    with capture(strict=False) as cap:
        with Outbox("orders").publish(count=3) as batch:
            batch.published(None, attempt=attempt)
            batch.published(1.0, attempt=attempt)
            batch.failed("broker", attempt=attempt, dead_letter=True)
        assert events(cap) == {"published": 2, "failed": 1, "retried": 0, "dead_lettered": 1}
        assert cap.total("outbox.lag") == 1
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_attempt"}) == 3


def test_a_link_whose_attempt_is_unusable_has_no_attempt_attribute() -> None:
    with capture(strict=False) as cap:
        outbox = Outbox("orders")
        with syncperf.sync_operation("push"):
            traceparent = outbox.enqueue()
        with outbox.publish() as batch:
            batch.published(traceparent=traceparent, attempt=0)
        (send,) = [s for s in cap.spans() if s.name == "send orders"]
        (link,) = send.links
        assert "outbox.attempt" not in (link.attributes or {})
        assert "outbox.attempt" not in (send.attributes or {})


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    """Threads switch every microsecond: a lost update shows within a few thousand reports."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("frequent_switches")
def test_a_batch_shared_by_threads_counts_every_report_exactly(
    syncperf_capture: Capture,
) -> None:
    threads, reports = 8, 5000
    start = threading.Barrier(threads)
    with Outbox("orders").publish(count=threads * reports) as batch:

        def relay() -> None:
            start.wait()
            for i in range(reports):
                if i % 2:
                    batch.failed("broker", attempt=2, dead_letter=i % 4 == 1)
                else:
                    batch.published(None, attempt=1)
                    batch.dead_lettered()

        pool = [threading.Thread(target=relay) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    half = threads * reports // 2
    assert events(syncperf_capture) == {
        "published": half,
        "failed": half,
        "retried": half,
        "dead_lettered": half + half // 2,
    }


@settings(max_examples=100, deadline=None)
@given(ago=st.decimals(min_value=0, max_value=10**6, places=6))
def test_posix_seconds_in_a_decimal_read_as_a_lag(ago: Decimal) -> None:
    """PostgreSQL hands back a ``numeric`` column (``extract(epoch ...)``) as a ``Decimal``."""
    start = time.time()
    created = Decimal(start) - ago
    with capture() as cap:
        with Outbox("orders").publish() as batch:
            batch.published(created)
        (lag,) = cap.points("outbox.lag")
    age = age_of(created)
    elapsed = time.time() - start  # a loaded machine may take seconds: bound by what passed
    assert float(ago) - 1e-3 <= age <= float(ago) + elapsed + 1e-3
    assert float(ago) - 1e-3 <= lag.sum <= float(ago) + elapsed + 1e-3


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "sNaN", "1e40"])
def test_a_decimal_that_is_no_finite_time_is_no_created_at(value: str) -> None:
    with pytest.raises(TypeError):
        age_of(Decimal(value))
