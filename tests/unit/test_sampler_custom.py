"""A sampler of the application's is asked as the SDK's ``Tracer.start_span`` asks it (the
parent context, the span's attributes, its links) and its ``SamplingResult`` shapes the span
(attributes added, trace state taken), on every path syncperf starts a sampled span."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState

import syncperf
from syncperf._tracing.sampling import Tracing
from syncperf.asgi import SyncPerfMiddleware
from syncperf.outbox import Outbox
from syncperf.testing import capture

RULE = TraceState([("ot", "th:0")])


class ByOperation(Sampler):
    """Traces every push and nothing else ("trace every push"), noting what it was asked."""

    def __init__(self, result_attributes: Mapping[str, Any] | None = None) -> None:
        self.asked: list[tuple[Any, ...]] = []
        self.result_attributes = result_attributes or {"sampler.rule": "push"}

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        self.asked.append((parent, trace_id, name, kind, dict(attributes or {}), links))
        attributes = attributes or {}
        if attributes.get("sync.operation") == "push" or attributes.get("messaging.system"):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, self.result_attributes, RULE)
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "ByOperation"


def asked_attributes(sampler: ByOperation) -> list[dict[str, Any]]:
    return [attributes for _, _, _, _, attributes, _ in sampler.asked]


def assert_decided(span: Any) -> None:
    assert span.attributes["sampler.rule"] == "push"
    assert span.attributes["sync.operation"] == "push"  # added to, not replacing, its own
    assert span.get_span_context().trace_state == RULE


def test_the_sampler_sees_an_operations_attributes_and_shapes_its_span() -> None:
    sampler = ByOperation()
    with capture(sampler=sampler) as cap:
        with syncperf.sync_operation("push", entity="todo"):
            pass
        with syncperf.sync_operation("pull", entity="todo"):
            pass
        (span,) = cap.spans()
    assert asked_attributes(sampler) == [
        {"sync.operation": "push", "sync.entity": "todo"},
        {"sync.operation": "pull", "sync.entity": "todo"},
    ]
    assert span.name == "sync push"
    assert_decided(span)


def test_the_sampler_sees_a_decorated_handlers_attributes() -> None:
    sampler = ByOperation()

    @syncperf.instrument_sync("push", entity="todo")
    def push() -> None:
        pass

    @syncperf.instrument_sync("pull")
    def pull() -> None:
        pass

    with capture(sampler=sampler) as cap:
        push()
        pull()
        (span,) = cap.spans()
    assert asked_attributes(sampler) == [
        {"sync.operation": "push", "sync.entity": "todo"},
        {"sync.operation": "pull"},
    ]
    assert_decided(span)


async def test_the_sampler_sees_the_middlewares_server_span_attributes() -> None:
    sampler = ByOperation()
    app = FastAPI()

    @app.post("/sync/push")
    async def push() -> dict[str, str]:
        return {}

    @app.get("/sync/pull")
    async def pull() -> dict[str, str]:
        return {}

    routes = {"/sync/push": "push", "/sync/pull": "pull"}
    wrapped = SyncPerfMiddleware(app, routes=routes)
    transport = httpx.ASGITransport(app=wrapped)
    with capture(sampler=sampler) as cap:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            await c.post("/sync/push")
            await c.get("/sync/pull")
        (span,) = cap.spans()
    (_, _, name, kind, attributes, _), _ = sampler.asked
    assert (name, kind) == ("sync push", SpanKind.SERVER)
    assert attributes == {
        "sync.operation": "push",
        "http.request.method": "POST",
        "url.scheme": "http",
        "url.path": "/sync/push",
        "http.route": "/sync/push",
    }
    assert asked_attributes(sampler)[1]["sync.operation"] == "pull"
    assert span.kind is SpanKind.SERVER
    assert_decided(span)


def test_the_sampler_is_asked_as_the_sdk_asks_it() -> None:
    """The same span through the SDK's tracer and through syncperf: the same question."""
    ours, theirs = ByOperation(), ByOperation()
    parent = SpanContext(0xABC, 0x123, is_remote=True, trace_flags=TraceFlags(1))
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    sdk = TracerProvider(sampler=theirs).get_tracer("app")
    with sdk.start_as_current_span(
        "sync push",
        context,
        attributes={"sync.operation": "push", "sync.entity": "todo"},
    ) as sdk_span:
        pass
    with capture(sampler=ours) as cap:
        token = context_api.attach(context)
        try:
            with syncperf.sync_operation("push", entity="todo"):
                pass
        finally:
            context_api.detach(token)
        (span,) = cap.spans()
    assert ours.asked == theirs.asked
    assert ours.asked[0][0] == parent
    assert span.get_span_context().trace_state == sdk_span.get_span_context().trace_state
    assert span.attributes["sampler.rule"] == sdk_span.attributes["sampler.rule"]
    assert span.parent == parent


