"""The ``publish()`` scope: reports racing the block's end, scopes shared by tasks and threads,
what ``@outbox.publish`` wraps, where the ``send`` span starts, and a batch open across
``configure()``."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, SamplingResult
from prometheus_client import CollectorRegistry

import syncperf
from syncperf import _runtime
from syncperf.exceptions import ConfigError
from syncperf.outbox import Outbox, current_batch
from syncperf.testing import Capture, capture
from tests.unit.test_export_contract import ListExporter
from tests.unit.test_fold import _totals


def events(cap: Capture, name: str = "orders") -> dict[str, float]:
    """``outbox.messages`` totals by event for outbox ``name``."""
    return {
        event: cap.total("outbox.messages", {"outbox.name": name, "outbox.event": event})
        for event in ("published", "failed", "retried", "dead_lettered")
    }


def send_spans(cap: Capture) -> list[Any]:
    return [span for span in cap.spans() if span.name.startswith("send")]


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    """Threads switch every microsecond: a race shows within a few hundred blocks."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("frequent_switches")
def test_a_report_racing_the_end_of_the_block_is_lost_never_raised(
    syncperf_capture: Capture,
) -> None:
    """A pool thread still reporting while the block ends: the block ends cleanly, with the
    reports made before its end (at least those done before it began ending, at most those
    begun before it finished); the later ones are lost."""
    outbox = Outbox("orders")
    low = high = 0
    for _ in range(200):
        go = threading.Event()
        started, done = [0], [0]

        def late(
            batch: Any,
            go: threading.Event = go,
            started: list[int] = started,
            done: list[int] = done,
        ) -> None:
            go.wait()
            for n in range(40):
                started[0] += 1
                batch.failed(f"L{n % 5}", attempt=2, dead_letter=True)
                batch.dead_lettered()
                done[0] += 1

        with outbox.publish() as batch:
            for i in range(20):
                batch.failed(f"E{i % 5}")
            thread = threading.Thread(target=late, args=(batch,))
            thread.start()
            go.set()
            low += 20 + done[0]
        high += 20 + started[0]
        thread.join()
    assert low <= events(syncperf_capture)["failed"] <= high
    # every block recorded its own overhead: none raised out of its end
    (overhead,) = syncperf_capture.points("syncperf.overhead", {"syncperf.component": "outbox"})
    assert overhead.count == 200


def test_reports_after_the_block_ended_are_dropped(syncperf_capture: Capture) -> None:
    with Outbox("orders").publish() as batch:
        batch.published(None)
        batch.failed("broker", attempt=2)
    batch.published(None)
    batch.failed("broker", attempt=3, dead_letter=True)
    batch.dead_lettered(2)
    assert events(syncperf_capture) == {
        "published": 1,
        "failed": 1,
        "retried": 1,
        "dead_lettered": 0,
    }
    (span,) = send_spans(syncperf_capture)
    assert span.attributes["outbox.published"] == 1
    assert span.attributes["outbox.attempt"] == 2


async def test_one_publish_scope_shared_by_two_tasks_records_each_batch(
    syncperf_capture: Capture,
) -> None:
    scope = Outbox("orders").publish()

    async def relay(n: int, delay: float) -> None:
        async with scope as batch:
            await asyncio.sleep(delay)
            for _ in range(n):
                batch.published(None)
            assert current_batch() is batch

    await asyncio.gather(relay(3, 0.01), relay(5, 0.02))
    assert events(syncperf_capture)["published"] == 8
    spans = send_spans(syncperf_capture)
    assert sorted(span.attributes["outbox.published"] for span in spans) == [3, 5]
    assert not current_batch().recording


