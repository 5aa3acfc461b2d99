"""In-flight counts open across ``configure()``: a pull output served by both configurations
goes on from what the old one counted, so an operation (or a request) begun before the change
is still in ``sync.operations.active`` (``http.server.active_requests``) until it ends."""

from __future__ import annotations

import asyncio
import contextvars
import gc
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import syncperf
from syncperf import _runtime
from syncperf.asgi import SyncPerfMiddleware


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    served = CollectorRegistry()
    previous = _runtime.replace(None)
    try:
        syncperf.configure(prometheus=served, export_interval=3600)
        yield served
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()


def _active(registry: CollectorRegistry, operation: str = "push") -> float | None:
    return registry.get_sample_value("sync_operations_active", {"sync_operation": operation})


def _open(operation: str = "push") -> tuple[contextvars.Context, Any]:
    """An operation begun in a context of its own (it joins no other)."""
    context = contextvars.copy_context()
    scope = context.run(syncperf.sync_operation, operation, entity="todo")
    context.run(scope.__enter__)
    return context, scope


def _close(opened: tuple[contextvars.Context, Any]) -> None:
    context, scope = opened
    context.run(scope.__exit__, None, None, None)


def test_an_operation_open_across_configure_stays_active_until_it_ends(
    registry: CollectorRegistry,
) -> None:
    first = _open()
    assert _active(registry) == 1
    syncperf.configure(prometheus=registry, export_interval=3600)
    assert _active(registry) == 1
    second = _open()
    assert _active(registry) == 2
    _close(first)
    assert _active(registry) == 1
    _close(second)
    assert _active(registry) == 0


def test_a_replaced_runtime_kept_alive_adds_no_series_of_its_own(
    registry: CollectorRegistry,
) -> None:
    """Only an open operation of a replaced runtime counts: one that a reference cycle keeps
    alive until the collector runs adds no ``0`` series, so what is shown does not depend on
    when the garbage collector ran."""
    _close(_open("pull"))
    kept = _runtime.current()  # as a cycle would, until the collector runs
    syncperf.configure(prometheus=registry, export_interval=3600)
    assert kept.successor is not None
    assert _active(registry, "pull") is None
    _close(_open())
    assert _active(registry) == 0


def test_operations_open_across_several_configures_are_each_counted_once(
    registry: CollectorRegistry,
) -> None:
    opened = [_open("push"), _open("pull")]
    syncperf.configure(prometheus=registry, export_interval=3600)
    opened.append(_open("push"))
    syncperf.configure(prometheus=registry, export_interval=3600)
    opened.append(_open("pull"))
    assert (_active(registry, "push"), _active(registry, "pull")) == (2, 2)
    for each in opened:
        _close(each)
    assert (_active(registry, "push"), _active(registry, "pull")) == (0, 0)


def _requests(registry: CollectorRegistry) -> tuple[float | None, float | None]:
    """(``http.server.active_requests`` of GET over http, ``sync.operations.active`` of pull)"""
    labels = {"http_request_method": "GET", "url_scheme": "http"}
    return (
        registry.get_sample_value("http_server_active_requests", labels),
        _active(registry, "pull"),
    )


def _gated() -> tuple[asyncio.Event, Callable[[Request], Awaitable[JSONResponse]]]:
    """A handler that answers once its gate is set."""
    gate = asyncio.Event()

    async def wait(request: Request) -> JSONResponse:
        await gate.wait()
        return JSONResponse({})

    return gate, wait


async def test_requests_open_across_configure_stay_active_until_they_end(
    registry: CollectorRegistry,
) -> None:
    gate, wait = _gated()

    app = SyncPerfMiddleware(
        Starlette(routes=[Route("/sync/pull", wait), Route("/other", wait)]),
        routes={"/sync/pull": "pull"},
    )

    async def served(paths: tuple[str, ...]) -> list[tuple[float | None, float | None]]:
        seen = []
        gate.clear()
        tasks = [asyncio.create_task(client.get(path)) for path in paths]
        while _requests(registry)[0] != len(paths):  # all of them in the application
            await asyncio.sleep(0.001)
        syncperf.configure(prometheus=registry, export_interval=3600)
        seen.append(_requests(registry))
        gate.set()
        for response in await asyncio.gather(*tasks):
            assert response.status_code == 200
        seen.append(_requests(registry))
        return seen

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert await asyncio.wait_for(served(("/sync/pull", "/other")), 10) == [(2, 1), (0, 0)]
        assert await asyncio.wait_for(served(("/sync/pull", "/other")), 10) == [(2, 1), (0, 0)]


async def test_a_request_ended_after_configure_reads_zero_once_the_old_runtime_is_gone(
    registry: CollectorRegistry,
) -> None:
    """The series stays, at 0: an OTLP backend would keep the last value it was sent."""
    gate, wait = _gated()

    app = SyncPerfMiddleware(Starlette(routes=[Route("/other", wait)]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        task = asyncio.create_task(client.get("/other"))
        while _requests(registry)[0] != 1:
            await asyncio.sleep(0.001)
        syncperf.configure(prometheus=registry, export_interval=3600)
        assert _requests(registry)[0] == 1
        gate.set()
        assert (await asyncio.wait_for(task, 10)).status_code == 200
        gc.collect()
        assert _requests(registry)[0] == 0


async def test_a_forked_child_counts_none_of_the_parents_requests(
    registry: CollectorRegistry,
) -> None:
    """The child hook runs here as in a child forked while a request is in flight (which
    then returns through the child, taking nothing out of the child's count)."""
    from syncperf.asgi import _http

    gate, wait = _gated()

    own_gate, own = _gated()

    app = SyncPerfMiddleware(Starlette(routes=[Route("/other", wait), Route("/own", own)]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        task = asyncio.create_task(client.get("/other"))
        while _requests(registry)[0] != 1:
            await asyncio.sleep(0.001)
        _http._after_fork_in_child()
        assert _requests(registry)[0] == 0
        own_gate.clear()
        own = asyncio.create_task(client.get("/own"))  # the child's own request
        while _requests(registry)[0] != 1:
            await asyncio.sleep(0.001)
        gate.set()
        assert (await asyncio.wait_for(task, 10)).status_code == 200
        assert _requests(registry)[0] == 1  # the parent's took the child's out before
        own_gate.set()
        assert (await asyncio.wait_for(own, 10)).status_code == 200
        assert _requests(registry)[0] == 0
