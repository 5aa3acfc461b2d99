"""Exact totals under threads and asyncio tasks."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import syncperf
from syncperf.testing import Capture, capture


def test_eight_threads_record_exact_totals() -> None:
    # A CPU-starved machine can make span calls look slow in wall-clock time; this test is
    # about exact totals, so the guard is given room (tests/unit/test_guard.py covers it).
    with capture(overhead_budget=10.0) as cap:
        _hammer_from_eight_threads(cap)


def _hammer_from_eight_threads(cap: Capture) -> None:
    per_thread = 5_000
    barrier = threading.Barrier(8)

    def work(index: int) -> None:
        barrier.wait()
        for _ in range(per_thread):
            with syncperf.sync_operation("push", entity=f"e{index % 2}") as op:
                op.set_batch_size(2)
                op.record_items(2, change="created")
                op.record_conflict()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = 8 * per_thread
    assert cap.total("sync.operation.duration") == total
    assert cap.total("sync.items") == 2 * total
    assert cap.total("sync.conflicts") == total
    assert sum(p.sum for p in cap.points("sync.batch.size")) == 2 * total
    assert cap.total("sync.operations.active") == 0
    # Spans are never lost silently: an overfull span queue drops and counts, like the SDK's
    # BatchSpanProcessor (8 threads doing nothing but syncperf can outrun the finisher).
    dropped = cap.total("syncperf.dropped", {"syncperf.reason": "span_queue_full"})
    assert len(cap.spans()) + dropped == total


async def test_a_thousand_concurrent_tasks_record_exact_totals(syncperf_capture: Capture) -> None:
    started = asyncio.Event()

    @syncperf.instrument_sync("pull", entity="todo", batch_size=lambda n: n)
    async def pull(n: int) -> int:
        await started.wait()
        syncperf.current_operation().record_items(n)
        await asyncio.sleep(0)
        return n

    tasks = [asyncio.create_task(pull(i % 7)) for i in range(1_000)]
    await asyncio.sleep(0)
    (active,) = syncperf_capture.points("sync.operations.active")
    assert active.value == 1_000
    started.set()
    results = await asyncio.gather(*tasks)
    cap = syncperf_capture
    assert cap.total("sync.operation.duration") == 1_000
    assert cap.total("sync.items") == sum(results)
    assert cap.total("sync.operations.active") == 0
    spans = cap.spans()
    assert len(spans) == 1_000
    assert all(s.parent is None for s in spans)  # no task's span leaked into another's context


def test_eight_threads_and_a_collector_count_every_decorated_push_exactly() -> None:
    # Operations end without taking the runtime's lock (they are queued and folded in
    # batches); a collection running at the same time must neither lose nor repeat one.
    per_thread, threads_n = 3_000, 8

    @syncperf.instrument_sync(
        "push",
        entity=lambda table: table,
        batch_size=lambda body: len(body),
        conflicts=lambda result: result,
    )
    def push(table: str, body: list[int]) -> int:
        syncperf.current_operation().record_items(len(body), change="created")
        syncperf.current_operation().record_items(1, change="updated")
        return len(body) % 2

    with capture() as cap:
        barrier = threading.Barrier(threads_n + 1)
        done = threading.Event()
        seen: list[float] = []

        def work(index: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                push(f"t{index % 3}", [0] * (i % 5))

        def collect() -> None:
            barrier.wait()
            while not done.is_set():
                seen.append(cap.total("sync.operation.duration"))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
        collector = threading.Thread(target=collect)
        for thread in [*threads, collector]:
            thread.start()
        for thread in threads:
            thread.join()
        done.set()
        collector.join()
        total = threads_n * per_thread
        sizes = [i % 5 for i in range(per_thread)] * threads_n
        assert seen == sorted(seen)  # cumulative: never goes back
        assert cap.total("sync.operation.duration") == total
        assert cap.total("syncperf.overhead", {"syncperf.component": "operation"}) == total
        assert cap.total("sync.items", {"sync.change": "created"}) == sum(sizes)
        assert cap.total("sync.items", {"sync.change": "updated"}) == total
        assert cap.total("sync.conflicts") == sum(n % 2 for n in sizes)
        assert sum(p.sum for p in cap.points("sync.batch.size")) == sum(sizes)
        assert cap.total("sync.operations.active") == 0


async def test_one_sync_operation_object_shared_by_concurrent_tasks_ends_each_tasks_own(
    syncperf_capture: Capture,
) -> None:
    shared = syncperf.sync_operation("pull")  # "re-entrant and shareable"
    b_entered = asyncio.Event()
    a_ended = asyncio.Event()

    async def a() -> None:
        with contextlib.suppress(RuntimeError):
            async with shared as op:
                op.record_items(1)
                await b_entered.wait()
                raise RuntimeError("a failed")
        a_ended.set()

    async def b() -> None:
        async with shared as op:
            b_entered.set()
            op.record_items(2)
            await a_ended.wait()
            await asyncio.sleep(0.05)  # b lasts longer than a: durations tell them apart
            async with shared as inner:  # re-entrant: joins b's own operation
                assert inner is op

    await asyncio.gather(a(), b())
    cap = syncperf_capture
    (error,) = cap.points("sync.operation.duration", {"sync.outcome": "error"})
    (success,) = cap.points("sync.operation.duration", {"sync.outcome": "success"})
    assert error.count == success.count == 1
    assert success.sum >= 0.05 > error.sum
    spans = {s.attributes["sync.outcome"]: s for s in cap.spans()}
    assert spans["error"].attributes["sync.items"] == 1
    assert spans["success"].attributes["sync.items"] == 2
    assert cap.total("sync.operations.active") == 0


async def test_a_shared_sync_operation_left_by_its_owner_before_a_thread_that_joined_it(
    syncperf_capture: Capture,
) -> None:
    shared = syncperf.sync_operation("pull")
    joined = threading.Event()
    release = threading.Event()

    def work() -> None:
        with shared:  # the context is copied: it joins the owner's operation
            joined.set()
            release.wait(5)

    async with shared:
        worker = asyncio.ensure_future(asyncio.to_thread(work))
        await asyncio.to_thread(joined.wait, 5)
    assert not syncperf.current_operation().recording  # the owner's exit ended its own
    async with syncperf.sync_operation("push"):  # a later operation: its own, counted
        pass
    release.set()
    await worker
    cap = syncperf_capture
    (pull,) = cap.points("sync.operation.duration", {"sync.operation": "pull"})
    assert pull.count == 1
    assert cap.total("sync.operation.duration", {"sync.operation": "push"}) == 1
    assert cap.total("sync.operations.active") == 0


async def test_operations_a_task_starts_after_the_operation_that_spawned_it_ended_are_its_own(
    syncperf_capture: Capture,
) -> None:
    @syncperf.instrument_sync("push", entity="todo")
    async def push_later() -> None:
        syncperf.current_operation().record_items(7)

    pull_ended = asyncio.Event()

    async def later() -> None:
        await pull_ended.wait()
        assert not syncperf.current_operation().recording  # the pull is over, here too
        await push_later()
        async with syncperf.sync_operation("push", entity="note") as op:
            op.record_items(3)

    async with syncperf.sync_operation("pull"):
        task = asyncio.create_task(later())  # copies the context: the pull is current there
    pull_ended.set()
    await task
    cap = syncperf_capture
    assert cap.total("sync.operation.duration", {"sync.operation": "pull"}) == 1
    assert cap.total("sync.operation.duration", {"sync.operation": "push"}) == 2
    assert cap.total("sync.items", {"sync.entity": "todo"}) == 7
    assert cap.total("sync.items", {"sync.entity": "note"}) == 3
