"""A stream of messages reported in one ``publish()`` block: the batch keeps a bounded number
of lags whatever the stream's length, and its counts stay exact, when it ends and when it
raises."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncperf._metrics.aggregates import HistogramSeries
from syncperf.outbox import LAG_BOUNDS, Outbox, _batch
from syncperf.testing import Capture

BOUND = 64
AGES = (0.03, 0.3, 3.0, 45.0, 400.0)  # seconds: each in a bucket of its own, far from its edges


@pytest.fixture
def low_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_batch, "LAG_FOLD_AT", BOUND, raising=False)


def _stream(batch: _batch.PublishBatch, n: int) -> int:
    """Report ``n`` messages of the ``AGES``; the most lags the batch held at once."""
    most = 0
    for i in range(n):
        batch.published(time.time() - AGES[i % len(AGES)])
        most = max(most, len(batch._lags))
    return most


@pytest.mark.usefixtures("low_bound")
def test_a_long_block_keeps_its_lags_bounded_and_records_every_message(
    syncperf_capture: Capture,
) -> None:
    n = 50_000
    with Outbox("orders").publish() as batch:
        most = _stream(batch, n)
    assert most <= BOUND
    labels = {"outbox.name": "orders"}
    assert syncperf_capture.total("outbox.messages", {**labels, "outbox.event": "published"}) == n
    (lag,) = syncperf_capture.points("outbox.lag", labels)
    assert lag.count == n
    per_age = n // len(AGES)
    assert sorted(c for c in lag.bucket_counts if c) == [per_age] * len(AGES)
    assert lag.sum == pytest.approx(sum(AGES) * per_age, rel=1e-3)
    assert lag.min == pytest.approx(AGES[0], abs=0.01)
    assert lag.max == pytest.approx(AGES[-1], rel=1e-3)


@pytest.mark.usefixtures("low_bound")
def test_a_long_block_that_raises_counts_every_message_failed_and_no_lag(
    syncperf_capture: Capture,
) -> None:
    n = 5_003
    with pytest.raises(KeyError), Outbox("orders").publish() as batch:
        most = _stream(batch, n)
        raise KeyError("rolled back")
    assert most <= BOUND
    labels = {"outbox.name": "orders"}
    assert syncperf_capture.total("outbox.messages", {**labels, "outbox.event": "published"}) == 0
    failed = syncperf_capture.points("outbox.messages", {**labels, "outbox.event": "failed"})
    assert [(p.value, p.attributes["error.type"]) for p in failed] == [(n, "KeyError")]
    assert syncperf_capture.points("outbox.lag", labels) == []


@pytest.mark.usefixtures("low_bound")
def test_blocks_after_a_long_one_record_only_their_own_lags(syncperf_capture: Capture) -> None:
    outbox = Outbox("orders")
    with outbox.publish() as batch:
        _stream(batch, 3 * BOUND + 1)
    with outbox.publish() as batch:
        _stream(batch, 2)
    (lag,) = syncperf_capture.points("outbox.lag", {"outbox.name": "orders"})
    assert lag.count == 3 * BOUND + 3


@given(
    st.lists(st.floats(0, 1e6, allow_nan=False), max_size=200),
    st.integers(1, 40),
    st.booleans(),
)
def test_folded_lags_record_what_recording_each_would(
    lags: list[float], fold_at: int, earlier: bool
) -> None:
    """Folding every ``fold_at`` lags and recording the rest gives the same buckets, count,
    minimum and maximum as recording each lag (and the sum up to rounding), into a series that
    already holds values or not."""
    from syncperf.outbox._lags import fold_lags, record_lags

    one_by_one, folded_in = HistogramSeries((), LAG_BOUNDS), HistogramSeries((), LAG_BOUNDS)
    if earlier:
        for series in (one_by_one, folded_in):
            series.record(7.0)
    for lag in lags:
        one_by_one.record(lag)
    queued: list[float] = []
    folded = None
    for lag in lags:
        queued.append(lag)
        if len(queued) >= fold_at:
            folded = fold_lags(queued, folded, LAG_BOUNDS)
        assert len(queued) < fold_at
    record_lags(folded_in, queued, folded)
    assert folded_in.counts == one_by_one.counts
    assert (folded_in.min, folded_in.max) == (one_by_one.min, one_by_one.max)
    assert folded_in.sum == pytest.approx(one_by_one.sum, rel=1e-9, abs=1e-6)
