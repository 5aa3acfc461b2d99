"""A sampled-out operation passes its decision on, as the SDK's own unsampled spans do; the
spans syncperf makes carry the W3C random-trace-id flag as the SDK sets and inherits it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import context as context_api
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

import syncperf
from syncperf.outbox import Outbox
from syncperf.testing import Capture, capture
from tests.unit.conftest import DropsAll

RANDOM = 0x02
TRACE_STATE = TraceState([("vendor", "value")])


class _NotRandomIds(RandomIdGenerator):
    """Random ids, but not declared random: roots get no random-trace-id flag."""

    def is_trace_id_random(self) -> bool:
        return False


def _remote(flags: int, trace_id: int = 0xABC) -> context_api.Context:
    parent = SpanContext(trace_id, 0x123, True, TraceFlags(flags), TRACE_STATE)
    return trace.set_span_in_context(NonRecordingSpan(parent))


def _inside(operation: Callable[[], AbstractContextManager[Any]]) -> SpanContext:
    with operation():
        return trace.get_current_span().get_span_context()


def test_a_sampled_out_root_operation_leaves_an_unsampled_span_current(
    dropping: Capture,
) -> None:
    before = trace.get_current_span()
    with syncperf.sync_operation("push", entity="todo"):
        current = trace.get_current_span()
        ctx = current.get_span_context()
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    assert not current.is_recording()
    assert ctx.is_valid and not ctx.is_remote
    assert ctx.trace_flags == TraceFlags(RANDOM)  # unsampled; the SDK's ids are random
    assert carrier["traceparent"] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-02"
    assert trace.get_current_span() is before  # detached at the end
    assert dropping.spans() == []


def test_a_sampled_out_operation_under_a_parent_keeps_its_trace_id_and_trace_state(
    dropping: Capture,
) -> None:
    for flags in (0x00, 0x02):
        token = context_api.attach(_remote(flags))
        try:
            ctx = _inside(lambda: syncperf.sync_operation("pull"))
        finally:
            context_api.detach(token)
        assert (ctx.trace_id, ctx.trace_flags, ctx.trace_state) == (0xABC, flags, TRACE_STATE)
        assert ctx.span_id not in (0, 0x123)
        assert not ctx.is_remote


def test_each_sampled_out_operation_gets_its_own_span_id(dropping: Capture) -> None:
    ids = {_inside(lambda: syncperf.sync_operation("pull")).span_id for _ in range(20)}
    assert len(ids) == 20


def test_a_ratio_sampled_out_root_keeps_the_trace_id_its_sampler_dropped() -> None:
    ratio = TraceIdRatioBased(0.25)
    with capture(sampler=ParentBased(ratio)) as cap:
        for _ in range(100):
            with syncperf.sync_operation("push"):
                ctx = trace.get_current_span().get_span_context()
            if not ctx.trace_flags.sampled:  # a service deciding on it would drop it too
                assert not ratio.should_sample(None, ctx.trace_id, "x").decision.is_sampled()
        assert cap.spans()  # some were sampled (the test saw both kinds)


def test_children_of_sampled_out_operations_are_never_orphaned() -> None:
    """The reviewed case: 400 operations under ``ParentBased(TraceIdRatioBased(0.25))``, each
    with an application child span that injects a traceparent."""
    with capture(sampler=ParentBased(TraceIdRatioBased(0.25))) as cap:
        app = cap.tracer_provider.get_tracer("app")
        sent = []
        for _ in range(400):
            with (
                syncperf.sync_operation("push", entity="todo"),
                app.start_as_current_span("app.child"),
            ):
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                sent.append(int(carrier["traceparent"][-2:], 16) & 1)
        spans = cap.spans()
    parents = {s.context.span_id for s in spans if s.name == "sync push"}
    children = [s for s in spans if s.name == "app.child"]
    assert 40 < len(parents) < 160
    assert len(children) == len(parents) == sum(sent)
    assert all(c.parent is not None and c.parent.span_id in parents for c in children)


def test_a_rescued_root_operation_takes_the_ids_that_were_current_during_it() -> None:
    with capture(sampler=ParentBased(ALWAYS_OFF)) as cap:
        with pytest.raises(ValueError), syncperf.sync_operation("push"):
            ctx = trace.get_current_span().get_span_context()
            raise ValueError
        (span,) = cap.spans()
    assert span.attributes["syncperf.rescued"] is True
    assert span.parent is None
    assert (span.context.trace_id, span.context.span_id) == (ctx.trace_id, ctx.span_id)
    assert span.context.trace_flags == TraceFlags(TraceFlags.SAMPLED | RANDOM)


def test_a_rescued_operation_under_a_parent_is_a_new_trace_linked_to_it() -> None:
    with capture(sampler=ParentBased(ALWAYS_OFF)) as cap:
        token = context_api.attach(_remote(0x00))
        try:
            with syncperf.sync_operation("push") as op:
                op.record_conflict()
        finally:
            context_api.detach(token)
        (span,) = cap.spans()
    assert span.parent is None and span.context.trace_id != 0xABC
    assert [link.context.span_id for link in span.links] == [0x123]


def test_a_sampled_out_async_handler_keeps_its_unsampled_span_current_where_it_runs() -> None:
    with capture(sampler=ParentBased(ALWAYS_OFF)):
        seen = []

        @syncperf.instrument_sync("pull")
        def handler() -> Any:
            async def work() -> None:
                seen.append(trace.get_current_span().get_span_context())

            seen.append(trace.get_current_span().get_span_context())
            return work()

        before = trace.get_current_span()
        awaitable = handler()
        assert trace.get_current_span() is before  # left in the caller's context
        asyncio.run(awaitable)
    assert seen[0].is_valid and seen[0].trace_id == seen[-1].trace_id
    assert not seen[0].trace_flags.sampled


def test_op_span_of_a_sampled_out_operation_is_the_unsampled_span_current_in_it(
    dropping: Capture,
) -> None:
    with syncperf.sync_operation("push", entity="todo") as op:
        span, current = op.span, trace.get_current_span()
        sent: dict[str, str] = {}
        propagate.inject(sent, context=trace.set_span_in_context(op.span, context_api.Context()))
        expected: dict[str, str] = {}
        propagate.inject(expected)
    assert span is current and not span.is_recording()
    ctx = span.get_span_context()
    assert ctx.is_valid and not ctx.trace_flags.sampled
    assert sent == expected and sent["traceparent"].endswith("-02")


def test_op_span_of_a_sampled_out_decorated_handler_is_the_current_span() -> None:
    with capture(sampler=ParentBased(ALWAYS_OFF)):

        @syncperf.instrument_sync("pull")
        def handler() -> tuple[Any, Any]:
            return syncperf.current_operation().span, trace.get_current_span()

        span, current = handler()
    assert span is current and span.get_span_context().is_valid
    assert not span.get_span_context().trace_flags.sampled


def test_op_span_of_a_sampled_out_operation_becomes_its_rescued_span() -> None:
    with capture(sampler=ParentBased(ALWAYS_OFF)) as cap:
        with syncperf.sync_operation("push") as op:
            inside = op.span
            op.record_conflict()
        (span,) = cap.spans()
    assert not inside.is_recording() and op.span.get_span_context() == span.context
    assert inside.get_span_context().span_id == span.context.span_id  # the ids it passed on


def test_op_span_is_invalid_when_syncperfs_own_sample_rate_leaves_the_span_out() -> None:
    with capture(trace_sample_rate=1e-9), syncperf.sync_operation("push") as op:
        assert op.span is trace.INVALID_SPAN  # nothing of its own is current
        assert trace.get_current_span() is trace.INVALID_SPAN


def test_op_span_is_invalid_while_syncperf_sheds_the_span_its_sampler_kept() -> None:
    with capture() as cap:
        cap.runtime.shed_until = 1 << 62  # as after slow span starts (test_span_robustness)
        with syncperf.sync_operation("push") as op:
            assert op.span is trace.INVALID_SPAN and trace.get_current_span() is op.span
        assert cap.spans() == []


# --- the random-trace-id flag -------------------------------------------------------------


def _provider(sampler: Sampler = ALWAYS_ON, **kwargs: Any) -> tuple[TracerProvider, Any]:
    provider = TracerProvider(sampler=sampler, **kwargs)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.mark.parametrize("sampler", [ALWAYS_ON, ParentBased(ALWAYS_ON), TraceIdRatioBased(1.0)])
def test_root_spans_carry_the_random_flag_as_the_sdks_do(sampler: Sampler) -> None:
    with capture(sampler=sampler) as cap:
        with syncperf.sync_operation("push"):
            pass
        with cap.tracer_provider.get_tracer("app").start_as_current_span("sdk") as sdk:
            pass
        (span,) = [s for s in cap.spans() if s.name == "sync push"]
    assert span.context.trace_flags == sdk.get_span_context().trace_flags == 0x03


def test_roots_get_no_random_flag_when_the_id_generator_says_its_ids_are_not_random() -> None:
    provider, exporter = _provider(id_generator=_NotRandomIds())
    with capture(tracer_provider=provider):
        with syncperf.sync_operation("push"):
            pass
        with syncperf.sync_operation("push"), pytest.raises(KeyError):
            raise KeyError
    flags = [s.context.trace_flags for s in exporter.get_finished_spans()]
    assert flags == [0x01, 0x01]


@pytest.mark.parametrize("sampler", [ALWAYS_ON, ParentBased(ALWAYS_ON), TraceIdRatioBased(1.0)])
@pytest.mark.parametrize("flags", [0x01, 0x03])
def test_children_inherit_the_parents_random_flag(sampler: Sampler, flags: int) -> None:
    with capture(sampler=sampler) as cap:
        token = context_api.attach(_remote(flags))
        try:
            with syncperf.sync_operation("push"):
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
        finally:
            context_api.detach(token)
        (span,) = cap.spans()
    assert span.context.trace_flags == flags
    assert carrier["traceparent"].endswith(f"-{flags:02x}")


class _KeepsAll(Sampler):
    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE)

    def get_description(self) -> str:
        return "KeepsAll"


@pytest.mark.parametrize("flags", [0x01, 0x03])
def test_an_asked_samplers_spans_carry_the_random_flag_too(flags: int) -> None:
    with capture(sampler=_KeepsAll()) as cap:
        with syncperf.sync_operation("push"):
            pass
        token = context_api.attach(_remote(flags))
        try:
            with syncperf.sync_operation("push"):
                pass
        finally:
            context_api.detach(token)
        root, child = cap.spans()
    assert (root.context.trace_flags, child.context.trace_flags) == (0x03, flags)


@given(
    flags=st.integers(0, 255),
    trace_id=st.integers(1, (1 << 128) - 1),
    sampler=st.sampled_from([ParentBased(ALWAYS_OFF), ParentBased(ALWAYS_ON), DropsAll()]),
)
@settings(max_examples=80, deadline=None)
def test_any_incoming_trace_flags_give_the_context_the_sdk_would_make(
    flags: int, trace_id: int, sampler: Sampler
) -> None:
    """Whatever flag byte a remote parent carries (a traceparent is the caller's input), the
    span context current inside the operation has the trace id, flags and trace state the
    SDK's own span would have under the same parent and sampler."""
    parent = _remote(flags, trace_id)
    with capture(sampler=sampler) as cap:
        sdk = cap.tracer_provider.get_tracer("app").start_span("sdk", context=parent)
        token = context_api.attach(parent)
        try:
            ctx = _inside(lambda: syncperf.sync_operation("push"))
        finally:
            context_api.detach(token)
    expected = sdk.get_span_context()
    assert (ctx.trace_id, ctx.trace_flags, ctx.trace_state) == (
        expected.trace_id,
        expected.trace_flags,
        expected.trace_state,
    )
    assert ctx.span_id != 0x123 and ctx.is_valid and not ctx.is_remote


@pytest.mark.parametrize(
    "sampler",
    [StaticSampler(Decision.RECORD_ONLY), ParentBased(StaticSampler(Decision.RECORD_ONLY))],
    ids=["record-only", "parent-based-record-only"],
)
def test_a_record_only_static_sampler_is_a_drop_not_always_on(sampler: Sampler) -> None:
    """It describes itself as ``AlwaysOnSampler``: syncperf must not take it for ALWAYS_ON
    (the SDK exports none of its spans and passes an unsampled decision on)."""
    with capture(sampler=sampler) as cap:
        with syncperf.sync_operation("push", entity="todo"):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
        stored = Outbox("orders").enqueue()
        with Outbox("orders").publish(count=1) as batch:
            batch.published()
        assert cap.spans() == []
    assert carrier["traceparent"].endswith("-02")  # unsampled, random ids
    assert stored is not None and stored.endswith("-02")
