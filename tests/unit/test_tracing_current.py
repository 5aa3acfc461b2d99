"""``syncperf._tracing.current``: the current span read and set on the default runtime
context's ``ContextVar`` directly must be exactly what OpenTelemetry's API reads and sets, and
any other runtime context must still be used through the API."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.context.context import _RuntimeContext
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from syncperf._tracing import current


def _span(span_id: int = 7) -> NonRecordingSpan:
    return NonRecordingSpan(SpanContext(1, span_id, False, TraceFlags(1)))


def test_attach_makes_the_same_context_the_api_makes_and_keeps_other_values() -> None:
    outer = context_api.attach(baggage.set_baggage("tenant", "t1"))
    try:
        span = _span()
        expected = trace.set_span_in_context(span)
        token = current.attach(span)
        try:
            now = context_api.get_current()
            assert type(now) is Context
            assert now == expected
            assert trace.get_current_span() is span is current.current_span()
            assert baggage.get_baggage("tenant") == "t1"
        finally:
            current.detach(token)
        assert trace.get_current_span() is trace.INVALID_SPAN is current.current_span()
        assert baggage.get_baggage("tenant") == "t1"
    finally:
        context_api.detach(outer)


def test_current_span_follows_spans_the_api_made_current() -> None:
    span = _span(9)
    with trace.use_span(span):
        assert current.current_span() is span
    assert current.current_span() is trace.INVALID_SPAN


@given(st.one_of(st.none(), st.integers(), st.text(), st.binary(), st.builds(object)))
def test_a_token_that_does_not_belong_is_logged_as_the_api_logs_it(token: Any) -> None:
    logger = logging.getLogger("opentelemetry.context")
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        current.detach(token)
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in seen] == ["Failed to detach context"]


def test_a_token_of_another_context_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    token = contextvars.copy_context().run(current.attach, _span())  # made in another context
    with caplog.at_level(logging.ERROR, logger="opentelemetry.context"):
        current.detach(token)
    assert "Failed to detach context" in caplog.text
    assert current.current_span() is trace.INVALID_SPAN


def test_each_task_sees_its_own_span() -> None:
    async def task(n: int) -> int:
        token = current.attach(_span(n))
        await asyncio.sleep(0)
        try:
            return current.current_span().get_span_context().span_id
        finally:
            current.detach(token)

    async def main() -> list[int]:
        return await asyncio.gather(*(task(n) for n in range(1, 20)))

    assert asyncio.run(main()) == list(range(1, 20))


class _Runtime(_RuntimeContext):
    """A runtime context of the application's own (``OTEL_PYTHON_CONTEXT``)."""

    def __init__(self) -> None:
        self.stack: list[Context] = [Context()]
        self.attached = 0

    def attach(self, context: Context) -> object:
        self.attached += 1
        self.stack.append(context)
        return len(self.stack) - 1

    def get_current(self) -> Context:
        return self.stack[-1]

    def detach(self, token: object) -> None:
        del self.stack[token:]  # type: ignore[misc]


def test_another_runtime_context_is_used_through_the_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = _Runtime()
    monkeypatch.setattr(context_api, "_RUNTIME_CONTEXT", runtime)
    span = _span(11)
    token = current.attach(span)
    assert runtime.attached == 1
    assert trace.get_current_span() is span is current.current_span()
    current.detach(token)
    assert runtime.stack == [Context()]
    assert current.current_span() is trace.INVALID_SPAN


class NotASpan:
    """What an outer layer may make current under the span key: ``set_span_in_context`` and
    ``use_span`` take any object."""


@pytest.mark.parametrize("value", [NotASpan(), "span", 0, SpanContext(1, 2, False)])
def test_a_value_that_is_not_a_span_reads_as_no_span_as_the_api_reads_it(value: object) -> None:
    token = context_api.attach(trace.set_span_in_context(value))  # type: ignore[arg-type]
    try:
        assert trace.get_current_span() is trace.INVALID_SPAN
        assert current.current_span() is trace.INVALID_SPAN
        current.current_span()  # (a type seen before reads the same)
        assert current.current_span() is trace.INVALID_SPAN
    finally:
        context_api.detach(token)


def test_requests_and_operations_under_a_value_that_is_not_a_span_are_recorded() -> None:
    import syncperf
    from syncperf.asgi import SyncPerfMiddleware
    from syncperf.outbox import Outbox
    from syncperf.testing import capture

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def request(mw: Any) -> list[str]:
        sent: list[str] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        scope = {"type": "http", "method": "GET", "path": "/sync/pull", "headers": []}
        await mw(scope, receive, send)
        return sent

    token = context_api.attach(trace.set_span_in_context(NotASpan()))  # type: ignore[arg-type]
    try:
        with capture() as cap:  # strict: anything dropped would raise
            mw = SyncPerfMiddleware(app, routes={"/sync/pull": "pull"})
            assert asyncio.run(request(mw)) == ["http.response.start", "http.response.body"]

            @syncperf.instrument_sync("push", entity="todo")
            def push() -> int:
                return 1

            assert push() == 1
            assert Outbox("events").enqueue() is not None
            names = sorted(span.name for span in cap.spans())
            assert names == ["create events", "sync pull", "sync push"]
            assert all(span.parent is None for span in cap.spans())
    finally:
        context_api.detach(token)
