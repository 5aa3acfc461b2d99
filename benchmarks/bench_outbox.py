"""Cost of ``syncperf.outbox`` vs the hand-written OpenTelemetry SDK equivalent (issue #5).

Reference ("naive OTel"): what a user writes with the SDK directly: a ``Counter.add`` per
enqueue (2 attributes) and, with tracing, a PRODUCER span started and ended per enqueue; per
relay batch a span, one ``Counter.add`` and one lag ``Histogram.record`` per message, a
duration ``Histogram.record``. Tracing variants share one SDK ``TracerProvider`` (ALWAYS_ON,
``BatchSpanProcessor`` into a discarding exporter). Variants run round-robin in one process.
Run::

    pytest benchmarks/bench_outbox.py -p no:cacheprovider -o python_files='bench_*.py' -s
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind

import syncperf
from benchmarks._compare import interleaved, table
from syncperf.outbox import Outbox

BATCH = 10


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[TracerProvider, MeterProvider]]:
    tracer_provider = TracerProvider(sampler=ALWAYS_ON)
    tracer_provider.add_span_processor(BatchSpanProcessor(_Discard()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    yield tracer_provider, meter_provider
    tracer_provider.shutdown()
    meter_provider.shutdown()
    syncperf.configure()


def _naive(tracer_provider: TracerProvider | None, meter_provider: MeterProvider) -> Any:
    meter = meter_provider.get_meter("naive")
    messages = meter.create_counter("naive.outbox.messages")
    lag = meter.create_histogram("naive.outbox.lag", unit="s")
    duration = meter.create_histogram("naive.outbox.publish.duration", unit="s")
    tracer = None if tracer_provider is None else tracer_provider.get_tracer("naive")
    enqueued = {"outbox.name": "orders", "outbox.event": "enqueued"}
    published = {"outbox.name": "orders", "outbox.event": "published"}
    name = {"outbox.name": "orders"}

    def enqueue() -> object:
        if tracer is not None:
            span = tracer.start_span("create orders", kind=SpanKind.PRODUCER)
            span.end()
        messages.add(1, enqueued)
        return None

    def publish(created: float) -> None:
        start = time.perf_counter()
        span = None if tracer is None else tracer.start_span("send orders", kind=SpanKind.CLIENT)
        for _ in range(BATCH):
            messages.add(1, published)
            lag.record(time.time() - created, name)
        duration.record(time.perf_counter() - start, name)
        if span is not None:
            span.end()

    return enqueue, publish


def _ours(outbox: Outbox) -> Any:
    def enqueue() -> object:
        return outbox.enqueue()

    def publish(created: float) -> None:
        with outbox.publish(count=BATCH) as batch:
            for _ in range(BATCH):
                batch.published(created)

    return enqueue, publish


def _run(tracing: bool, providers: tuple[TracerProvider, MeterProvider]) -> dict[str, float]:
    tracer_provider, meter_provider = providers
    syncperf.configure(tracer_provider=tracer_provider if tracing else None)
    outbox = Outbox("orders")
    created = time.time() - 5
    ours_enqueue, ours_publish = _ours(outbox)
    naive_enqueue, naive_publish = _naive(tracer_provider if tracing else None, meter_provider)
    variants: dict[str, Callable[[], object]] = {
        "empty": lambda: None,
        "ours_enqueue": ours_enqueue,
        "naive_enqueue": naive_enqueue,
        "ours_publish": lambda: ours_publish(created),
        "naive_publish": lambda: naive_publish(created),
    }
    return interleaved(variants, loops=300, rounds=11, warmup=100)


def test_outbox_cost_vs_naive_otel(
    providers: tuple[TracerProvider, MeterProvider], benchmark: Any
) -> None:
    rows = []
    for tracing in (False, True):
        r = _run(tracing, providers)
        label = "with spans" if tracing else "metrics only"
        rows.append(
            (
                f"enqueue, {label}",
                r["ours_enqueue"],
                r["naive_enqueue"],
                r["ours_enqueue"] / r["naive_enqueue"],
            )
        )
        rows.append(
            (
                f"publish batch of {BATCH} (+ lag each), {label}",
                r["ours_publish"],
                r["naive_publish"],
                r["ours_publish"] / r["naive_publish"],
            )
        )
    print()
    print(table(rows, "Outbox: µs per call, syncperf vs hand-written OTel SDK"))
    benchmark.extra_info.update({case: round(ratio, 3) for case, _, _, ratio in rows})
    outbox = Outbox("orders")
    benchmark.pedantic(outbox.enqueue, rounds=200, iterations=1)
    # loose, noise-proof bounds (measured: 0.26 / 0.09 / 0.94 / 0.22): with a span, enqueue is
    # dominated by the SDK span start both ways; everything else is a fraction of the SDK's cost
    limits = (0.6, 0.4, 1.5, 0.6)
    assert all(ratio < limit for (*_, ratio), limit in zip(rows, limits, strict=True))