def test_a_root_span_gets_the_trace_id_its_sampler_was_asked_with() -> None:
    sampler = ByOperation()
    with capture(sampler=sampler) as cap:
        with syncperf.sync_operation("push"):
            pass
        (span,) = cap.spans()
    ((parent, trace_id, *_),) = sampler.asked
    assert not parent.is_valid
    assert span.get_span_context().trace_id == trace_id
    assert type(span.get_span_context().trace_id) is int


def test_the_samplers_attributes_are_checked_as_the_applications_are() -> None:
    sampler = ByOperation({"sampler.rule": "push", "": "no key", "tags": ["a", "b"]})
    with capture(sampler=sampler) as cap:
        with syncperf.sync_operation("push"):
            pass
        (span,) = cap.spans()
    assert span.attributes["sampler.rule"] == "push"
    assert "" not in span.attributes
    assert span.attributes["tags"] == ("a", "b")  # as the SDK's span stores it


def test_a_sampler_that_changes_nothing_leaves_a_childs_trace_state_to_it() -> None:
    """The SDK gives the span the trace state the sampler returned: a sampler returning none
    (not passing the parent's on) leaves the child with none, as with the SDK's tracer."""

    class Plain(Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            return SamplingResult(Decision.RECORD_AND_SAMPLE)

        def get_description(self) -> str:
            return "Plain"

    state = TraceState([("vendor", "x")])
    parent = SpanContext(0xABC, 0x123, True, TraceFlags(1), state)
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    sdk_span = TracerProvider(sampler=Plain()).get_tracer("app").start_span("x", context)
    with capture(sampler=Plain()) as cap:
        span = _push_under(context, cap)
    assert span.get_span_context().trace_state == sdk_span.get_span_context().trace_state
    assert span.attributes["sync.operation"] == "push"


def test_the_sampler_sees_an_outbox_spans_attributes() -> None:
    sampler = ByOperation()
    with capture(sampler=sampler) as cap:
        Outbox("orders", system="kafka").enqueue(3)
        (span,) = cap.spans()
    (attributes,) = asked_attributes(sampler)
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.batch.message_count"] == 3
    assert span.attributes["sampler.rule"] == "push"
    assert span.get_span_context().trace_state == RULE


def test_a_failing_sampler_never_fails_an_enqueue() -> None:
    class Broken(Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            raise RuntimeError("sampler bug")

        def get_description(self) -> str:
            return "Broken"

    with capture(sampler=Broken(), strict=False) as cap:
        Outbox("orders").enqueue()
        assert cap.total("syncperf.dropped", {"syncperf.reason": "span_start_failed"}) == 1


@pytest.mark.parametrize("operation", ["push", "pull"])
def test_a_sampled_out_operation_is_still_rescued_on_error(operation: str) -> None:
    with capture(sampler=ByOperation()) as cap:
        with pytest.raises(KeyError), syncperf.sync_operation(operation):
            raise KeyError
        (span,) = cap.spans()
    assert span.attributes["sync.outcome"] == "error"
    assert span.attributes.get("syncperf.rescued", False) is (operation == "pull")


@pytest.mark.parametrize(
    "sampler",
    [ALWAYS_ON, ParentBased(ALWAYS_OFF), TraceIdRatioBased(0.5), ParentBasedTraceIdRatio(0.5)],
)
def test_the_standard_samplers_are_still_decided_in_front_of_the_sdk(sampler: Sampler) -> None:
    """They are not asked (no attributes are built for them), and a child keeps its parent's
    trace state, as the SDK's standard samplers pass it on."""
    assert Tracing(TracerProvider(sampler=sampler), 1.0).asks is False
    state = TraceState([("vendor", "x")])
    parent = SpanContext(1 << 64, 0x123, True, TraceFlags(1), state)
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    with capture(sampler=sampler) as cap:
        span = _push_under(context, cap)
    assert span.get_span_context().trace_state == state
    assert "sampler.rule" not in span.attributes


def _push_under(context: Any, cap: Any) -> Any:
    """The one span of a push made with ``context`` attached."""
    token = context_api.attach(context)
    try:
        with syncperf.sync_operation("push"):
            pass
    finally:
        context_api.detach(token)
    (span,) = cap.spans()
    return span
