"""examples/fastapi_service.py: imported (through httpx's ASGI transport) and run as a script."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from syncperf.testing import Capture
from tests._examples import load_example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_service.py"


def load() -> ModuleType:
    return load_example("fastapi_service.py", "fastapi_service_example")


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://example")


async def test_the_example_records_pushes_conflicts_replays_and_pulls(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    app = load().create_app()
    new = {
        "changes": [
            {"id": "1", "version": 0, "title": "milk"},
            {"id": "2", "version": 0, "title": "eggs"},
        ]
    }
    async with client(app) as c:
        first = await c.post("/sync/todo/push", json=new, headers={"Idempotency-Key": "k1"})
        replay = await c.post("/sync/todo/push", json=new, headers={"Idempotency-Key": "k1"})
        stale = await c.post("/sync/todo/push", json={"changes": [{"id": "1", "version": 0}]})
        pulled = await c.get("/sync/pull")
        assert (await c.get("/health")).status_code == 200
    assert first.json() == {"applied": ["1", "2"], "conflicts": []}
    assert replay.headers["idempotent-replayed"] == "true"
    assert stale.status_code == 409
    assert pulled.json()["cursor"] == 2
    assert cap.total("sync.items", {"sync.operation": "push", "sync.change": "created"}) == 2
    assert cap.total("sync.items", {"sync.operation": "pull"}) == 2
    assert cap.total("sync.idempotency.hits", {"sync.entity": "todo"}) == 1
    assert cap.total("sync.conflicts", {"sync.conflict.resolution": "server_wins"}) == 1
    assert cap.total("sync.operation.duration", {"sync.outcome": "conflict"}) == 1
    routes = {p.attributes.get("http.route") for p in cap.points("http.server.request.duration")}
    assert routes == {"/sync/{entity}/push", "/sync/pull", "/health"}


async def test_a_live_pull_waits_for_a_push_and_is_reported_apart(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    app = load().create_app()
    async with client(app) as c:
        waiting = asyncio.ensure_future(c.get("/sync/pull?live=true&timeout=5"))
        await asyncio.sleep(0.05)
        await c.post("/sync/list/push", json={"changes": [{"id": "a", "version": 0}]})
        response = await asyncio.wait_for(waiting, 5)
    assert response.json()["cursor"] == 1
    assert cap.total("sync.operation.duration", {"sync.operation": "pull_live"}) == 1
    assert cap.total("http.server.request.duration", {"http.route": "/sync/pull"}) == 0


async def test_the_watermelondb_route_is_measured_by_its_adapter(
    syncperf_capture: Capture,
) -> None:
    app = load().create_app()
    body = {"todo": {"created": [{"id": "a"}, {"id": "b"}], "updated": [], "deleted": ["c"]}}
    async with client(app) as c:
        assert (await c.post("/watermelon/sync", json=body)).status_code == 200
    assert syncperf_capture.total("sync.items", {"sync.operation": "push"}) == 3
    (batch,) = syncperf_capture.points("sync.batch.size")
    assert batch.sum == 3


def test_the_example_runs_as_a_script_and_serves_prometheus_metrics(tmp_path: Path) -> None:
    from tests.integration.conftest import free_port

    port = free_port()
    log = tmp_path / "example.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"example did not start: {log.read_text(errors='replace')}")
                time.sleep(0.1)
        push = {"changes": [{"id": "1", "version": 0, "title": "x"}]}
        assert httpx.post(base + "/sync/todo/push", json=push).status_code == 200
        metrics = httpx.get(base + "/metrics").text
    finally:
        process.terminate()
        process.wait(10)
    assert (
        'sync_operation_duration_seconds_count{sync_entity="todo",sync_operation="push",'
        'sync_outcome="success"} 1.0' in metrics
    )
    assert 'http_route="/sync/{entity}/push"' in metrics
    assert "http_server_request_duration_seconds_bucket" in metrics
