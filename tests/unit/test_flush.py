"""The tracer provider's own flush and shutdown cover syncperf's queued span ends."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ConcurrentMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

import syncperf
from syncperf import _process_exit, _runtime
from syncperf._metrics import bounded
from tests._forked import in_a_worker


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()
    previous = _runtime.replace(None)
    if previous is not None:
        previous.shutdown()


def _run(provider: TracerProvider, n: int) -> None:
    syncperf.configure(tracer_provider=provider)
    for _ in range(n):
        with syncperf.sync_operation("push", entity="todo"):
            pass


def _batch_provider(exporter: InMemorySpanExporter, **kwargs: object) -> TracerProvider:
    provider = TracerProvider(shutdown_on_exit=False, **kwargs)  # type: ignore[arg-type]
    # A schedule far away: only a flush exports.
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
    return provider


def test_provider_force_flush_exports_every_span_that_ended_before_it(
    exporter: InMemorySpanExporter,
) -> None:
    provider = _batch_provider(exporter)
    _run(provider, 300)
    assert provider.force_flush(5_000)
    assert len(exporter.get_finished_spans()) == 300


def test_provider_shutdown_exports_every_span_that_ended_before_it(
    exporter: InMemorySpanExporter,
) -> None:
    provider = _batch_provider(exporter)
    _run(provider, 300)
    provider.shutdown()
    assert len(exporter.get_finished_spans()) == 300


def test_a_concurrent_multi_processor_is_flushed_after_the_queue(
    exporter: InMemorySpanExporter,
) -> None:
    provider = _batch_provider(exporter, active_span_processor=ConcurrentMultiSpanProcessor())
    _run(provider, 300)
    assert provider.force_flush(5_000)
    assert len(exporter.get_finished_spans()) == 300


def test_the_queue_flusher_is_registered_once_per_provider(
    exporter: InMemorySpanExporter,
) -> None:
    provider = _batch_provider(exporter)
    _run(provider, 1)
    _run(provider, 1)  # a second configure() on the same provider
    processors = provider._active_span_processor._span_processors
    assert [type(p).__name__ for p in processors] == ["QueueFlusher", "BatchSpanProcessor"]


class _Blocking(InMemorySpanExporter):
    """A span exporter stuck in export (a collector that accepts and never answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def export(self, spans: Any) -> SpanExportResult:
        self.release.wait(30)
        return super().export(spans)


def test_force_flush_returns_within_its_timeout_when_the_exporter_hangs(
    exporter: InMemorySpanExporter,
) -> None:
    blocking = _Blocking()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(blocking))
    _run(provider, 3)
    started = time.monotonic()
    try:
        assert syncperf.force_flush(timeout=0.3) is False
        assert time.monotonic() - started < 2.0
    finally:
        blocking.release.set()


def test_the_shutdown_timeout_comes_from_the_environment() -> None:
    config = syncperf.Config.from_env({"SYNCPERF_SHUTDOWN_TIMEOUT": "1.5"})
    assert config.shutdown_timeout == 1.5
    assert syncperf.Config().shutdown_timeout == 5.0
    with pytest.raises(syncperf.ConfigError, match="shutdown_timeout"):
        syncperf.Config(shutdown_timeout=0)


class _Failing(MetricExporter):
    def __init__(self, *, raises: bool = False) -> None:
        super().__init__()
        self.raises = raises

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        if self.raises:
            raise ConnectionError("collector down")
        return MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        pass


@pytest.mark.parametrize("raises", [False, True])
def test_force_flush_returns_false_when_a_metric_export_failed(
    exporter: InMemorySpanExporter, raises: bool
) -> None:
    syncperf.configure(metric_exporters=[_Failing(raises=raises)])
    with syncperf.sync_operation("push", entity="todo"):
        pass
    assert syncperf.force_flush(timeout=2) is False


def test_force_flush_returns_false_when_the_tracer_provider_flush_failed(
    exporter: InMemorySpanExporter,
) -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.force_flush = lambda timeout_millis=30_000: False  # type: ignore[method-assign]
    _run(provider, 1)
    assert syncperf.force_flush(timeout=2) is False


def test_force_flush_returns_false_when_flushing_raised(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ms: int) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(_runtime, "FLUSHES", [broken])
    _run(TracerProvider(shutdown_on_exit=False), 1)
    assert syncperf.force_flush(timeout=2) is False


def test_force_flush_returns_true_when_everything_was_exported(
    exporter: InMemorySpanExporter,
) -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _run(provider, 2)
    assert syncperf.force_flush(timeout=2) is True
    assert len(exporter.get_finished_spans()) == 2


