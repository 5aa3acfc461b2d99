"""syncperf's spans stay cheap, encodable and complete whatever the application or a span
processor does: a slow ``on_start`` of a rescued span is shed, names are valid UTF-8, the
newest events and links are kept (the dropped ones counted), and a forked child never waits
for a lock a parent thread held."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

import syncperf
from syncperf.testing import capture
from tests._forked import answer_of, in_a_worker


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
    assert dict(span.attributes or {})["syncperf.rescued"] is True
    assert before <= span.start_time  # type: ignore[operator]
    assert span.end_time - span.start_time >= 20_000_000  # type: ignore[operator]


def test_past_the_event_limit_the_newest_events_are_kept_and_the_rest_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "4")
    with capture() as cap:
        with pytest.raises(ValueError), syncperf.sync_operation("push"):
            span = trace.get_current_span()
            for i in range(10):
                span.add_event(f"step {i}")
            raise ValueError("boom")
        assert cap.tracer_provider is not None
        sdk = cap.tracer_provider.get_tracer("app").start_span("sdk")
        for i in range(10):
            sdk.add_event(f"step {i}")
        sdk.record_exception(ValueError("boom"))
        sdk.end()
        ours = next(s for s in cap.spans() if s.name == "sync push")
        expected = next(s for s in cap.spans() if s.name == "sdk")
    assert [e.name for e in ours.events] == [e.name for e in expected.events]
    assert ours.events[-1].name == "exception"
    assert ours.dropped_events == expected.dropped_events == 7
    assert encode_spans([ours]).resource_spans[0].scope_spans[0].spans[0].dropped_events_count == 7


def test_past_the_link_limit_the_newest_links_are_kept_and_the_rest_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "3")
    contexts = [trace.SpanContext(1, i, False, trace.TraceFlags(1)) for i in range(1, 8)]
    with capture() as cap:
        with syncperf.sync_operation("push"):
            span = trace.get_current_span()
            for context in contexts:
                span.add_link(context)
        (ours,) = cap.spans()
    assert [link.context.span_id for link in ours.links] == [5, 6, 7]
    assert ours.dropped_links == 4


_names = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0xFFFF), min_size=0, max_size=40
).map(lambda text: text + "\ud800")  # at least one lone surrogate


@settings(max_examples=60, deadline=None)
@given(event=_names, name=_names, type_name=_names)
def test_names_with_lone_surrogates_stay_encodable(event: str, name: str, type_name: str) -> None:
    error = type("Failure", (Exception,), {})
    error.__module__ = error.__qualname__ = type_name  # (a class name cannot be invalid)
    with capture(record_exception_messages=True) as cap:
        for _ in range(2):
            with syncperf.sync_operation("push"):
                pass
        with pytest.raises(error), syncperf.sync_operation("push"):
            span = trace.get_current_span()
            span.add_event(event)
            span.update_name(name)
            raise error("x")
        spans = cap.spans()
    encode_spans(spans).SerializeToString()  # the whole batch: not one span lost
    assert len(spans) == 3


def test_names_are_bounded_as_attribute_values_are() -> None:
    with capture() as cap:
        with syncperf.sync_operation("push"):
            span = trace.get_current_span()
            span.add_event("e" * 5000)
            span.update_name("n" * 5000)
        (ours,) = cap.spans()
    assert len(ours.name) == len(ours.events[0].name) == 1024


_needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def _locks_of(rt: Any) -> list[Any]:
    """Locks the request path (and ``configure``) of ``rt`` may take."""
    return [rt.error_types._lock, rt.entities._lock, rt._state_lock, rt.registry._instrument_lock]


@_needs_fork
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads (3.12+)
def test_a_child_forked_while_a_parent_thread_held_request_path_locks_still_works() -> None:
    with capture() as cap:
        held = _locks_of(cap.runtime)
        release = threading.Event()
        holding = threading.Event()

        def hold() -> None:
            for lock in held:
                lock.acquire()
            holding.set()
            release.wait(30)
            for lock in held:
                lock.release()

        holder = threading.Thread(target=hold)
        holder.start()
        assert holding.wait(10)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(read)

                class NewError(Exception):
                    pass

                @syncperf.instrument_sync("push", entity="new")
                def failing() -> None:
                    raise NewError("x")

                with contextlib.suppress(NewError):
                    failing()
                free = [lock.acquire(timeout=1) for lock in _locks_of(cap.runtime)]
                events = [e.name for s in cap.spans() for e in s.events]
                os.write(write, json.dumps([events, free]).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        try:
            assert answer_of(pid, read, timeout=10) == [["exception"], [True] * len(held)]
        finally:
            release.set()
            holder.join()


def _seen_keys() -> Any:
    from syncperf.asgi._http import SeenKeys

    keys = SeenKeys(60.0, 10)
    return keys, lambda: keys.seen("digest")


def _rate_limit() -> Any:
    from syncperf.asgi._client_metrics import RateLimit

    limit = RateLimit(1.0, 5, 10)
    return limit, lambda: limit.wait("client")


def _query_plans() -> Any:
    import types

    import sqlalchemy as sa

    from syncperf.sqlalchemy import PlanOptions
    from syncperf.sqlalchemy._plans import Planner

    plans = Planner(sa.create_engine("sqlite://"), PlanOptions(), 60.0)
    query = types.SimpleNamespace(text="SELECT ?", operation="SELECT", several=True)
    return plans, lambda: plans.offer("SELECT 1", query, None, None, 1)


def _pool_gauges() -> Any:
    """Held by the exporter's collection; taken by ``instrument_engine`` in a worker."""
    import sqlalchemy as sa

    from syncperf.sqlalchemy import _pool_gauges, instrument_engine

    return _pool_gauges, lambda: instrument_engine(sa.create_engine("sqlite://")).uninstrument()


def _outboxes() -> Any:
    from syncperf.outbox import _live

    return _live, lambda: _live.visible(())


def _first_runtime() -> Any:
    """Held while the first use builds the runtime (``current()``); taken by every swap."""
    from syncperf import _runtime

    return _runtime, lambda: _runtime.replace(_runtime.installed), "_install_lock"


def _session_listeners() -> Any:
    """Held while the first ``Outbox.enqueue(session)`` installs the Session listeners."""
    from syncperf.outbox import _sqlalchemy

    def first_enqueue() -> None:  # (in the child: the parent's state is left as it was)
        _sqlalchemy._installed = False
        _sqlalchemy._install()

    return _sqlalchemy, first_enqueue, "_install_lock"


@_needs_fork
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads (3.12+)
@pytest.mark.parametrize(
    "make",
    [
        _seen_keys,
        _rate_limit,
        _query_plans,
        _pool_gauges,
        _outboxes,
        _first_runtime,
        _session_listeners,
    ],
)
def test_request_path_stores_are_usable_in_a_child_forked_while_their_lock_was_held(
    make: Any,
) -> None:
    owner, use, *name = make()  # (a lock not named ``_lock``: its name third)
    release = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        with getattr(owner, *name or ["_lock"]):
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        assert in_a_worker(lambda: [use(), "done"][1], timeout=10) == "done"
    finally:
        release.set()
        holder.join()
