"""The overhead budget is a guard: a blocking exporter never stalls requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import syncperf
from syncperf.testing import capture


class SleepingExporter(SpanExporter):
    """Blocks every export, as an exporter whose collector hangs would."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.exported = 0
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(self.seconds)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


class BusyExporter(SleepingExporter):
    """Spends CPU on every export on the finisher's thread (a heavy span pipeline)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        until = time.thread_time() + self.seconds
        while time.thread_time() < until and not self.release.is_set():
            pass
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def test_a_stalled_exporter_never_puts_an_operation_over_budget() -> None:
    exporter = BusyExporter(0.2)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with capture(tracer_provider=provider, shed_cooldown=60) as cap:
        started = time.perf_counter()
        for _ in range(200):
            with syncperf.sync_operation("push", entity="todo"):
                pass
        elapsed = time.perf_counter() - started
        (overhead,) = cap.points("syncperf.overhead")
        assert overhead.count == 200
        # No operation waited for the exporter (each would take >= 0.2 s); the budget holds
        # for all but scheduler hiccups of a loaded machine (wall-clock time).
        assert overhead.max < 0.2
        over_budget = sum(
            n
            for bound, n in zip(
                [0.0, *overhead.explicit_bounds], overhead.bucket_counts, strict=True
            )
            if bound >= 0.05
        )
        assert over_budget <= 2
        assert elapsed < 1.0  # 200 x 0.2 s if ends were inline
        # the finisher sheds once an export's 0.2 s of CPU is spent: seconds of wall-clock
        # time when a loaded machine gives its thread a small share
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not cap.points("syncperf.shed"):
            time.sleep(0.05)
        (shed,) = cap.points("syncperf.shed")
        assert shed.attributes == {"syncperf.reason": "slow_span_end"}
        assert cap.runtime.shed_until > time.perf_counter_ns()
        assert cap.total("sync.operation.duration") == 200  # metrics continue
        exporter.release.set()
    provider.shutdown()


def test_while_shedding_no_spans_are_started_but_metrics_continue() -> None:
    with capture() as cap:
        cap.runtime.shed_spans("test")
        with syncperf.sync_operation("push"):
            pass
        assert cap.spans() == []
        assert cap.total("sync.operation.duration") == 1
        assert cap.total("syncperf.shed", {"syncperf.reason": "test"}) == 1


def test_a_full_span_queue_with_a_stuck_finisher_sheds_instead_of_blocking() -> None:
    exporter = SleepingExporter(10)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with capture(tracer_provider=provider) as cap:
        finisher = cap.runtime.finisher
        finisher._max_queue = 5
        finisher.stall_ns = 50_000_000  # 5 s by default
        started = time.perf_counter()
        for _ in range(150):  # ~0.3 s: past the finisher's linger (0.1 s) and stall_ns
            with syncperf.sync_operation("push"):
                pass
            time.sleep(0.002)
        assert time.perf_counter() - started < 3
        assert cap.total("syncperf.dropped", {"syncperf.reason": "span_queue_full"}) >= 1
        assert cap.total("syncperf.shed", {"syncperf.reason": "span_export_stalled"}) >= 1
        exporter.release.set()
    provider.shutdown()


def test_slow_span_ends_shed_even_when_the_span_starts_between_them_are_fast() -> None:
    # Moderate traffic: each operation's span starts fast, then its end is slow. The starts
    # must not break the streak the ends build (they used to share one streak).
    exporter = BusyExporter(0.06)  # over the 50 ms budget, in this thread's CPU time
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with capture(tracer_provider=provider, shed_cooldown=60) as cap:
        for _ in range(4):
            with syncperf.sync_operation("push", entity="todo"):
                pass
            cap.runtime.finisher.flush()  # the end, before the next operation starts
        assert cap.total("syncperf.shed", {"syncperf.reason": "slow_span_end"}) == 1
    provider.shutdown()


def test_slow_outbox_operations_shed_only_when_they_come_in_a_row() -> None:
    with capture(shed_cooldown=60) as cap:
        rt = cap.runtime
        for _ in range(10):  # one slow in every two: noise, never three in a row
            rt.over_budget("outbox")
            rt.within_budget("outbox")
        assert cap.metric("syncperf.shed") is None
        for _ in range(3):
            rt.over_budget("outbox")
        assert cap.total("syncperf.shed", {"syncperf.reason": "outbox"}) == 1
