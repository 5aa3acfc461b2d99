"""SyncPerfMiddleware next to contrib's FastAPI instrumentation and FastAPI's native telemetry.

Whoever else owns the server span keeps it (syncperf's sync span becomes its INTERNAL child
and the server span is enriched with ``sync.operation`` / ``sync.entity``). Whoever else
records ``http.server.*`` keeps that too, and syncperf's own outputs still get them, except
the readers of the provider the other instrumentation records into: every output has the HTTP
metrics, none twice.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import syncperf
import syncperf.export
from syncperf.asgi import SyncPerfMiddleware
from syncperf.testing import Capture, capture

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


# --- contrib as an outer ASGI wrapper ------------------------------------------------------

UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


@pytest.fixture
def global_meters(
    meters: tuple[InMemoryMetricReader, MeterProvider], monkeypatch: pytest.MonkeyPatch
) -> tuple[InMemoryMetricReader, MeterProvider]:
    """``meters`` as the global meter provider (contrib's default), restored afterwards."""
    from opentelemetry.metrics import _internal
    from opentelemetry.util._once import Once

    done = Once()
    done.do_once(lambda: None)
    monkeypatch.setattr(_internal, "_METER_PROVIDER", meters[1])
    monkeypatch.setattr(_internal, "_METER_PROVIDER_SET_ONCE", done)
    return meters


def scoped(reader: InMemoryMetricReader, scope: str) -> dict[str, int]:
    """``metric_names`` of one instrumentation scope."""
    data = reader.get_metrics_data()
    found: dict[str, int] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            if sm.scope.name == scope:
                for metric in sm.metrics:
                    found[metric.name] = sum(
                        getattr(p, "count", 1) for p in metric.data.data_points
                    )
    return found


def sync_app(status: int) -> Starlette:
    """A Starlette app with syncperf's middleware, its sync route answering ``status``."""

    async def push(request: Request) -> JSONResponse:
        return JSONResponse({}, status_code=status)

    app = Starlette(routes=[Route("/sync/{entity}/push", push, methods=["POST"])])
    app.add_middleware(SyncPerfMiddleware, routes=ROUTES)
    return app


def outer_contrib(cap: Capture, status: int = 200) -> Any:
    """contrib's ``OpenTelemetryMiddleware`` wrapping ``sync_app`` from outside."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(
        sync_app(status), tracer_provider=cap.tracer_provider, exclude_spans=["receive", "send"]
    )


async def post(app: Any, traceparent: str, path: str = "/sync/todo/push") -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        return (await c.post(path, headers={"traceparent": traceparent})).status_code


@pytest.mark.parametrize("flags", ["01", "00"])
async def test_an_outer_contrib_wrapper_keeps_the_http_metrics_sampled_in_or_out(
    global_meters: tuple[InMemoryMetricReader, MeterProvider], flags: str
) -> None:
    reader, provider = global_meters
    with capture(sampler=ParentBased(ALWAYS_ON)) as cap:
        assert syncperf.export.setup_meter_provider(provider)  # syncperf feeds its readers too
        assert await post(outer_contrib(cap), UNSAMPLED[:-2] + flags) == 200
        assert cap.total("http.server.request.duration") == 1  # syncperf's outputs have them
        ours = scoped(reader, "syncperf")
        contrib = scoped(reader, "opentelemetry.instrumentation.asgi")
    assert ours.get("sync.operation.duration") == 1
    assert not [name for name in ours if name.startswith("http.server.")]  # contrib's, once
    assert (contrib.get("http.server.duration") or contrib.get("http.server.request.duration")) == 1


async def test_an_outer_contrib_wrapper_that_sampled_out_gets_no_server_span_of_ours() -> None:
    with capture(sampler=ParentBased(ALWAYS_ON)) as cap:
        assert await post(outer_contrib(cap, status=503), UNSAMPLED) == 503
        (span,) = cap.spans()  # the error, rescued: not a second server span
    assert (span.name, span.kind) == ("sync push", SpanKind.INTERNAL)
    assert span.attributes["syncperf.rescued"] is True  # type: ignore[index]
    assert span.parent is None and [link.context.trace_id for link in span.links] == [
        int(UNSAMPLED[3:35], 16)
    ]


async def test_a_remote_parent_attached_by_an_outer_wrapper_leaves_the_server_span_to_us() -> None:
    from opentelemetry import context, propagate

    async def unsampled(scope: Any, receive: Any, send: Any) -> None:
        token = context.attach(propagate.extract({"traceparent": UNSAMPLED}))
        try:
            await inner(scope, receive, send)
        finally:
            context.detach(token)

    with capture(sampler=ParentBased(ALWAYS_ON)) as cap:
        inner = sync_app(503)  # syncperf alone, no contrib around it
        assert await post(unsampled, UNSAMPLED) == 503
        (span,) = cap.spans()
        assert cap.total("http.server.request.duration") == 1
    assert (span.name, span.kind) == ("sync push", SpanKind.SERVER)
    assert span.attributes["syncperf.rescued"] is True  # type: ignore[index]


async def test_a_sampled_out_span_of_the_application_is_not_taken_for_contrib(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import trace

    # a span the application started around the app, which its sampler dropped (contrib is
    # not loaded: nothing else can have made it)
    monkeypatch.delitem(sys.modules, "opentelemetry.instrumentation.asgi", raising=False)
    with capture(sampler=ParentBased(ALWAYS_ON)) as cap:

        async def wrapped(scope: Any, receive: Any, send: Any) -> None:
            span = trace.NonRecordingSpan(
                trace.SpanContext(int(UNSAMPLED[3:35], 16), 0x1234, is_remote=False)
            )
            with trace.use_span(span):
                await inner(scope, receive, send)

        inner = sync_app(503)
        assert await post(wrapped, UNSAMPLED) == 503
        (span,) = cap.spans()
    assert span.kind is SpanKind.SERVER


async def test_a_request_served_inside_a_sampled_out_sync_operation_keeps_its_http_metrics(
    global_meters: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    from opentelemetry import trace
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware  # loaded

    reader, provider = global_meters
    assert OpenTelemetryMiddleware
    local = trace.SpanContext(int(UNSAMPLED[3:35], 16), 0x1234, is_remote=False)
    with capture(sampler=ParentBased(ALWAYS_ON)) as cap:
        assert syncperf.export.setup_meter_provider(provider)
        async with syncperf.sync_operation("pull"):  # its sampled-out span context current
            with trace.use_span(trace.NonRecordingSpan(local)):
                assert await post(sync_app(200), UNSAMPLED) == 200
        assert cap.total("http.server.request.duration") == 1
        ours = scoped(reader, "syncperf")
    assert ours.get("http.server.request.duration") == 1  # nobody else records them
