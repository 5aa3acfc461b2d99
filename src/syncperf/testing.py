"""Test helpers: ``capture()`` and the pytest fixture ``syncperf_capture``.

Inside ``capture()`` syncperf records into a fresh, private runtime in strict mode (misuse
raises ``MeasurementError``), with spans in memory, and restores the previous runtime on exit.
Global OpenTelemetry providers are neither read nor replaced::

    def test_push_counts_conflicts(syncperf_capture):
        push(...)
        (point,) = syncperf_capture.points("sync.conflicts", {"sync.entity": "todo"})
        assert point.value == 1
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import Metric
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler

from syncperf import _runtime
from syncperf._config import Config
from syncperf._metrics.reader import Reader

if TYPE_CHECKING:  # imported when asked for (``__getattr__`` below)
    from _syncperf_pytest import syncperf_capture

__all__ = ["Capture", "capture", "syncperf_capture"]


class Capture:
    """What ``capture()`` yields: finished spans and metrics as they would be exported now."""

    def __init__(
        self, runtime: _runtime.Runtime, exporter: InMemorySpanExporter, outer: Any = None
    ) -> None:
        self.runtime = runtime
        self.tracer_provider = runtime.config.tracer_provider
        self.configured: list[Config] = []
        """The configs ``syncperf.configure()`` was given inside the capture (by an app
        factory or a lifespan, say): checked, noted here, never installed."""
        self.scope: tuple[object, ...] = (*(outer.scope if outer else ()), object())
        """This capture's token after those of the captures it is nested in (``Outbox``)."""
        self.outside: _runtime.Runtime | None = outer.outside if outer else _runtime.installed
        """The application's runtime around the capture (what a bridged provider reads)."""
        self._previous: _runtime.Runtime | None = None
        """The runtime this capture's replaced when it began (restored at its end if still
        in force then, or, if that one is a capture's that has ended, the one before it)."""
        self.closed = False
        """Whether the capture has ended (``configure()`` installs again, ``_runtime.install``)."""
        self._exporter = exporter
        self._reader: Reader = runtime.reader()

    def spans(self) -> list[ReadableSpan]:
        """Finished spans, oldest first (queued span ends are flushed first)."""
        self.runtime.finisher.flush()
        return list(self._exporter.get_finished_spans())

    def metrics(self) -> list[Metric]:
        """Every metric with data, as a cumulative exporter would receive it now."""
        data = self._reader.collect()
        return [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]

    def metric(self, name: str) -> Metric | None:
        """The metric called ``name`` (``opentelemetry.sdk.metrics.export.Metric``), or None."""
        return next((m for m in self.metrics() if m.name == name), None)

    def points(self, name: str, attributes: Mapping[str, Any] | None = None) -> list[Any]:
        """Data points of ``name`` whose attributes include ``attributes``."""
        metric = self.metric(name)
        if metric is None:
            return []
        wanted = dict(attributes or {})
        return [
            point
            for point in metric.data.data_points
            if all((point.attributes or {}).get(k) == v for k, v in wanted.items())
        ]

    def total(self, name: str, attributes: Mapping[str, Any] | None = None) -> float:
        """Sum of counter values, or of histogram counts, over the matching points."""
        return float(
            sum(p.count if hasattr(p, "count") else p.value for p in self.points(name, attributes))
        )

    def clear_spans(self) -> None:
        """Forget the spans captured so far."""
        self.runtime.finisher.flush()
        self._exporter.clear()


@contextmanager
def capture(*, sampler: Sampler = ALWAYS_ON, **options: Any) -> Iterator[Capture]:
    """Record syncperf's telemetry in memory for the duration of the block.

    Args:
        sampler: Sampler of the capture's private tracer provider (which decides alone:
            ``trace_sample_rate`` defaults to 1.0 here, whatever the environment says).
        **options: ``Config`` fields (``strict`` defaults to True here).

    Inside the block the capture's runtime stays in force: ``syncperf.configure()`` called by
    the code under test checks its options (a bad one raises ``ConfigError``) and notes the
    config in ``Capture.configured`` without installing it.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    options.setdefault("strict", True)
    options.setdefault("enabled", True)  # OTEL_SDK_DISABLED must not silently empty a test
    options.setdefault("trace_sample_rate", 1.0)  # nor SYNCPERF_TRACE_SAMPLE_RATE: sampler=
    options.setdefault("tracer_provider", provider)
    config = Config.from_env(**options)
    rt = _runtime.Runtime(config, shared_outputs=False)  # the application's outputs stay its own
    with _swap:
        outer = _runtime.installed
        rt.capture = cap = Capture(rt, exporter, outer.capture if outer is not None else None)
        cap._previous = _runtime.replace(rt)
    try:
        yield cap
    finally:
        _end(cap)
        rt.shutdown()
        provider.shutdown()


_swap = threading.Lock()
"""Captures begin and end one at a time (each in its thread or task, in any order)."""


def _end(cap: Capture) -> None:
    """End ``cap``: the runtime it replaced is current again, unless a capture that began
    later is still in force (that one restores it, or the one before it if ``cap``'s
    replaced a capture that has ended since: never an ended capture's runtime)."""
    with _swap:
        previous = cap._previous
        while previous is not None and previous.capture is not None and previous.capture.closed:
            previous = previous.capture._previous
        _runtime.replace(previous, only=cap.runtime)
        cap.closed = True


pytest_plugins = ["_syncperf_pytest"]
"""Listed as a plugin (``pytest_plugins = ["syncperf.testing"]``, ``-p syncperf.testing``),
this module brings the plugin in (registered once, beside its entry point). pytest imports
it, after marking it for assertion rewriting: importing it here first would make pytest warn
(an error under ``filterwarnings = error``)."""


def __getattr__(name: str) -> Any:
    """``syncperf_capture``, the fixture (for ``from syncperf.testing import ...``), imported
    when asked for: it needs pytest, which ``capture()`` does not."""
    if name == "syncperf_capture":
        from _syncperf_pytest import syncperf_capture

        return syncperf_capture
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
