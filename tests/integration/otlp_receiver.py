"""A real OTLP/gRPC receiver for tests: the official collector services on loopback.

Implements ``TraceService``, ``MetricsService`` and ``LogsService`` from the generated
``opentelemetry-proto`` stubs with a ``grpc`` server, keeps every request it receives, and
can be told to hang (accept the RPC, never answer until released). ``SilentListener``
accepts TCP connections and never speaks at all (a collector wedged below gRPC).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


class OtlpReceiver:
    """An OTLP/gRPC collector endpoint on 127.0.0.1 that records what it receives."""

    def __init__(self, port: int = 0) -> None:
        self.trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.log_requests: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        """Each request's gRPC metadata (its headers), in arrival order."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._release = threading.Event()
        self._release.set()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._record(receiver.trace_requests, request, context)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._record(receiver.metric_requests, request, context)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._record(receiver.log_requests, request, context)
                return logs_service_pb2.ExportLogsServiceResponse()

        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self._server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (plaintext gRPC)."""
        return f"http://127.0.0.1:{self.port}"

    def environment(self, **variables: str) -> dict[str, str]:
        """The environment of a child process exporting here over plaintext gRPC: this
        process's, less its ``OTEL_*`` and ``SYNCPERF_*`` variables, this checkout's ``src``
        on ``PYTHONPATH``, then ``variables``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SYNCPERF_"))}
        env.update(
            {
                "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
                **variables,
            }
        )
        return env

    def start(self) -> OtlpReceiver:
        """Start serving."""
        self._server.start()
        return self

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving now (in-flight RPCs are cancelled)."""
        self._release.set()
        self._server.stop(grace=None).wait(5)

    def hang(self) -> None:
        """From now on, accept RPCs but do not answer them until ``answer()``."""
        self._release.clear()

    def answer(self) -> None:
        """Answer again (and release RPCs that are hanging)."""
        self._release.set()

    def _record(self, into: list[Any], request: Any, context: Any) -> None:
        self._release.wait(60)
        with self._changed:
            into.append(request)
            self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` (evaluated under the receiver's lock) is true."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    # --- decoded views ------------------------------------------------------------------

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """Every received span with its resource attributes."""
        with self._lock:
            return [
                (attributes(rs.resource.attributes), span)
                for request in self.trace_requests
                for rs in request.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            ]

    def metrics(self) -> Iterator[tuple[dict[str, Any], str, Any]]:
        """Every received metric as (resource attributes, scope name, Metric)."""
        with self._lock:
            requests = list(self.metric_requests)
        for request in requests:
            for rm in request.resource_metrics:
                resource = attributes(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        yield resource, sm.scope.name, metric

    def latest(self, name: str) -> Any:
        """The most recently received metric called ``name``, or None."""
        found = None
        for _, _, metric in self.metrics():
            if metric.name == name:
                found = metric
        return found


def value(any_value: AnyValue) -> Any:
    """A Python value of an OTLP ``AnyValue``."""
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    """OTLP ``KeyValue`` list as a dict."""
    return {kv.key: value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


class SilentListener:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte (a hung collector)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self._held.append(conn)

    def close(self) -> None:
        """Stop accepting and drop held connections."""
        self._stop.set()
        self._thread.join(2)
        for conn in self._held:
            conn.close()
        self._sock.close()
