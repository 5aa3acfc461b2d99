"""Plain operations the compiled wrapper ends, queued as pairs of C integers (``_speedups``).

An operation with nothing but its duration and overhead to record is queued as a
(duration, overhead) pair in its wrapper's ``Values``, announced in ``rt.ended`` by one
marker per fold; the in-flight count is a ``Count``. Whatever path reads them (the compiled
fold, the Python one, a replaced runtime's forward, a forked child) must count each
operation exactly once, as the Python records did.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.trace import NoOpTracerProvider

import syncperf
from syncperf import _accel, _fold, _lifecycle, _runtime
from syncperf.testing import Capture, capture
from tests._forked import in_a_worker
from tests._threads import held_elsewhere
from tests.unit.test_export_contract import ListExporter
from tests.unit.test_fold import _totals

pytestmark = pytest.mark.skipif(_accel.speedups is None, reason="the compiled path is not built")


@pytest.fixture
def metrics_only() -> Iterator[Capture]:
    with capture(tracer_provider=NoOpTracerProvider()) as cap:
        yield cap


def _handler() -> Any:
    @syncperf.instrument_sync("push", entity="todo")
    def push(action: str = "plain") -> int:
        if action == "batch":
            syncperf.current_operation().set_batch_size(3)
        elif action == "error":
            syncperf.current_operation().set_error("rejected")
        return 1

    return push


def _pairs(rt: _runtime.Runtime) -> list[Any]:
    """The pair buffers whose markers are queued now."""
    return [record[1] for record in list(rt.ended) if len(record) == 2]


def _histograms(cap: Capture) -> list[tuple[Any, ...]]:
    names = ("sync.operation.duration", "syncperf.overhead", "sync.batch.size")
    found = [
        (name, sorted(p.attributes.items()), p.count, list(p.bucket_counts), p.sum, p.min, p.max)
        for name in names
        for p in cap.points(name)
    ]
    return sorted(found, key=repr)


def test_a_plain_operation_is_queued_as_a_pair_behind_one_marker(metrics_only: Capture) -> None:
    push = _handler()
    for _ in range(10):
        push()
    rt = metrics_only.runtime
    (pairs,) = _pairs(rt)  # one marker for the ten
    assert len(rt.ended) == 1 and len(pairs) == 20
    push("batch")  # more to record: a record of its own
    assert len(rt.ended) == 2 and len(pairs) == 20
    assert metrics_only.total("sync.operation.duration") == 11
    assert len(pairs) == 0 and not rt.ended  # collection folded them in


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["plain", "plain", "batch", "error"]),
        st.one_of(st.integers(0, 3 * 10**9), st.integers(2**50, 2**51), st.just(-5)),
    ),
    min_size=1,
    max_size=_fold.FOLD_PAIRS_AT + 40,
)


def _run(steps: list[tuple[str, int]], python_fold: bool) -> list[tuple[Any, ...]]:
    """The histograms exported after ``steps``, each a call whose clock steps by the given
    amount at every read (durations past 2**53, backwards: what a swapped clock may do)."""
    speedups = _fold.speedups
    clock = [10**12]
    step = [0]

    def tick() -> int:
        clock[0] += step[0]
        return clock[0]

    saved = _lifecycle._perf
    _lifecycle._perf = tick
    if python_fold:
        _fold.speedups = None
    try:
        with capture(tracer_provider=NoOpTracerProvider()) as cap:
            push = _handler()
            for action, amount in steps:
                step[0] = amount
                push(action)
            step[0] = 0
            return _histograms(cap)
    finally:
        _lifecycle._perf = saved
        _fold.speedups = speedups


@settings(max_examples=40, deadline=None)
@given(STEPS)
def test_pairs_fold_into_what_the_python_fold_records_of_the_same_operations(
    steps: list[tuple[str, int]],
) -> None:
    """The compiled fold reads pairs as C integers; the Python one expands each marker into
    the records it stands for: the same counts, buckets, sums, minima and maxima, durations
    past 2**53 and negative ones included, mixed with operations queued as records."""
    assert _run(steps, python_fold=False) == _run(steps, python_fold=True)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads (3.12+)
def test_a_forked_child_does_not_count_the_pairs_its_parent_had_queued(
    metrics_only: Capture,
) -> None:
    push = _handler()
    for _ in range(10):
        push()
    assert _pairs(metrics_only.runtime)  # queued, not folded: the case under test

    def child() -> float:
        push()
        return metrics_only.total("sync.operation.duration")

    assert in_a_worker(child) == 1  # its own operation only
    assert metrics_only.total("sync.operation.duration") == 10  # the parent lost nothing


def test_pairs_stay_bounded_while_another_thread_holds_the_lock(metrics_only: Capture) -> None:
    rt = metrics_only.runtime
    push = _handler()
    push()  # its series are bound (binding waits for the lock)
    longest = 0
    calls = _fold.MAX_QUEUED + 500
    with held_elsewhere(rt.lock):  # a long collection, say
        for _ in range(calls):
            push()
            longest = max([longest, *(len(pairs) // 2 for pairs in _pairs(rt))])
    assert longest <= _fold.MAX_QUEUED
    assert metrics_only.total("sync.operation.duration") == calls + 1


def test_pairs_queued_before_and_during_configure_are_all_counted() -> None:
    """Pairs queued in a runtime ``configure()`` replaces: those queued before go out in its
    last export, those of an operation open across it are forwarded to the new one."""
    exporter = ListExporter()
    previous = _runtime.replace(None)
    try:
        syncperf.configure(metric_exporters=[exporter], export_interval=3600)
        first = _runtime.current()

        @syncperf.instrument_sync("push", entity="todo")
        def push(reconfigure: bool = False) -> None:
            if reconfigure:  # an operation open across configure(): it ends in `first`
                syncperf.configure(metric_exporters=[exporter], export_interval=3600)

        for _ in range(5):
            push()
        assert _pairs(first)
        push(reconfigure=True)
        assert _runtime.current() is not first and not first.ended
        for _ in range(3):
            push()
        assert _runtime.force_flush(timeout=5)
        assert _totals(exporter, "sync.operation.duration") == 9
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()


def test_whether_an_operation_records_its_query_count_is_decided_as_it_ends(
    metrics_only: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With engines instrumented every operation records its query count (0 here), so it is
    queued as a record, not a pair; operations that ended before an engine was instrumented
    record none, although they are folded after."""
    push = _handler()
    for _ in range(3):
        push()
    assert _pairs(metrics_only.runtime)
    monkeypatch.setattr(_runtime.Runtime, "db_instrumented", 1)
    for _ in range(7):
        push()
    assert len(_pairs(metrics_only.runtime)[0]) == 6  # the three before, as pairs
    assert metrics_only.total("sync.operation.duration") == 10
    (point,) = metrics_only.points("sync.db.queries")
    assert (point.count, point.sum) == (7, 0)


