"""A route's ``{entity}``: junk URLs answered 4xx never use up ``max_entities``, even when
requests for the same junk name overlap (asyncio tasks, threads), and a name some request was
answered for with a non-4xx is kept (docs/asgi.md, "The entity")."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from syncperf.asgi import SyncPerfMiddleware
from syncperf.testing import Capture, capture

ROUTES = {"/sync/{entity}/push": "push"}


def _scope(entity: str, status: int, end: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": f"/sync/{entity}/push",
        "query_string": str(status).encode(),
        "headers": [(b"x-end", end.encode())],
        "scheme": "http",
        "http_version": "1.1",
    }


def _app(gate: Any) -> Any:
    """Answers the status in the query string once ``await gate(scope)`` returned."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await gate(scope)
        status = int(scope["query_string"])
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


async def _call(middleware: Any, entity: str, status: int = 404, end: str = "") -> None:
    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    await middleware(_scope(entity, status, end), receive, send)


def _ends(*order: str) -> tuple[Any, Any]:
    """A gate holding each request until its ``x-end`` is let go, and ``let_go(order)``."""
    events = {name: asyncio.Event() for name in order}

    async def gate(scope: Any) -> None:
        await events[dict(scope["headers"])[b"x-end"].decode()].wait()

    async def let_go() -> None:
        await asyncio.sleep(0)  # every request has begun (its path entity is applied)
        for name in order:
            events[name].set()
            await asyncio.sleep(0.01)

    return gate, let_go


async def _now(scope: Any) -> None:
    pass


def _entities(cap: Capture) -> dict[str | None, int]:
    found: dict[str | None, int] = {}
    for point in cap.points("sync.operation.duration"):
        entity = point.attributes.get("sync.entity")
        found[entity] = found.get(entity, 0) + point.count
    return found


async def test_overlapping_404s_for_one_junk_name_give_it_back() -> None:
    async def gate(scope: Any) -> None:
        await asyncio.sleep(0.01)  # every request of a round is in flight at once

    with capture(max_entities=5) as cap:
        middleware = SyncPerfMiddleware(_app(gate), routes=ROUTES)
        for n in range(10):
            await asyncio.gather(*(_call(middleware, f"junk{n}") for _ in range(3)))
        await _call(middleware, "todo", 200)
        assert cap.runtime.entities.names == {"todo"}
        assert _entities(cap) == {None: 30, "todo": 1}


@pytest.mark.parametrize("order", [("first", "last"), ("last", "first")])
async def test_the_last_of_overlapping_404s_for_a_junk_name_gives_it_back(
    order: tuple[str, str],
) -> None:
    gate, let_go = _ends("first", "last")
    with capture(max_entities=1) as cap:
        middleware = SyncPerfMiddleware(_app(gate), routes=ROUTES)
        begun = [asyncio.create_task(_call(middleware, "junk", end=end)) for end in order]
        await let_go()
        await asyncio.gather(*begun)
        assert cap.runtime.entities.names == set()
        await _call(SyncPerfMiddleware(_app(_now), routes=ROUTES), "todo", 200)
        assert _entities(cap) == {None: 2, "todo": 1}


async def test_a_name_answered_with_a_non_4xx_is_kept_whatever_overlapping_404s_do() -> None:
    with capture(max_entities=2) as cap:
        for name, order in (("seen-late", ("404", "200")), ("seen-early", ("200", "404"))):
            gate, let_go = _ends(*order)
            middleware = SyncPerfMiddleware(_app(gate), routes=ROUTES)
            begun = [
                asyncio.create_task(_call(middleware, name, int(status), status))
                for status in ("404", "200", "404")
            ]
            await let_go()
            await asyncio.gather(*begun)
        assert cap.runtime.entities.names == {"seen-late", "seen-early"}
        middleware = SyncPerfMiddleware(_app(_now), routes=ROUTES)
        await _call(middleware, "seen-late", 404)  # a name once confirmed is never given back
        assert cap.runtime.entities.names == {"seen-late", "seen-early"}
        # the 404s that ended while the name was not confirmed yet are reported without it
        assert _entities(cap) == {None: 2, "seen-late": 2, "seen-early": 3}


def test_threads_sending_404s_for_the_same_junk_names_leave_the_bound_empty() -> None:
    threads, rounds = 8, 20
    barrier = threading.Barrier(threads)

    async def gate(scope: Any) -> None:
        barrier.wait(timeout=10)  # all the threads' requests are in flight at once

    with capture(max_entities=3) as cap:
        middleware = SyncPerfMiddleware(_app(gate), routes=ROUTES)
        failures: list[BaseException] = []

        def run() -> None:
            try:
                for n in range(rounds):
                    asyncio.run(_call(middleware, f"junk{n % 4}"))
            except BaseException as error:  # reported below: a thread's raise is lost
                failures.append(error)

        workers = [threading.Thread(target=run) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert not failures
        assert cap.runtime.entities.names == set()
        asyncio.run(_call(SyncPerfMiddleware(_app(_now), routes=ROUTES), "todo", 200))
        assert cap.runtime.entities.names == {"todo"}
        assert _entities(cap) == {None: threads * rounds, "todo": 1}
