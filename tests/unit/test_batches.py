"""Histogram values queued without the lock and recorded in batches (``_metrics.batches``).

Whatever is queued counts exactly once wherever it is read (collection folds first, a
forked child starts empty), threads appending at once lose nothing, the queue stays bounded
when the lock is busy, and a batch records exactly what ``record`` would.
"""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from syncperf._metrics import batches as batches_module
from syncperf._metrics.aggregates import HistogramSeries, Registry
from syncperf._metrics.batches import (
    FOLD_AT,
    MAX_QUEUED,
    NS,
    Batch,
    Batches,
    _limits_ns,
    record_ns,
)
from syncperf._metrics.catalogue import BODY_SIZE_BOUNDS, DB_DURATION_BOUNDS
from tests._forked import in_a_worker
from tests._threads import held_elsewhere

BOUNDS = DB_DURATION_BOUNDS
SIZE_BOUNDS = BODY_SIZE_BOUNDS


def _series(registry: Registry, name: str = "h") -> HistogramSeries:
    return registry.instrument(name, "histogram", "s", "", bounds=BOUNDS).histogram(())


def _state(series: HistogramSeries) -> tuple[list[int], float, float, float]:
    return list(series.counts), series.sum, series.min, series.max


@given(
    st.lists(
        st.one_of(
            st.sampled_from(BOUNDS),  # exactly on a boundary: bucket i holds bounds[i]
            st.floats(min_value=0, max_value=100, allow_nan=False),
        ),
        max_size=50,
    )
)
def test_record_all_records_what_record_records_one_by_one(values: list[float]) -> None:
    one, many = HistogramSeries((), BOUNDS), HistogramSeries((), BOUNDS)
    for value in values:
        one.record(value)
    many.record_all(values)
    counts, total, low, high = _state(many)
    assert counts == one.counts
    assert total == pytest.approx(one.sum)
    assert (low, high) == (one.min, one.max)


def _around_bounds() -> st.SearchStrategy[int]:
    """Nanosecond counts at, next to and between the bounds (where rounding could misplace
    a value), and anywhere up to a day."""
    near = st.builds(
        lambda bound, delta: max(round(bound * 1e9) + delta, 0),
        st.sampled_from(BOUNDS),
        st.integers(-3, 3),
    )
    return st.one_of(near, st.integers(0, 86_400 * 10**9))


@given(st.lists(_around_bounds(), max_size=60))
def test_record_ns_records_what_record_records_of_the_values_in_seconds(
    values: list[int],
) -> None:
    one, many = HistogramSeries((), BOUNDS), HistogramSeries((), BOUNDS)
    for value in values:
        one.record(value / 1e9)
    record_ns(many, list(values))
    counts, total, low, high = _state(many)
    assert counts == one.counts
    assert total == pytest.approx(one.sum)
    assert (low, high) == (one.min, one.max)


@given(
    st.lists(  # decimal bounds, as configured: 8.046 s is 8045999999.999999 ns as a float
        st.integers(1, 10**7).map(lambda n: n / 10**4), min_size=1, max_size=12, unique=True
    ),
    st.data(),
)
def test_record_ns_buckets_exactly_for_any_bounds(bounds: list[float], data: st.DataObject) -> None:
    edges = tuple(sorted(bounds))
    near = st.builds(
        lambda bound, delta: max(int(bound * 1e9) + delta, 0),
        st.sampled_from(edges),
        st.integers(-2, 2),
    )
    values = data.draw(st.lists(near, max_size=30))
    one, many = HistogramSeries((), edges), HistogramSeries((), edges)
    for value in values:
        one.record(value / 1e9)
    record_ns(many, list(values))
    assert many.counts == one.counts


@example(8.046)  # 8045999999.999999 ns as a float: its limit is 8046000000, not the floor
@example(0.25445861)
@given(st.floats(0, 10**6, allow_nan=False))
def test_a_bounds_nanosecond_limit_is_the_last_count_within_it(bound: float) -> None:
    (limit,) = _limits_ns((bound,))
    assert limit / 1e9 <= bound < (limit + 1) / 1e9


