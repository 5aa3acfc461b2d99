"""An operation (or publish batch) ended in a context other than the one it started in: a
generator stepped in a copied context and collected later, or a thread that ends what
another began. The ending context keeps its own current operation (or batch): what it
records next counts, and a decorated call in it joins instead of starting a second one.

CI runs the unit tests with the compiled path and with ``SYNCPERF_NO_EXTENSIONS=1``; an
operation that ends cleanly without a span (``untraced``) takes the compiled end there."""

from __future__ import annotations

import contextvars
import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import syncperf
from syncperf._operation import CURRENT
from syncperf.outbox import Outbox, current_batch
from syncperf.testing import Capture, capture

TODO_PUSH = {"sync.operation": "push", "sync.entity": "todo"}


@pytest.fixture(params=[1.0, 0.0], ids=["traced", "untraced"])
def cap(request: pytest.FixtureRequest) -> Iterator[Capture]:
    with capture(trace_sample_rate=request.param) as cap:
        yield cap


@syncperf.instrument_sync("push", entity="todo")
def nested_push() -> None:
    """A decorated helper called inside the push: it joins the push."""


def _stream() -> Iterator[bytes]:  # e.g. a streamed pull
    with syncperf.sync_operation("pull", entity="stream") as op:
        op.record_items(1)
        yield b"a"
        yield b"b"


def _first_step_in_a_copy(stream: Iterator[Any]) -> None:  # as Starlette steps a stream
    contextvars.copy_context().run(next, stream)


def _push_counted_once_with_its_items(cap: Capture) -> None:
    assert cap.total("sync.operation.duration", TODO_PUSH) == 1
    assert cap.total("sync.items", TODO_PUSH) == 5
    assert cap.total("sync.operations.active") == 0


def test_a_stream_collected_inside_another_operation_leaves_that_operation_current(
    syncperf_capture: Capture,
) -> None:
    stream = _stream()
    _first_step_in_a_copy(stream)
    with syncperf.sync_operation("push", entity="todo") as op:
        del stream
        gc.collect()  # the abandoned stream's operation ends here, in this context
        assert syncperf.current_operation() is op
        syncperf.current_operation().record_items(5)
        nested_push()
    cap = syncperf_capture
    _push_counted_once_with_its_items(cap)
    pull = {"sync.operation": "pull", "sync.entity": "stream"}
    assert cap.total("sync.operation.duration", pull) == 1
    assert cap.total("sync.items", pull) == 1


def test_an_operation_ended_by_a_thread_inside_its_own_leaves_that_one_current(
    cap: Capture,
) -> None:
    started: list[Any] = []

    def start_job() -> None:  # begun by one worker thread...
        scope = syncperf.sync_operation("pull", entity="job")
        scope.__enter__()
        started.append(scope)

    worker = threading.Thread(target=start_job)
    worker.start()
    worker.join()
    with syncperf.sync_operation("push", entity="todo") as op:  # ...ended inside another
        started[0].__exit__(None, None, None)
        assert syncperf.current_operation() is op
        syncperf.current_operation().record_items(5)
        nested_push()
    _push_counted_once_with_its_items(cap)
    assert cap.total("sync.operation.duration", {"sync.operation": "pull"}) == 1


def test_an_operation_ended_in_a_copy_of_its_context_is_no_longer_current_there(
    cap: Capture,
) -> None:
    """The copy holds the operation itself (e.g. a task it spawned): there it is cleared."""
    scope = syncperf.sync_operation("push", entity="todo")

    def end_in_a_copy() -> bool:
        scope.__exit__(None, None, None)
        return CURRENT.get() is None

    def task() -> bool:
        scope.__enter__()
        return contextvars.copy_context().run(end_in_a_copy)

    assert contextvars.copy_context().run(task)
    assert cap.total("sync.operation.duration", TODO_PUSH) == 1


_box = Outbox("orders")


def _relay() -> Iterator[int]:
    with _box.publish() as batch:
        batch.published()
        yield 1
        yield 2


def _published(cap: Capture) -> float:
    return cap.total("outbox.messages", {"outbox.name": "orders", "outbox.event": "published"})


def _context_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """OpenTelemetry's errors: its context token is not detached where it was not made."""
    return [r.getMessage() for r in caplog.records if r.name == "opentelemetry.context"]


def test_a_relay_stream_collected_inside_another_batch_leaves_that_batch_current(
    syncperf_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    relay = _relay()
    _first_step_in_a_copy(relay)
    with _box.publish() as batch:
        del relay
        gc.collect()  # the abandoned relay's batch ends here, in this context
        assert current_batch() is batch
        current_batch().published()
        current_batch().published()
    cap = syncperf_capture
    assert cap.total("outbox.publish.duration") == 2
    assert _published(cap) == 2  # the abandoned batch's one is lost with it (an error)
    assert not _context_errors(caplog)


def test_a_batch_ended_by_a_thread_inside_its_own_leaves_that_one_current(
    syncperf_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    started: list[Any] = []

    def start_relay() -> None:
        scope = _box.publish()
        started.append((scope, scope.__enter__()))

    worker = threading.Thread(target=start_relay)
    worker.start()
    worker.join()
    ((scope, other),) = started
    other.published()
    with _box.publish() as batch:
        scope.__exit__(None, None, None)
        assert current_batch() is batch
        current_batch().published()
        current_batch().published()
    cap = syncperf_capture
    assert cap.total("outbox.publish.duration") == 2
    assert _published(cap) == 3
    assert not _context_errors(caplog)
