"""Real Prometheus end to end: scrape an instrumented service, record, alert on a conflict spike.

Prometheus (Debian's binary) runs on loopback with a temporary config and data directory,
scraping an example Starlette service (uvicorn, ``SyncPerfMiddleware``) whose metrics are
served by ``syncperf.export.setup_prometheus``. Rules come from ``syncperf rules`` with
short windows so the test finishes in bounded time.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import syncperf
from syncperf import _runtime
from syncperf._tools.monitoring import rules
from syncperf._tools.monitoring._options import RuleOptions
from syncperf.asgi import SyncPerfMiddleware
from syncperf.export import setup_prometheus
from tests.integration.conftest import free_port
from tests.integration.prometheus_server import query, running_prometheus, value

pytestmark = pytest.mark.integration
OPTIONS = RuleOptions(
    window="15s",
    baseline_window="1m",
    slow_query_window="1m",
    for_="2s",
    evaluation_interval="1s",
    min_rate=0.05,
)
DEADLINE = 90.0


class Conflicts:
    """Share of todo pushes that report a conflict (switched on for the spike)."""

    share = 0.0
    count = 0


async def pull(request: Request) -> JSONResponse:
    syncperf.current_operation().set_batch_size(3)
    return JSONResponse({"changes": []})


async def push(request: Request) -> JSONResponse:
    op = syncperf.current_operation()
    op.set_batch_size(2)
    if request.path_params["entity"] == "todo" and Conflicts.share:
        Conflicts.count += 1
        if Conflicts.count % round(1 / Conflicts.share) == 0:
            op.record_conflict(resolution="server_wins")
    return JSONResponse({"ok": True})


def _app() -> Any:
    app = Starlette(
        routes=[
            Route("/sync/pull", pull, methods=["GET"]),
            Route("/sync/{entity}/push", push, methods=["POST"]),
        ]
    )
    return SyncPerfMiddleware(app, routes={"/sync/pull": "pull", "/sync/{entity}/push": "push"})


@pytest.fixture
def service() -> Iterator[tuple[str, str]]:
    """The example service on loopback; yields (service URL, metrics host:port)."""
    previous = _runtime.replace(None)
    endpoint = setup_prometheus(port=0)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}", f"127.0.0.1:{endpoint.port}"
    finally:
        server.should_exit = True
        thread.join(10)
        endpoint.close()
        rt = _runtime.replace(previous)
        if rt is not None:
            rt.shutdown()


@pytest.fixture
def prometheus(tmp_path: Path, service: tuple[str, str]) -> Iterator[str]:
    """Prometheus scraping the service every second; yields its base URL."""
    with running_prometheus(tmp_path, [service[1]], rules=rules.render(OPTIONS)) as url:
        yield url


def _firing(base: str, alertname: str) -> list[dict[str, str]]:
    return [
        s["metric"] for s in query(base, f'ALERTS{{alertname="{alertname}", alertstate="firing"}}')
    ]


class Traffic:
    """Drives pulls and pushes for two entities on a background thread."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(base_url=self._url, timeout=5) as client:
            while not self._stop.is_set():
                for entity in ("todo", "note"):
                    client.post(f"/sync/{entity}/push", json={"changes": [1, 2]})
                client.get("/sync/pull")
                self.sent += 3
                time.sleep(0.02)


def test_recording_rules_get_values_and_the_conflict_alert_fires_on_a_spike(
    service: tuple[str, str], prometheus: str
) -> None:
    started = time.monotonic()
    Conflicts.share = 0.0
    with Traffic(service[0]) as traffic:
        # Phase 1, no conflicts: the recording rules fill in, the alert stays silent.
        ratio = None
        while time.monotonic() - started < DEADLINE / 2:
            ratio = value(prometheus, "sync:conflict_ratio:rate15s", sync_entity="todo")
            p95 = value(
                prometheus,
                "sync:duration_seconds:p95_15s",
                sync_operation="push",
                sync_entity="todo",
            )
            if ratio is not None and p95 is not None:
                break
            time.sleep(0.5)
        assert ratio == 0.0, "recording rules never produced a conflict ratio"
        assert _firing(prometheus, "SyncPushConflictRateHigh") == []

        # Phase 2, the spike: half of the todo pushes conflict.
        Conflicts.share = 0.5
        firing: list[dict[str, str]] = []
        while time.monotonic() - started < DEADLINE and not firing:
            firing = _firing(prometheus, "SyncPushConflictRateHigh")
            time.sleep(0.5)
        assert traffic.sent > 100

    elapsed = time.monotonic() - started
    assert firing, f"SyncPushConflictRateHigh not firing after {elapsed:.0f} s"
    assert [(a["sync_entity"], a["sync_operation"], a["severity"]) for a in firing] == [
        ("todo", "push", "warning")
    ]
    ratio = value(prometheus, "sync:conflict_ratio:rate15s", sync_entity="todo")
    assert ratio is not None and 0.1 < ratio <= 0.5 + 1e-9
    assert value(prometheus, "sync:conflict_ratio:rate15s", sync_entity="note") == 0.0
    for q in ("p50", "p95", "p99"):
        assert value(prometheus, f"sync:duration_seconds:{q}_15s", sync_operation="pull")
    assert value(prometheus, "sync:error_ratio:rate15s", sync_operation="pull") == 0.0
    assert value(prometheus, "sync:operations:rate15s", sync_operation="push", sync_entity="todo")
    with urllib.request.urlopen(prometheus + "/api/v1/alerts", timeout=5) as response:
        payload = json.load(response)["data"]["alerts"]
    (conflict,) = [a for a in payload if a["labels"]["alertname"] == "SyncPushConflictRateHigh"]
    assert conflict["annotations"]["summary"] == (
        "Push conflict rate above 10% for entity todo (push)"
    )
    assert conflict["annotations"]["runbook_url"].endswith("#syncpushconflictratehigh")