def test_one_publish_scope_shared_by_two_threads_records_each_batch(
    syncperf_capture: Capture,
) -> None:
    scope = Outbox("orders").publish()
    both_in, first_out = threading.Barrier(2), threading.Event()

    def relay(n: int) -> None:
        with scope as batch:
            both_in.wait()
            if n == 5:
                first_out.wait()  # the later entry exits first... then the earlier one
            for _ in range(n):
                batch.published(None)
        if n == 3:
            first_out.set()

    pool = [threading.Thread(target=relay, args=(n,)) for n in (3, 5)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert events(syncperf_capture)["published"] == 8
    spans = send_spans(syncperf_capture)
    assert sorted(span.attributes["outbox.published"] for span in spans) == [3, 5]


async def test_publish_wraps_an_object_with_an_async_call(syncperf_capture: Capture) -> None:
    class Relay:
        async def __call__(self) -> str:
            await asyncio.sleep(0)
            current_batch().published(None)
            return "done"

    relay = Outbox("orders").publish(Relay())
    assert await relay() == "done"
    assert events(syncperf_capture)["published"] == 1
    (span,) = send_spans(syncperf_capture)
    assert span.attributes["outbox.published"] == 1


async def test_publish_wraps_a_plain_def_returning_a_coroutine(
    syncperf_capture: Capture,
) -> None:
    def retry(fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return wrapper

    outbox = Outbox("orders")

    @outbox.publish
    @retry
    async def relay(n: int) -> int:
        await asyncio.sleep(0)
        for _ in range(n):
            current_batch().published(None)
        return n

    pending = relay(2)
    assert not current_batch().recording  # the batch is current only where it is awaited
    assert await pending == 2

    @outbox.publish
    @retry
    async def crashing() -> None:
        current_batch().published(None)
        raise OSError("broker down")

    with pytest.raises(OSError):
        await crashing()
    assert events(syncperf_capture) == {
        "published": 2,
        "failed": 1,
        "retried": 0,
        "dead_lettered": 0,
    }
    assert sorted(s.attributes["outbox.published"] for s in send_spans(syncperf_capture)) == [
        0,
        2,
    ]


@pytest.mark.filterwarnings("ignore:coroutine '.*relay' was never awaited:RuntimeWarning")
async def test_a_plain_def_result_never_awaited_ends_its_batch_as_not_awaited(
    syncperf_capture: Capture,
) -> None:
    """As ``instrument_sync()``'s: the coroutine a plain ``def`` returned ends its batch when
    it is collected, closed or cancelled before its first step (``error.type``
    ``not_awaited``, like a block that raised); one that is awaited measures its whole run."""

    def retry(fn: Any) -> Any:
        return lambda *args, **kwargs: fn(*args, **kwargs)

    outbox = Outbox("orders")

    @outbox.publish(count=2)
    @retry
    async def relay() -> int:
        await asyncio.sleep(0.05)
        current_batch().published(None)
        current_batch().published(None)
        return 2

    dropped = relay()
    del dropped
    gc.collect()
    relay().close()
    task = asyncio.ensure_future(relay())
    task.cancel()  # before its first step
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.create_task(relay()) == 2  # still a coroutine to create_task
    cap = syncperf_capture
    assert events(cap) == {"published": 2, "failed": 6, "retried": 0, "dead_lettered": 0}
    assert cap.total("outbox.messages", {"error.type": "not_awaited"}) == 6
    duration = "outbox.publish.duration"
    assert cap.total(duration, {"error.type": "not_awaited"}) == 3
    (whole,) = [p for p in cap.points(duration) if "error.type" not in p.attributes]
    assert whole.count == 1 and whole.sum >= 0.05  # the awaited one: its whole run
    spans = send_spans(cap)
    assert sorted(s.status.description or "" for s in spans) == ["", *["not_awaited"] * 3]
    assert not current_batch().recording


async def test_publish_wraps_a_plain_def_returning_a_task(syncperf_capture: Capture) -> None:
    outbox = Outbox("orders")

    async def send() -> None:
        await asyncio.sleep(0)
        current_batch().published(None)

    @outbox.publish
    def relay() -> asyncio.Task[None]:
        return asyncio.ensure_future(send())

    task = relay()
    assert isinstance(task, asyncio.Task)
    await task
    await asyncio.sleep(0)  # done callbacks run on the next loop step
    assert events(syncperf_capture)["published"] == 1
    (span,) = send_spans(syncperf_capture)
    assert span.attributes["outbox.published"] == 1


def test_publish_refuses_generator_functions() -> None:
    outbox = Outbox("orders")

    def gen() -> Iterator[None]:
        yield

    async def agen() -> Any:
        yield

    with pytest.raises(ConfigError):
        outbox.publish(gen)
    with pytest.raises(ConfigError):
        outbox.publish(agen)


def test_the_send_span_is_a_root_linked_to_each_push(syncperf_capture: Capture) -> None:
    """A relay batch mixes messages from many pushes: its span is its own trace, not a child
    of whatever span is current where the relay runs."""
    outbox = Outbox("orders")
    provider = syncperf_capture.tracer_provider
    assert provider is not None
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("push"):
        traceparent = outbox.enqueue()
    assert traceparent is not None
    with tracer.start_as_current_span("relay-loop") as loop, outbox.publish() as batch:
        batch.published(None, traceparent=traceparent)
        with tracer.start_as_current_span("broker-call"):
            pass
    (send,) = send_spans(syncperf_capture)
    assert send.parent is None
    assert send.context.trace_id != loop.get_span_context().trace_id
    assert [link.context.trace_id for link in send.links] == [int(traceparent.split("-")[1], 16)]
    (call,) = [span for span in syncperf_capture.spans() if span.name == "broker-call"]
    assert call.parent is not None
    assert call.parent.span_id == send.context.span_id  # still current during the block


class _Asked(Sampler):
    """A sampler syncperf asks as the SDK does (not one of the standard ones)."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return _PARENT_BASED.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return "asked"


_PARENT_BASED = ParentBased(ALWAYS_ON)


@pytest.mark.parametrize("sampler", [_PARENT_BASED, _Asked()], ids=["standard", "asked"])
def test_the_send_span_is_made_under_an_unsampled_parent(sampler: Sampler) -> None:
    """A parent-based sampler decides the send span as a root: it does not follow the relay
    loop's unsampled context."""
    unsampled = trace.NonRecordingSpan(
        trace.SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=trace.TraceFlags(0))
    )
    with capture(sampler=sampler) as cap:
        with trace.use_span(unsampled), Outbox("orders").publish() as batch:
            batch.published(None)
        (send,) = send_spans(cap)
    assert send.parent is None
    assert send.context.trace_id != 0xABC


@pytest.mark.parametrize("output", ["exporter", "prometheus"])
def test_a_batch_open_across_configure_is_recorded_by_the_runtime_in_force(output: str) -> None:
    """As an operation open across ``configure()``: the batch records when it ends, into the
    runtime in force then (the replaced one exports no more), without multiprocess mode."""
    exporter, registry = ListExporter(), CollectorRegistry()
    options: dict[str, Any] = (
        {"metric_exporters": [exporter], "export_interval": 3600}
        if output == "exporter"
        else {"prometheus": registry}
    )
    previous = _runtime.replace(None)
    try:
        syncperf.configure(**options)
        outbox = Outbox("orders")
        with outbox.publish() as batch:
            batch.published()
            batch.failed(ValueError("x"))
            syncperf.configure(**options, max_entities=7)  # another thread's, say
            batch.published()
        assert _runtime.force_flush(timeout=5)
        if output == "exporter":
            assert _totals(exporter, "outbox.messages") == 3
            assert _totals(exporter, "outbox.publish.duration") == 1
        else:
            labels = {"outbox_name": "orders", "outbox_event": "published", "error_type": ""}
            assert registry.get_sample_value("outbox_messages_total", labels) == 2
            labels = {**labels, "outbox_event": "failed", "error_type": "ValueError"}
            assert registry.get_sample_value("outbox_messages_total", labels) == 1
            count = "outbox_publish_duration_seconds_count"
            assert registry.get_sample_value(count, {"outbox_name": "orders"}) == 1
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()


class _ConfigureOnEnter:
    """Stands for ``rt.lock``: the first time it is taken, another thread's ``configure()``
    replaces the runtime (under the real lock), then it is taken: the interleaving where the
    runtime was picked before ``configure()`` and is locked after it."""

    def __init__(self, rt: _runtime.Runtime, options: dict[str, Any]) -> None:
        self.rt, self.real, self.options = rt, rt.lock, options
        rt.lock = self  # type: ignore[assignment]

    def __enter__(self) -> Any:
        if self.rt.lock is not self.real:
            self.rt.lock = self.real  # configure() takes the real lock
            thread = threading.Thread(target=lambda: syncperf.configure(**self.options))
            thread.start()
            thread.join()
        return self.real.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.real.__exit__(*exc)


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    previous = _runtime.replace(None)
    try:
        syncperf.configure(prometheus=registry)
        yield registry
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()


def _messages(registry: CollectorRegistry, event: str, error_type: str = "") -> float | None:
    labels = {"outbox_name": "orders", "outbox_event": event}
    if event != "enqueued":
        labels["error_type"] = error_type
    return registry.get_sample_value("outbox_messages_total", labels)


def test_a_batch_ending_as_configure_replaces_the_runtime_loses_nothing(
    registry: CollectorRegistry,
) -> None:
    """``configure()`` completes between the batch picking the runtime in force and locking
    it: the batch records into the successor, never the replaced runtime (whose counts were
    carried already)."""
    outbox, old = Outbox("orders"), _runtime.current()
    with outbox.publish() as batch:
        batch.published()
        batch.published()
        batch.failed(ValueError("x"))
        _ConfigureOnEnter(old, {"prometheus": registry, "max_entities": 7})
    assert old.successor is not None
    assert _messages(registry, "published") == 2
    assert _messages(registry, "failed", "ValueError") == 1
    count = "outbox_publish_duration_seconds_count"
    assert registry.get_sample_value(count, {"outbox_name": "orders"}) == 1


def test_a_failed_batch_ending_as_configure_replaces_the_runtime_loses_nothing(
    registry: CollectorRegistry,
) -> None:
    outbox, old = Outbox("orders"), _runtime.current()
    with pytest.raises(KeyError), outbox.publish(count=3) as batch:
        batch.published()
        _ConfigureOnEnter(old, {"prometheus": registry, "max_entities": 7})
        raise KeyError("x")
    assert old.successor is not None
    assert _messages(registry, "failed", "KeyError") == 3
    count = "outbox_publish_duration_seconds_count"
    labels = {"outbox_name": "orders", "error_type": "KeyError"}
    assert registry.get_sample_value(count, labels) == 1


def test_an_enqueue_as_configure_replaces_the_runtime_loses_nothing(
    registry: CollectorRegistry,
) -> None:
    outbox, old = Outbox("orders"), _runtime.current()
    outbox.series(old)  # bound before: enqueue's first lock is the one that records
    _ConfigureOnEnter(old, {"prometheus": registry, "max_entities": 7})
    outbox.enqueue(3)
    assert old.successor is not None
    assert _messages(registry, "enqueued") == 3


def test_a_probe_failure_as_configure_replaces_the_runtime_loses_nothing(
    registry: CollectorRegistry,
) -> None:
    """A stats probe of the replaced runtime's last collection fails: the failure is counted
    in the runtime in force (the replaced one's counts were carried already)."""
    outbox, old = Outbox("orders"), _runtime.current()
    series = outbox.series(old)
    _ConfigureOnEnter(old, {"prometheus": registry, "max_entities": 7})
    outbox._probe_failed(old, series, RuntimeError("db down"))
    assert old.successor is not None
    labels = {"outbox_name": "orders", "error_type": "RuntimeError"}
    assert registry.get_sample_value("outbox_probe_failures_total", labels) == 1


def test_an_enqueue_counted_at_commit_as_configure_replaces_the_runtime_loses_nothing(
    registry: CollectorRegistry,
) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.orm import Session

    outbox, old = Outbox("orders"), _runtime.current()
    with Session(sqlalchemy.create_engine("sqlite://")) as session:
        outbox.enqueue(2, session=session)
        _ConfigureOnEnter(old, {"prometheus": registry, "max_entities": 7})
        session.commit()
    assert old.successor is not None
    assert _messages(registry, "enqueued") == 2


def test_the_batch_outside_a_publish_block_has_a_repr() -> None:
    # what a debugger or a log line shows: it must not raise
    assert repr(current_batch()) == "<PublishBatch none>"
