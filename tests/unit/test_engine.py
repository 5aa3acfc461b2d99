"""The aggregation engine agrees with a straightforward computation."""

from __future__ import annotations

import math
from bisect import bisect_left

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics.export import AggregationTemporality
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from syncperf._metrics.aggregates import Registry
from syncperf._metrics.reader import Reader

BOUNDS = (0.005, 0.01, 0.2, 2.0, 5.0)
SCOPE = InstrumentationScope("test")
values = st.floats(min_value=0, max_value=100, allow_nan=False, allow_infinity=False)


def reference(samples: list[float]) -> list[int]:
    counts = [0] * (len(BOUNDS) + 1)
    for v in samples:
        index = next((i for i, b in enumerate(BOUNDS) if v <= b), len(BOUNDS))
        counts[index] += 1
    return counts


@settings(max_examples=200, deadline=None)
@given(st.lists(values, max_size=200), st.integers(min_value=1, max_value=5))
def test_histogram_equals_a_straightforward_aggregation(samples: list[float], drains: int) -> None:
    registry = Registry()
    hist = registry.instrument("h", "histogram", "s", "", bounds=BOUNDS)
    reader = Reader(registry, Resource.get_empty(), SCOPE)
    series = hist.histogram((("k", "v"),))
    chunk = max(1, math.ceil(len(samples) / drains))
    for start in range(0, len(samples), chunk):
        for v in samples[start : start + chunk]:
            series.record(v)
        registry.collect()  # intermediate drains must not change the totals
    data = reader.collect()
    metrics = data.resource_metrics[0].scope_metrics[0].metrics
    if not samples:
        assert metrics == []
        return
    (point,) = metrics[0].data.data_points
    assert list(point.bucket_counts) == reference(samples)
    assert point.count == len(samples)
    assert math.isclose(point.sum, math.fsum(samples), rel_tol=1e-9, abs_tol=1e-9)
    assert point.min == min(samples)
    assert point.max == max(samples)
    assert list(point.explicit_bounds) == list(BOUNDS)


def test_boundary_values_fall_in_the_bucket_they_close() -> None:
    registry = Registry()
    hist = registry.instrument("h", "histogram", "s", "", bounds=BOUNDS)
    reader = Reader(registry, Resource.get_empty(), SCOPE)
    series = hist.histogram(())
    for v in (0.2, 2.0, 5.0, 5.0000001):
        series.record(v)
    (point,) = reader.collect().resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert list(point.bucket_counts) == [0, 0, 1, 1, 1, 1]
    assert bisect_left(BOUNDS, 0.2) == 2


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(values, max_size=30), min_size=1, max_size=6))
def test_delta_reader_reports_each_interval_and_cumulative_reader_the_total(
    intervals: list[list[float]],
) -> None:
    registry = Registry()
    hist = registry.instrument("h", "histogram", "s", "", bounds=BOUNDS)
    counter = registry.instrument("c", "counter", "{item}", "")
    delta = Reader(
        registry,
        Resource.get_empty(),
        SCOPE,
        {"histogram": AggregationTemporality.DELTA, "counter": AggregationTemporality.DELTA},
    )
    cumulative = Reader(registry, Resource.get_empty(), SCOPE)
    series, count = hist.histogram(()), counter.sum(())
    seen: list[float] = []
    for samples in intervals:
        for v in samples:
            series.record(v)
            count.add(1)
        seen += samples
        metrics = {m.name: m for m in delta.collect().resource_metrics[0].scope_metrics[0].metrics}
        if samples:
            (hp,) = metrics["h"].data.data_points
            assert list(hp.bucket_counts) == reference(samples)
            assert (hp.min, hp.max) == (min(samples), max(samples))
            assert metrics["h"].data.aggregation_temporality is AggregationTemporality.DELTA
            assert metrics["c"].data.data_points[0].value == len(samples)
        else:
            assert metrics == {}
    metrics = {m.name: m for m in cumulative.collect().resource_metrics[0].scope_metrics[0].metrics}
    if seen:
        (hp,) = metrics["h"].data.data_points
        assert list(hp.bucket_counts) == reference(seen)
        assert metrics["c"].data.data_points[0].value == len(seen)
        assert metrics["c"].data.is_monotonic is True


def test_cumulative_points_keep_their_start_time_and_advance_their_end_time() -> None:
    registry = Registry()
    counter = registry.instrument("c", "counter", "{item}", "")
    reader = Reader(registry, Resource.get_empty(), SCOPE)
    counter.sum(()).add(1)
    first = reader.collect().resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0]
    counter.sum(()).add(2)
    second = reader.collect().resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0]
    assert second.start_time_unix_nano == first.start_time_unix_nano
    assert second.time_unix_nano >= first.time_unix_nano
    assert second.value == 3


def test_a_failing_gauge_callback_drops_only_that_gauge() -> None:
    from syncperf.testing import capture

    with capture(strict=False) as cap:
        registry = cap.runtime.registry

        def broken():  # type: ignore[no-untyped-def]
            raise RuntimeError("probe down")

        registry.gauge("outbox.depth", "{message}", "", broken)
        registry.gauge("outbox.oldest_age", "s", "", lambda: [({"outbox.name": "o"}, 3.5)])
        names = {m.name for m in cap.metrics()}
        assert "outbox.depth" not in names
        assert cap.points("outbox.oldest_age")[0].value == 3.5
        # one failure per collection so far (each cap call collects once)
        assert cap.total("syncperf.dropped", {"syncperf.reason": "gauge_callback_failed"}) == 2


def test_a_gauge_not_observed_any_more_is_gone_not_frozen() -> None:
    from syncperf.testing import capture

    with capture(strict=False) as cap:
        state = {"fail": False}

        def probe():  # type: ignore[no-untyped-def]
            if state["fail"]:
                raise RuntimeError("database down")
            return [({"outbox.name": "o"}, 1000.0)]

        cap.runtime.registry.gauge("outbox.oldest_age", "s", "", probe)
        assert cap.points("outbox.oldest_age")[0].value == 1000.0
        state["fail"] = True
        assert cap.points("outbox.oldest_age") == []


def test_an_observed_up_down_counter_not_observed_any_more_is_gone_not_frozen() -> None:
    import syncperf
    from syncperf._metrics import catalogue
    from syncperf.testing import capture

    with capture(strict=False) as cap:
        state = {"fail": False}

        def pool():  # type: ignore[no-untyped-def]
            if state["fail"]:
                raise RuntimeError("pool gone")
            return [({"db.client.connection.pool.name": "main"}, 7)]

        catalogue.DB_CONNECTION_COUNT.observe(cap.runtime.registry, pool)
        with syncperf.sync_operation("pull"):
            pass
        assert cap.points("db.client.connection.count")[0].value == 7
        state["fail"] = True
        assert cap.points("db.client.connection.count") == []
        (active,) = cap.points("sync.operations.active")  # still observed: still there
        assert active.value == 0
