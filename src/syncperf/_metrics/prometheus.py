"""A ``prometheus_client`` collector over syncperf's aggregates.

Names follow the OpenTelemetry-to-Prometheus translation of the OTLP spec (as the
collector's ``prometheus`` exporter and Prometheus's own OTLP receiver apply it): dots
become underscores, the unit becomes a suffix (``s`` -> ``_seconds``, ``By`` -> ``_bytes``,
``1`` -> ``_ratio``; ``{annotations}`` are dropped), counters end in ``_total``, and
attribute keys become label names with underscores.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import Gauge, Histogram, Metric, Sum

from syncperf._metrics.reader import Reader

_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "ratio"}
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")


def prometheus_name(name: str, unit: str | None, *, counter: bool = False) -> str:
    """The Prometheus metric name for an OpenTelemetry metric (without ``_total``)."""
    base = _INVALID.sub("_", name)
    suffix = _UNITS.get(unit or "", "")
    if unit and not suffix and not unit.startswith("{"):
        suffix = _INVALID.sub("_", unit)
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    return base


def label_name(key: str) -> str:
    """A Prometheus label name for an attribute key."""
    return _INVALID.sub("_", key)


class SyncPerfCollector:
    """Yields syncperf's metrics on each scrape (cumulative, as Prometheus expects)."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def close(self) -> None:
        """Stop receiving data."""
        self.reader.close()

    def describe(self) -> list[Any]:
        """No up-front description: metric families appear as they get data."""
        return []

    def collect(self) -> Iterator[Any]:
        """Translate one cumulative collection into Prometheus metric families."""
        data = self.reader.collect()
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    yield _family(metric)


def family_samples(metric: Metric) -> tuple[str, str, tuple[str, ...], list[tuple[Any, Any]]]:
    """``(name, help, label names, [(label values, data point)])`` of a metric family."""
    points: list[Any] = list(metric.data.data_points)
    keys = sorted({k for p in points for k in (p.attributes or {})})

    def values(point: Any) -> tuple[str, ...]:
        attrs = point.attributes or {}
        return tuple(_label_value(attrs.get(k, "")) for k in keys)

    return (
        prometheus_name(metric.name, metric.unit),
        metric.description or metric.name,
        tuple(label_name(k) for k in keys),
        [(values(point), point) for point in points],
    )


def _family(metric: Metric) -> Any:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    data = metric.data
    name, doc, keys, points = family_samples(metric)
    labels = list(keys)
    if isinstance(data, Histogram):
        histogram = HistogramMetricFamily(name, doc, labels=labels)
        for values, point in points:
            buckets, running = [], 0
            for bound, count in zip(
                [*point.explicit_bounds, math.inf], point.bucket_counts, strict=True
            ):
                running += count
                buckets.append((_le(bound), running))
            histogram.add_metric(list(values), buckets, point.sum)
        return histogram
    family: CounterMetricFamily | GaugeMetricFamily
    if isinstance(data, Sum) and data.is_monotonic:
        family = CounterMetricFamily(name, doc, labels=labels)
    else:
        assert isinstance(data, (Sum, Gauge))
        family = GaugeMetricFamily(name, doc, labels=labels)
    for values, point in points:
        family.add_metric(list(values), point.value)
    return family


def _le(bound: float) -> str:
    if bound == math.inf:
        return "+Inf"
    return repr(float(bound))


def _label_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