def test_a_failed_export_at_shutdown_does_not_make_the_exit_flush_skip_its_wait(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_process_exit, "_exit_stalled", False)
    syncperf.configure(metric_exporters=[_Failing()])
    assert _process_exit.flush_for_exit() is False
    assert _process_exit._exit_stalled is False


def _worker(pushes: int, end: Callable[[], object]) -> int:
    """A forked worker: ``pushes`` operations, then ``end()`` and exit (its exit code)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for _ in range(pushes):
                with syncperf.sync_operation("push", entity="todo"):
                    pass
            end()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _group_total(directory: Path) -> float:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "sync_operation_duration_seconds_count"
    )


@pytest.mark.parametrize(
    "end",
    [syncperf.force_flush, _process_exit.flush_for_exit],  # the exit hook and lifespan flush
    ids=["force_flush", "exit_hook"],
)
def test_a_worker_that_exits_right_after_its_last_request_keeps_every_count_in_the_group(
    exporter: InMemorySpanExporter,
    end: Callable[[], object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    syncperf.configure(prometheus=CollectorRegistry())  # before the fork (preload)
    assert _worker(100, end) == 0  # well within the writer's 1 s interval
    assert _worker(50, end) == 0
    assert _group_total(tmp_path) == 150


class _Sleeping(SpanExporter):
    """A span exporter that takes ``seconds`` per export (a collector that hangs)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.exported: list[Any] = []
        self.entered = threading.Event()

    def export(self, spans: Any) -> SpanExportResult:
        self.entered.set()
        time.sleep(self.seconds)
        self.exported.extend(spans)
        return SpanExportResult.SUCCESS


