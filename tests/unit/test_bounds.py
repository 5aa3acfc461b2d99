"""Cardinality and memory stay bounded, whatever the input."""

from __future__ import annotations

import syncperf
from syncperf.testing import capture


def test_entities_past_the_limit_are_reported_as_other() -> None:
    with capture(max_entities=2) as cap:
        for entity in ("todo", "note", "list", "tag"):
            with syncperf.sync_operation("push", entity=entity):
                pass
        entities = {p.attributes["sync.entity"] for p in cap.points("sync.operation.duration")}
    assert entities == {"todo", "note", "_other"}


def test_an_allowlist_keeps_only_named_entities() -> None:
    with capture(entities={"todo"}) as cap:
        for entity in ("todo", "note"):
            with syncperf.sync_operation("push", entity=entity) as op:
                op.record_items(1, entity=entity)
        entities = {p.attributes["sync.entity"] for p in cap.points("sync.items")}
    assert entities == {"todo", "_other"}


def test_a_million_operations_over_ten_thousand_entities_keep_series_at_the_bound() -> None:
    with capture(max_entities=100, tracer_provider=None, strict=False) as cap:
        registry = cap.runtime.registry
        scope = syncperf.sync_operation
        for i in range(1_000_000):
            with scope("push", entity=f"entity-{i % 10_000}") as op:
                op.set_batch_size(1)
        series = {name: len(inst.series) for name, inst in registry.instruments.items()}
        assert series["sync.operation.duration"] == 101
        assert series["sync.batch.size"] == 101
        assert len(cap.runtime.op_series) == 101
        assert cap.total("sync.operation.duration") == 1_000_000
        assert cap.total("sync.operation.duration", {"sync.entity": "_other"}) == 990_000


def test_each_metric_stops_growing_at_max_series_with_an_overflow_series() -> None:
    with capture(max_series=5, max_entities=1000) as cap:
        for i in range(20):
            with syncperf.sync_operation("push", entity=f"e{i}"):
                pass
        points = cap.points("sync.operation.duration")
        assert len(points) == 5
        (overflow,) = [p for p in points if p.attributes.get("otel.metric.overflow")]
        assert sum(p.count for p in points) == 20
        assert overflow.count == 16


def test_error_types_are_bounded() -> None:
    with capture() as cap:
        for i in range(150):
            with syncperf.sync_operation("push") as op:
                op.set_error(f"E{i}")
        types = {p.attributes["error.type"] for p in cap.points("sync.operation.duration")}
    assert len(types) == 101
    assert "_OTHER" in types
