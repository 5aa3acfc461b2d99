"""The deferred fold: ended operations are queued and recorded in batches (``_fold``).

Whatever is queued must count exactly once wherever it is read (a forked child starts
empty), the queue stays bounded when the lock is busy, and a failure while recording one
operation neither loses the others nor breaks a collection.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import MetricsData

import syncperf
from syncperf import _fold, _lifecycle, _runtime
from syncperf.testing import capture
from tests._forked import in_a_worker
from tests._threads import held_elsewhere
from tests.unit.test_export_contract import ListExporter


def _push(items: int = 2) -> None:
    with syncperf.sync_operation("push", entity="todo") as op:
        op.record_items(items, change="created")


def test_an_operation_changed_after_its_end_records_what_it_had_at_its_end() -> None:
    # e.g. a task the handler started still holds the operation in its context and runs a
    # query after the response: the operation's numbers were final at its end, and what the
    # late calls recorded is counted as dropped (strict mode raises: test_operation.py).
    with capture(strict=False) as cap:
        with syncperf.sync_operation("push", entity="todo") as op:
            op.record_items(2, change="created")
        op.record_items(5, change="created")
        op.set_batch_size(9)
        op.add_db_time(1_000_000)
        op.record_conflict()
        op.record_idempotency_hit()
        assert cap.total("sync.items") == 2
        assert cap.total("sync.batch.size") == 0
        assert cap.total("sync.conflicts") == 0
        assert cap.total("sync.idempotency.hits") == 0
        assert cap.total("sync.operation.duration", {"sync.outcome": "success"}) == 1
        assert cap.total("syncperf.dropped", {"syncperf.reason": "operation_ended"}) == 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads (3.12+)
def test_a_forked_child_does_not_count_the_operations_its_parent_had_queued() -> None:
    with capture() as cap:
        for _ in range(10):
            _push()
        assert cap.runtime.ended  # still queued (fewer than FOLD_AT): the case under test

        def child() -> float:
            _push()
            return cap.total("sync.operation.duration")

        assert in_a_worker(child) == 1  # its own operation only
        assert cap.total("sync.operation.duration") == 10  # the parent lost nothing


def test_the_queue_stays_bounded_while_another_thread_holds_the_lock() -> None:
    with capture() as cap:
        rt = cap.runtime
        _push()  # its series are bound (binding waits for the lock)
        longest = 0
        calls = _fold.MAX_QUEUED + 500
        with held_elsewhere(rt.lock):  # e.g. a long collection, or a thread binding series
            for _ in range(calls):
                _push()
                longest = max(longest, len(rt.ended))
        assert longest <= _fold.MAX_QUEUED
        assert cap.total("sync.operation.duration") == calls + 1
        assert cap.total("sync.items") == 2 * (calls + 1)


def test_with_no_collection_at_all_the_queue_holds_at_most_one_batch() -> None:
    with capture() as cap:
        for _ in range(10 * _fold.FOLD_AT):
            _push()
        assert len(cap.runtime.ended) < _fold.FOLD_AT


def _failing_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make recording the client's reports fail for the first operation that has some."""
    real = _fold.record_observed
    calls = []

    def record(*args: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_fold, "record_observed", record)


def _push_with_a_report() -> None:
    with syncperf.sync_operation("pull", entity="todo") as op:
        op.record_checkpoint(time.time() - 5)


def test_a_failure_while_folding_one_operation_is_counted_and_the_rest_are_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _failing_once(monkeypatch)
    with capture(strict=False) as cap:
        _push_with_a_report()
        for _ in range(9):
            _push()
        # the collection folds the queue: it neither raises nor loses the other nine
        assert cap.total("sync.items") == 18
        assert cap.total("syncperf.dropped", {"syncperf.reason": "operation_end_failed"}) == 1
        for _ in range(3 * _fold.FOLD_AT):  # nothing is wedged
            _push()
        assert cap.total("sync.items") == 18 + 6 * _fold.FOLD_AT
        assert len(cap.runtime.ended) < _fold.FOLD_AT


def test_in_strict_mode_a_failure_while_folding_raises_after_the_rest_are_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _failing_once(monkeypatch)
    with capture() as cap:
        _push_with_a_report()
        for _ in range(9):
            _push()
        with pytest.raises(RuntimeError, match="boom"):
            cap.metrics()
        assert not cap.runtime.ended
        assert cap.total("sync.items") == 18


def _operations(data: MetricsData) -> int:
    return sum(
        point.count
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "sync.operation.duration"
        for point in metric.data.data_points
    )


def test_configure_exports_the_old_runtimes_queue_and_the_new_one_starts_empty() -> None:
    exporter = ListExporter()
    previous = _runtime.replace(None)
    try:
        syncperf.configure(metric_exporters=[exporter], export_interval=3600)
        for _ in range(10):
            _push()
        syncperf.configure(metric_exporters=[exporter], export_interval=3600, max_entities=5)
        assert _operations(exporter.batches[-1]) == 10  # the old runtime's last export
        _push()
        _runtime.force_flush()
        assert _operations(exporter.batches[-1]) == 1
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()


