"""syncperf's own log lines about an exception raised by the application's code (a span
processor, a metric exporter, a hook) name its type and where it was raised, never its
message: an HTTP client's message quotes the URL it failed on, API key included."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanProcessor

import syncperf
from syncperf import _runtime
from syncperf._metrics import outputs

SECRET = "SEKRTlogZq81x"


class _Leaky(ConnectionError):
    """What an HTTP client raises: its message quotes the URL, query string and all."""


def _raise(*args: object, **kwargs: object) -> Any:
    raise _Leaky(f"Max retries exceeded with url: /v1/push?api_key={SECRET}")


class _Processor(SpanProcessor):
    force_flush = _raise  # type: ignore[assignment]


class _MetricExporter(MetricExporter):
    def __init__(self, *, export: bool, shutdown: bool) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self._export_raises, self._shutdown_raises = export, shutdown

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        if self._export_raises:
            _raise()
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        if self._shutdown_raises:
            _raise()


class _SpanExporter(SpanExporter):
    export = _raise  # type: ignore[assignment]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # the traceback, exc_info's message included


@pytest.fixture
def lines() -> Iterator[list[str]]:
    handler = _Lines()
    root, own = logging.getLogger(), logging.getLogger("syncperf")
    levels = root.level, own.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    own.setLevel(logging.DEBUG)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(levels[0])
    own.setLevel(levels[1])
    previous = _runtime.replace(None)
    if previous is not None:
        previous.shutdown()


def _flush_with_a_raising_span_processor() -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(_Processor())
    syncperf.configure(tracer_provider=provider)
    syncperf.force_flush(timeout=2)


def _a_raising_metric_export() -> None:
    syncperf.configure(metric_exporters=[_MetricExporter(export=True, shutdown=False)])
    with syncperf.sync_operation("push", entity="todo"):
        pass
    syncperf.force_flush(timeout=2)


def _a_raising_metric_exporter_shutdown() -> None:
    syncperf.configure(metric_exporters=[_MetricExporter(export=False, shutdown=True)])
    previous = _runtime.replace(None)
    assert previous is not None
    previous.shutdown()


def _a_raising_shutdown_hook() -> None:
    syncperf.configure()
    _runtime.SHUTDOWN_HOOKS.append(_raise)
    try:
        previous = _runtime.replace(None)
        assert previous is not None
        previous.shutdown()
    finally:
        _runtime.SHUTDOWN_HOOKS.remove(_raise)


def _a_raising_carry() -> None:
    syncperf.configure()
    outputs.CARRIES.append(_raise)
    try:
        syncperf.configure()
    finally:
        outputs.CARRIES.remove(_raise)


def _a_raising_span_export() -> None:
    from syncperf.export._otlp import CountingSpanExporter

    CountingSpanExporter(_SpanExporter()).export([])


def _a_raising_join_of_the_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    from syncperf import _zero_code, export

    monkeypatch.setattr(export, "setup_meter_provider", _raise)
    _zero_code.SyncPerfInstrumentor()._instrument()


SITES: dict[str, Callable[..., None]] = {
    "flush": _flush_with_a_raising_span_processor,
    "metric export": _a_raising_metric_export,
    "metric exporter shutdown": _a_raising_metric_exporter_shutdown,
    "runtime hook": _a_raising_shutdown_hook,
    "carry": _a_raising_carry,
    "span export": _a_raising_span_export,
    "zero-code": _a_raising_join_of_the_pipeline,
}


@pytest.mark.parametrize("site", list(SITES))
def test_a_log_line_about_a_raised_exception_names_its_type_never_its_message(
    site: str, lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    call = SITES[site]
    if site == "zero-code":
        call(monkeypatch)
    else:
        call()
    assert any("_Leaky" in line for line in lines), lines
    assert not [line for line in lines if SECRET in line]
