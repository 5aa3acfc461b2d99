"""Behind the decorator, a push's payload counts only once the handler's answer is known, as
behind the middleware: a push the handler itself refuses (a returned 4xx ``Response`` that is
not a 409, a raised ``HTTPException(401)``) without conflicts synced nothing, and records
none of its items, batch size or payload entity names. Both wrappers (``def`` and
``async def``), on the compiled path and without it (``SYNCPERF_NO_EXTENSIONS=1``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Body, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.trace import NoOpTracerProvider

import syncperf
from syncperf.adapters import powersync, watermelondb
from syncperf.asgi import SyncPerfMiddleware, SyncRoute
from syncperf.testing import capture
from tests._adapters import PUSHES, TWO_TASKS, Recorded, recorded


def answer(how: str, status: int, conflict: bool) -> Any:
    """What the handler does: record a conflict first, then return or raise ``status``."""
    if conflict:
        syncperf.current_operation().record_conflict(entity="tasks")
    if how == "raised":
        raise HTTPException(status_code=status, detail="no")
    if how == "plain":
        return {}
    return JSONResponse({"detail": "no"} if status >= 300 else {}, status_code=status)


ANSWERS = [
    ("returned", 401, False),
    ("raised", 401, False),
    ("returned", 422, False),
    ("raised", 403, False),
    ("returned", 409, False),
    ("raised", 409, False),
    ("returned", 400, True),
    ("raised", 400, True),
    ("returned", 503, False),
    ("raised", 503, False),
    ("returned", 200, False),
    ("plain", 200, False),
]


def served(
    mode: str, asynchronous: bool, adapter: Any, how: str, status: int, conflict: bool
) -> Any:
    if asynchronous:

        async def push(body: Annotated[dict[str, Any], Body()]) -> Any:
            return answer(how, status, conflict)

    else:

        def push(body: Annotated[dict[str, Any], Body()]) -> Any:  # type: ignore[misc]
            return answer(how, status, conflict)

    app = FastAPI()
    if mode == "decorator":
        app.post("/push")(syncperf.instrument_sync("push", adapter=adapter)(push))
        return app
    app.post("/push")(push)
    return SyncPerfMiddleware(app, routes={"/push": SyncRoute("push", adapter=adapter)})


def figures(cap: Any) -> tuple[Any, ...]:
    got: Recorded = recorded(cap)
    return got.items, got.batches, got.conflicts, got.outcomes, sorted(cap.runtime.entities.names)


async def measured(
    mode: str, asynchronous: bool, name: str, answered: tuple[str, int, bool]
) -> Any:
    adapter, body = PUSHES[name]
    app = served(mode, asynchronous, adapter(), *answered)
    with capture(tracer_provider=NoOpTracerProvider(), strict=False) as cap:  # no span: the C end
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/push", json=body)
        assert response.status_code == answered[1]
        return figures(cap)


@pytest.mark.parametrize("answered", ANSWERS, ids=lambda a: f"{a[0]}-{a[1]}-{a[2]}")
@pytest.mark.parametrize("asynchronous", [False, True], ids=["def", "async"])
@pytest.mark.parametrize("name", sorted(PUSHES))
async def test_decorator_and_middleware_record_the_same_figures(
    name: str, asynchronous: bool, answered: tuple[str, int, bool]
) -> None:
    decorated = await measured("decorator", asynchronous, name, answered)
    behind = await measured("middleware", asynchronous, name, answered)
    assert decorated == behind
    _, status, conflict = answered
    refused = 400 <= status < 500 and status != 409 and not conflict
    assert (decorated[1] == []) is refused  # the batch size
    if refused:
        assert decorated[0] == {}
        assert decorated[4] == []


class Answer:
    """A framework response as the decorator reads one: an int ``status_code``, ``headers``."""

    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}


class Refused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status_code = status
        self.headers: dict[str, str] = {}


def handler(asynchronous: bool, raised: bool, status: int, conflict: bool) -> Callable[..., Any]:
    def push(body: Any) -> Any:
        if conflict:
            syncperf.current_operation().record_conflict(entity="tasks")
        if raised:
            raise Refused(status)
        return Answer(status)

    async def push_async(body: Any) -> Any:
        return push(body)

    return push_async if asynchronous else push


@settings(max_examples=80, deadline=None)
@given(
    status=st.integers(400, 599),
    raised=st.booleans(),
    conflict=st.booleans(),
    asynchronous=st.booleans(),
    tables=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=6, unique=True),
    adapter=st.sampled_from([watermelondb.Push, powersync.Upload]),
)
def test_a_decorated_push_the_handler_refuses_records_nothing_of_its_payload(
    status: int, raised: bool, conflict: bool, asynchronous: bool, tables: list[str], adapter: Any
) -> None:
    if adapter is watermelondb.Push:
        body: Any = {"changes": {t: {"created": [{"id": "x"}]} for t in tables}}
    else:
        body = {"batch": [{"op": "PUT", "table": t, "id": "x"} for t in tables]}
    push = syncperf.instrument_sync("push", adapter=adapter())(
        handler(asynchronous, raised, status, conflict)
    )
    with capture(tracer_provider=NoOpTracerProvider(), strict=False) as cap:
        try:
            if asynchronous:
                asyncio.run(push(body))
            else:
                push(body)
        except Refused:
            assert raised
        got = recorded(cap)
        refused = status < 500 and status != 409 and not conflict
        assert (got.batches == []) is refused
        if refused:  # (else its items: those its names, maybe unprintable, allow)
            assert got.items == {}
            assert not cap.runtime.entities.names
            assert got.outcomes == {"error": 1}


def test_a_decorated_push_answered_with_a_plain_value_counts_its_items() -> None:
    push = syncperf.instrument_sync("push", adapter=watermelondb.Push())(lambda body: {})
    with capture(tracer_provider=NoOpTracerProvider()) as cap:
        push({"changes": TWO_TASKS})
        push({"changes": TWO_TASKS})
        got = recorded(cap)
    assert got.items == {("tasks", "created"): 4}
    assert got.batch_count == 2
    assert got.outcomes == {"success": 2}
