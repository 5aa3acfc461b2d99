"""A long-lived task that stops reading a measured async stream after its first item: the
stream's operation (or publish batch) ends in asyncio's finalizer, in another context. The
ended ones must not stay reachable from the task's context, chained through context tokens
(one kept per iteration for the life of the task)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

import syncperf
from syncperf import _runtime
from syncperf._operation import SyncOperation
from syncperf.outbox import Outbox
from syncperf.outbox._batch import PublishBatch

N = 400


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    syncperf.configure()
    yield
    previous = _runtime.replace(None)
    if previous is not None:
        previous.shutdown()


async def _changes() -> AsyncIterator[int]:
    async with syncperf.sync_operation("pull", entity="todo") as op:
        for i in range(10):
            op.record_items(1)
            yield i


_box = Outbox("orders")


async def _relay() -> AsyncIterator[int]:
    async with _box.publish() as batch:
        for i in range(10):
            batch.published()
            yield i


def _alive(kind: type) -> int:
    gc.collect()
    return sum(1 for each in gc.get_objects() if isinstance(each, kind))


@pytest.mark.parametrize(
    ("stream", "kind"), [(_changes, SyncOperation), (_relay, PublishBatch)], ids=["op", "batch"]
)
def test_abandoned_streams_in_one_task_keep_no_chain_of_ended_ones(
    stream: Callable[[], AsyncIterator[int]], kind: type
) -> None:
    seen: list[int] = []

    async def worker() -> None:
        for _ in range(N):
            async for _item in stream():
                break  # the consumer needed the first item only
            await asyncio.sleep(0)  # asyncio's finalizer closes the stream meanwhile
        seen.append(_alive(kind))  # the task (and its context) still alive

    asyncio.run(worker())
    assert seen[0] <= 5  # N / 2 and more before: each ended one held the one before it


def test_operations_ended_in_another_context_keep_no_chain_of_ended_ones() -> None:
    """The plain end (no exception: the compiled one where built) in a context other than
    the one that started the operation."""

    def task() -> int:  # its own context: the last operation stays current in it
        for _ in range(N):
            block = syncperf.sync_operation("push", entity="todo")
            block.__enter__()
            contextvars.copy_context().run(block.__exit__, None, None, None)
        return _alive(SyncOperation)

    assert contextvars.copy_context().run(task) <= 5  # N before
