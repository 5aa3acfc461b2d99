"""instrument_sync on handlers that are async without saying so: an object with an
``async __call__``, a partial of a coroutine function, a coroutine function behind a plain
``def`` wrapper. Each call is its own operation, current only where it is awaited."""

from __future__ import annotations

import asyncio
import functools
import gc
import sys
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from opentelemetry import trace

import syncperf
from syncperf._operation import active_operation
from syncperf.testing import Capture

SHAPES = ["async __call__", "partial", "plain def wrapper"]


async def _apply(rows: list[int], delay: float = 0.01) -> int:
    await asyncio.sleep(delay)
    return len(rows)


def _retry(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A hand-written decorator that does not mark its wrapper as a coroutine function."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return call


def _handler(shape: str) -> Callable[..., Any]:
    if shape == "async __call__":

        class Handler:
            async def __call__(self, rows: list[int]) -> int:
                return await _apply(rows)

        return Handler()
    if shape == "partial":
        return functools.partial(_apply, delay=0.01)
    return _retry(_apply)


def _measured(shape: str) -> Callable[..., Any]:
    return syncperf.instrument_sync("push", items=lambda result: result)(_handler(shape))


@pytest.mark.parametrize("shape", SHAPES)
async def test_concurrent_calls_are_one_operation_each(
    syncperf_capture: Capture, shape: str
) -> None:
    push = _measured(shape)
    assert await asyncio.gather(push([1]), push([1, 2]), push([1, 2, 3])) == [1, 2, 3]
    cap = syncperf_capture
    assert cap.total("sync.operation.duration", {"sync.operation": "push"}) == 3
    assert cap.total("sync.items") == 6
    assert len(cap.spans()) == 3
    assert active_operation() is None  # nothing left current in the caller
    assert cap.total("sync.operations.active") == 0


@pytest.mark.parametrize("shape", SHAPES)
async def test_no_ended_span_stays_current_in_the_caller(
    syncperf_capture: Capture, shape: str
) -> None:
    push = _measured(shape)

    @syncperf.instrument_sync("pull")
    async def pull() -> dict[str, int]:
        return {}

    assert await asyncio.wait_for(push([1, 2]), timeout=5) == 2
    assert not trace.get_current_span().get_span_context().is_valid
    assert active_operation() is None
    await pull()
    spans = {span.name: span for span in syncperf_capture.spans()}
    assert spans["sync pull"].parent is None  # a root, not a child of the ended push
    assert syncperf_capture.total("sync.operation.duration") == 2


async def test_a_disguised_coroutine_in_a_joined_operation_counts_once(
    syncperf_capture: Capture,
) -> None:
    @syncperf.instrument_sync("push", items=lambda result: result)
    async def apply_table(rows: list[int]) -> int:
        await asyncio.sleep(0)
        return len(rows)

    @syncperf.instrument_sync("push", items=lambda result: result)
    @_retry
    async def push_all(tables: list[list[int]]) -> int:
        return sum([await apply_table(rows) for rows in tables])  # must not count again

    async with syncperf.sync_operation("push"):
        assert await push_all([[1, 2], [3]]) == 3
    assert syncperf_capture.total("sync.items") == 3
    assert syncperf_capture.total("sync.operation.duration") == 1


def _outcomes(cap: Capture) -> dict[tuple[str, str | None], int]:
    found: dict[tuple[str, str | None], int] = {}
    for p in cap.points("sync.operation.duration"):
        key = (p.attributes["sync.outcome"], p.attributes.get("error.type"))
        found[key] = found.get(key, 0) + p.count
    return found


async def test_a_returned_future_is_handed_back_and_ends_the_operation_when_done(
    syncperf_capture: Capture,
) -> None:
    loop = asyncio.get_running_loop()

    async def fail() -> int:
        raise ValueError("no")

    @syncperf.instrument_sync("push", items=lambda result: result)
    def schedule(rows: list[int] | None) -> asyncio.Future[int]:
        return loop.create_task(_apply(rows) if rows is not None else fail())

    task = schedule([1, 2])
    assert isinstance(task, asyncio.Task)  # the Task itself: wait(), cancel(), two awaits
    assert active_operation() is None
    done, _ = await asyncio.wait([task, schedule([1])])
    assert len(done) == 2
    assert await task == 2 and await task == 2
    cancelled = schedule([1])
    assert cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    with pytest.raises(ValueError):
        await schedule(None)
    future: asyncio.Future[int] = loop.create_future()
    future.set_result(4)  # already done when returned
    assert syncperf.instrument_sync("push")(lambda: future)() is future
    await asyncio.sleep(0)  # the done callbacks run
    cap = syncperf_capture
    assert _outcomes(cap) == {
        ("success", None): 3,
        ("error", "asyncio.exceptions.CancelledError"): 1,
        ("error", "ValueError"): 1,
    }
    assert cap.total("sync.items") == 3
    assert cap.total("sync.operations.active") == 0
    assert active_operation() is None


async def test_an_object_that_only_looks_like_a_future_is_awaited_as_before(
    syncperf_capture: Capture,
) -> None:
    class Hostile:
        @property
        def _asyncio_future_blocking(self) -> bool:
            raise RuntimeError("hostile")

        def __await__(self) -> Any:
            return _apply([1]).__await__()

    measured = syncperf.instrument_sync("push")(lambda: Hostile())
    assert await measured() == 1
    assert _outcomes(syncperf_capture) == {("success", None): 1}
    assert syncperf_capture.total("sync.operations.active") == 0


@pytest.mark.filterwarnings("ignore:coroutine '_apply' was never awaited:RuntimeWarning")
async def test_a_result_never_awaited_ends_its_operation(syncperf_capture: Capture) -> None:
    push = syncperf.instrument_sync("push", items=lambda result: result)(_retry(_apply))
    dropped = push([1])
    del dropped
    gc.collect()
    push([1]).close()
    task = asyncio.ensure_future(push([1]))
    task.cancel()  # before its first step
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.create_task(push([1, 2])) == 2  # still a coroutine to create_task
    cap = syncperf_capture
    assert _outcomes(cap) == {("success", None): 1, ("error", "not_awaited"): 3}
    assert cap.total("sync.items") == 2
    assert cap.total("sync.operations.active") == 0
    assert active_operation() is None


async def test_a_future_that_refuses_callbacks_ends_its_operation_at_once(
    syncperf_capture: Capture,
) -> None:
    class Refusing(asyncio.Future[int]):
        def add_done_callback(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("no callbacks")

    future = Refusing()
    assert syncperf.instrument_sync("push")(lambda: future)() is future
    future.cancel()
    assert _outcomes(syncperf_capture) == {("error", "RuntimeError"): 1}
    assert syncperf_capture.total("sync.operations.active") == 0
    assert active_operation() is None


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.uncancel and the message: 3.11")
async def test_a_cancelled_future_keeps_its_cancellation_for_whoever_awaits_it(
    syncperf_capture: Capture,
) -> None:
    """The operation ends as cancelled without reading the future's result first: asyncio
    hands the original ``CancelledError`` (anyio's, with its message) out only once."""
    loop = asyncio.get_running_loop()
    schedule = syncperf.instrument_sync("push")(lambda: loop.create_task(asyncio.sleep(1)))
    with anyio.move_on_after(0.01) as scope:
        await schedule()
    assert scope.cancelled_caught  # absorbed by its scope, not cancelling this whole task
    task = asyncio.current_task()
    assert task is not None
    loop.call_later(0.01, task.cancel, "stopped here")
    with pytest.raises(asyncio.CancelledError) as info:
        await schedule()
    task.uncancel()
    assert info.value.args == ("stopped here",)
    assert _outcomes(syncperf_capture) == {("error", "asyncio.exceptions.CancelledError"): 2}
    assert syncperf_capture.total("sync.operations.active") == 0
    assert active_operation() is None
