"""syncperf's spans stay cheap, encodable and complete whatever the application or a span
processor does: a slow ``on_start`` of a rescued span is shed, names are valid UTF-8, the
newest events and links are kept (the dropped ones counted), and a forked child never waits
for a lock a parent thread held."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import strategies as st
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

import syncperf
from syncperf.testing import capture


class _SlowStart(SpanProcessor):
    def __init__(self) -> None:
        self.starts = 0

    def on_start(self, span: object, parent_context: object = None) -> None:
        self.starts += 1
        time.sleep(0.03)


@syncperf.instrument_sync("push", entity="todo")
def _failing() -> None:
    raise ValueError("boom")


def test_a_slow_on_start_of_rescued_spans_is_shed_as_for_sampled_spans() -> None:
    slow = _SlowStart()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(slow)
    with capture(tracer_provider=provider, trace_sample_rate=0.0, overhead_budget=0.01) as cap:
        for _ in range(6):
            with pytest.raises(ValueError):
                _failing()
        assert slow.starts == 3  # three slow starts in a row: shed, as for sampled spans
        assert cap.runtime.shed_until > time.perf_counter_ns()
        assert cap.total("syncperf.dropped", {"syncperf.reason": "span_shed"}) == 3


def test_a_rescued_span_starts_when_its_operation_started() -> None:
    with capture(trace_sample_rate=0.0) as cap:
        before = time.time_ns()

        @syncperf.instrument_sync("push", entity="todo")
        def slow_failing() -> None:
            time.sleep(0.02)
            raise ValueError("boom")

        with pytest.raises(ValueError):
            slow_failing()
        (span,) = cap.spans()
    assert span.attributes["syncperf.rescued"] is True
    assert before <= span.start_time  # type: ignore[operator]
    assert span.end_time - span.start_time >= 20_000_000  # type: ignore[operator]


_names = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0xFFFF), min_size=0, max_size=40
).map(lambda text: text + "\ud800")  # at least one lone surrogate


pytestmark_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