def _totals(exporter: ListExporter, name: str) -> float:
    """Every runtime's cumulative total of ``name`` (the last export of each stream)."""
    latest: dict[tuple[object, int], float] = {}
    for batch in exporter.batches:
        for metric in batch.resource_metrics[0].scope_metrics[0].metrics:
            if metric.name == name:
                for point in metric.data.data_points:
                    key = (tuple(sorted(point.attributes.items())), point.start_time_unix_nano)
                    latest[key] = getattr(point, "count", None) or point.value
    return sum(latest.values())


def test_operations_open_across_configure_calls_are_counted_once_by_the_runtime_in_force() -> None:
    # More than FOLD_AT of them: the old runtime folds them itself, and must forward them.
    exporter = ListExporter()
    previous = _runtime.replace(None)
    try:
        syncperf.configure(metric_exporters=[exporter], export_interval=3600)
        first = _runtime.current()
        opened = []
        for i in range(_fold.FOLD_AT + 6):
            context = contextvars.copy_context()
            scope = context.run(syncperf.sync_operation, "push", entity="todo")
            op = context.run(scope.__enter__)
            op.record_items(2, change="created")
            op.record_items(1, change="created", entity=f"note{i % 3}")
            if i % 2:
                op.record_conflict(resolution="server_wins")
            opened.append((context, scope))
        for _ in range(2):  # a chain: what the first runtime records goes to the last one
            syncperf.configure(metric_exporters=[exporter], export_interval=3600)
        last = _runtime.current()
        assert first.in_force() is last and last.retired == [first]
        for context, scope in opened:
            context.run(scope.__exit__, None, None, None)
        _push()
        assert _runtime.force_flush(timeout=5)
        n = _fold.FOLD_AT + 6
        assert _totals(exporter, "sync.items") == 3 * n + 2
        assert _totals(exporter, "sync.conflicts") == n // 2
        assert _totals(exporter, "sync.operation.duration") == n + 1
        assert last.retired == []  # nothing open any more: forgotten
        assert not first.ended
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()


def test_durations_and_overheads_are_recorded_exactly_as_record_records_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fold gathers a batch's nanoseconds per series and records them in one C-level
    # pass: the same operations, on a clock stepping 100 ms (durations of whole tenths of a
    # second, some on a bucket's bound), export what recording each value alone exports.
    from syncperf import _lifecycle
    from syncperf._metrics.aggregates import HistogramSeries

    def one_by_one(series: HistogramSeries, values: list[int]) -> None:
        for value in values:
            series.record(value / 1e9)

    def run() -> list[tuple[Any, ...]]:
        ticks = iter(range(0, 10**15, 100_000_000))
        monkeypatch.setattr(_lifecycle, "_perf", lambda: next(ticks))
        with capture() as cap:
            for index in range(_fold.FOLD_AT + 5):
                if index % 3:
                    _push()
                else:
                    with pytest.raises(ValueError), syncperf.sync_operation("push"):
                        raise ValueError
            points = cap.points("sync.operation.duration") + cap.points("syncperf.overhead")
        return sorted(
            (sorted(p.attributes.items()), p.count, list(p.bucket_counts), p.min, p.max, p.sum)
            for p in points
        )

    batched = run()
    monkeypatch.setattr(_fold, "record_ns", one_by_one)
    reference = run()
    assert sum(point[1] for point in batched) == 2 * (_fold.FOLD_AT + 5)
    assert [p[:5] for p in batched] == [p[:5] for p in reference]
    assert [p[5] for p in batched] == pytest.approx([p[5] for p in reference])


def _configured(exporter: ListExporter) -> _runtime.Runtime:
    syncperf.configure(metric_exporters=[exporter], export_interval=3600)
    return _runtime.current()


def test_an_operation_ending_while_a_collection_decides_to_forget_its_runtime_is_counted() -> None:
    # ``_lifecycle.end`` appends to ``ended`` and then pops the in-flight count, both without
    # the lock: the operation ends here between the collection's two checks (a thread switch).
    exporter = ListExporter()
    previous = _runtime.replace(None)
    try:
        first = _configured(exporter)
        context = contextvars.copy_context()
        scope = context.run(syncperf.sync_operation, "push", entity="todo")
        context.run(scope.__enter__)
        last = _configured(exporter)
        assert last.retired == [first]
        real_idle, armed = first.idle, [True]

        def idle() -> bool:
            if armed:
                armed.clear()
                context.run(scope.__exit__, None, None, None)
            return real_idle()

        first.idle = idle  # type: ignore[method-assign]
        assert _runtime.force_flush(timeout=5)
        assert _runtime.force_flush(timeout=5)
        assert _totals(exporter, "sync.operation.duration") == 1
        assert not first.ended and last.retired == []
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()


