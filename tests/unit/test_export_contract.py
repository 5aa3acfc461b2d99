"""The contract's metric names, units and attributes, as real exporters see them."""

from __future__ import annotations

import io
import json

import pytest
from opentelemetry.sdk.metrics import Counter, Histogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import syncperf
from syncperf import _runtime
from syncperf.testing import capture

CONTRACT = {
    # name: (unit, kind, attribute keys seen in this scenario)
    "sync.operation.duration": (
        "s",
        "histogram",
        {"sync.operation", "sync.entity", "sync.outcome", "error.type"},
    ),
    "sync.batch.size": ("{item}", "histogram", {"sync.operation", "sync.entity"}),
    "sync.items": ("{item}", "sum", {"sync.operation", "sync.entity", "sync.change"}),
    "sync.conflicts": ("{conflict}", "sum", {"sync.entity", "sync.conflict.resolution"}),
    "sync.idempotency.hits": ("{request}", "sum", {"sync.operation", "sync.entity"}),
    "sync.operations.active": ("{operation}", "sum", {"sync.operation"}),
    "syncperf.overhead": ("s", "histogram", {"syncperf.component"}),
}


def scenario() -> None:
    with syncperf.sync_operation("push", entity="todo") as op:
        op.set_batch_size(3)
        op.record_items(3, change="created")
        op.record_conflict(resolution="server_wins")
        op.record_idempotency_hit()
    with pytest.raises(TimeoutError), syncperf.sync_operation("pull", entity="todo"):
        raise TimeoutError


class ListExporter(MetricExporter):
    def __init__(self, temporality: dict[type, AggregationTemporality] | None = None) -> None:
        super().__init__(preferred_temporality=temporality)
        self.batches: list[MetricsData] = []
        self.shut_down = False

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        self.shut_down = True


def test_console_exporter_receives_every_contract_metric_with_units_and_attributes() -> None:
    out = io.StringIO()
    exporter = ConsoleMetricExporter(
        out=out, formatter=lambda data: data.to_json(indent=None) + "\n"
    )
    resource = Resource.create({"service.name": "sync-api"})
    with capture(metric_exporters=[exporter], export_interval=3600, resource=resource):
        scenario()
        _runtime.force_flush()
        payload = json.loads(out.getvalue())
    (resource_metrics,) = payload["resource_metrics"]
    assert resource_metrics["resource"]["attributes"]["service.name"] == "sync-api"
    (scope,) = resource_metrics["scope_metrics"]
    assert scope["scope"]["name"] == "syncperf"
    metrics = {m["name"]: m for m in scope["metrics"]}
    for name, (unit, _kind, keys) in CONTRACT.items():
        assert metrics[name]["unit"] == unit, name
        seen = {k for p in metrics[name]["data"]["data_points"] for k in p["attributes"]}
        assert seen == keys, name
    duration = metrics["sync.operation.duration"]["data"]
    for bound in (0.2, 2.0, 5.0):
        assert bound in duration["data_points"][0]["explicit_bounds"]
    assert metrics["sync.batch.size"]["data"]["data_points"][0]["explicit_bounds"] == [
        1,
        2,
        5,
        10,
        20,
        50,
        100,
        200,
        500,
        1000,
        2000,
        5000,
        10000,
    ]
    assert duration["aggregation_temporality"] == AggregationTemporality.CUMULATIVE


def test_an_exporter_preferring_delta_gets_deltas_and_active_stays_cumulative() -> None:
    exporter = ListExporter(
        {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
    )
    with capture(metric_exporters=[exporter], export_interval=3600):
        scenario()
        _runtime.force_flush()
        scenario()
        _runtime.force_flush()
    second = {m.name: m for m in exporter.batches[1].resource_metrics[0].scope_metrics[0].metrics}
    assert second["sync.items"].data.aggregation_temporality is AggregationTemporality.DELTA
    assert second["sync.items"].data.data_points[0].value == 3
    active = second["sync.operations.active"].data
    assert active.aggregation_temporality is AggregationTemporality.CUMULATIVE
    assert active.is_monotonic is False


def test_prometheus_client_sees_translated_names_and_labels() -> None:
    registry = CollectorRegistry()
    with capture(prometheus=registry):
        scenario()
        text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["sync_operation_duration_seconds"].type == "histogram"
    assert families["sync_items"].type == "counter"
    assert families["sync_operations_active"].type == "gauge"
    assert families["syncperf_overhead_seconds"].type == "histogram"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert (
        samples[
            (
                "sync_items_total",
                (("sync_change", "created"), ("sync_entity", "todo"), ("sync_operation", "push")),
            )
        ]
        == 3
    )
    assert (
        samples[
            (
                "sync_conflicts_total",
                (("sync_conflict_resolution", "server_wins"), ("sync_entity", "todo")),
            )
        ]
        == 1
    )
    bucket = (
        "sync_operation_duration_seconds_bucket",
        (
            ("error_type", "TimeoutError"),
            ("le", "+Inf"),
            ("sync_entity", "todo"),
            ("sync_operation", "pull"),
            ("sync_outcome", "error"),
        ),
    )
    assert samples[bucket] == 1
    assert 'le="0.2"' in text and 'le="2.0"' in text and 'le="5.0"' in text


def test_capture_restores_the_previous_runtime() -> None:
    before = _runtime.current()
    with capture() as cap:
        assert _runtime.current() is cap.runtime
    assert _runtime.current() is before


def test_failed_exports_are_counted() -> None:
    class Failing(ListExporter):
        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
        ) -> MetricExportResult:
            raise ConnectionError("collector down")

    with capture(metric_exporters=[Failing()], export_interval=3600) as cap:
        _runtime.force_flush()
        assert cap.total("syncperf.export.failures", {"syncperf.signal": "metrics"}) == 1


def test_configuring_again_with_the_same_exporter_keeps_it_working() -> None:
    exporter = ListExporter()
    previous = _runtime.replace(None)
    try:
        syncperf.configure(metric_exporters=[exporter], export_interval=3600)
        syncperf.configure(metric_exporters=[exporter], export_interval=3600, max_entities=5)
        with syncperf.sync_operation("push"):
            pass
        before = len(exporter.batches)
        _runtime.force_flush()
        assert len(exporter.batches) == before + 1
        assert exporter.shut_down is False
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()
