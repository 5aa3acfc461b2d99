"""``configure()`` while the collector is down: the old configuration's last export fails,
and its cumulative totals used to be dropped with it (100 exported, 50 more during the
outage, 20 after: the collector ended with 120, and nothing said so). The new reader of the
same exporter now carries them, under the old start time: one cumulative stream."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

import syncperf
from syncperf.export import setup_otlp
from tests.unit.test_export_setup import clean

__all__ = ["clean"]  # the fixture, used by name


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector keeping, per stream (start time), the last count of the push
    durations it accepted; it answers ``code``."""

    code = 200
    accepted: ClassVar[dict[int, int]] = {}

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.code == 200 and self.path.endswith("/v1/metrics"):
            request = metrics_service_pb2.ExportMetricsServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        if metric.name == "sync.operation.duration":
                            for point in metric.histogram.data_points:
                                self.accepted[point.start_time_unix_nano] = point.count
        self.send_response(self.code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    _Collector.code = 200
    _Collector.accepted = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _push(n: int) -> None:
    @syncperf.instrument_sync("push", entity="todo")
    def push() -> None:
        pass

    for _ in range(n):
        push()


SETTINGS: dict[str, Any] = {"export_interval": 60, "export_timeout": 1, "shutdown_timeout": 3}


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("outage", [True, False])
def test_configure_during_an_outage_loses_no_count(collector: str, outage: bool) -> None:
    setup_otlp(protocol="http/protobuf", endpoint=collector, traces=False, **SETTINGS)
    _push(100)
    assert syncperf.force_flush()
    assert list(_Collector.accepted.values()) == [100]
    if outage:
        _Collector.code = 503
    _push(50)
    assert syncperf.force_flush() is not outage
    syncperf.configure(**SETTINGS)  # a reload, say: the old configuration exports last
    _push(20)
    _Collector.code = 200
    assert syncperf.force_flush()
    assert sum(_Collector.accepted.values()) == 170
    if outage:  # one cumulative stream, going on from the old start time
        assert list(_Collector.accepted.values()) == [170]
