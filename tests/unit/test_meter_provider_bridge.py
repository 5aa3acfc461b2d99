"""`setup_meter_provider`: an application's SDK MeterProvider readers get syncperf's metrics."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.util._once import Once
from prometheus_client import CollectorRegistry, generate_latest

import syncperf
from syncperf import ConfigError, _runtime
from syncperf.export import setup_meter_provider

DELTA = AggregationTemporality.DELTA


@pytest.fixture(autouse=True)
def fresh_runtime() -> Iterator[None]:
    previous = _runtime.replace(None)
    syncperf.configure()
    try:
        yield
    finally:
        rt = _runtime.replace(previous)
        if rt is not None:
            rt.shutdown()


@pytest.fixture
def provider() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield mp, reader
    mp.shutdown()


def pulls(n: int) -> None:
    for _ in range(n):
        with syncperf.sync_operation("pull", entity="note"):
            pass


def syncperf_metrics(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    found: dict[str, Any] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            if sm.scope.name == "syncperf":
                assert not set(found) & {m.name for m in sm.metrics}, "syncperf's scope twice"
                found.update({m.name: m for m in sm.metrics})
    return found


def count(metric: Any) -> int:
    return sum(p.count for p in metric.data.data_points)


def test_every_reader_of_the_provider_gets_syncperfs_metrics_with_its_own(
    provider: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    mp, reader = provider
    mp.get_meter("app").create_counter("app.orders").add(2)
    assert setup_meter_provider(mp)
    pulls(3)
    data = reader.get_metrics_data()
    assert data is not None
    (resource_metrics,) = data.resource_metrics  # one resource: the provider's
    scopes = {sm.scope.name: [m.name for m in sm.metrics] for sm in resource_metrics.scope_metrics}
    assert scopes["app"] == ["app.orders"]
    assert "sync.operation.duration" in scopes["syncperf"]
    assert resource_metrics.resource is mp._sdk_config.resource


def test_setting_it_up_twice_feeds_each_reader_once(
    provider: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    mp, reader = provider
    assert setup_meter_provider(mp)
    assert setup_meter_provider(mp)
    pulls(2)
    assert count(syncperf_metrics(reader)["sync.operation.duration"]) == 2


def test_a_delta_reader_gets_deltas() -> None:
    reader = InMemoryMetricReader(preferred_temporality={Histogram: DELTA, Counter: DELTA})
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    setup_meter_provider(mp)
    pulls(2)
    first = syncperf_metrics(reader)["sync.operation.duration"]
    assert first.data.aggregation_temporality is DELTA and count(first) == 2
    pulls(1)
    assert count(syncperf_metrics(reader)["sync.operation.duration"]) == 1
    mp.shutdown()


def _points(reader: InMemoryMetricReader, name: str) -> list[tuple[Any, int]]:
    """``(count or value, start time)`` of each point of syncperf's ``name``."""
    points = syncperf_metrics(reader)[name].data.data_points
    return [
        (getattr(p, "count", None) or getattr(p, "value", 0), p.start_time_unix_nano)
        for p in points
    ]


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_the_readers_follow_a_new_configuration_and_get_what_was_recorded_before_it(
    temporality: str,
) -> None:
    preferred: dict[type, Any] = {Histogram: DELTA, Counter: DELTA}
    if temporality == "cumulative":
        preferred = {}
    reader = InMemoryMetricReader(preferred_temporality=preferred)
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    setup_meter_provider(mp)
    pulls(1)
    [(first, start)] = _points(reader, "sync.operation.duration")
    assert first == 1
    seen = []
    for entities in [3, 4]:
        pulls(3)  # recorded in the runtime the configuration replaces, never collected
        syncperf.configure(max_entities=entities)
        pulls(2)
        seen += _points(reader, "sync.operation.duration")
    if temporality == "cumulative":  # one stream: the same start, a count that never goes back
        assert seen == [(6, start), (11, start)]
    else:  # every delta delivered once
        assert [count for count, _ in seen] == [5, 5]
    mp.shutdown()


def test_a_prometheus_metric_reader_serves_syncperfs_metrics() -> None:
    registry = CollectorRegistry()
    mp = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    setup_meter_provider(mp)
    pulls(4)
    body = generate_latest(registry).decode()
    assert any(
        line.startswith("sync_operation_duration_seconds_count{")
        and 'sync_entity="note"' in line
        and line.endswith(" 4.0")
        for line in body.splitlines()
    )
    mp.shutdown()


def test_the_request_path_never_records_through_the_sdk(
    provider: tuple[MeterProvider, InMemoryMetricReader], monkeypatch: pytest.MonkeyPatch
) -> None:
    mp, reader = provider
    setup_meter_provider(mp)
    consumer = mp._measurement_consumer
    seen: list[Any] = []
    original = consumer.consume_measurement
    monkeypatch.setattr(consumer, "consume_measurement", lambda m: (seen.append(m), original(m)))
    pulls(50)
    assert seen == []
    assert count(syncperf_metrics(reader)["sync.operation.duration"]) == 50


def test_without_an_sdk_provider_there_is_nothing_to_join() -> None:
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    metrics._internal._METER_PROVIDER = None  # type: ignore[attr-defined]
    assert setup_meter_provider() is False
    with pytest.raises(ConfigError, match="meter_provider"):
        setup_meter_provider(object())


