"""syncperf's own spans behave like SDK spans for the application and for span processors."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as context_api
from opentelemetry.sdk.resources import ProcessResourceDetector, get_aggregated_resources
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

import syncperf
from syncperf._tracing import finisher as finisher_module
from syncperf._tracing.finisher import SpanFinisher
from syncperf.testing import capture
from tests._forked import in_a_worker


class Recorder(SpanProcessor):
    """Sees on_start and on_end, and sets an attribute on start (as baggage processors do)."""

    def __init__(self) -> None:
        self.started: list[tuple[object, object]] = []
        self.ended: list[ReadableSpan] = []

    def on_start(self, span: object, parent_context: object = None) -> None:
        self.started.append((span, parent_context))
        span.set_attribute("tenant", baggage.get_baggage("tenant") or "none")  # type: ignore[attr-defined]

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


class FixedIds(IdGenerator):
    def generate_span_id(self) -> int:
        return 0x1111

    def generate_trace_id(self) -> int:
        return 0x2222


def test_span_processors_see_on_start_and_on_end_once_with_the_same_span() -> None:
    recorder = Recorder()
    provider = TracerProvider()
    provider.add_span_processor(recorder)
    token = context_api.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with capture(tracer_provider=provider):
            with syncperf.sync_operation("push", entity="todo"):
                pass
            syncperf.force_flush()
    finally:
        context_api.detach(token)
    ((started, _),) = recorder.started
    (ended,) = recorder.ended
    assert started is ended
    assert ended.attributes["tenant"] == "acme"
    assert ended.attributes["sync.entity"] == "todo"
    assert ended.end_time is not None
    assert ended.end_time >= ended.start_time


def test_the_providers_resource_and_id_generator_are_used() -> None:
    provider = TracerProvider(id_generator=FixedIds())
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with capture(tracer_provider=provider):
        with syncperf.sync_operation("pull"):
            pass
        syncperf.force_flush()
    (span,) = exporter.get_finished_spans()
    assert span.context.trace_id == 0x2222
    assert span.context.span_id == 0x1111
    assert span.resource is provider.resource
    assert span.instrumentation_scope.name == "syncperf"
    assert span.context.trace_flags.sampled


def test_application_spans_inside_an_operation_are_its_children() -> None:
    with capture() as cap:
        tracer = cap.tracer_provider.get_tracer("app")
        with syncperf.sync_operation("push") as op, tracer.start_as_current_span("apply"):
            pass
        spans = {span.name: span for span in cap.spans()}
    assert spans["apply"].parent.span_id == op.span.get_span_context().span_id
    assert spans["apply"].context.trace_id == spans["sync push"].context.trace_id
    assert spans["sync push"].parent is None


def test_the_application_can_enrich_the_current_span() -> None:
    with capture() as cap:
        with syncperf.sync_operation("push"):
            span = trace.get_current_span()
            span.set_attribute("user.id", "u1")
            span.set_attributes({"tags": ["a", "b"], "n": 3})
            span.add_event("validated", {"rows": 3})
            span.update_name("sync push todo")
            span.set_status(Status(StatusCode.OK))
            span.set_status(StatusCode.ERROR, "ignored after OK")
        (span,) = cap.spans()
    assert span.name == "sync push todo"
    assert span.attributes["user.id"] == "u1"
    assert span.attributes["tags"] == ("a", "b")
    assert span.attributes["n"] == 3
    assert [(e.name, dict(e.attributes)) for e in span.events] == [("validated", {"rows": 3})]
    assert span.status.status_code is StatusCode.OK


def test_application_attribute_values_are_cleaned_as_the_sdk_cleans_them() -> None:
    values = {"bad": object(), "mixed": [1, "a"], "nested": {"a": [1]}, "": "no key", "ok": 1.5}
    with capture() as cap:
        sdk_span = cap.tracer_provider.get_tracer("app").start_span("sdk")
        with syncperf.sync_operation("push") as op:
            for key, value in values.items():
                op.span.set_attribute(key, value)
                sdk_span.set_attribute(key, value)
        sdk_span.end()
        ours = next(span for span in cap.spans() if span.name == "sync push")
    expected = dict(sdk_span.attributes)  # type: ignore[attr-defined]
    assert {key: ours.attributes[key] for key in expected} == expected
    assert "" not in ours.attributes


def test_the_attribute_count_limit_applies_to_application_attributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "8")
    with capture() as cap:
        with syncperf.sync_operation("push"):
            for i in range(20):
                trace.get_current_span().set_attribute(f"k{i}", i)
        (span,) = cap.spans()
    assert span.dropped_attributes > 0
    assert sum(key.startswith("k") for key in span.attributes) < 20


def test_an_exception_is_recorded_as_the_sdk_records_it() -> None:
    with capture() as cap:
        with pytest.raises(KeyError), syncperf.sync_operation("push"):
            raise KeyError("x")
        (span,) = cap.spans()
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "KeyError"
    assert "Traceback" in event.attributes["exception.stacktrace"]
    assert span.status.status_code is StatusCode.ERROR


def test_a_span_ends_once_and_stops_recording() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with capture(tracer_provider=provider):
        with syncperf.sync_operation("push") as op:
            span = op.span
        syncperf.force_flush()
        span.end()
        span.set_attribute("late", 1)
    (finished,) = exporter.get_finished_spans()
    assert not span.is_recording()
    assert "late" not in finished.attributes


def test_a_span_serialises_like_an_sdk_span() -> None:
    with capture() as cap:
        with syncperf.sync_operation("push", entity="todo") as op:
            op.set_batch_size(3)
        (span,) = cap.spans()
    data = json.loads(span.to_json())
    assert data["name"] == "sync push"
    assert data["kind"] == str(SpanKind.INTERNAL)
    assert data["attributes"]["sync.batch.size"] == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads (3.12+)
def test_a_forked_child_ends_its_spans_although_the_parent_had_a_wake_up_pending() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with capture(tracer_provider=provider) as cap:
        finisher = cap.runtime.finisher
        finisher._pending = True  # the parent's finisher is lingering over a batch
        pid = os.fork()
        if pid == 0:  # the child: its span must be ended by a thread of its own
            code = 1
            try:
                with syncperf.sync_operation("push"):
                    pass
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not exporter.get_finished_spans():
                    time.sleep(0.01)
                code = 0 if exporter.get_finished_spans() else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        finisher._pending = False
    assert os.waitstatus_to_exitcode(status) == 0


class _Ended:
    def __init__(self) -> None:
        self.ended = threading.Event()

    def end(self, end_time: int | None = None) -> None:
        self.ended.set()


def test_the_finisher_lingers_over_a_batch_but_a_burst_ends_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(finisher_module, "_LINGER_S", 30.0)
    finisher = SpanFinisher(lambda: None, lambda: None, lambda stalled: None, 10**9, max_queue=8)
    try:
        first = _Ended()
        finisher.end(first, time.time_ns())  # wakes the thread, which lingers for 30 s
        assert not first.ended.wait(0.3)
        second = _Ended()
        finisher.end(second, time.time_ns())  # a quarter of the queue: the batch goes now
        assert first.ended.wait(10) and second.ended.wait(10)
    finally:
        finisher.shutdown()


class _Costly:
    """A span whose end takes ``busy`` s of this thread's CPU time, then ``idle`` s of sleep."""

    def __init__(self, busy: float = 0.0, idle: float = 0.0) -> None:
        self.busy, self.idle = busy, idle

    def end(self, end_time: int | None = None) -> None:
        until = time.thread_time() + self.busy
        while time.thread_time() < until:
            pass
        time.sleep(self.idle)


