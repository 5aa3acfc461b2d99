"""An exception instance raised over and over: its traceback grows on every raise (Python
links each raise's frames in front of the ones it already holds), so nothing syncperf does
per operation may walk or format it whole."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import syncperf
from syncperf._gate import MAX_FRAMES, raised_at
from syncperf._gate import full_stack_trace as full_stacktrace
from syncperf._redact import exception_attributes
from syncperf.testing import Capture, capture


class _Boom(Exception):
    pass


def _throw(boom: _Boom) -> None:
    raise boom


def _grown(raises: int) -> _Boom:
    """One instance raised ``raises`` times: a traceback of ``2 * raises`` entries."""
    boom = _Boom("token sk_live_traceback")
    for _ in range(raises):
        with contextlib.suppress(_Boom):
            _throw(boom)
    return boom


def _per_call(call: Callable[[], object], times: int = 40) -> float:
    """The fastest of a few rounds of ``times`` calls, per call."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(times):
            with contextlib.suppress(_Boom):
                call()
        best = min(best, (time.perf_counter() - start) / times)
    return best


def _events(cap: Capture) -> list[dict[str, Any]]:
    return [
        dict(e.attributes or {}) for s in cap.spans() for e in s.events if e.name == "exception"
    ]


@pytest.mark.parametrize("sampled", [True, False])
@pytest.mark.parametrize("full", [False, True])
def test_the_same_instance_raised_again_and_again_costs_the_same_each_time(
    sampled: bool, full: bool
) -> None:
    boom = _Boom("token sk_live_traceback")
    kwargs: dict[str, Any] = {"record_exception_messages": full}
    if not sampled:
        kwargs["sampler"] = ALWAYS_OFF  # errors are rescued: a span all the same
    with capture(**kwargs) as cap:

        @syncperf.instrument_sync("push", batch_size=lambda body: 3)
        def push(body: object) -> None:
            raise boom

        first = _per_call(lambda: push(1))
        for _ in range(2000):
            with contextlib.suppress(_Boom):
                push(1)
        last = _per_call(lambda: push(1))
        exported = _events(cap)[-1]["exception.stacktrace"]
    assert last < 4 * first + 0.001, (first, last)
    assert exported.startswith("Traceback (most recent call last):\n")
    assert full or "sk_live" not in exported  # (the export keeps the first MAX_TEXT chars)
    stack = full_stacktrace(boom) if full else exception_attributes(boom)["exception.stacktrace"]
    assert stack.count('  File "') <= MAX_FRAMES
    assert f"outermost {MAX_FRAMES} frames" in stack  # it says it was cut
    assert stack.endswith("_Boom: token sk_live_traceback\n" if full else "_Boom\n")
    assert ("sk_live" in stack) is full


def test_a_short_stack_trace_is_whole_and_says_nothing_about_cuts() -> None:
    attrs = exception_attributes(_grown(3))
    stack = attrs["exception.stacktrace"]
    assert stack.count('  File "') == 6
    assert "frames" not in stack
    assert stack.endswith("_Boom\n")
    assert full_stacktrace(_grown(3)).count('  File "') == 6


def test_a_long_chain_of_causes_shares_one_budget_of_frames() -> None:
    error: BaseException | None = None
    for _ in range(12):
        try:
            raise _grown(MAX_FRAMES) from error
        except _Boom as raised:
            error = raised
    assert error is not None
    for stack in (exception_attributes(error)["exception.stacktrace"], full_stacktrace(error)):
        assert stack.count('  File "') <= MAX_FRAMES
        assert f"outermost {MAX_FRAMES} frames" in stack


def test_raised_at_names_the_innermost_frame_of_a_bounded_walk_only() -> None:
    short = raised_at(_grown(5))
    assert short.endswith("in _throw")
    assert "test_redact_traceback._Boom at " in short
    long = _grown(100_000)
    start = time.perf_counter()
    said = raised_at(long)
    assert time.perf_counter() - start < 0.005
    assert said.endswith("test_redact_traceback._Boom")  # the type, no location
    assert "sk_live" not in said


async def test_the_middleware_costs_the_same_for_an_instance_raised_again_and_again() -> None:
    from syncperf.asgi import SyncPerfMiddleware

    boom = _Boom("token sk_live_traceback")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise boom

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    middleware = SyncPerfMiddleware(app, routes={"/sync/pull": "pull"})
    scope = {"type": "http", "method": "GET", "path": "/sync/pull", "headers": []}

    async def per_call(times: int) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(times):
                with contextlib.suppress(_Boom):
                    await middleware(dict(scope), receive, send)
            best = min(best, (time.perf_counter() - start) / times)
        return best

    with capture():
        first = await per_call(40)
        await per_call(700)
        last = await per_call(40)
    assert last < 4 * first + 0.001, (first, last)
