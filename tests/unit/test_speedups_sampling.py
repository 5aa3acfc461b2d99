"""The compiled decision of a standard sampler (``speedups.decide_span``) against the Python
one (``Tracing.sample`` and ``Tracing.unsampled``): for any sampler, parent and attributes,
the same decision, the same ids from the same random draws, the same context left current,
and the same failures counted."""

from __future__ import annotations

import random
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags, TraceState

from syncperf import _accel, _lifecycle
from syncperf._operation import SyncOperation
from syncperf._series import series
from syncperf._tracing.current import current_span, detach
from syncperf.testing import capture

pytestmark = pytest.mark.skipif(_accel.speedups is None, reason="the compiled path is not built")

RATES = st.sampled_from([0.0, 1e-30, 0.1, 0.5, 0.999999, 1.0]) | st.floats(0.0, 1.0)
SAMPLERS = st.one_of(
    st.sampled_from([ALWAYS_ON, ALWAYS_OFF, ParentBased(ALWAYS_ON), ParentBased(ALWAYS_OFF)]),
    RATES.map(TraceIdRatioBased),
    RATES.map(lambda rate: ParentBased(TraceIdRatioBased(rate))),
)
IDS = st.sampled_from([0, 1, 2**64 - 1, 2**64, 2**128 - 1, 2**128]) | st.integers(0, 2**128)
STATES = st.sampled_from([TraceState(), TraceState([("vendor", "value")])])
WELL_FORMED = st.builds(
    SpanContext,
    trace_id=IDS,
    span_id=IDS,
    is_remote=st.booleans(),
    trace_flags=st.integers(0, 255).map(TraceFlags),
    trace_state=STATES,
)
HOSTILE = st.builds(  # what a propagator bypassing SpanContext's checks could leave current
    lambda fields: tuple.__new__(SpanContext, fields),
    st.tuples(
        IDS | st.just("x") | st.floats(allow_nan=True),
        IDS,
        st.booleans(),
        st.integers(0, 3).map(TraceFlags) | st.integers(-(2**70), 2**70) | st.none(),
        STATES | st.none(),
        st.booleans() | st.sampled_from([1, 0, None]),
    ),
)
PARENTS = st.none() | WELL_FORMED | HOSTILE
ATTRIBUTES = st.sampled_from(
    [None, {}, {"url.path": "/sync/push"}, MappingProxyType({"k": "v"}), {"a": 1, "b": [2]}]
)


def _fields(context: SpanContext | None) -> tuple[Any, ...] | None:
    return None if context is None else tuple(context)


def _start(rt: Any, parent: SpanContext | None, attributes: Any, seed: int) -> Any:
    """What ``_start_span`` leaves: the operation's span fields, what is current in it, the
    next random draw (the same only after the same draws), what it raised (strict mode)."""
    bound = series(rt, "push", None)
    op = SyncOperation(rt, bound, 1)
    current = None if parent is None else trace.NonRecordingSpan(parent)
    random.seed(seed)
    try:
        _lifecycle._start_span(rt, op, bound, SpanKind.SERVER, attributes, 1, current)
        raised = None
    except Exception as error:
        raised = type(error)
    draws = random.getrandbits(32)
    span = op._span
    left = (
        _fields(None if span is None else span.get_span_context()),
        _fields(None if op._unsampled is None else op._unsampled.get_span_context()),
        _fields(op._parent_ctx),
        op._span_attrs,
        _fields(current_span().get_span_context()),
        draws,
        raised,
    )
    if op._token is not None:
        detach(op._token)
    if span is not None:
        span.end()
    return left


@given(sampler=SAMPLERS, parent=PARENTS, attributes=ATTRIBUTES, seed=st.integers(0, 2**32))
@settings(max_examples=400, deadline=None)
def test_the_compiled_decision_is_the_python_one(
    sampler: Sampler, parent: Any, attributes: Any, seed: int
) -> None:
    with capture(sampler=sampler, slow_threshold=3600.0) as cap:
        tracing = cap.runtime.tracing
        standard = tracing.standard
        assert standard is not None  # every standard sampler is decided compiled
        before = _fields(current_span().get_span_context())
        compiled = _start(cap.runtime, parent, attributes, seed)
        tracing.standard = None
        python = _start(cap.runtime, parent, attributes, seed)
        assert compiled == python
        assert _fields(current_span().get_span_context()) == before  # detached again


class _Asked(Sampler):
    def should_sample(self, *args: Any, **kwargs: Any) -> Any:
        return ALWAYS_OFF.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return "Asked"


class _NotRandomIds(RandomIdGenerator):
    def is_trace_id_random(self) -> bool:
        return False


class _OwnIds(RandomIdGenerator):
    """Ids of its own: ``decide_span`` draws random ones, so it leaves these alone."""


@pytest.mark.parametrize(
    ("options", "compiled"),
    [
        ({}, True),
        ({"trace_sample_rate": 0.5}, False),  # syncperf's own rate draws before the sampler
        ({"sampler": _Asked()}, False),  # asked, with the span's attributes
    ],
)
def test_only_a_standard_sampler_at_full_rate_is_decided_compiled(
    options: dict[str, Any], compiled: bool
) -> None:
    options.setdefault("sampler", ParentBased(TraceIdRatioBased(0.5)))
    with capture(**options) as cap:
        assert (cap.runtime.tracing.standard is not None) is compiled


@pytest.mark.parametrize("ids", [_NotRandomIds, _OwnIds])
def test_an_id_generator_of_the_applications_is_left_to_the_python_path(ids: type) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF, id_generator=ids())
    with capture(tracer_provider=provider) as cap:
        assert cap.runtime.tracing.standard is None


def test_the_decision_goes_through_another_runtime_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``OTEL_PYTHON_CONTEXT`` (or a runtime context swapped in later): the dropped span is
    made current through the API, and the API sees it."""
    with capture(sampler=ParentBased(ALWAYS_OFF), slow_threshold=3600.0) as cap:
        runtime = ContextVarsRuntimeContext()  # not the one current.py reads directly
        monkeypatch.setattr(context_api, "_RUNTIME_CONTEXT", runtime)
        rt = cap.runtime
        bound = series(rt, "push", None)
        op = SyncOperation(rt, bound, 1)
        _lifecycle._start_span(rt, op, bound, SpanKind.SERVER, None, 1, None)
        assert op._unsampled is not None
        assert trace.get_current_span() is op._unsampled
        detach(op._token)
        assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_dropped_context_that_does_not_reset_at_the_end_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The compiled end resets the dropped span's context itself; a token that was used
    already goes to ``detach``, which logs it as the API does."""
    with capture(sampler=ParentBased(ALWAYS_OFF), slow_threshold=3600.0) as cap:
        rt = cap.runtime
        op = _lifecycle.begin(rt, "push", None)
        assert op._unsampled is not None
        detach(op._token)  # (a layer that detached it already)
        with caplog.at_level("ERROR", logger="opentelemetry.context"):
            _lifecycle.end(op, None)
        assert [r.getMessage() for r in caplog.records] == ["Failed to detach context"]
        assert trace.get_current_span() is trace.INVALID_SPAN
        assert cap.total("sync.operation.duration") == 1