def test_the_instrumentor_entry_point_is_declared_and_joins_the_provider(
    provider: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # 3.11

    from syncperf._zero_code import SyncPerfInstrumentor

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["opentelemetry_instrumentor"]
    assert declared == {"syncperf": "syncperf._zero_code:SyncPerfInstrumentor"}
    mp, reader = provider
    instrumentor = SyncPerfInstrumentor()
    instrumentor.instrument(meter_provider=mp)  # what opentelemetry-instrument calls
    try:
        pulls(2)
        assert count(syncperf_metrics(reader)["sync.operation.duration"]) == 2
    finally:
        instrumentor.uninstrument()


def test_the_instrumentor_never_breaks_start_up(caplog: pytest.LogCaptureFixture) -> None:
    from syncperf._zero_code import SyncPerfInstrumentor

    instrumentor = SyncPerfInstrumentor()
    instrumentor.instrument(meter_provider=object())  # not an SDK provider: logged, not raised
    instrumentor.uninstrument()
    assert "joining the OpenTelemetry pipeline failed" in caplog.text


def test_a_capture_keeps_its_test_data_out_of_the_providers_readers(
    provider: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    from syncperf.testing import capture

    mp, reader = provider
    assert setup_meter_provider(mp)
    pulls(2)  # the application's own, before the test
    with capture() as cap:
        pulls(3)
        assert count(syncperf_metrics(reader)["sync.operation.duration"]) == 2
        assert cap.total("sync.operation.duration") == 3
    assert count(syncperf_metrics(reader)["sync.operation.duration"]) == 2


def test_a_provider_bridged_in_a_capture_reads_that_captures_data(
    provider: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    from syncperf.testing import capture

    mp, reader = provider
    pulls(2)  # the application's
    with capture():
        assert setup_meter_provider(mp)  # the test's own provider
        pulls(1)
        assert count(syncperf_metrics(reader)["sync.operation.duration"]) == 1


def test_a_provider_bridged_in_a_capture_reads_a_nested_captures_data_inside_it(
    provider: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    from syncperf.testing import capture

    mp, reader = provider
    pulls(5)  # the application's: never in the test's provider
    with capture():
        assert setup_meter_provider(mp)
        pulls(1)
        with capture():
            pulls(2)
            assert count(syncperf_metrics(reader)["sync.operation.duration"]) == 2
        assert count(syncperf_metrics(reader)["sync.operation.duration"]) == 1


def test_runtimes_and_providers_are_freed_once_shut_down(
    provider: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    """A bridged provider that lives as long as the process (the application's) keeps no
    runtime that has shut down alive (one per test's capture, one per configure()), and a
    bridged provider nothing else holds is freed with the runtimes that read it."""
    from syncperf.testing import capture

    mp, _ = provider
    setup_meter_provider(mp)
    gone: list[weakref.ref[Any]] = []
    for _ in range(3):
        with capture() as cap:
            pulls(1)
        gone.append(weakref.ref(cap.runtime))
        del cap
        gone.append(weakref.ref(_runtime.current()))
        syncperf.configure()
    other = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    setup_meter_provider(other)
    other.shutdown()
    gone.append(weakref.ref(other))
    del other
    syncperf.configure()  # the runtime that read ``other`` shuts down
    gc.collect()
    assert [ref() for ref in gone] == [None] * len(gone)


def test_a_collection_racing_configure_makes_no_readers_for_the_runtime_shut_down(
    provider: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    """A collection read the runtime in force just before configure() shut it down: asking
    for that runtime's readers then must not make new ones, which would keep it alive."""
    from syncperf.export import _bridge

    mp, _ = provider
    setup_meter_provider(mp)
    old = _runtime.current()
    syncperf.configure()  # ``old`` shuts down, and the bridge forgets it
    assert _bridge.bridge(mp).readers_for(old) == {}
    gone = weakref.ref(old)
    del old
    gc.collect()
    assert gone() is None


def test_a_provider_dropped_while_the_runtime_lives_is_freed_and_fed_no_more() -> None:
    """One provider per test, shut down and dropped, while one runtime lives on: none stays
    alive, and after one collection the runtime feeds none of their readers."""
    rt = _runtime.current()
    before = len(rt.registry._readers)
    gone = []
    for _ in range(20):
        mp = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
        setup_meter_provider(mp)
        mp.shutdown()
        gone.append(weakref.ref(mp))
        del mp
    gc.collect()
    assert [ref() for ref in gone] == [None] * 20
    pulls(1)
    rt.registry.collect()
    assert len(rt.registry._readers) == before


def test_a_provider_shut_down_after_a_new_runtime_collects_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A provider's last collection at shutdown, in a runtime it never read (a test's, a
    new configuration's after it shut down), gets no syncperf metrics: no warning."""
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    setup_meter_provider(mp)
    pulls(1)
    mp._shutdown = True  # what shutdown() sets before its readers' last collection
    syncperf.configure(max_entities=7)  # a runtime the provider never read
    with caplog.at_level("WARNING", logger="syncperf"):
        data = reader.get_metrics_data()
    assert not [r for r in caplog.records if "merging" in r.getMessage()]
    assert data is None or "syncperf" not in {
        sm.scope.name for rm in data.resource_metrics for sm in rm.scope_metrics
    }
    mp._shutdown = False
    mp.shutdown()