def _judged(monkeypatch: pytest.MonkeyPatch, spans: list[_Costly]) -> tuple[list[str], int]:
    """The slow and fast verdicts of a finisher with a 5 ms budget on ``spans``, one flush
    each, and how often it read the CPU clock."""
    reads = []
    clock = finisher_module._thread_time_ns
    monkeypatch.setattr(finisher_module, "_thread_time_ns", lambda: reads.append(1) or clock())
    verdicts: list[str] = []
    finisher = SpanFinisher(
        lambda: verdicts.append("slow"), lambda: verdicts.append("fast"), print, 5_000_000
    )
    for span in spans:
        finisher._queue.append((span, 0))  # as end() queues it, without waking the thread
        assert finisher.flush()
    return verdicts, len(reads)


def test_span_ends_within_the_budget_in_wall_time_never_read_the_cpu_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _judged(monkeypatch, [_Costly() for _ in range(50)]) == ([], 0)


def test_span_ends_slow_in_cpu_time_are_judged_slow_from_the_second_of_a_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    busy = [_Costly(busy=0.012) for _ in range(4)]
    verdicts, reads = _judged(monkeypatch, [_Costly(), *busy, _Costly(), _Costly()])
    # the first of the run has no CPU time read before it; the first fast end breaks the run
    assert verdicts == ["slow", "slow", "slow", "fast"]
    assert reads == 1 + 3 * 2 + 1  # after the first, around the next three, before the fast one


