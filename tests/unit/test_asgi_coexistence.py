"""SyncPerfMiddleware next to contrib's FastAPI instrumentation and FastAPI's native telemetry.

Whoever else owns the server span keeps it (syncperf's sync span becomes its INTERNAL child
and the server span is enriched with ``sync.operation`` / ``sync.entity``). Whoever else
records ``http.server.*`` keeps that too, and syncperf's own outputs still get them, except
the readers of the provider the other instrumentation records into: every output has the HTTP
metrics, none twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.trace import SpanKind

import syncperf
import syncperf.export
from syncperf.asgi import SyncPerfMiddleware
from syncperf.testing import Capture

ROUTES = {"/sync/{entity}/push": "push"}


def build(app: FastAPI) -> FastAPI:
    @app.post("/sync/{entity}/push")
    async def push(entity: str) -> dict[str, bool]:
        syncperf.current_operation().set_batch_size(2)
        return {"ok": True}

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    app.add_middleware(SyncPerfMiddleware, routes=ROUTES)
    return app


async def call(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        assert (await c.post("/sync/todo/push")).status_code == 200
        assert (await c.get("/health")).status_code == 200


def metric_names(reader: InMemoryMetricReader) -> dict[str, int]:
    """Metric name -> number of data points (summed counts for histograms)."""
    data = reader.get_metrics_data()
    found: dict[str, int] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                found[metric.name] = found.get(metric.name, 0) + sum(
                    getattr(p, "count", 1) for p in metric.data.data_points
                )
    return found


@pytest.fixture
def meters() -> Iterator[tuple[InMemoryMetricReader, MeterProvider]]:
    """An SDK meter provider of the other instrumentation, read in memory."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield reader, provider
    provider.shutdown()


def assert_enriched_single_server_span(cap: Capture) -> None:
    spans = cap.spans()
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    syncs = [s for s in spans if s.name == "sync push"]
    assert len(servers) == 2  # one per request (the push and the health check), none from us
    push_server = next(s for s in servers if "push" in s.name)
    assert push_server.attributes["sync.operation"] == "push"  # type: ignore[index]
    assert push_server.attributes["sync.entity"] == "todo"  # type: ignore[index]
    (sync_span,) = syncs
    assert sync_span.kind is SpanKind.INTERNAL
    assert sync_span.context.trace_id == push_server.context.trace_id
    by_id = {s.context.span_id: s for s in spans}
    parent = sync_span.parent
    while parent is not None and parent.span_id != push_server.context.span_id:
        parent = by_id[parent.span_id].parent
    assert parent is not None, "the sync span is not inside the server span"
    assert sync_span.attributes["sync.batch.size"] == 2  # type: ignore[index]


async def test_contrib_fastapi_instrumentation_keeps_the_server_span_and_http_metrics(
    syncperf_capture: Capture, meters: tuple[InMemoryMetricReader, MeterProvider]
) -> None:
    reader, provider = meters
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    cap = syncperf_capture
    app = build(FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False}))
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=cap.tracer_provider,
        meter_provider=provider,
        exclude_spans=["receive", "send"],
    )
    try:
        await call(app)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    assert_enriched_single_server_span(cap)
    assert cap.total("http.server.request.duration") == 2  # syncperf's output has them too
    assert cap.total("sync.operation.duration", {"sync.entity": "todo"}) == 1
    contrib = metric_names(reader)  # old or new semconv names, per OTEL_SEMCONV_STABILITY_OPT_IN
    assert (contrib.get("http.server.duration") or contrib.get("http.server.request.duration")) == 2


async def test_fastapi_native_telemetry_keeps_the_server_span_and_http_metrics(
    syncperf_capture: Capture, meters: tuple[InMemoryMetricReader, MeterProvider]
) -> None:
    reader, provider = meters
    cap = syncperf_capture
    app = build(
        FastAPI(
            telemetry={
                "tracer_provider": cap.tracer_provider,
                "meter_provider": provider,
                "logs": False,
            }
        )
    )
    assert syncperf.export.setup_meter_provider(provider)  # syncperf feeds its readers too
    await call(app)
    assert_enriched_single_server_span(cap)
    assert cap.total("http.server.request.duration") == 2
    assert cap.total("sync.operation.duration", {"sync.entity": "todo"}) == 1
    native = metric_names(reader)
    assert native.get("http.server.request.duration") == 2  # FastAPI's, not repeated by syncperf
    assert native.get("sync.operation.duration") == 1


async def test_native_tracing_without_native_metrics_leaves_http_metrics_to_syncperf(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    app = build(
        FastAPI(telemetry={"tracer_provider": cap.tracer_provider, "metrics": False, "logs": False})
    )
    await call(app)
    assert_enriched_single_server_span(cap)
    assert cap.total("http.server.request.duration") == 2
    routes = {p.attributes["http.route"] for p in cap.points("http.server.request.duration")}
    assert routes == {"/sync/{entity}/push", "/health"}


async def test_without_other_instrumentation_syncperf_owns_the_server_span(
    syncperf_capture: Capture,
) -> None:
    cap = syncperf_capture
    app = build(FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False}))
    await call(app)
    (span,) = cap.spans()
    assert (span.name, span.kind) == ("sync push", SpanKind.SERVER)
    assert cap.total("http.server.request.duration") == 2
