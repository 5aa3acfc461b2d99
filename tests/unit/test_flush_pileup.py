"""A collector that never answers: ``force_flush()`` after each request does not pile up
flush threads (and the sockets they hold) while one is still waiting on it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

import syncperf
from syncperf import _runtime
from syncperf._metrics import bounded
from tests.integration.otlp_receiver import SilentListener


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    yield
    previous = _runtime.replace(None)
    if previous is not None:
        previous.shutdown()
    _settle()


def _settle() -> None:
    deadline = time.monotonic() + 20
    while bounded.running(bounded.FLUSH) and time.monotonic() < deadline:
        time.sleep(0.02)


def _flushers() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == bounded.FLUSH)


def _one() -> None:
    with syncperf.sync_operation("push", entity="todo"):
        pass


def test_force_flush_per_request_to_a_silent_collector_keeps_one_flush_thread() -> None:
    listener = SilentListener()
    exporter = OTLPMetricExporter(endpoint=f"{listener.endpoint}/v1/metrics", timeout=3)
    try:
        syncperf.configure(metric_exporters=[exporter], shutdown_timeout=0.05)
        most = 0
        for _ in range(40):
            _one()
            assert syncperf.force_flush(timeout=0.01) is False
            most = max(most, _flushers())
        assert most <= 1  # one per call before: 40 threads, each with its socket
        assert listener.accepted <= 2
    finally:
        listener.close()  # the waiting export fails now: its thread ends
        _settle()


class _Gated(MetricExporter):
    """Waits for ``release`` on its first export (a collector that does not answer yet)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.exports = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        self.exports += 1
        self.release.wait(30)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        self.release.set()


def test_a_flush_waits_for_the_stalled_one_and_succeeds_once_the_collector_answers() -> None:
    gated = _Gated()
    syncperf.configure(metric_exporters=[gated], shutdown_timeout=0.05)
    for _ in range(20):
        _one()
        assert syncperf.force_flush(timeout=0.01) is False  # not exported in time
        assert _flushers() <= 1
    assert gated.exports == 1  # the later ones waited on the first: no export of their own
    _one()
    threading.Timer(0.2, gated.release.set).start()
    # Waits for the stalled flush within its own bound, then exports what it holds itself.
    assert syncperf.force_flush(timeout=10) is True
    assert gated.exports == 2
    assert syncperf.force_flush(timeout=10) is True


class _Recording(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exports = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        self.exports += 1
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        pass


def test_a_flush_after_configure_does_not_wait_on_the_replaced_exporters_stalled_one() -> None:
    """configure() moved to a collector that answers: its flushes do not queue behind one
    still waiting on the old collector (whose shutdown does not end a request in flight)."""
    gated = _Gated()
    gated.shutdown = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        syncperf.configure(metric_exporters=[gated], shutdown_timeout=0.05)
        _one()
        assert syncperf.force_flush(timeout=0.01) is False
        healthy = _Recording()
        syncperf.configure(metric_exporters=[healthy], shutdown_timeout=0.05)
        _one()
        assert syncperf.force_flush(timeout=5) is True
        assert healthy.exports == 1
    finally:
        gated.release.set()
        _settle()
