"""Excluded URLs behind a real uvicorn server: health checks and scrapes are not recorded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.responses import PlainTextResponse

from syncperf.asgi import instrument_app
from syncperf.testing import capture
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/sync/pull")
    async def pull() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse("")

    instrument_app(app, {"/sync/pull": "pull"})
    return app


@pytest.fixture
def server() -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(make_app(), host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not instance.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(10)


def test_urls_excluded_by_the_environment_are_not_recorded(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "healthz,/metrics")
    with capture() as cap, httpx.Client(base_url=server) as client:
        for path in ("/healthz", "/metrics", "/sync/pull", "/healthz"):
            assert client.get(path).status_code == 200
        routes = {
            p.attributes.get("http.route"): p.count
            for p in cap.points("http.server.request.duration")
        }
        assert routes == {"/sync/pull": 1}
        assert cap.total("sync.operation.duration") == 1
