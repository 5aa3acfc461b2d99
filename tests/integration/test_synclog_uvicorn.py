"""Sync logs behind uvicorn, exported over OTLP next to the spans they belong to.

A real tracer provider and a real logger provider (OpenTelemetry's logging handler on
``syncperf.sync``) export to a real OTLP/gRPC receiver; the trace and span ids of every log
record received, in the OTLP fields and in the record's own attributes (W3C and Datadog
forms), are those of the span received for the same request.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler

import syncperf
from syncperf.asgi import SyncPerfMiddleware
from syncperf.testing import capture
from tests.integration.conftest import free_port
from tests.integration.otlp_receiver import OtlpReceiver, attributes

pytestmark = pytest.mark.integration

SECRET = "sk_live_logged_Zq81"


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/sync/{entity}/push")
    async def push(entity: str, body: dict[str, Any]) -> dict[str, Any]:
        op = syncperf.current_operation()
        op.set_batch_size(len(body["changes"]))
        if body.get("conflict"):
            op.record_conflict(resolution="server_wins")
        if body.get("fail"):
            raise RuntimeError(f"could not apply {SECRET}")
        return {"ok": True}

    app.add_middleware(SyncPerfMiddleware, routes={"/sync/{entity}/push": "push"})
    return app


def _serve(app: FastAPI) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="critical", loop="asyncio", http="h11"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("sampler", [ALWAYS_ON, ALWAYS_OFF], ids=["sampled", "sampled_out"])
def test_log_records_carry_the_ids_of_the_exported_spans(
    receiver: OtlpReceiver, sampler: Sampler
) -> None:
    tracer_provider = TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True))
    )
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=receiver.endpoint, insecure=True))
    )
    handler = LoggingHandler(logger_provider=logger_provider)
    logger = logging.getLogger("syncperf.sync")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with capture(
            strict=False, tracer_provider=tracer_provider, sync_log_levels={"success": "INFO"}
        ):
            server, thread, base = _serve(make_app())
            try:
                with httpx.Client(base_url=base, timeout=30) as client:
                    bodies: list[dict[str, Any]] = [
                        {"changes": [1, 2]},
                        {"changes": [1], "conflict": True},
                        {"changes": [1, 2, 3], "fail": True},
                    ]
                    statuses = [client.post("/sync/todo/push", json=b).status_code for b in bodies]
            finally:
                server.should_exit = True
                thread.join(10)
            syncperf.force_flush()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger_provider.shutdown()
        tracer_provider.shutdown()
    assert statuses == [200, 200, 500]
    spans = {span.span_id: span for _, span in receiver.spans()}
    logs = [
        record
        for request in receiver.log_requests
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
    ]
    outcomes = [attributes(record.attributes)["sync.outcome"] for record in logs]
    assert outcomes == ["success", "conflict", "error"]
    traced = [record for record in logs if record.span_id]
    # sampled out: only the error and the conflict are traced (rescued), and only they carry ids
    assert len(traced) == (3 if sampler is ALWAYS_ON else 2)
    assert len(spans) == len(traced)
    for record in traced:
        span = spans[record.span_id]
        assert record.trace_id == span.trace_id
        fields = attributes(record.attributes)
        assert fields["trace_id"] == span.trace_id.hex()
        assert fields["span_id"] == span.span_id.hex()
        assert fields["dd.trace_id"] == str(int.from_bytes(span.trace_id[8:], "big"))
        assert fields["dd.span_id"] == str(int.from_bytes(span.span_id, "big"))
        assert fields["sync.outcome"] == {
            kv.key: kv.value.string_value for kv in span.attributes
        }.get("sync.outcome")
    error = attributes(logs[2].attributes)
    assert error["error.type"] == "RuntimeError"
    assert error["sync.batch.size"] == 3
    assert all(
        SECRET.encode() not in request.SerializeToString() for request in receiver.log_requests
    )