def test_span_ends_slow_only_in_wall_time_are_never_judged_slow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # waiting (for the GIL, a lock, the network) is not syncperf's CPU time
    verdicts, reads = _judged(monkeypatch, [_Costly(idle=0.012) for _ in range(4)])
    assert verdicts == []
    assert reads == 1 + 3 * 2  # after the first, around the next three


def test_link_attributes_follow_the_sdks_limits_and_stay_encodable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "10")
    monkeypatch.setenv("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "2")
    context = trace.SpanContext(1, 2, False, trace.TraceFlags(1))
    attributes = {f"k{i}": "x" * 50 for i in range(5)}
    with capture() as cap:
        sdk_span = cap.tracer_provider.get_tracer("app").start_span("sdk")
        sdk_span.add_link(context, attributes)
        sdk_span.end()
        with syncperf.sync_operation("push"):
            span = trace.get_current_span()
            span.add_link(context, attributes)
            span.add_link(context, {"k": "lone \ud800 surrogate", "n": 2**70})
        ours = next(s for s in cap.spans() if s.name == "sync push")
        expected = next(s for s in cap.spans() if s.name == "sdk")
        encode_spans([ours]).SerializeToString()
    assert dict(ours.links[0].attributes) == dict(expected.links[0].attributes)
    assert dict(ours.links[1].attributes) == {"k": "lone ? sur"}  # cut at 10, made encodable


def test_an_operation_ended_in_another_context_ends_its_span_without_an_error_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import contextvars

    with capture() as cap:
        scope = syncperf.sync_operation("pull")
        contextvars.copy_context().run(scope.__enter__)  # e.g. a generator's first step
        contextvars.copy_context().run(scope.__exit__, None, None, None)  # and its last
        (span,) = cap.spans()
        assert span.name == "sync pull"
        assert cap.total("sync.operation.duration") == 1
    assert "Failed to detach context" not in caplog.text


def test_spans_in_a_forked_child_carry_the_resource_the_sdk_renewed_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``gunicorn --preload``: the tracer was resolved in the parent; the SDK renews its
    tracers' process-dependent resource in the child, and syncperf's spans must follow."""
    monkeypatch.setenv("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "process")
    provider = TracerProvider(resource=get_aggregated_resources([ProcessResourceDetector()]))

    def child() -> list[object]:
        with syncperf.sync_operation("push") as op:
            pass
        return [os.getpid(), op.span.resource.attributes.get("process.pid")]

    with capture(tracer_provider=provider, strict=False):
        with syncperf.sync_operation("push"):  # resolved in the parent
            pass
        pid, seen = in_a_worker(child)  # type: ignore[misc]
    assert seen == pid != os.getpid()
