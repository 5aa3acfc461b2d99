"""sync_operation(), current_operation(), nesting, outcomes and the recorder methods."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.trace import SpanKind, StatusCode

import syncperf
from syncperf.testing import Capture, capture


def test_context_manager_measures_a_block(syncperf_capture: Capture) -> None:
    with syncperf.sync_operation("pull", entity="todo") as op:
        op.set_batch_size(12)
        op.record_items(12, change="updated")
    cap = syncperf_capture
    (point,) = cap.points("sync.operation.duration", {"sync.outcome": "success"})
    assert point.attributes == {
        "sync.operation": "pull",
        "sync.entity": "todo",
        "sync.outcome": "success",
    }
    (batch,) = cap.points("sync.batch.size")
    assert (batch.count, batch.sum) == (1, 12)
    (items,) = cap.points("sync.items")
    assert items.attributes == {
        "sync.operation": "pull",
        "sync.entity": "todo",
        "sync.change": "updated",
    }
    assert items.value == 12


async def test_async_context_manager_measures_a_block(syncperf_capture: Capture) -> None:
    async with syncperf.sync_operation("push", entity="todo") as op:
        op.record_conflict(resolution="server_wins")
    (point,) = syncperf_capture.points("sync.conflicts")
    assert point.attributes == {"sync.entity": "todo", "sync.conflict.resolution": "server_wins"}
    assert syncperf_capture.total("sync.operation.duration", {"sync.outcome": "conflict"}) == 1


def test_current_operation_outside_any_operation_records_nothing(syncperf_capture: Capture) -> None:
    op = syncperf.current_operation()
    assert op.recording is False
    op.set_batch_size(-5)  # even invalid input: nothing happens, nothing raises
    op.record_conflict()
    assert syncperf_capture.metrics() == []


def test_current_operation_inside_returns_the_active_recorder(syncperf_capture: Capture) -> None:
    with syncperf.sync_operation("push") as op:
        assert syncperf.current_operation() is op
        assert op.recording is True
    assert syncperf.current_operation() is not op


def test_nested_decorator_and_block_count_once(syncperf_capture: Capture) -> None:
    @syncperf.instrument_sync("push")
    def push() -> None:
        with syncperf.sync_operation("push", entity="todo") as inner:
            inner.set_batch_size(3)

    push()
    cap = syncperf_capture
    assert cap.total("sync.operation.duration") == 1
    assert cap.total("sync.batch.size", {"sync.entity": "todo"}) == 1
    assert len(cap.spans()) == 1
    assert cap.spans()[0].attributes["sync.entity"] == "todo"


def test_inner_entity_does_not_replace_an_outer_entity(syncperf_capture: Capture) -> None:
    with (
        syncperf.sync_operation("push", entity="todo"),
        syncperf.sync_operation("push", entity="note") as inner,
    ):
        assert inner.entity == "todo"
    assert syncperf_capture.total("sync.operation.duration", {"sync.entity": "todo"}) == 1


def test_exception_inside_a_nested_block_is_counted_once(syncperf_capture: Capture) -> None:
    with (
        pytest.raises(RuntimeError),
        syncperf.sync_operation("push"),
        syncperf.sync_operation("push"),
    ):
        raise RuntimeError("boom")
    assert syncperf_capture.total("sync.operation.duration", {"sync.outcome": "error"}) == 1


@pytest.mark.parametrize(
    ("conflicts", "raises", "outcome"),
    [(0, False, "success"), (2, False, "conflict"), (0, True, "error"), (2, True, "error")],
)
def test_outcome_rules(
    syncperf_capture: Capture, conflicts: int, raises: bool, outcome: str
) -> None:
    with pytest.raises(LookupError) if raises else _nothing():  # noqa: SIM117
        with syncperf.sync_operation("push", entity="todo") as op:
            if conflicts:
                op.record_conflict(count=conflicts)
            if raises:
                raise LookupError
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert point.attributes["sync.outcome"] == outcome
    assert ("error.type" in point.attributes) is raises
    (span,) = syncperf_capture.spans()
    assert span.attributes["sync.outcome"] == outcome


def test_set_error_marks_an_operation_failed_without_an_exception(
    syncperf_capture: Capture,
) -> None:
    with syncperf.sync_operation("push") as op:
        op.set_error("503")
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert point.attributes["error.type"] == "503"
    assert syncperf_capture.spans()[0].status.status_code is StatusCode.ERROR


def test_error_span_has_status_error_and_an_exception_event(syncperf_capture: Capture) -> None:
    with pytest.raises(KeyError), syncperf.sync_operation("push"):
        raise KeyError("k")
    (span,) = syncperf_capture.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "KeyError"
    assert [e.name for e in span.events] == ["exception"]
    assert span.kind is SpanKind.INTERNAL


def test_span_carries_the_metric_attributes_and_sync_details(syncperf_capture: Capture) -> None:
    with syncperf.sync_operation("push", entity="todo") as op:
        op.set_batch_size(4)
        op.record_conflict(count=1)
        op.record_idempotency_hit()
        op.set_attribute("app.client.version", "1.2.3")
    (span,) = syncperf_capture.spans()
    assert span.name == "sync push"
    attributes = dict(span.attributes or {})
    assert attributes["sync.operation"] == "push"
    assert attributes["sync.entity"] == "todo"
    assert attributes["sync.batch.size"] == 4
    assert attributes["sync.conflicts"] == 1
    assert attributes["sync.idempotency.hit"] is True
    assert attributes["app.client.version"] == "1.2.3"


def test_set_attribute_never_reaches_a_metric(syncperf_capture: Capture) -> None:
    with syncperf.sync_operation("push") as op:
        op.set_attribute("enduser.id", "user-42")
    for metric in syncperf_capture.metrics():
        for point in metric.data.data_points:
            assert "user-42" not in (point.attributes or {}).values()


def test_items_per_entity_and_change(syncperf_capture: Capture) -> None:
    with syncperf.sync_operation("pull", entity="todo") as op:
        op.record_items(3, change="created")
        op.record_items(2, change="created")
        op.record_items(1, entity="note", change="deleted")
        op.record_items(4)
    cap = syncperf_capture
    assert cap.total("sync.items", {"sync.entity": "todo", "sync.change": "created"}) == 5
    assert cap.total("sync.items", {"sync.entity": "note", "sync.change": "deleted"}) == 1
    (unknown,) = [p for p in cap.points("sync.items") if "sync.change" not in p.attributes]
    assert unknown.value == 4


def test_active_operations_go_up_and_back_down(syncperf_capture: Capture) -> None:
    with syncperf.sync_operation("pull"):
        (point,) = syncperf_capture.points("sync.operations.active")
        assert point.value == 1
    (point,) = syncperf_capture.points("sync.operations.active")
    assert point.value == 0


def test_overhead_is_measured_per_operation(syncperf_capture: Capture) -> None:
    for _ in range(3):
        with syncperf.sync_operation("pull"):
            pass
    (point,) = syncperf_capture.points("syncperf.overhead", {"syncperf.component": "operation"})
    assert point.count == 3
    assert 0 < point.max < 1.0  # wall-clock: sane, not a benchmark


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda op: op.set_batch_size("12"), "invalid_batch_size"),
        (lambda op: op.set_batch_size(-1), "invalid_batch_size"),
        (lambda op: op.set_batch_size(True), "invalid_batch_size"),
        (lambda op: op.record_items(-3), "invalid_count"),
        (lambda op: op.record_items(2.5), "invalid_count"),
        (lambda op: op.record_items(1, change="upserted"), "invalid_change"),
        (lambda op: op.record_conflict(count=-1), "invalid_count"),
        (lambda op: op.record_items(1, entity=""), "invalid_entity"),
        (lambda op: op.set_entity(42), "invalid_entity"),
    ],
)
def test_bad_values_raise_in_strict_mode(call, reason: str) -> None:  # type: ignore[no-untyped-def]
    with capture() as cap, syncperf.sync_operation("push") as op:
        with pytest.raises(syncperf.MeasurementError, match=reason) as info:
            call(op)
        assert isinstance(info.value, syncperf.SyncPerfError)
    assert cap.total("sync.operation.duration") == 1


def test_bad_values_are_dropped_counted_and_logged_once_in_lenient_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with capture(strict=False) as cap:
        with caplog.at_level(logging.WARNING, logger="syncperf"):
            for _ in range(3):
                with syncperf.sync_operation("push") as op:
                    op.set_batch_size("many")  # type: ignore[arg-type]
                    op.record_items(5, change="upserted")
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_batch_size"}) == 3
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_change"}) == 3
        assert cap.points("sync.batch.size") == []
        assert cap.points("sync.items") == []
        assert cap.total("sync.operation.duration") == 3
    messages = [r.getMessage() for r in caplog.records if r.name == "syncperf"]
    assert len(messages) == 2
    assert any("invalid_batch_size" in m for m in messages)


def test_an_empty_entity_is_request_time_misuse_not_config(syncperf_capture: Capture) -> None:
    with pytest.raises(syncperf.MeasurementError, match="invalid_entity"):
        syncperf.sync_operation("push", entity="")
    with capture(strict=False) as cap:
        with syncperf.sync_operation("push", entity=""):
            pass
        (point,) = cap.points("sync.operation.duration")
        assert "sync.entity" not in point.attributes
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_entity"}) == 1


def test_a_reused_scope_ends_only_the_operation_it_started(syncperf_capture: Capture) -> None:
    scope = syncperf.sync_operation("push")
    with scope as outer:
        with scope as inner:
            assert inner is outer
        assert syncperf.current_operation() is outer
    assert syncperf_capture.total("sync.operation.duration") == 1


def test_a_shared_scope_joined_by_a_generator_that_outlives_the_block_ends_the_block(
    syncperf_capture: Capture,
) -> None:
    pull = syncperf.sync_operation("pull", entity="todo")

    def rows() -> Iterator[int]:
        with pull as op:  # joins the block's operation
            for i in range(3):
                op.record_items(1)
                yield i

    with pull:
        kept = rows()
        next(kept)  # a cursor kept past the block
    assert not syncperf.current_operation().recording  # the block ended its operation
    with syncperf.sync_operation("push") as later:
        assert later.operation == "push"  # its own, not joined into the pull
    with pytest.raises(syncperf.MeasurementError, match="operation_ended"):
        list(kept)  # its items come too late (rejected), and its exit ends nothing
    cap = syncperf_capture
    assert cap.total("sync.operation.duration", {"sync.operation": "pull"}) == 1
    assert cap.total("sync.operation.duration", {"sync.operation": "push"}) == 1
    assert cap.total("sync.operations.active") == 0


def test_a_shared_scope_in_streams_stepped_in_fresh_contexts_ends_each_streams_own(
    syncperf_capture: Capture,
) -> None:
    pull = syncperf.sync_operation("pull", entity="todo")

    def rows(n: int) -> Iterator[int]:
        with pull as op:
            for i in range(n):
                op.record_items(1)
                yield i

    def step(stream: Iterator[int]) -> None:  # Starlette: each step in a fresh context copy
        with contextlib.suppress(StopIteration):
            contextvars.copy_context().run(next, stream)

    a, b = rows(2), rows(4)
    step(a)
    step(b)
    for _ in range(2):
        step(a)  # a ends while b is open
    for _ in range(4):
        step(b)
    cap = syncperf_capture
    assert cap.total("sync.operation.duration") == 2
    assert cap.total("sync.items") == 6
    assert sorted(span.attributes["sync.items"] for span in cap.spans()) == [2, 4]
    assert cap.total("sync.operations.active") == 0


def test_a_scope_entered_and_exited_from_other_frames_ends_its_operation(
    syncperf_capture: Capture,
) -> None:
    with contextlib.ExitStack() as stack:  # enters and exits from its own frames
        op = stack.enter_context(syncperf.sync_operation("push"))
        assert syncperf.current_operation() is op
    assert not syncperf.current_operation().recording
    assert syncperf_capture.total("sync.operation.duration") == 1


def test_a_failing_sampler_never_raises_and_leaves_active_at_zero() -> None:
    from opentelemetry.sdk.trace.sampling import Sampler

    class Broken(Sampler):
        def should_sample(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise RuntimeError("sampler bug")

        def get_description(self) -> str:
            return "Broken"

    with capture(sampler=Broken(), strict=False) as cap:
        with syncperf.sync_operation("push"):
            pass
        assert cap.total("sync.operation.duration") == 1
        assert cap.total("sync.operations.active") == 0
        assert cap.total("syncperf.dropped", {"syncperf.reason": "span_start_failed"}) == 1


def test_a_failing_span_processor_at_end_still_counts_the_operation() -> None:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    class Exploding(SpanProcessor):
        def on_start(self, span, parent_context=None):  # type: ignore[no-untyped-def]
            raise RuntimeError("processor bug")

    with capture(sampler=ParentBased(ALWAYS_OFF), strict=False) as cap:
        cap.tracer_provider.add_span_processor(Exploding())
        with pytest.raises(KeyError), syncperf.sync_operation("push"):
            raise KeyError  # rescued span start fails in the processor
        assert cap.total("sync.operation.duration", {"sync.outcome": "error"}) == 1
        assert cap.total("sync.operations.active") == 0
        assert syncperf.current_operation().recording is False


def test_a_bad_environment_variable_never_raises_into_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from syncperf import _runtime

    monkeypatch.setenv("SYNCPERF_MAX_ENTITIES", "lots")
    previous = _runtime.replace(None)
    try:
        with syncperf.sync_operation("push"):
            pass
        assert _runtime.current().config.max_entities == 100
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_end_with_an_explicit_end_time_stops_the_duration_and_span_there(
    syncperf_capture: Capture,
) -> None:
    import time

    from syncperf import _runtime
    from syncperf._lifecycle import begin, end
    from syncperf._operation import active_operation

    cap = syncperf_capture
    before = time.perf_counter_ns()
    op = begin(_runtime.current(), "push", "todo")
    stop = time.perf_counter_ns()
    time.sleep(0.2)  # e.g. background tasks after the response: the operation is still current
    assert active_operation() is op
    end(op, None, stop)
    assert active_operation() is None
    # begin() took (stop - before) here, however long a loaded machine made it: the duration
    # and the span stop at ``stop``; measured to the end() they would include the 0.2 s
    took = (stop - before) / 1e9
    assert took < 0.2, "begin() itself took the sleep's time: nothing to tell apart"

    (point,) = cap.points("sync.operation.duration")
    assert point.sum <= took
    (span,) = cap.spans()
    assert span.start_time is not None and span.end_time is not None
    assert (span.end_time - span.start_time) / 1e9 < 0.2
    assert sum(p.value for p in cap.points("sync.operations.active")) == 0


def test_a_shared_scope_entered_through_exit_stacks_ends_each_threads_own(
    syncperf_capture: Capture,
) -> None:
    # an ExitStack notes its entry under contextlib's frame, gone when the exit comes from
    # ExitStack.__exit__: the exit took the scope's latest entry, another thread's operation
    import threading
    import time

    pull = syncperf.sync_operation("pull")
    entered, joined_b = threading.Event(), threading.Event()
    ended_early: list[bool] = []

    def through_a_stack() -> None:
        with contextlib.ExitStack() as stack:
            op = stack.enter_context(pull)
            op.set_entity("a")
            entered.set()
            joined_b.wait(5)

    def plain() -> None:
        entered.wait(5)
        with contextlib.suppress(ValueError), pull as op:
            op.set_entity("b")
            joined_b.set()
            time.sleep(0.05)
            ended_early.append(op._ended)
            raise ValueError("b failed")

    threads = [threading.Thread(target=through_a_stack), threading.Thread(target=plain)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert ended_early == [False]
    outcomes = {s.attributes["sync.entity"]: s.status.status_code for s in syncperf_capture.spans()}
    assert outcomes == {"a": StatusCode.UNSET, "b": StatusCode.ERROR}


async def test_a_shared_scope_entered_through_an_async_exit_stack_ends_its_own() -> None:
    import asyncio

    pull = syncperf.sync_operation("pull")
    with capture() as cap:

        async def through_a_stack() -> None:
            async with contextlib.AsyncExitStack() as stack:
                op = await stack.enter_async_context(pull)
                op.set_entity("a")
                await asyncio.sleep(0.01)

        async def plain() -> None:
            await asyncio.sleep(0.005)
            with contextlib.suppress(ValueError):
                async with pull as op:
                    op.set_entity("b")
                    await asyncio.sleep(0.03)
                    raise ValueError("b failed")

        await asyncio.gather(through_a_stack(), plain())
        outcomes = {s.attributes["sync.entity"]: s.status.status_code for s in cap.spans()}
    assert outcomes == {"a": StatusCode.UNSET, "b": StatusCode.ERROR}


LATE_CALLS = {
    "set_entity": lambda op: op.set_entity("note"),
    "set_batch_size": lambda op: op.set_batch_size(4),
    "record_items": lambda op: op.record_items(5),
    "record_items of an entity": lambda op: op.record_items(5, entity="note", change="created"),
    "record_conflict": lambda op: op.record_conflict(count=3),
    "record_idempotency_hit": lambda op: op.record_idempotency_hit(),
    "record_checkpoint": lambda op: op.record_checkpoint(1.0),
    "record_change_time": lambda op: op.record_change_time(1.0),
    "set_attribute": lambda op: op.set_attribute("k", 1),
    "set_error": lambda op: op.set_error("late"),
}


@pytest.mark.parametrize("call", list(LATE_CALLS))
def test_a_recorder_call_after_the_operation_ended_is_rejected(call: str) -> None:
    """A background job that kept the recorder past its block: counted, never lost silently."""
    with capture() as cap:
        with syncperf.sync_operation("push", entity="todo") as op:
            op.record_items(1)
        with pytest.raises(syncperf.MeasurementError, match="operation_ended"):
            LATE_CALLS[call](op)
    with capture(strict=False) as cap:
        with syncperf.sync_operation("push", entity="todo") as op:
            op.record_items(1)
        LATE_CALLS[call](op)
        LATE_CALLS[call](op)
        assert cap.total("syncperf.dropped", {"syncperf.reason": "operation_ended"}) == 2
        assert cap.total("sync.items") == 1
        assert cap.points("sync.conflicts") == cap.points("sync.batch.size") == []
        assert [
            p.attributes.get("sync.outcome") for p in cap.points("sync.operation.duration")
        ] == ["success"]