class _Recording(MetricExporter):
    """Keeps every ``MetricsData`` it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.exports: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        pass

    def dropped(self, reason: str) -> list[float]:
        return [
            point.value
            for data in self.exports
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "syncperf.dropped"
            for point in metric.data.data_points
            if point.attributes.get("syncperf.reason") == reason
        ]


def _stalled_provider(seconds: float) -> tuple[TracerProvider, _Sleeping]:
    sleeping = _Sleeping(seconds)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(sleeping))
    return provider, sleeping


def test_an_operation_open_across_configure_ends_without_waiting_for_a_stalled_exporter(
    exporter: InMemorySpanExporter,
) -> None:
    provider, sleeping = _stalled_provider(2.0)
    syncperf.configure(tracer_provider=provider, shutdown_timeout=0.5)
    inside, go = threading.Event(), threading.Event()
    held: list[float] = []

    def request() -> None:
        with syncperf.sync_operation("push", entity="todo"):
            inside.set()
            go.wait(5)
            started = time.perf_counter()
        held.append(time.perf_counter() - started)

    thread = threading.Thread(target=request)
    thread.start()
    assert inside.wait(5)
    syncperf.configure(tracer_provider=provider, shutdown_timeout=0.5)  # e.g. a reload
    go.set()
    thread.join(10)
    assert held and held[0] < 0.3  # the 50 ms ceiling, with room for a loaded machine
    deadline = time.monotonic() + 30
    while not sleeping.exported and time.monotonic() < deadline:  # ended behind the request
        time.sleep(0.05)
    assert [span.name for span in sleeping.exported] == ["sync push"]


def test_configure_waits_at_most_the_shutdown_timeout_for_a_stalled_span_export(
    exporter: InMemorySpanExporter,
) -> None:
    provider, sleeping = _stalled_provider(2.0)
    recording = _Recording()
    syncperf.configure(tracer_provider=provider, shutdown_timeout=0.3, metric_exporters=[recording])
    with syncperf.sync_operation("pull"):
        pass
    assert sleeping.entered.wait(10)  # the finisher took that span and is stuck exporting it
    for _ in range(2):  # queued behind it
        with syncperf.sync_operation("pull"):
            pass
    started = time.monotonic()
    syncperf.configure(tracer_provider=provider, shutdown_timeout=0.3, metric_exporters=[recording])
    assert time.monotonic() - started < 1.0
    assert syncperf.force_flush(timeout=3)
    assert 2 in recording.dropped("span_end_timeout")  # not ended in time: dropped, counted


@pytest.mark.parametrize("flushed_by", ["shutdown", "force_flush"])
def test_the_providers_own_shutdown_and_flush_return_in_time_when_the_exporter_stalls(
    exporter: InMemorySpanExporter, flushed_by: str
) -> None:
    # The span ends syncperf queued are part of TracerProvider.shutdown() (and force_flush):
    # a span processor stuck in export must not hold them past shutdown_timeout.
    blocking = _Blocking()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(blocking))
    syncperf.configure(tracer_provider=provider, shutdown_timeout=0.3)
    try:
        for _ in range(3):
            with syncperf.sync_operation("push", entity="todo"):
                pass
        started = time.monotonic()
        if flushed_by == "shutdown":
            provider.shutdown()
        else:
            assert provider.force_flush(300) is False
        assert time.monotonic() - started < 1.5  # 30 s when the exporter's wait held it
    finally:
        blocking.release.set()


def test_the_providers_shutdown_ends_the_queue_inline_where_no_thread_can_start(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python 3.12 refuses new threads in atexit handlers, where the SDK shuts its provider
    # down: the queue is still ended (on the caller's thread), never left behind.
    provider = _batch_provider(exporter)
    _run(provider, 5)

    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refused)
    provider.shutdown()
    assert len(exporter.get_finished_spans()) == 5


def test_the_exit_flush_exports_where_no_thread_can_start(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python 3.12 refuses new threads in atexit handlers: the exit flush then runs on the
    # caller's thread rather than raising and exporting nothing.
    recording = _Recording()
    provider = _batch_provider(exporter)
    syncperf.configure(tracer_provider=provider, metric_exporters=[recording])
    with syncperf.sync_operation("push", entity="todo"):
        pass
    monkeypatch.setattr(_process_exit, "_exit_stalled", False)

    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refused)
    assert _process_exit.flush_for_exit() is True
    assert len(exporter.get_finished_spans()) == 1
    assert recording.exports


class _Stalled(MetricExporter):
    """A metric exporter whose export and shutdown hang until ``release`` (a collector that
    accepts and never answers, an exporter that ignores its timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        self.release.wait(5)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        self.release.wait(5)


@pytest.mark.parametrize("kept", [False, True])
def test_configure_again_waits_at_most_the_shutdown_timeout_for_a_stalled_metric_exporter(
    exporter: InMemorySpanExporter, kept: bool
) -> None:
    # The replaced configuration's exporters get a last export (and, unless the new one
    # keeps them, a shutdown): together at most shutdown_timeout, as the docs promise.
    stalled = _Stalled()
    options: dict[str, Any] = {"metric_exporters": [stalled], "shutdown_timeout": 0.3}
    try:
        syncperf.configure(**options)
        with syncperf.sync_operation("pull"):
            pass
        started = time.monotonic()
        syncperf.configure(**(options if kept else {"shutdown_timeout": 0.3}))
        assert time.monotonic() - started < 1.0
    finally:
        stalled.release.set()


_OPEN_AT_EXIT = """
import sys
import syncperf
from opentelemetry.sdk.trace import TracerProvider

syncperf.configure(tracer_provider=TracerProvider())
with syncperf.sync_operation("push"):
    pass
if sys.argv[1] == "reconfigure-before":
    syncperf.configure(tracer_provider=TracerProvider())

def rows():
    with syncperf.sync_operation("pull", entity="todo"):
        yield 1
        yield 2

stream = rows()
next(stream)  # a stream still open at exit (a client mid-download): collected at finalization
if sys.argv[1] == "reconfigure-after":
    syncperf.configure(tracer_provider=TracerProvider())
print("exiting")
"""


@pytest.mark.parametrize("when", ["none", "reconfigure-before", "reconfigure-after"])
def test_an_operation_ended_at_interpreter_finalization_lets_the_process_exit(when: str) -> None:
    # Python 3.11's Thread.start() waits forever during finalization: a span ended then
    # (its operation open in a generator collected at exit) must start no thread.
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_AT_EXIT, when], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exiting\n"


def test_a_finisher_that_cannot_start_its_thread_ends_the_span_inline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from syncperf._tracing.finisher import SpanFinisher

    ended: list[int | None] = []

    class Ended:
        def end(self, end_time: int | None = None) -> None:
            ended.append(end_time)

    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refused)
    finisher = SpanFinisher(lambda: None, lambda: None, lambda stalled: None, 10**9)
    finisher.end(Ended(), 1)
    finisher.shutdown(timeout=0)
    finisher.end(Ended(), 2)  # the stopped finisher's late path
    assert ended == [1, 2]


def test_a_flush_still_waiting_on_the_collector_is_running_here_not_in_a_forked_child() -> None:
    """What lets the exit flush skip its wait after a ``force_flush()`` that ran out of time
    (``_process_exit``): a run of ``bounded.FLUSH`` still going on, in this process only."""
    release = threading.Event()
    assert not bounded.running(bounded.FLUSH)
    assert bounded.run_bounded(release.wait, 0.0, bounded.FLUSH) is False
    try:
        assert bounded.running(bounded.FLUSH)
        assert in_a_worker(lambda: bounded.running(bounded.FLUSH)) is False
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while bounded.running(bounded.FLUSH) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not bounded.running(bounded.FLUSH)