@given(
    st.lists(
        st.one_of(st.integers(-1, 0), st.integers(0, 10**10), st.sampled_from(SIZE_BOUNDS)),
        max_size=60,
    )
)
def test_counts_at_scale_one_are_recorded_as_record_records_them_placeholders_skipped(
    values: list[int],
) -> None:
    # Byte sizes (``http.server.request.body.size``): recorded as they are; a negative value
    # holds the place of a size an entry does not have.
    one, many = HistogramSeries((), SIZE_BOUNDS), HistogramSeries((), SIZE_BOUNDS)
    for value in values:
        if value >= 0:
            one.record(value)
    record_ns(many, list(values), 1)
    counts, total, low, high = _state(many)
    assert counts == one.counts
    assert total == one.sum
    assert (low, high) == (one.min, one.max)


def test_a_batch_records_each_series_at_its_own_scale() -> None:
    registry = Registry()
    duration = _series(registry, "d")
    size = registry.instrument("s", "histogram", "By", "", bounds=SIZE_BOUNDS).histogram(())
    batch = Batches(registry).of(duration, size, scales=(NS, 1))
    batch.add((2_000_000, 2))
    batch.add((-1, 70_000))  # no duration for this one (a live request)
    registry.collect()
    assert duration.drained is not None and size.drained is not None
    assert (duration.drained.count, duration.drained.sum) == (1, pytest.approx(0.002))
    assert (size.drained.count, size.drained.sum) == (2, 70_002)
    assert (size.drained.min, size.drained.max) == (2, 70_000)


def test_queued_nanoseconds_are_recorded_in_seconds_before_a_collection() -> None:
    registry = Registry()
    duration, overhead = _series(registry, "d"), _series(registry, "o")
    batch = Batches(registry).of(duration, overhead)
    batch.add((2_000_000, 5_000))
    batch.add((30_000_000, 7_000))
    assert sum(duration.counts) == 0  # queued, not recorded yet
    registry.collect()
    assert duration.drained is not None and overhead.drained is not None
    assert duration.drained.count == 2
    assert duration.drained.sum == pytest.approx(0.032)
    assert overhead.drained.max == pytest.approx(7e-6)


def test_a_batch_records_itself_once_fold_at_values_are_queued() -> None:
    registry = Registry()
    series = _series(registry)
    batch = Batches(registry).of(series)
    for _ in range(FOLD_AT):
        batch.add((1000,))
    assert sum(series.counts) == FOLD_AT
    assert batch.values == []


def test_threads_adding_at_once_lose_nothing() -> None:
    registry = Registry()
    first, second = _series(registry, "a"), _series(registry, "b")
    batch = Batches(registry).of(first, second)
    per_thread = 5 * FOLD_AT + 3

    def add() -> None:
        for n in range(per_thread):
            batch.add((n, 2 * n))

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    registry.collect()
    assert first.drained is not None and second.drained is not None
    assert first.drained.count == second.drained.count == 8 * per_thread
    assert second.drained.sum == pytest.approx(2 * first.drained.sum)  # pairs stay pairs


def test_the_queue_stays_bounded_while_another_thread_holds_the_lock() -> None:
    registry = Registry()
    series = _series(registry)
    batch = Batches(registry).of(series)
    longest = 0
    with held_elsewhere(registry.lock):  # e.g. a long collection
        for _ in range(MAX_QUEUED + 500):
            batch.add((1000,))
            longest = max(longest, len(batch.values))
    registry.collect()
    assert longest <= MAX_QUEUED
    assert series.drained is not None and series.drained.count == MAX_QUEUED + 500


def test_one_batch_per_series_however_often_it_is_asked_for() -> None:
    registry = Registry()
    found = Batches(registry)
    series = _series(registry)
    assert found.of(series) is found.of(series)
    assert isinstance(found.of(series), Batch)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads (3.12+)
def test_a_forked_child_does_not_count_what_its_parent_had_queued() -> None:
    registry = Registry()
    series = _series(registry)
    batch = Batches(registry).of(series)
    for _ in range(10):
        batch.add((1000,))

    def child() -> int:  # a worker forked from a master that ran queries
        batch.add((1000,))
        registry.collect()
        return series.drained.count if series.drained is not None else 0

    assert in_a_worker(child) == 1  # its own value only
    registry.collect()
    assert series.drained is not None and series.drained.count == 10  # the parent's stay
    assert batches_module._live  # the registry's batches are known to the fork handler