def test_a_fold_that_fails_on_pairs_counts_them_lost_and_later_ones_are_counted() -> None:
    """A fold that fails on a marker (a series that cannot be bound, a MemoryError) loses
    that marker's operations, each counted as ``operation_end_failed``; the wrapper's next
    operations queue a marker again and are counted."""
    with capture(tracer_provider=NoOpTracerProvider(), strict=False) as cap:
        push = _handler()
        for _ in range(10):
            push()
        rt = cap.runtime
        bound = rt.op_series[("push", "todo")]
        good, bound.success = bound.success, []  # unhashable: the fold fails on it
        try:
            with rt.lock:
                _fold.fold(rt)
        finally:
            bound.success = good
        assert not _pairs(rt)
        for _ in range(500):
            push()
        assert cap.total("sync.operation.duration") == 500
        dropped = cap.total("syncperf.dropped", {"syncperf.reason": "operation_end_failed"})
        assert dropped == 10


def test_values_and_count_answer_like_the_list_and_deque_they_replace() -> None:
    speedups = _accel.speedups
    assert speedups is not None
    with pytest.raises(TypeError):
        speedups.Values(1)
    values = speedups.Values()
    assert len(values) == 0 and values.take() == [] and list(values) == []
    with pytest.raises(IndexError):
        values[0]
    count = speedups.Count()
    assert not count and len(count) == 0
    with pytest.raises(IndexError):
        count.pop()
    count.append(None)
    count.append(None)
    count.pop()
    assert count and len(count) == 1
    count.clear()
    assert len(count) == 0
    with pytest.raises(TypeError):
        speedups.Count(3)


def test_the_in_flight_count_holds_while_a_compiled_call_runs(metrics_only: Capture) -> None:
    seen: list[float] = []

    @syncperf.instrument_sync("push", entity="todo")
    def push() -> None:
        seen.append(metrics_only.total("sync.operations.active"))

    push()
    push()
    assert seen == [1, 1]
    assert metrics_only.total("sync.operations.active") == 0
