"""Outbox spans the sampler dropped pass its decision on, as the SDK's unsampled spans (and
syncperf's sync operations) do: the work in a relay batch does not start traces of its own,
and a message enqueued in a dropped ``create`` span carries the decision to its consumer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from opentelemetry import context as context_api
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from syncperf import _runtime
from syncperf.outbox import Outbox, parse_traceparent
from syncperf.testing import Capture, capture

RANDOM = 0x02


def _traceparent() -> str:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def test_a_dropped_relay_batch_leaves_an_unsampled_span_current(dropping: Capture) -> None:
    outbox = Outbox("orders")
    before = trace.get_current_span()
    with outbox.publish(count=1) as batch:
        current = trace.get_current_span()
        ctx = current.get_span_context()
        sent = _traceparent()
        batch.published()
    assert not current.is_recording()
    assert ctx.is_valid and not ctx.is_remote
    assert ctx.trace_flags == TraceFlags(RANDOM)  # unsampled; the SDK's ids are random
    assert sent == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-02"
    assert trace.get_current_span() is before  # detached at the end
    assert dropping.spans() == []


def test_a_dropped_relay_batch_is_a_root_whatever_is_current(dropping: Capture) -> None:
    """A relay batch is its own trace: the unsampled span is not in the caller's trace."""
    caller = SpanContext(0xABC, 0x123, True, TraceFlags(TraceFlags.SAMPLED))
    token = context_api.attach(trace.set_span_in_context(NonRecordingSpan(caller)))
    try:
        with Outbox("orders").publish():
            ctx = trace.get_current_span().get_span_context()
    finally:
        context_api.detach(token)
    assert ctx.is_valid and ctx.trace_id != 0xABC and not ctx.trace_flags.sampled


def test_work_in_dropped_relay_batches_is_never_a_trace_of_its_own() -> None:
    """400 relay batches under ``ParentBased(TraceIdRatioBased(0.25))``, each publishing
    through an instrumented client: its spans are in the sampled batches' traces only."""
    outbox = Outbox("orders")
    with capture(sampler=ParentBased(TraceIdRatioBased(0.25))) as cap:
        client = cap.tracer_provider.get_tracer("broker")
        for _ in range(400):
            with outbox.publish(count=1) as batch, client.start_as_current_span("broker.send"):
                batch.published()
        spans = cap.spans()
    batches = {s.context.span_id for s in spans if s.name.startswith("send")}
    sends = [s for s in spans if s.name == "broker.send"]
    assert 40 < len(batches) < 160
    assert len(sends) == len(batches)
    assert all(s.parent is not None and s.parent.span_id in batches for s in sends)


def test_an_async_relay_batch_keeps_its_unsampled_span_current_where_it_runs() -> None:
    outbox = Outbox("orders")
    seen: list[SpanContext] = []

    @outbox.publish
    def relay() -> Any:
        async def work() -> None:
            seen.append(trace.get_current_span().get_span_context())

        return work()

    with capture(sampler=ALWAYS_OFF):
        before = trace.get_current_span()
        pending = relay()
        assert trace.get_current_span() is before  # moved out of the caller's context
        asyncio.run(pending)
    (ctx,) = seen
    assert ctx.is_valid and not ctx.trace_flags.sampled


def test_a_failed_dropped_batch_is_rescued_with_the_ids_current_during_it() -> None:
    outbox = Outbox("orders")
    with capture(sampler=ALWAYS_OFF) as cap:
        with pytest.raises(ConnectionError), outbox.publish(count=2):
            ctx = trace.get_current_span().get_span_context()
            raise ConnectionError
        (span,) = cap.spans()
    assert span.attributes["syncperf.rescued"] is True
    assert span.parent is None
    assert (span.context.trace_id, span.context.span_id) == (ctx.trace_id, ctx.span_id)


