"""The compiled wrapper of a ``def`` handler with tracing on: it starts the operation (its
span, or the sampler's decision left current, made by ``_lifecycle.span_start``) and ends it
in C, and must make the same spans, contexts and counts as the Python wrapper."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)

import syncperf
from syncperf import _accel, _extractors, _fastpath
from syncperf.testing import capture


class Boom(Exception):
    pass


class Turns(Sampler):
    """Asked: drops, samples or raises by turns, the same in every run."""

    def __init__(self, turns: Sequence[str]) -> None:
        self.turns = itertools.cycle(turns)

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        turn = next(self.turns)
        if turn == "raise":
            raise Boom("sampler")
        decision = Decision.RECORD_AND_SAMPLE if turn == "on" else Decision.DROP
        return SamplingResult(decision)

    def get_description(self) -> str:
        return "Turns"


SAMPLERS = {
    "on": lambda: ALWAYS_ON,
    "off": lambda: ParentBased(ALWAYS_OFF),
    "ratio0": lambda: TraceIdRatioBased(0.0),
    "turns": lambda: Turns(["on", "off", "raise", "off"]),
}


def _run(sampler: str, calls: list[str], strict: bool) -> list[Any]:
    seen: list[Any] = []
    with capture(sampler=SAMPLERS[sampler](), strict=strict, slow_threshold=3600.0) as cap:
        child_tracer = cap.tracer_provider.get_tracer("app")

        @syncperf.instrument_sync("push", entity="todo", conflicts=lambda result: result)
        def push(kind: str) -> int:
            ctx = trace.get_current_span().get_span_context()
            seen.append((ctx.is_valid, ctx.trace_flags.sampled))
            with child_tracer.start_as_current_span("child"):
                pass
            if kind == "raise":
                raise Boom("handler")
            return 1 if kind == "conflict" else 0

        for kind in calls:
            try:
                push(kind)
            except Exception as error:
                seen.append(repr(error))
            seen.append(trace.get_current_span() is trace.INVALID_SPAN)
        spans = cap.spans()
        by_id = {s.context.span_id: s.name for s in spans}
        for span in spans:
            attrs = {k: v for k, v in (span.attributes or {}).items() if "duration" not in k}
            parent = by_id.get(span.parent.span_id, "?") if span.parent else None
            seen.append((span.name, span.kind, sorted(attrs.items()), span.status.status_code))
            seen.append((parent, [e.name for e in span.events]))
        seen.extend(
            (sorted(p.attributes.items()), p.count) for p in cap.points("sync.operation.duration")
        )
        seen.extend((sorted(p.attributes.items()), p.value) for p in cap.points("syncperf.dropped"))
        assert cap.total("sync.operations.active") == 0
    return seen


@pytest.mark.skipif(_accel.speedups is None, reason="the compiled path is not built")
@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(sorted(SAMPLERS)),
    st.lists(st.sampled_from(["ok", "raise", "conflict"]), min_size=1, max_size=12),
    st.booleans(),
)
def test_traced_calls_through_the_compiled_wrapper_match_the_python_wrapper(
    sampler: str, calls: list[str], strict: bool
) -> None:
    compiled = _run(sampler, calls, strict)
    speedups, _fastpath.speedups = _fastpath.speedups, None
    _extractors.speedups = None
    try:
        pure = _run(sampler, calls, strict)
    finally:
        _fastpath.speedups = _extractors.speedups = speedups
    assert compiled == pure


@pytest.mark.skipif(_accel.speedups is None, reason="the compiled path is not built")
def test_a_traced_call_starts_in_c_not_in_the_python_wrapper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from syncperf import _decorators, _lifecycle

    started: list[str] = []
    real_start, real_span_start = _decorators.start, _lifecycle.span_start
    monkeypatch.setattr(
        _decorators, "start", lambda *a, **k: started.append("python") or real_start(*a, **k)
    )
    monkeypatch.setattr(
        _lifecycle, "span_start", lambda *a: started.append("c") or real_span_start(*a)
    )
    with capture(sampler=ParentBased(ALWAYS_OFF)) as cap:

        @syncperf.instrument_sync("push", entity="todo")
        def push() -> bool:
            return trace.get_current_span().get_span_context().is_valid

        assert push() and push()
        assert trace.get_current_span() is trace.INVALID_SPAN
        assert cap.total("sync.operation.duration") == 2
    assert started == ["c", "c"]
