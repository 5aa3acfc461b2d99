"""``SyncOperation.set_attribute`` on an operation sampled out: kept for a span rescued at its
end, up to the tracer provider's span attribute count limit (``SpanLimits``), as a sampled
span keeps them; new keys past it are dropped (``span_attribute_limit``), logged once; a key
already kept is still updated."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import syncperf
from syncperf.testing import capture


def test_an_unsampled_operation_keeps_at_most_the_span_attribute_limit_for_its_rescue() -> None:
    with capture(sampler=ALWAYS_OFF) as cap:
        with pytest.raises(KeyError), syncperf.sync_operation("push") as op:
            for index in range(10_000):
                op.set_attribute(f"k{index}", index)
            op.set_attribute("k0", "updated")  # a key kept is still updated
            assert op._span_attrs is not None and len(op._span_attrs) == 128
            raise KeyError
        (span,) = cap.spans()  # the error, rescued
        dropped = cap.total("syncperf.dropped", {"syncperf.reason": "span_attribute_limit"})
    assert dropped == 10_000 - 128
    attributes = span.attributes or {}
    assert attributes["syncperf.rescued"] is True
    assert attributes["k0"] == "updated" and attributes["k1"] == 1
    assert "k9999" not in attributes


def test_the_limit_is_the_tracer_providers_own() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF, span_limits=SpanLimits(max_span_attributes=16))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with capture(tracer_provider=provider), syncperf.sync_operation("pull") as op:
        for index in range(100):
            op.set_attribute(f"k{index}", "v")
        assert op._span_attrs is not None and len(op._span_attrs) == 16


def test_attributes_past_the_limit_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with capture(sampler=ALWAYS_OFF):
        for _ in range(3):
            with syncperf.sync_operation("push") as op:
                for index in range(200):
                    op.set_attribute(f"secret-{index}", "SECRET-TOKEN")
    logged = [r.getMessage() for r in caplog.records if "span_attribute_limit" in r.getMessage()]
    assert len(logged) == 1
    assert "SECRET" not in logged[0] and "secret" not in logged[0]


def test_a_sampled_operation_leaves_its_limit_to_its_span() -> None:
    with capture() as cap:
        with syncperf.sync_operation("push") as op:
            for index in range(300):
                op.set_attribute(f"k{index}", index)
        (span,) = cap.spans()
        assert cap.total("syncperf.dropped", {"syncperf.reason": "span_attribute_limit"}) == 0
    kept = [key for key in span.attributes or {} if key.startswith("k")]
    assert kept == [f"k{index}" for index in range(127)]  # and sync.operation: the SDK's 128
