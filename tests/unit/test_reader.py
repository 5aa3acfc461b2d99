"""A reader's collections: what an exporter keeps never changes, and what it let go of is
reused."""

from __future__ import annotations

import gc
import json
from typing import Any

from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from syncperf._metrics.aggregates import Registry, freeze
from syncperf._metrics.reader import Reader

BOUNDS = (0.1, 1.0)


def _setup(
    temporality: dict[str, AggregationTemporality] | None = None,
) -> tuple[Reader, Any, Any]:
    registry = Registry()
    reader = Reader(registry, Resource({}), InstrumentationScope("t"), temporality)
    histogram = registry.instrument("h", "histogram", "s", "d", bounds=BOUNDS)
    counter = registry.instrument("c", "counter", "1", "d")
    return reader, histogram.histogram(freeze({"k": "v"})), counter.sum(freeze({"k": "v"}))


def _points(data: MetricsData) -> dict[str, Any]:
    (resource,) = data.resource_metrics
    (scope,) = resource.scope_metrics
    return {metric.name: metric.data.data_points[0] for metric in scope.metrics}


def _fields(point: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in vars(point).items()}


def test_data_an_exporter_keeps_never_changes_in_later_collections() -> None:
    reader, histogram, counter = _setup()
    histogram.record(0.5)
    counter.add(2)
    kept = reader.collect()
    before = {name: _fields(point) for name, point in _points(kept).items()}
    for _ in range(2):
        histogram.record(5.0)
        counter.add(3)
        later = _points(reader.collect())
    assert {name: _fields(point) for name, point in _points(kept).items()} == before
    assert later["h"].count == 3 and list(later["h"].bucket_counts) == [0, 1, 2]
    assert later["h"].min == 0.5 and later["h"].max == 5.0 and later["h"].sum == 10.5
    assert later["c"].value == 8
    assert later["h"] is not _points(kept)["h"]


def test_a_count_list_kept_from_a_data_point_never_changes() -> None:
    reader, histogram, _ = _setup()
    histogram.record(0.5)
    counts = _points(reader.collect())["h"].bucket_counts
    histogram.record(0.05)
    assert list(_points(reader.collect())["h"].bucket_counts) == [1, 1, 0]
    assert list(counts) == [0, 1, 0]


def test_data_points_the_exporter_let_go_of_are_rewritten_with_the_new_values() -> None:
    reader, histogram, counter = _setup()
    histogram.record(0.5)
    counter.add(1)
    first = _points(reader.collect())
    ids = {name: id(point) for name, point in first.items()}
    first_time = first["h"].time_unix_nano
    del first
    gc.collect()
    histogram.record(0.05)
    counter.add(4)
    second = _points(reader.collect())
    assert {name: id(point) for name, point in second.items()} == ids
    assert second["h"].count == 2 and list(second["h"].bucket_counts) == [1, 1, 0]
    assert second["h"].min == 0.05 and second["h"].max == 0.5 and second["h"].sum == 0.55
    assert second["h"].time_unix_nano >= first_time
    assert second["c"].value == 5
    assert json.loads(second["h"].to_json())["bucket_counts"] == [1, 1, 0]  # console exporter


def test_a_delta_reader_reports_each_interval_once() -> None:
    delta = AggregationTemporality.DELTA
    reader, histogram, counter = _setup({"histogram": delta, "counter": delta})
    histogram.record(0.5)
    counter.add(2)
    first = _points(reader.collect())
    assert first["h"].count == 1 and first["c"].value == 2
    assert _points(reader.collect()) == {}
    histogram.record(5.0)
    counter.add(3)
    second = _points(reader.collect())
    assert second["h"].count == 1 and list(second["h"].bucket_counts) == [0, 0, 1]
    assert second["h"].start_time_unix_nano >= first["h"].time_unix_nano
    assert second["c"].value == 3 and first["c"].value == 2


def test_an_observed_up_down_counter_in_two_streams_adds_up_except_beside_its_provider() -> None:
    """``http.server.active_requests`` of requests another instrumentation meters into a
    provider is a stream of its own: that provider's reader skips it, the others add both."""
    registry, provider = Registry(), object()
    for beside, n in ((None, 2.0), (provider, 3.0)):
        points: list[tuple[dict[str, str | bool], float]] = [({"k": "v"}, n)]
        registry.instrument("a", "updowncounter", "1", "d", beside=beside).callbacks.append(
            lambda points=points: points
        )
    scope = InstrumentationScope("t")
    other = Reader(registry, Resource({}), scope)
    own = Reader(registry, Resource({}), scope, beside=provider)
    for _ in range(2):
        assert _points(other.collect())["a"].value == 5
        assert _points(own.collect())["a"].value == 2
