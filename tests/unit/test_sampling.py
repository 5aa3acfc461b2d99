"""Spans follow the provider's sampler and syncperf's rate; errors, conflicts and slow
operations are traced anyway; metrics are never sampled."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

import syncperf
from syncperf._tracing.sampling import Tracing
from syncperf.testing import capture


def run_ops(n: int = 20, **record: object) -> None:
    for _ in range(n):
        with syncperf.sync_operation("push", entity="todo"):
            pass


def test_sampled_out_operations_make_no_span_but_full_metrics() -> None:
    with capture(sampler=ParentBased(ALWAYS_OFF)) as cap:
        run_ops(20)
        assert cap.spans() == []
        assert cap.total("sync.operation.duration") == 20


def test_a_sampled_out_error_is_rescued_as_a_root_span_with_its_real_start() -> None:
    with capture(sampler=ParentBased(ALWAYS_OFF)) as cap:
        before = time.time_ns()
        with pytest.raises(ValueError), syncperf.sync_operation("push"):
            time.sleep(0.01)
            raise ValueError
        (span,) = cap.spans()
    assert span.name == "sync push"
    assert span.attributes["syncperf.rescued"] is True
    assert span.attributes["sync.outcome"] == "error"
    assert span.parent is None
    assert span.start_time >= before
    assert span.end_time - span.start_time >= 10_000_000
    assert [e.name for e in span.events] == ["exception"]


def test_a_sampled_out_conflict_is_rescued_and_links_to_its_context() -> None:
    with capture(sampler=ParentBased(ALWAYS_OFF)) as cap:
        tracer = cap.tracer_provider.get_tracer("app")
        with (
            tracer.start_as_current_span("POST /push") as request_span,
            syncperf.sync_operation("push") as op,
        ):
            op.record_conflict()
        (span,) = cap.spans()
    assert span.attributes["sync.outcome"] == "conflict"
    assert [link.context.trace_id for link in span.links] == [
        request_span.get_span_context().trace_id
    ]


def test_a_slow_sampled_out_operation_is_rescued() -> None:
    with capture(sampler=ParentBased(ALWAYS_OFF), slow_threshold=0.005) as cap:
        with syncperf.sync_operation("pull"):
            time.sleep(0.01)
        with syncperf.sync_operation("pull"):
            pass
        (span,) = cap.spans()
    assert span.attributes["sync.outcome"] == "success"


def test_children_follow_a_sampled_parent_and_join_its_trace() -> None:
    with capture(sampler=ParentBased(ALWAYS_OFF)) as cap:
        tracer = cap.tracer_provider.get_tracer("app")
        parent_ctx = trace.SpanContext(
            trace_id=0xABC,
            span_id=0x123,
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent_ctx))
        with tracer.start_as_current_span("request", context=ctx), syncperf.sync_operation("pull"):
            pass
        spans = {s.name: s for s in cap.spans()}
    assert spans["sync pull"].context.trace_id == 0xABC
    assert spans["sync pull"].parent.span_id == spans["request"].context.span_id


def test_syncperf_sample_rate_zero_keeps_metrics_and_rescues_errors() -> None:
    with capture(sampler=ALWAYS_ON, trace_sample_rate=0.0) as cap:
        run_ops(10)
        with pytest.raises(KeyError), syncperf.sync_operation("push"):
            raise KeyError
        spans = cap.spans()
        assert cap.total("sync.operation.duration") == 11
    assert [s.attributes["sync.outcome"] for s in spans] == ["error"]


def test_a_ratio_sampler_keeps_roughly_its_share_without_double_sampling() -> None:
    with capture(sampler=TraceIdRatioBased(0.5)) as cap:
        run_ops(2000)
        kept = len(cap.spans())
    assert 850 < kept < 1150  # 0.5 of 2000, not 0.25 (that would be sampling twice)


def test_without_an_sdk_tracer_provider_no_span_is_made() -> None:
    with capture(tracer_provider=trace.NoOpTracerProvider()) as cap:
        with pytest.raises(KeyError), syncperf.sync_operation("push"):
            raise KeyError
        assert cap.runtime.tracing.active is False
        assert cap.spans() == []
        assert cap.total("sync.operation.duration") == 1


def test_a_global_sdk_provider_installed_after_start_is_picked_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    with capture(tracer_provider=None) as cap:
        run_ops(1)
        assert cap.runtime.tracing.active is False
        monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
        cap.runtime.tracing.next_check = 0  # skip the one-second wait
        run_ops(1)
        cap.runtime.finisher.flush()
    assert [s.name for s in exporter.get_finished_spans()] == ["sync push"]


@pytest.mark.parametrize("sampler", [TraceIdRatioBased(0.5), ParentBased(TraceIdRatioBased(0.5))])
def test_a_ratio_sampler_decides_on_the_trace_id_the_root_span_gets(sampler: object) -> None:
    ratio = TraceIdRatioBased(0.5)
    with capture(sampler=sampler) as cap:  # type: ignore[arg-type]
        run_ops(200)
        spans = cap.spans()
    assert 40 < len(spans) < 160  # about half were sampled
    for span in spans:
        trace_id = span.get_span_context().trace_id
        assert ratio.should_sample(None, trace_id, span.name).decision.is_sampled()


@given(rate=st.floats(0.0, 1.0), trace_ids=st.lists(st.integers(1, (1 << 128) - 1), max_size=20))
@settings(max_examples=60, deadline=None)
def test_ratio_samplers_decided_in_front_of_the_sdk_agree_with_it(
    rate: float, trace_ids: list[int]
) -> None:
    """``OTEL_TRACES_SAMPLER=traceidratio`` and ``parentbased_traceidratio`` are decided without
    the SDK's ``should_sample``: the decision for every trace id is the SDK's own."""
    for sampler in (TraceIdRatioBased(rate), ParentBasedTraceIdRatio(rate)):
        tracing = Tracing(TracerProvider(sampler=sampler), 1.0)
        assert tracing._ratio is not None  # the fast path is the one under test
        for trace_id in trace_ids:
            tracing.tracer.trace_id = lambda trace_id=trace_id: trace_id  # type: ignore[union-attr,method-assign]
            expected = sampler.should_sample(None, trace_id, "sync push").decision.is_sampled()
            assert bool(tracing.sample("sync push", SpanKind.INTERNAL)) is expected


def test_a_parent_based_ratio_sampler_follows_a_valid_parent() -> None:
    tracing = Tracing(TracerProvider(sampler=ParentBasedTraceIdRatio(0.0)), 1.0)
    for flags, sampled in ((TraceFlags.SAMPLED, True), (TraceFlags.DEFAULT, False)):
        parent = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(flags))
        assert bool(tracing.sample("sync push", SpanKind.INTERNAL, parent)) is sampled


def test_a_subclassed_or_custom_sampler_is_still_asked() -> None:
    class EveryOther(TraceIdRatioBased):
        def get_description(self) -> str:
            return "EveryOther"

    assert Tracing(TracerProvider(sampler=EveryOther(0.5)), 1.0)._ratio is None


@given(
    rate=st.floats(0.0, 1.0),
    parents=st.lists(
        st.tuples(st.integers(1, (1 << 128) - 1), st.booleans(), st.booleans()), max_size=20
    ),
)
@settings(max_examples=60, deadline=None)
def test_ratio_samplers_decide_a_child_on_its_parents_trace_id_as_the_sdk_does(
    rate: float, parents: list[tuple[int, bool, bool]]
) -> None:
    for sampler in (TraceIdRatioBased(rate), ParentBasedTraceIdRatio(rate)):
        tracing = Tracing(TracerProvider(sampler=sampler), 1.0)
        for trace_id, sampled, remote in parents:
            flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
            parent = SpanContext(trace_id, 2, is_remote=remote, trace_flags=flags)
            context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
            expected = sampler.should_sample(context, trace_id, "sync push").decision
            decided = tracing.sample("sync push", SpanKind.INTERNAL, parent)
            assert bool(decided) is expected.is_sampled()


class _NoDescription(Sampler):
    """Samples everything; its description is not a str (a misbehaving sampler)."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE)

    def get_description(self) -> Any:
        return None


