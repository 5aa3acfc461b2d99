"""The WatermelonDB, Replicache, PowerSync and Zero example servers on uvicorn, over loopback.

The client exchanges (pulls, a conflicting push, a retried push) are the ones the unit
tests drive through ``httpx.ASGITransport``; here they go through uvicorn's HTTP parser,
its event loop and a real socket, with syncperf capturing in strict mode.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from examples import powersync_server, replicache_server, watermelondb_server, zero_server

from syncperf.testing import Capture
from tests.integration.conftest import free_port
from tests.unit.test_adapters_examples import (
    assert_powersync_metrics,
    assert_replicache_metrics,
    assert_watermelondb_metrics,
    assert_zero_metrics,
    powersync_exchange,
    replicache_exchange,
    watermelondb_exchange,
    zero_exchange,
)

pytestmark = pytest.mark.integration


def _serve(app: Any) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


async def settled(check: Callable[[Capture, dict[str, Any]], None], *args: Any) -> None:
    """``check`` once the server finished recording. Behind the middleware, an operation
    ends after its response was sent: the client can read the answer before the server
    thread ran the middleware's wrap-up, so the last request's counts may be a moment late."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return check(*args)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


@pytest.fixture
def watermelondb_url(syncperf_capture: Capture) -> Iterator[str]:
    yield from _serve(watermelondb_server.create_app())


@pytest.fixture
def replicache_url(syncperf_capture: Capture) -> Iterator[str]:
    yield from _serve(replicache_server.create_app())


async def test_watermelondb_example_on_uvicorn(
    watermelondb_url: str, syncperf_capture: Capture
) -> None:
    async with httpx.AsyncClient(base_url=watermelondb_url) as client:
        seen = await watermelondb_exchange(client)
    await settled(assert_watermelondb_metrics, syncperf_capture, seen)


async def test_replicache_example_on_uvicorn(
    replicache_url: str, syncperf_capture: Capture
) -> None:
    async with httpx.AsyncClient(base_url=replicache_url) as client:
        seen = await replicache_exchange(client)
    await settled(assert_replicache_metrics, syncperf_capture, seen)


@pytest.fixture(params=["decorator", "middleware"])
def powersync_url(request: pytest.FixtureRequest, syncperf_capture: Capture) -> Iterator[str]:
    yield from _serve(powersync_server.create_app(measured_by=request.param))


async def test_powersync_example_on_uvicorn(powersync_url: str, syncperf_capture: Capture) -> None:
    async with httpx.AsyncClient(base_url=powersync_url) as client:
        seen = await powersync_exchange(client)
    await settled(assert_powersync_metrics, syncperf_capture, seen)


@pytest.fixture(params=["decorator", "middleware"])
def zero_url(request: pytest.FixtureRequest, syncperf_capture: Capture) -> Iterator[str]:
    yield from _serve(zero_server.create_app(measured_by=request.param))


async def test_zero_example_on_uvicorn(zero_url: str, syncperf_capture: Capture) -> None:
    async with httpx.AsyncClient(base_url=zero_url) as client:
        seen = await zero_exchange(client)
    await settled(assert_zero_metrics, syncperf_capture, seen)
