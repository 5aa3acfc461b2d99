"""Operations open when ``configure()`` replaces the runtime reach an export when they end.

Single-process mode (multiprocess mode: tests/unit/test_multiprocess.py): an operation
records into the runtime it began in; that runtime stops exporting at ``configure()``, so
what it recorded after that would be lost. Checked end to end: over OTLP/gRPC to a real
receiver, and in a scrape of the ``prometheus_client`` exposition; for a decorated handler,
for the ASGI middleware's operation and HTTP metrics and for SQLAlchemy's query metrics.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import syncperf
from syncperf import _runtime
from syncperf.asgi import SyncPerfMiddleware
from syncperf.sqlalchemy import instrument_engine
from tests.integration.otlp_receiver import OtlpReceiver, attributes

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _own_runtime(receiver: OtlpReceiver) -> Iterator[None]:
    """This test's runtimes (shut down while the receiver still answers), the previous one
    put back afterwards."""
    previous = _runtime.replace(None)
    try:
        yield
    finally:
        rt = _runtime.replace(previous)
        if rt is not None:
            rt.shutdown()


def _otlp_totals(receiver: OtlpReceiver, name: str) -> dict[frozenset[Any], float]:
    """Cumulative totals of ``name`` (sum, or count for a histogram) by attributes, summed
    over the streams of every runtime (each starts afresh: its own start time)."""
    latest: dict[tuple[frozenset[Any], int], float] = {}
    for _, _, metric in receiver.metrics():
        if metric.name != name:
            continue
        kind = metric.WhichOneof("data")
        for point in getattr(metric, kind).data_points:
            key = (frozenset(attributes(point.attributes).items()), point.start_time_unix_nano)
            total = point.count if kind == "histogram" else point.as_int or point.as_double
            latest[key] = max(latest.get(key, 0), total)
    totals: dict[frozenset[Any], float] = {}
    for (attrs, _), total in latest.items():
        totals[attrs] = totals.get(attrs, 0) + total
    return totals


def _open_across_configure(reconfigure: Any) -> None:
    """A decorated push of 5 items, open while ``reconfigure()`` runs."""
    entered, release = threading.Event(), threading.Event()

    @syncperf.instrument_sync("push", entity="todo")
    def push(n: int) -> None:
        op = syncperf.current_operation()
        op.set_batch_size(n)
        op.record_items(n, change="created")
        entered.set()
        assert release.wait(10)

    worker = threading.Thread(target=push, args=(5,))
    worker.start()
    assert entered.wait(10)
    reconfigure()
    release.set()
    worker.join(10)


def test_a_decorated_operation_open_across_configure_reaches_the_otlp_export(
    receiver: OtlpReceiver,
) -> None:
    exporter = OTLPMetricExporter(endpoint=receiver.endpoint, insecure=True)
    options: dict[str, Any] = {"metric_exporters": [exporter], "export_interval": 60.0}
    syncperf.configure(**options)
    _open_across_configure(lambda: syncperf.configure(**options))
    assert syncperf.force_flush(timeout=5)
    created = {"sync.operation": "push", "sync.entity": "todo", "sync.change": "created"}
    assert _otlp_totals(receiver, "sync.items") == {frozenset(created.items()): 5}
    durations = _otlp_totals(receiver, "sync.operation.duration")
    assert sum(durations.values()) == 1
    assert sum(_otlp_totals(receiver, "sync.batch.size").values()) == 1


def _sample(body: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name{labels}`` in an exposition (labels compared as a set)."""
    for line in body.splitlines():
        found = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if found is None or found.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', found.group(2) or ""))
        if got == labels:
            return float(found.group(3))
    return None


def test_a_decorated_operation_open_across_configure_is_in_the_prometheus_scrape() -> None:
    registry = CollectorRegistry()
    syncperf.configure(prometheus=registry)
    _open_across_configure(lambda: syncperf.configure(prometheus=registry))
    body = generate_latest(registry).decode()
    labels = {"sync_operation": "push", "sync_entity": "todo"}
    assert _sample(body, "sync_items_total", sync_change="created", **labels) == 5
    assert _sample(body, "sync_batch_size_count", **labels) == 1
    assert (
        _sample(body, "sync_operation_duration_seconds_count", sync_outcome="success", **labels)
        == 1
    )


def _app(engine: sa.Engine, entered: asyncio.Event, release: asyncio.Event) -> Any:
    async def push(request: Request) -> JSONResponse:
        entered.set()
        await release.wait()
        with engine.connect() as connection:  # a query after configure(), in the operation
            connection.execute(sa.text("SELECT 1")).all()
        return JSONResponse({})

    app = Starlette(routes=[Route("/push", push, methods=["POST"])])
    return SyncPerfMiddleware(app, routes={"/push": "push"})


async def _request_across_configure(reconfigure: Any) -> None:
    engine = sa.create_engine("sqlite://")
    instrumentation = instrument_engine(engine, spans=False, pool_metrics=False)
    try:
        entered, release = asyncio.Event(), asyncio.Event()
        transport = httpx.ASGITransport(app=_app(engine, entered, release))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            sent = asyncio.ensure_future(client.post("/push", content=b"{}"))
            await asyncio.wait_for(entered.wait(), 10)
            reconfigure()
            release.set()
            assert (await asyncio.wait_for(sent, 10)).status_code == 200
    finally:
        instrumentation.uninstrument()
        engine.dispose()


async def test_an_asgi_request_and_its_queries_open_across_configure_reach_the_otlp_export(
    receiver: OtlpReceiver,
) -> None:
    exporter = OTLPMetricExporter(endpoint=receiver.endpoint, insecure=True)
    options: dict[str, Any] = {"metric_exporters": [exporter], "export_interval": 60.0}
    syncperf.configure(**options)
    await _request_across_configure(lambda: syncperf.configure(**options))
    assert syncperf.force_flush(timeout=5)
    assert sum(_otlp_totals(receiver, "sync.operation.duration").values()) == 1
    assert sum(_otlp_totals(receiver, "http.server.request.duration").values()) == 1
    assert sum(_otlp_totals(receiver, "sync.db.queries").values()) == 1
    queries = _otlp_totals(receiver, "db.client.operation.duration")
    assert sum(n for attrs, n in queries.items() if ("db.operation.name", "SELECT") in attrs) == 1


async def test_an_asgi_request_open_across_configure_is_in_the_prometheus_scrape() -> None:
    registry = CollectorRegistry()
    syncperf.configure(prometheus=registry)
    await _request_across_configure(lambda: syncperf.configure(prometheus=registry))
    body = generate_latest(registry).decode()
    count = "sync_operation_duration_seconds_count"
    assert _sample(body, count, sync_operation="push", sync_outcome="success") == 1
    http = [
        line
        for line in body.splitlines()
        if line.startswith("http_server_request_duration_seconds_count{")
    ]
    assert len(http) == 1 and http[0].endswith(" 1.0"), http
    assert _sample(body, "sync_db_queries_count", sync_operation="push") == 1
