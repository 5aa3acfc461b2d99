"""The conventions of OpenTelemetry's contrib instrumentations: excluded URLs,
``uninstrument_app``, and instrumenting an app once."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI
from starlette.responses import PlainTextResponse

import syncperf
from syncperf.asgi import SyncPerfMiddleware, instrument_app, uninstrument_app
from syncperf.testing import Capture, capture

ROUTES = {"/sync/pull": "pull"}


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

    return app


async def _get(app: object, *paths: str) -> None:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for path in paths:
            assert (await client.get(path)).status_code == 200


def _routes_recorded(cap: Capture) -> dict[str, float]:
    return {
        p.attributes["http.route"]: p.count
        for p in cap.points("http.server.request.duration")
        if "http.route" in p.attributes
    }


async def test_excluded_urls_are_not_http_requests_and_sync_routes_never_excluded(
    syncperf_capture: Capture,
) -> None:
    app = make_app()
    instrument_app(app, ROUTES, excluded_urls="healthz,/metrics$,/sync/pull")
    await _get(app, "/healthz", "/metrics", "/sync/pull")
    assert _routes_recorded(syncperf_capture) == {"/sync/pull": 1}  # a sync route, always
    assert syncperf_capture.total("sync.operation.duration") == 1


async def test_a_host_header_never_excludes_a_request(syncperf_capture: Capture) -> None:
    app = make_app()

    @app.get("/items")
    async def items() -> dict[str, bool]:
        return {}

    instrument_app(app, ROUTES, excluded_urls="healthz,/metrics,internal")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://internal.corp") as client:
        for host in ("healthz", "x/metrics", "internal.corp"):  # forged, or merely unlucky
            for path in ("/sync/pull", "/items"):
                response = await client.get(path, headers={"Host": host})
                assert response.status_code == 200
        assert (await client.get("/healthz")).status_code == 200  # excluded by its path
    assert _routes_recorded(syncperf_capture) == {"/sync/pull": 3, "/items": 3}
    assert syncperf_capture.total("sync.operation.duration") == 3


async def test_other_urls_are_still_recorded(syncperf_capture: Capture) -> None:
    app = make_app()
    instrument_app(app, ROUTES, excluded_urls="healthz")
    await _get(app, "/healthz", "/metrics", "/sync/pull")
    assert _routes_recorded(syncperf_capture) == {"/metrics": 1, "/sync/pull": 1}
    assert syncperf_capture.total("sync.operation.duration") == 1


@pytest.mark.parametrize(
    "variable", ["OTEL_PYTHON_EXCLUDED_URLS", "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS"]
)
async def test_excluded_urls_come_from_the_contrib_variables(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "healthz, metrics")
    app = make_app()
    instrument_app(app, ROUTES)
    with capture() as cap:
        await _get(app, "/healthz", "/metrics", "/sync/pull")
        assert _routes_recorded(cap) == {"/sync/pull": 1}


async def test_the_fastapi_variable_wins_over_the_generic_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "healthz")
    monkeypatch.setenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "metrics")
    with capture() as cap:
        assert cap.runtime.config.excluded_urls == "metrics"


async def test_an_explicit_empty_option_overrides_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "healthz")
    app = make_app()
    instrument_app(app, ROUTES, excluded_urls="")
    with capture() as cap:
        await _get(app, "/healthz")
        assert _routes_recorded(cap) == {"/healthz": 1}


def test_a_bad_excluded_urls_option_is_a_config_error() -> None:
    with pytest.raises(syncperf.ConfigError, match="excluded_urls"):
        SyncPerfMiddleware(make_app(), ROUTES, excluded_urls=42)  # type: ignore[arg-type]
    with pytest.raises(syncperf.ConfigError, match="excluded_urls"):
        SyncPerfMiddleware(make_app(), ROUTES, excluded_urls="(unclosed")


async def test_instrument_app_twice_adds_one_middleware(
    syncperf_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    instrument_app(app, ROUTES)
    with caplog.at_level(logging.WARNING, "syncperf"):
        instrument_app(app, ROUTES)
    assert [m.cls for m in app.user_middleware] == [SyncPerfMiddleware]
    assert "already instrumented" in caplog.text
    await _get(app, "/sync/pull")
    assert syncperf_capture.total("sync.operation.duration") == 1
    assert len(syncperf_capture.spans()) == 1


def test_instrument_app_finds_the_routes_of_included_routers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fastapi import APIRouter

    app, v1, inner = FastAPI(), APIRouter(), APIRouter()

    @v1.get("/sync/pull")
    async def pull() -> dict[str, bool]:
        return {}

    @inner.post("/sync/{entity}/push")
    async def push(entity: str) -> dict[str, bool]:
        return {}

    v1.include_router(inner, prefix="/inner")
    app.include_router(v1, prefix="/api/v1")
    with caplog.at_level(logging.WARNING, "syncperf"):
        instrument_app(
            app, {"/api/v1/sync/pull": "pull", "/api/v1/inner/sync/{entity}/push": "push"}
        )
    assert "matches no route" not in caplog.text
    with caplog.at_level(logging.WARNING, "syncperf"):
        instrument_app(FastAPI(), {"/api/v1/sync/pul": "pull"})  # still warns on a typo
    assert "'/api/v1/sync/pul' matches no route" in caplog.text


async def test_uninstrument_app_removes_the_middleware_even_after_start(
    syncperf_capture: Capture,
) -> None:
    app = make_app()
    instrument_app(app, ROUTES)
    await _get(app, "/sync/pull")  # the middleware stack is built
    assert uninstrument_app(app) is app
    assert app.user_middleware == []
    await _get(app, "/sync/pull")
    assert syncperf_capture.total("sync.operation.duration") == 1


async def test_an_uninstrumented_app_can_be_instrumented_again(syncperf_capture: Capture) -> None:
    app = make_app()
    instrument_app(app, ROUTES)
    await _get(app, "/sync/pull")
    uninstrument_app(app)
    instrument_app(app, {"/sync/pull": "push"})  # new options, before its next request
    await _get(app, "/sync/pull")
    assert syncperf_capture.total("sync.operation.duration", {"sync.operation": "pull"}) == 1
    assert syncperf_capture.total("sync.operation.duration", {"sync.operation": "push"}) == 1


def test_uninstrument_app_rejects_what_is_not_an_app() -> None:
    with pytest.raises(syncperf.ConfigError, match="app"):
        uninstrument_app(object())
