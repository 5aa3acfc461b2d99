"""Every span syncperf does not make, or drops, is counted; shedding is keyed on what
syncperf itself spends, not on time the application's threads take from it."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

import syncperf
from syncperf.testing import Capture, capture


def _not_made(cap: Capture) -> float:
    return sum(
        cap.total("syncperf.dropped", {"syncperf.reason": reason})
        for reason in ("span_queue_full", "span_shed", "span_end_failed")
    )


def test_eight_busy_threads_do_not_make_syncperf_shed() -> None:
    """The application's threads hold the GIL: span ends take long in wall-clock time while
    syncperf spends microseconds of CPU on each; nothing is shed, every span is accounted.

    A span start is timed in wall-clock time: at CPython's default 5 ms switch interval, eight
    threads can keep one waiting for the GIL for ~40 ms, near the 50 ms budget, and a loaded
    CI machine pushed three in a row past it (the known limit, docs/core.md). A 1 ms interval
    keeps the threads as busy and the waits far from the budget."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    try:
        _eight_busy_threads()
    finally:
        sys.setswitchinterval(interval)


def _eight_busy_threads() -> None:
    with capture() as cap:
        done = threading.Event()
        counts = [0] * 8
        barrier = threading.Barrier(9)

        def work(index: int) -> None:
            barrier.wait()
            while not done.is_set():
                with syncperf.sync_operation("push", entity="todo"):
                    sum(range(200))  # the handler's own work
                counts[index] += 1

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        barrier.wait()
        time.sleep(3.0)
        done.set()
        for thread in threads:
            thread.join()
        total = sum(counts)
        # span ends are judged on syncperf's CPU time: never shed here; span starts are timed
        # in wall-clock time (the documented limit), which a busy 2-core machine can push past
        # the budget three times in a row: then what is not made is still counted
        shed = {p.attributes["syncperf.reason"] for p in cap.points("syncperf.shed")}
        assert shed <= {"slow_span_start"}, shed
        assert len(cap.spans()) + _not_made(cap) == total


def test_eight_cpu_bound_application_threads_do_not_make_syncperf_shed() -> None:
    """Threads that never touch syncperf hold the GIL while one thread records operations."""
    with capture() as cap:
        done = threading.Event()

        def burn() -> None:
            while not done.is_set():
                sum(range(10_000))

        threads = [threading.Thread(target=burn) for _ in range(8)]
        for thread in threads:
            thread.start()
        total = 0
        deadline = time.monotonic() + 3.0
        try:
            while time.monotonic() < deadline:
                with syncperf.sync_operation("push", entity="todo"):
                    pass
                total += 1
        finally:
            done.set()
            for thread in threads:
                thread.join()
        assert cap.points("syncperf.shed") == []
        assert len(cap.spans()) + _not_made(cap) == total


def test_spans_not_made_while_shedding_are_counted() -> None:
    with capture() as cap:
        cap.runtime.shed_spans("test")
        for _ in range(5):
            with syncperf.sync_operation("push"):
                pass
        assert cap.spans() == []
        assert cap.total("syncperf.dropped", {"syncperf.reason": "span_shed"}) == 5


class _Failing(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("secret payload")


def test_a_failing_span_processor_is_counted_and_logged_once_at_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(_Failing())
    with capture(tracer_provider=provider) as cap, caplog.at_level(logging.WARNING, "syncperf"):
        for _ in range(3):
            with syncperf.sync_operation("push"):
                pass
        cap.runtime.finisher.flush()
        assert cap.total("syncperf.dropped", {"syncperf.reason": "span_end_failed"}) == 3
    warnings = [r for r in caplog.records if "span processor" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "secret payload" not in caplog.text


def test_the_span_queue_size_follows_otel_bsp_max_queue_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "7")
    with capture() as cap:
        assert cap.runtime.config.span_queue_size == 7
        assert cap.runtime.finisher._max_queue == 7
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "0")  # invalid: ignored, as the spec says
    assert syncperf.Config.from_env().span_queue_size == 2048


@pytest.fixture
def otlp_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The tracer provider setup_otlp builds, with a small batch queue and a silent schedule."""
    from opentelemetry import trace

    from syncperf import _runtime
    from syncperf.export import setup_otlp

    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", trace.Once())
    handle = setup_otlp(endpoint="http://127.0.0.1:9", metrics=False)
    yield handle.tracer_provider
    handle.tracer_provider.shutdown = lambda: None  # nothing reachable to export to
    previous = _runtime.replace(None)
    if previous is not None:
        previous.shutdown()


def test_spans_the_sdk_batch_processor_drops_are_counted(otlp_provider: Any) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from syncperf import _runtime

    received = InMemorySpanExporter()
    for processor in otlp_provider._active_span_processor._span_processors:
        if hasattr(processor, "_batch_processor"):
            batch = processor._batch_processor
            batch._exporter.inner = received  # inside syncperf's counting wrapper
            batch._max_export_batch_size = 1_000  # its worker stays asleep: no race with it
    rt = _runtime.current()
    for _ in range(6):
        for _ in range(5):
            with syncperf.sync_operation("push"):
                pass
        rt.finisher.flush()  # syncperf's own queue (10 here too) never overflows
    otlp_provider.force_flush()
    dropped = {
        p.attributes["syncperf.reason"]: p.value
        for rm in rt.reader().collect().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "syncperf.dropped"
        for p in m.data.data_points
    }
    assert dropped.get("span_export_queue_full") == 20  # room for 10
    assert len(received.get_finished_spans()) == 10