def test_a_sampler_whose_description_is_not_a_str_is_asked() -> None:
    assert Tracing(TracerProvider(sampler=_NoDescription()), 1.0).asks is True
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=_NoDescription())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with capture(tracer_provider=provider, strict=False) as cap:  # configure() accepts it
        run_ops(2)
        cap.runtime.finisher.flush()
        assert cap.total("syncperf.dropped") == 0
    assert len(exporter.get_finished_spans()) == 2


class _BrokenProvider(TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("provider bug")


def test_a_provider_that_fails_to_resolve_never_fails_the_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Looking at the provider again (once a second while tracing is off) may fail: counted,
    tracing stays off, the handler runs; strict mode raises, as for any internal error."""
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    with capture(tracer_provider=None, strict=False) as cap:
        monkeypatch.setattr(trace, "_TRACER_PROVIDER", _BrokenProvider())
        for _ in range(2):
            cap.runtime.tracing.next_check = 0  # skip the one-second wait
            run_ops(1)
        assert cap.runtime.tracing.active is False
        assert cap.total("syncperf.dropped", {"syncperf.reason": "tracing_resolve_failed"}) == 2
        assert cap.total("sync.operation.duration") == 2
    with capture(tracer_provider=_BrokenProvider(), strict=False) as cap:  # configure() too
        assert cap.total("syncperf.dropped", {"syncperf.reason": "tracing_resolve_failed"}) == 1
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    with capture(tracer_provider=None) as cap:
        monkeypatch.setattr(trace, "_TRACER_PROVIDER", _BrokenProvider())
        cap.runtime.tracing.next_check = 0
        with pytest.raises(RuntimeError, match="provider bug"):
            run_ops(1)


class _NoPulls(ParentBased):
    """The standard sampler, subclassed to never trace pulls: it keeps its description."""

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any
    ) -> SamplingResult:
        if "pull" in name:
            return SamplingResult(Decision.DROP)
        return super().should_sample(parent_context, trace_id, name, *args, **kwargs)


class _NoRatio(TraceIdRatioBased):
    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.DROP)


class _Never(StaticSampler):
    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.DROP)


@pytest.mark.parametrize(
    ("sampler", "spans"),
    [
        (_NoPulls(ALWAYS_ON), 0),
        (_NoRatio(1.0), 0),
        (_Never(Decision.RECORD_AND_SAMPLE), 0),
        (ParentBased(_Never(Decision.RECORD_AND_SAMPLE)), 1),  # the child
        (ParentBased(ALWAYS_ON, remote_parent_sampled=_Never(Decision.RECORD_AND_SAMPLE)), 1),
    ],
)
def test_a_subclass_of_a_standard_sampler_is_asked(sampler: Sampler, spans: int) -> None:
    """Same description, but its own ``should_sample``: only the SDK's own classes are
    decided in front of it."""
    assert Tracing(TracerProvider(sampler=sampler), 1.0).asks is True
    parent = SpanContext(1 << 64, 0x123, True, TraceFlags(TraceFlags.SAMPLED))
    with capture(sampler=sampler) as cap:
        with syncperf.sync_operation("pull", entity="todo"):  # a root
            pass
        token = context_api.attach(trace.set_span_in_context(trace.NonRecordingSpan(parent)))
        try:  # a remote sampled parent's child
            with syncperf.sync_operation("pull", entity="todo"):
                pass
        finally:
            context_api.detach(token)
        assert len(cap.spans()) == spans  # the standard samplers these pass for: 2


@pytest.mark.parametrize(
    "name",
    ["always_on", "always_off", "traceidratio", "parentbased_always_on",
     "parentbased_always_off", "parentbased_traceidratio"],
)  # fmt: skip
def test_every_otel_traces_sampler_is_still_decided_in_front_of_the_sdk(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    assert Tracing(TracerProvider(), 1.0).asks is False


def test_a_tracer_configurator_that_disables_syncperfs_scope_is_honoured() -> None:
    """As the SDK's own tracer of that scope: no span, the context left as it is."""
    from opentelemetry.sdk.trace import _TracerConfig

    def configurator(scope: Any) -> Any:
        return _TracerConfig(is_enabled=scope.name != "syncperf")

    exporter = InMemorySpanExporter()
    provider = TracerProvider(_tracer_configurator=configurator)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with capture(tracer_provider=provider, strict=False):
        before = trace.get_current_span()
        with syncperf.sync_operation("push") as op:
            assert trace.get_current_span() is before and op.span is trace.INVALID_SPAN
        with provider.get_tracer("app").start_as_current_span("app"):
            pass  # another scope is still traced
        syncperf.force_flush()
    assert [s.name for s in exporter.get_finished_spans()] == ["app"]
