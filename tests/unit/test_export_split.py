"""``RenewableMetricExporter`` sends one export in requests of a bounded number of points."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from syncperf import ConfigError
from syncperf.export import RenewableMetricExporter
from syncperf.export._split import split


def _data(shape: list[list[int]]) -> MetricsData:
    """One resource per outer item, one scope each, a metric per inner count of points."""
    resources = []
    for r, counts in enumerate(shape):
        metrics = [
            Metric(
                name=f"m{r}.{m}",
                description="",
                unit="1",
                data=Sum(
                    data_points=[NumberDataPoint({"i": i}, 0, 1, i, None) for i in range(count)],
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                    is_monotonic=True,
                ),
            )
            for m, count in enumerate(counts)
        ]
        scope = ScopeMetrics(InstrumentationScope("syncperf"), metrics, "")
        resources.append(ResourceMetrics(Resource({"r": r}), [scope], ""))
    return MetricsData(resources)


def _flat(data: MetricsData) -> list[tuple[Any, str, Any]]:
    return [
        (rm.resource.attributes["r"], metric.name, point.value)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
    ]


@given(
    shape=st.lists(st.lists(st.integers(0, 30), max_size=5), max_size=4),
    most=st.integers(1, 40),
)
def test_pieces_hold_every_point_once_in_order_and_at_most_most(
    shape: list[list[int]], most: int
) -> None:
    data = _data(shape)
    pieces = list(split(data, most))
    assert all(0 < len(_flat(piece)) <= most for piece in pieces)
    assert [p for piece in pieces for p in _flat(piece)] == _flat(data)
    assert all(len(piece) == most for piece in [_flat(p) for p in pieces[:-1]])


class _Recording(MetricExporter):
    def __init__(self, results: list[MetricExportResult]) -> None:
        super().__init__()
        self.results = results
        self.sent: list[int] = []

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        self.sent.append(len(_flat(metrics_data)))
        return self.results.pop(0) if self.results else MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def test_an_export_goes_in_pieces_and_stops_at_the_first_failure() -> None:
    inner = _Recording([MetricExportResult.SUCCESS, MetricExportResult.FAILURE])
    exporter = RenewableMetricExporter(lambda: inner, max_export_batch_size=10)
    assert exporter.export(_data([[25, 20]])) is MetricExportResult.FAILURE
    assert inner.sent == [10, 10]
    inner.sent.clear()
    assert exporter.export(_data([[25]])) is MetricExportResult.SUCCESS
    assert inner.sent == [10, 10, 5]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_a_bad_batch_size_is_a_config_error(bad: Any) -> None:
    with pytest.raises(ConfigError, match="max_export_batch_size"):
        RenewableMetricExporter(lambda: _Recording([]), max_export_batch_size=bad)


class _Slow(_Recording):
    """Accepts every request, after longer than the whole export may take."""

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        time.sleep(0.06)
        return super().export(metrics_data, timeout_millis, **kwargs)


def test_an_export_whose_requests_all_succeed_succeeds_even_when_the_last_ends_late() -> None:
    inner = _Slow([])
    exporter = RenewableMetricExporter(lambda: inner, max_export_batch_size=10)
    assert exporter.export(_data([[5]]), timeout_millis=30) is MetricExportResult.SUCCESS
    assert exporter.export(_data([[10]]), timeout_millis=30) is MetricExportResult.SUCCESS
    assert inner.sent == [5, 10]
    inner.sent.clear()
    # Past the deadline with pieces left: they are not sent, and the export failed.
    assert exporter.export(_data([[25]]), timeout_millis=30) is MetricExportResult.FAILURE
    assert inner.sent == [10]
