"""Collection workloads at 10,000 series (``python -m benchmarks._workloads collect/<who>:<what>
<rounds>``).

Each round touches every series once (one histogram observation) and then collects; the
``*:touch`` variants only touch, so the difference is what the collection itself costs.
"""

from __future__ import annotations

from collections.abc import Callable

SERIES = 10_000
BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
OPENMETRICS = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4"


def _syncperf(collect: str) -> tuple[Callable[[], object], Callable[[], object]]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from prometheus_client import CollectorRegistry, generate_latest

    from syncperf._metrics.aggregates import Registry, freeze
    from syncperf._metrics.prometheus import SyncPerfCollector, scrape
    from syncperf._metrics.reader import Reader

    registry = Registry()
    instrument = registry.instrument(
        "sync.duration", "histogram", "s", "d", bounds=BOUNDS, max_series=SERIES + 1
    )
    series = [instrument.histogram(freeze({"entity": f"e{i}"})) for i in range(SERIES)]
    reader = Reader(registry, Resource({}), InstrumentationScope("bench"))
    served = CollectorRegistry()
    SyncPerfCollector(reader).register(served)

    def touch() -> None:
        for s in series:
            s.record(0.3)

    collects: dict[str, Callable[[], object]] = {
        "touch": lambda: None,
        "text": lambda: scrape(served, None, None, {}),
        "openmetrics": lambda: scrape(served, OPENMETRICS, None, {}),
        "families": lambda: generate_latest(served),
        "otlp": reader.collect,
    }
    return touch, collects[collect]


def _prometheus_client(collect: str) -> tuple[Callable[[], object], Callable[[], object]]:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    registry = CollectorRegistry()
    histogram = Histogram("sync_duration", "d", ["entity"], buckets=BOUNDS, registry=registry)
    children = [histogram.labels(f"e{i}") for i in range(SERIES)]

    def touch() -> None:
        for child in children:
            child.observe(0.3)

    return touch, (lambda: None) if collect == "touch" else (lambda: generate_latest(registry))


def _sdk(collect: str) -> tuple[Callable[[], object], Callable[[], object]]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    reader = InMemoryMetricReader()
    view = View(
        instrument_name="*",
        aggregation=ExplicitBucketHistogramAggregation(BOUNDS),
        aggregation_cardinality_limit=SERIES + 1,  # every series, not 2,000 and an overflow
    )
    provider = MeterProvider(metric_readers=[reader], views=[view])
    histogram = provider.get_meter("bench").create_histogram("sync.duration", unit="s")
    attributes = [{"entity": f"e{i}"} for i in range(SERIES)]

    def touch() -> None:
        for a in attributes:
            histogram.record(0.3, a)

    return touch, (lambda: None) if collect == "touch" else reader.get_metrics_data


VARIANTS = {"syncperf": _syncperf, "prometheus_client": _prometheus_client, "sdk": _sdk}


def build(workload: str) -> tuple[Callable[[], object], Callable[[], object]]:
    """``(touch every series, collect)`` of ``<who>:<collect>``."""
    who, _, collect = workload.partition(":")
    return VARIANTS[who](collect)


def round_of(workload: str) -> Callable[[], object]:
    """One round of ``workload``: touch every series, then collect."""
    touch, collect = build(workload)

    def one() -> object:
        touch()
        return collect()

    return one
