"""A ``configure()`` that completes while ``SyncPerfMiddleware`` finishes a request: the
request's HTTP metrics reach the runtime in force (the replaced one exports no more)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import syncperf
from syncperf import _runtime
from syncperf.asgi import SyncPerfMiddleware, _finish
from tests.unit.test_export_contract import ListExporter
from tests.unit.test_fold import _totals


@pytest.fixture
def exporter() -> Iterator[ListExporter]:
    found = ListExporter()
    previous = _runtime.replace(None)
    try:
        syncperf.configure(metric_exporters=[found], export_interval=3600)
        yield found
    finally:
        rt = _runtime.replace(previous)
        if rt is not None:
            rt.shutdown()


async def _push(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@pytest.mark.parametrize("where", ["finish_operation", "http_key"])
async def test_http_metrics_of_a_request_finishing_across_configure_are_exported(
    exporter: ListExporter, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    app = SyncPerfMiddleware(
        Starlette(routes=[Route("/sync/{entity}/push", _push, methods=["POST"])]),
        routes={"/sync/{entity}/push": "push"},
        entities=["todo"],
    )
    real = getattr(_finish, where)

    def late(*args: Any, **kwargs: Any) -> Any:  # another thread's configure(), just then
        syncperf.configure(metric_exporters=[exporter], export_interval=3600)
        monkeypatch.setattr(_finish, where, real)
        return real(*args, **kwargs)

    monkeypatch.setattr(_finish, where, late)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/sync/todo/push", json={})).status_code == 200
    assert _runtime.force_flush(timeout=5)
    assert _totals(exporter, "sync.operation.duration") == 1
    assert _totals(exporter, "http.server.request.duration") == 1
    assert _totals(exporter, "http.server.response.body.size") == 1