def test_a_sampled_relay_batch_is_unchanged() -> None:
    with capture(sampler=ALWAYS_ON) as cap:
        with Outbox("orders").publish(count=1) as batch:
            current = trace.get_current_span()
            recording = current.is_recording()
            batch.published()
        (span,) = cap.spans()
    assert recording and span.context.span_id == current.get_span_context().span_id


def test_a_message_enqueued_in_a_dropped_create_span_carries_the_decision() -> None:
    """No span current, a ratio sampler drops the ``create`` span: the traceparent stored
    with the message tells the consumer the decision (as an instrumented producer would)."""
    ratio = TraceIdRatioBased(0.25)
    outbox = Outbox("orders")
    with capture(sampler=ParentBased(ratio)) as cap:
        stored = [outbox.enqueue() for _ in range(100)]
        made = {s.context.trace_id for s in cap.spans()}
    assert all(stored)  # one for each message, sampled or not
    for value in stored:
        trace_id, flags = int(value.split("-")[1], 16), int(value.split("-")[3], 16)
        assert bool(flags & 1) == (trace_id in made)
        if not flags & 1:  # a consumer deciding on it drops it too
            assert not ratio.should_sample(None, trace_id, "x").decision.is_sampled()
    assert made  # some were sampled (the test saw both kinds)


def test_a_message_enqueued_under_an_unsampled_parent_stays_in_its_trace() -> None:
    caller = SpanContext(0xABC, 0x123, True, TraceFlags(0))
    token = context_api.attach(trace.set_span_in_context(NonRecordingSpan(caller)))
    try:
        with capture(sampler=ParentBased(ALWAYS_ON)) as cap:
            stored = Outbox("orders").enqueue()
            assert cap.spans() == []
    finally:
        context_api.detach(token)
    assert stored is not None
    assert stored.startswith(f"00-{0xABC:032x}-") and stored.endswith("-00")


def test_batch_span_of_a_dropped_block_is_the_unsampled_span_current_in_it() -> None:
    with capture(sampler=ParentBased(ALWAYS_OFF)), Outbox("orders").publish(count=1) as batch:
        assert batch.span is trace.get_current_span()
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(batch.span))
        batch.published()
    assert carrier["traceparent"].endswith("-02")


def _shed(cap: Capture) -> float:
    return cap.total("syncperf.dropped", {"syncperf.reason": "span_shed"})


@pytest.mark.parametrize("cooled", [False, True], ids=["shedding-throughout", "cooled-down"])
def test_a_failed_batch_begun_while_shedding_is_counted_once_and_never_rescued(
    cooled: bool,
) -> None:
    """A shed span is not a head-sampling decision: no rescue follows, and the batch counts
    one ``span_shed``, however the cool-down ends (as a sync operation does)."""
    with capture(strict=False) as cap:
        rt = _runtime.installed
        assert rt is not None
        rt.shed_until = time.perf_counter_ns() + 10**12
        with pytest.raises(ConnectionError), Outbox("orders").publish(count=1):
            if cooled:
                rt.shed_until = 0
            raise ConnectionError
        assert (cap.spans(), _shed(cap)) == ([], 1)


class _Raises(Sampler):
    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        raise RuntimeError("a sampler bug")

    def get_description(self) -> str:
        return "Raises"


def test_a_failed_batch_whose_sampler_raised_is_counted_never_rescued() -> None:
    with capture(sampler=_Raises(), strict=False) as cap:
        with pytest.raises(ConnectionError), Outbox("orders").publish(count=1):
            raise ConnectionError
        failed = cap.total("syncperf.dropped", {"syncperf.reason": "span_start_failed"})
        assert (cap.spans(), failed) == ([], 1)


@pytest.mark.parametrize(("flags", "kept"), [("00", 0), ("01", 1), ("02", 2), ("03", 3), ("ff", 3)])
def test_a_stored_traceparent_keeps_its_sampled_and_random_flags(flags: str, kept: int) -> None:
    context = parse_traceparent(f"00-{'ab' * 16}-{'cd' * 8}-{flags}")
    assert context is not None and context.trace_flags == kept