def test_an_operation_begun_on_a_runtime_replaced_while_idle_reaches_the_runtime_in_force() -> None:
    # A thread read ``_runtime.installed`` just before configure(): the runtime had nothing
    # open, so no collection looks at it, and the operation forwards what it recorded itself.
    exporter = ListExporter()
    previous = _runtime.replace(None)
    try:
        first = _configured(exporter)
        second = _configured(exporter)
        last = _configured(exporter)
        assert last.retired == []
        for stale in (first, second):
            op = _lifecycle.begin(stale, "push", "todo")
            op.record_items(3, change="created")
            _lifecycle.end(op, None)
        assert not first.ended and not second.ended
        assert _runtime.force_flush(timeout=5)
        assert _totals(exporter, "sync.operation.duration") == 2
        assert _totals(exporter, "sync.items") == 6
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()


def test_a_scrape_while_configure_runs_shows_each_of_syncperfs_families_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the new runtime's collector is registered before the old one's is unregistered: a
    # scrape between the two showed every family twice (promtool: "second HELP line")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

    from syncperf._metrics.prometheus import scrape

    registry = CollectorRegistry()
    previous = _runtime.replace(None)
    seen: list[str] = []
    retire = _runtime._retire

    def scraping_retire(old: _runtime.Runtime, rt: _runtime.Runtime) -> None:
        with syncperf.sync_operation("push"):  # a request the new runtime served meanwhile
            pass
        seen.append(generate_latest(registry).decode())
        seen.append(openmetrics(registry).decode())
        seen.append(scrape(registry, None, None, {})[2].decode())
        retire(old, rt)

    try:
        syncperf.configure(prometheus=registry, export_interval=3600)
        for _ in range(5):
            with syncperf.sync_operation("push"):
                pass
        monkeypatch.setattr(_runtime, "_retire", scraping_retire)
        syncperf.configure(prometheus=registry, export_interval=3600)
        for body in seen:
            assert body.count("# TYPE sync_operation_duration_seconds histogram") == 1, body
            counts = [s for s in body.splitlines() if s.startswith("sync_operation_duration_se")]
            assert [s.split(" ")[-1] for s in counts if "_count" in s] == ["1.0"]
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()


def test_an_operation_open_across_many_configures_keeps_only_its_runtime_and_the_last() -> None:
    # each replaced runtime held its successor: one stream left open kept every runtime
    # configured since alive (~33 KB a configure(), without bound). In a fresh interpreter:
    # what other tests leave running here (threads of their runtimes) would hold some too.
    import subprocess
    import sys

    code = """
import contextvars, gc, weakref
import syncperf
from syncperf import _runtime
syncperf.configure(export_interval=3600)
context = contextvars.copy_context()
scope = context.run(syncperf.sync_operation, "pull")
context.run(scope.__enter__)
runtimes = []
for _ in range(20):
    syncperf.configure(export_interval=3600)
    runtimes.append(weakref.ref(_runtime.current()))
gc.collect()
print(sum(ref() is not None for ref in runtimes))
context.run(scope.__exit__, None, None, None)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]  # the one in force


def test_record_in_force_records_in_the_runtime_in_force_once_the_first_was_replaced() -> None:
    old, new = _runtime.Runtime(syncperf.Config()), _runtime.Runtime(syncperf.Config())
    seen: list[tuple[_runtime.Runtime, int, bool]] = []

    def record(rt: _runtime.Runtime, bound: int) -> str:
        seen.append((rt, bound, rt.lock.locked()))
        return "recorded"

    def rebind(rt: _runtime.Runtime, bound: int) -> int:
        assert not rt.lock.locked()  # binding series takes the lock
        return bound + 1

    try:
        assert _fold.record_in_force(old, 0, record, rebind) == (old, "recorded")
        old.successor = new  # configure() replaced it since the caller picked it
        assert _fold.record_in_force(old, 0, record, rebind) == (new, "recorded")
        assert seen == [(old, 0, True), (new, 1, True)]  # rebound once, under new's lock
        assert not old.lock.locked() and not new.lock.locked()
    finally:
        new.shutdown()
        old.shutdown()


def test_configure_called_from_several_threads_at_once_counts_every_operation() -> None:
    # Two configure() calls at once each retired the runtime the other had just installed:
    # one ended up its own successor (in_force() recursing without end) and counts were lost.
    exporter = ListExporter()
    previous = _runtime.replace(None)
    try:
        syncperf.configure(metric_exporters=[exporter], export_interval=3600)

        @syncperf.instrument_sync("push", entity="todo")
        def push() -> None:
            pass

        stop, calls = threading.Event(), [0, 0]

        def pushing(index: int) -> None:
            while not stop.is_set():
                push()
                calls[index] += 1

        def configuring() -> None:
            for _ in range(15):
                syncperf.configure(metric_exporters=[exporter], export_interval=3600)

        pushers = [threading.Thread(target=pushing, args=(i,)) for i in range(2)]
        configurers = [threading.Thread(target=configuring) for _ in range(2)]
        for thread in (*pushers, *configurers):
            thread.start()
        for thread in configurers:
            thread.join()
        stop.set()
        for thread in pushers:
            thread.join()
        assert _runtime.force_flush(timeout=10)
        assert _totals(exporter, "sync.operation.duration") == sum(calls)
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()
