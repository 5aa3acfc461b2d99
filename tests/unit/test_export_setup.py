"""`syncperf.export`: setup_otlp() and setup_prometheus() (no collector needed)."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.util._once import Once
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as Counter_
from prometheus_client.multiprocess import MultiProcessCollector

import syncperf
import syncperf.export
from syncperf import ConfigError, _runtime
from syncperf._metrics import outputs
from syncperf._tracing.finisher import QueueFlusher
from syncperf.export import (
    CountingSpanExporter,
    PrometheusEndpoint,
    RenewableMetricExporter,
    prometheus_asgi_app,
    setup_otlp,
    setup_prometheus,
)
from syncperf.testing import capture
from tests._forked import PULLS, in_a_worker, pulls


def _reset_globals() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    metrics._internal._METER_PROVIDER = None  # type: ignore[attr-defined]


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No global providers, no syncperf runtime, a fast-failing unreachable collector."""
    for name in list(__import__("os").environ):
        if name.startswith(("OTEL_", "SYNCPERF_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.2")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_TIMEOUT", "200")
    _reset_globals()
    previous = _runtime.replace(None)
    shared = outputs.OUTPUTS
    monkeypatch.setattr(outputs, "OUTPUTS", outputs.Outputs())
    monkeypatch.setattr(syncperf.export, "_ENDPOINTS", [])
    try:
        yield
    finally:
        for endpoint in list(syncperf.export._ENDPOINTS):
            endpoint.close()
        for exporter in outputs.OUTPUTS.exporters.values():
            exporter.shutdown(timeout_millis=200)
        outputs.OUTPUTS.exporters.clear()
        assert shared is not outputs.OUTPUTS
        provider: Any = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider):
            provider.shutdown()
        meter_provider: Any = metrics.get_meter_provider()
        if hasattr(meter_provider, "shutdown"):
            meter_provider.shutdown(timeout_millis=500)
        rt = _runtime.replace(previous)
        if rt is not None:
            rt.shutdown()
        _reset_globals()


def _processors(provider: Any) -> list[Any]:
    """The provider's span processors but syncperf's queue flusher."""
    processors = provider._active_span_processor._span_processors
    return [p for p in processors if not isinstance(p, QueueFlusher)]


def _span_exporter(provider: Any) -> Any:
    (processor,) = _processors(provider)
    exporter = processor._batch_processor._exporter
    assert isinstance(exporter, CountingSpanExporter)
    return exporter.inner


def _metric_exporter() -> Any:
    (periodic,) = _runtime.current().exporters
    assert isinstance(periodic.exporter, RenewableMetricExporter)
    return periodic.exporter.inner


@pytest.mark.usefixtures("clean")
def test_default_protocol_is_http_protobuf_and_providers_are_installed() -> None:
    handle = setup_otlp()
    assert (handle.traces_protocol, handle.metrics_protocol) == ("http/protobuf",) * 2
    assert trace.get_tracer_provider() is handle.tracer_provider
    assert handle.owns_tracer_provider
    assert isinstance(_span_exporter(handle.tracer_provider), HttpSpanExporter)
    assert isinstance(_metric_exporter(), HttpMetricExporter)
    assert metrics.get_meter_provider() is handle.meter_provider
    assert _runtime.current().tracing.active  # sync spans go to the global provider now


@pytest.mark.usefixtures("clean")
def test_grpc_protocol_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    handle = setup_otlp()
    assert isinstance(_span_exporter(handle.tracer_provider), GrpcSpanExporter)
    assert isinstance(_metric_exporter(), GrpcMetricExporter)


@pytest.mark.usefixtures("clean")
def test_per_signal_protocol_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
    handle = setup_otlp()
    assert (handle.traces_protocol, handle.metrics_protocol) == ("grpc", "http/protobuf")


@pytest.mark.usefixtures("clean")
def test_standard_variables_reach_the_exporters_and_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "sync-api")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://127.0.0.1:9/custom")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=sync")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "5000")
    handle = setup_otlp()
    resource = handle.tracer_provider.resource.attributes
    assert resource["service.name"] == "sync-api"
    assert resource["deployment.environment.name"] == "prod"
    assert _runtime.current().resource.attributes["service.name"] == "sync-api"
    exporter = _metric_exporter()
    assert exporter._endpoint == "http://127.0.0.1:9/custom"
    assert exporter._client._headers["x-team"] == "sync"
    wrapper = _runtime.current().exporters[0].exporter
    assert wrapper._preferred_temporality[Counter] is AggregationTemporality.DELTA
    assert handle.config.export_interval == 5.0


@pytest.mark.usefixtures("clean")
def test_explicit_arguments_override_the_environment() -> None:
    setup_otlp(
        protocol="http/protobuf",
        endpoint="http://127.0.0.1:9/base/",
        headers={"a": "b"},
        timeout=1.5,
        export_timeout=5,
    )
    exporter = _metric_exporter()
    assert exporter._endpoint == "http://127.0.0.1:9/base/v1/metrics"
    assert exporter._client._headers["a"] == "b"
    assert exporter._client._timeout == 1.5


@pytest.mark.usefixtures("clean")
def test_an_existing_global_tracer_provider_is_used_not_replaced() -> None:
    mine = TracerProvider()
    trace.set_tracer_provider(mine)
    handle = setup_otlp()
    assert trace.get_tracer_provider() is mine
    assert handle.tracer_provider is mine
    assert not handle.owns_tracer_provider
    assert _processors(mine) == []  # no exporter added to the application's provider


@pytest.mark.usefixtures("clean")
def test_an_existing_global_meter_provider_is_not_replaced() -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    reader = InMemoryMetricReader()
    mine = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(mine)
    handle = setup_otlp()
    assert metrics.get_meter_provider() is mine
    assert handle.meter_provider is None
    assert handle.joined_meter_provider is mine
    assert _runtime.current().exporters == []  # syncperf's metrics go out through its readers
    with syncperf.sync_operation("pull"):
        pass
    data = reader.get_metrics_data()
    assert data is not None
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert "sync.operation.duration" in names


@pytest.mark.usefixtures("clean")
def test_exporter_none_turns_a_signal_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    handle = setup_otlp()
    assert handle.tracer_provider is None
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert handle.metrics_protocol == "http/protobuf"


@pytest.mark.usefixtures("clean")
def test_sdk_disabled_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    handle = setup_otlp()
    assert handle.tracer_provider is None
    assert handle.config.enabled is False
    assert _runtime.current().exporters == []


@pytest.mark.usefixtures("clean")
def test_an_environ_given_to_setup_otlp_is_the_only_environment_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNCPERF_MAX_ENTITIES", "7")  # the process's: not the one given
    environ = {"OTEL_SDK_DISABLED": "true", "SYNCPERF_MAX_ENTITIES": "3"}
    handle = setup_otlp(environ=environ)
    assert handle.tracer_provider is None
    assert handle.config.enabled is False
    assert handle.config.max_entities == 3


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("raw", ["1", "yes", "disabled", ""])
def test_only_true_disables_the_sdk_and_syncperf_agrees(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", raw)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    handle = setup_otlp()
    assert handle.tracer_provider is not None
    assert handle.config.enabled is True


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize(
    "var",
    [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_METRIC_EXPORT_INTERVAL",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_TRACES_EXPORTER",
    ],
)
def test_an_empty_otel_variable_is_the_same_as_unset(
    monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    monkeypatch.setenv(var, "")
    handle = setup_otlp()
    assert handle.traces_protocol == "http/protobuf"
    assert handle.config == syncperf.Config(export_timeout=0.2)  # the fixture's


@pytest.mark.usefixtures("clean")
def test_an_empty_per_signal_protocol_falls_back_to_the_general_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    assert setup_otlp().traces_protocol == "grpc"


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize(
    ("env", "kwargs", "option"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, {}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}, {}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
        ({}, {"protocol": "thrift"}, "protocol"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, {}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_METRICS_EXPORTER": "Bearer s3cr3t"}, {}, "OTEL_METRICS_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "Bearer s3cr3t"}, {}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({}, {"metric_exporters": []}, "metric_exporters"),
        ({}, {"max_entities": 0}, "max_entities"),
    ],
)
def test_configuration_mistakes_raise_config_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], kwargs: dict[str, Any], option: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        setup_otlp(**kwargs)
    assert info.value.args[0] == option or option in str(info.value)
    for value in env.values():  # a variable's value is described, never quoted
        assert value.lower() not in str(info.value).lower()


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("options", [{"max_entites": 5}, {"export_interval": -1}])
def test_a_rejected_option_leaves_providers_and_syncperf_untouched(
    options: dict[str, Any],
) -> None:
    before = syncperf.configure(max_entities=7)
    runtime = _runtime.current()
    with pytest.raises(ConfigError) as info:
        setup_otlp(**options)
    assert next(iter(options)) in str(info.value)
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert not hasattr(metrics.get_meter_provider(), "shutdown")
    assert _runtime.current() is runtime
    assert runtime.config is before


class _Failing(SpanExporter):
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def export(self, spans: Any) -> SpanExportResult:
        if self.mode == "raise":
            raise ConnectionError("collector down")
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


@pytest.mark.parametrize("mode", ["fail", "raise"])
def test_span_export_failures_are_counted_never_raised(mode: str) -> None:
    with capture() as cap:
        exporter = CountingSpanExporter(_Failing(mode))
        assert exporter.export([]) is SpanExportResult.FAILURE
        assert exporter.export([]) is SpanExportResult.FAILURE
        assert cap.total("syncperf.export.failures", {"syncperf.signal": "traces"}) == 2


def test_renewable_exporters_rebuild_from_their_factory() -> None:
    built: list[_Failing] = []

    def factory() -> _Failing:
        built.append(_Failing("fail"))
        return built[-1]

    exporter = CountingSpanExporter(factory=factory)
    exporter.renew()
    assert exporter.inner is built[1]
    with pytest.raises(ConfigError):
        CountingSpanExporter()


@pytest.mark.usefixtures("clean")
def test_prometheus_endpoint_binds_loopback_and_serves_syncperf_metrics() -> None:
    endpoint = setup_prometheus(port=0)
    try:
        assert endpoint.host == "127.0.0.1"
        assert endpoint.url == f"http://127.0.0.1:{endpoint.port}/metrics"

        @syncperf.instrument_sync("push", entity="todo")
        def push() -> None:
            syncperf.current_operation().record_conflict()

        push()
        with urllib.request.urlopen(endpoint.url, timeout=5) as response:
            text = response.read().decode()
        assert 'sync_conflicts_total{sync_entity="todo"} 1.0' in text
        assert "sync_operation_duration_seconds_bucket{" in text
    finally:
        endpoint.close()


@pytest.mark.parametrize(
    ("host", "netloc"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("localhost", "localhost"),
        ("::1", "[::1]"),
        ("::", "[::]"),
        ("fe80::1%eth0", "[fe80::1%25eth0]"),  # RFC 6874: the zone's "%" is escaped
    ],
)
def test_prometheus_endpoint_url_brackets_an_ipv6_host(host: str, netloc: str) -> None:
    endpoint = PrometheusEndpoint(host, 9464, None, syncperf.Config())
    assert endpoint.url == f"http://{netloc}:9464/metrics"


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.usefixtures("clean")
@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_prometheus_endpoint_on_ipv6_loopback_serves_at_its_url() -> None:
    endpoint = setup_prometheus(port=0, host="::1")
    _one_pull()
    assert endpoint.url == f"http://[::1]:{endpoint.port}/metrics"
    assert f"{DURATION_COUNT}" in _scrape(endpoint)


@pytest.mark.usefixtures("clean")
def test_prometheus_endpoint_rejects_a_bad_port() -> None:
    with pytest.raises(ConfigError):
        setup_prometheus(port=70000)
    with pytest.raises(ConfigError):
        setup_prometheus(prometheus=True)


@pytest.mark.usefixtures("clean")
def test_a_busy_port_raises_before_syncperf_is_reconfigured() -> None:
    before = syncperf.configure(max_entities=7)
    runtime = _runtime.current()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError) as info:
            setup_prometheus(port=port, max_entities=9)
    assert info.value.option == "port"
    assert _runtime.current() is runtime
    assert runtime.config is before
    assert runtime.prometheus_registry is None


@pytest.mark.usefixtures("clean")
@settings(max_examples=15, deadline=None)
@given(
    host=st.one_of(
        st.from_regex(r"[a-z][a-z0-9-]{0,20}\.invalid", fullmatch=True),  # never resolves
        st.builds("198.51.100.{}".format, st.integers(1, 254)),  # TEST-NET-2: not local
        st.builds("203.0.113.{}".format, st.integers(1, 254)),  # TEST-NET-3
        st.just("127.0.0.l"),
    )
)
def test_a_host_not_of_this_machine_is_blamed_not_the_port(host: str) -> None:
    with pytest.raises(ConfigError) as info:
        setup_prometheus(port=0, host=host)
    assert info.value.option == "host"
    assert info.value.value == host
    assert "an address of this machine" in str(info.value)
    assert "port" not in str(info.value)


@pytest.mark.usefixtures("clean")
def test_a_rejected_option_raises_before_the_port_is_bound() -> None:
    before = syncperf.configure(max_entities=7)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConfigError):
        setup_prometheus(port=port, max_entites=9)
    assert _runtime.current().config is before
    with socket.socket() as again:  # nothing listens on it: the server was never started
        again.bind(("127.0.0.1", port))


@pytest.mark.usefixtures("clean")
async def test_prometheus_asgi_app_serves_the_configured_registry() -> None:
    import httpx
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    syncperf.configure(prometheus=registry)
    with syncperf.sync_operation("pull", entity="note"):
        pass
    transport = httpx.ASGITransport(app=prometheus_asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/")
    assert 'sync_operation_duration_seconds_count{sync_entity="note"' in response.text


def _registry_class() -> object:
    from prometheus_client import CollectorRegistry

    return CollectorRegistry  # the class, not a registry


@pytest.mark.parametrize("registry", [{"not": "a registry"}, "REGISTRY", 0, _registry_class()])
def test_prometheus_asgi_app_refuses_what_is_not_a_registry(registry: object) -> None:
    with pytest.raises(ConfigError) as info:
        prometheus_asgi_app(registry)
    assert info.value.option == "registry"
    assert "CollectorRegistry" in info.value.accepted


async def test_prometheus_asgi_app_scrapes_off_the_event_loop() -> None:
    # a collector that waits (an outbox probe on a locked table waits up to stats_timeout)
    # stalled every request of the worker: the scrape ran on the event loop
    import httpx

    release = threading.Event()

    class Waiting:
        def describe(self) -> list[Any]:
            return []

        def collect(self) -> Iterator[Any]:
            release.wait(2)
            yield from ()

    registry = CollectorRegistry()
    registry.register(Waiting())
    Counter_("scrapes_total", "Scrapes.", registry=registry).inc()
    transport = httpx.ASGITransport(app=prometheus_asgi_app(registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        scraping = asyncio.ensure_future(client.get("/", headers={"accept": "text/plain"}))
        started = time.monotonic()
        await asyncio.sleep(0.05)
        assert time.monotonic() - started < 1.0  # the loop ran while the collector waited
        assert not scraping.done()
        release.set()
        response = await scraping
    assert response.status_code == 200
    assert response.content == generate_latest(registry)  # the same bytes as ever


_HEADER_PARTS = st.sampled_from(
    [
        b"text/plain",
        b"application/openmetrics-text",
        b";",
        b",",
        b"version=",
        b"escaping=",
        b"1.0.0",
        b"0.0.1",
        b"dots",
        b"allow-utf-8",
        b"gzip",
        b"q=0.5",
        b" ",
    ]
)
_HEADER = st.one_of(
    st.binary(max_size=60), st.lists(st.one_of(_HEADER_PARTS, st.binary(max_size=3))).map(b"".join)
)


def _asgi_get(app: Any, headers: list[tuple[bytes, bytes]], query: bytes) -> dict[str, Any]:
    """One GET of a raw ASGI app (any header bytes, as a server passes them on)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    asyncio.run(app({**scope, "query_string": query}, receive, send))
    start, body = sent
    return {"status": start["status"], "headers": dict(start["headers"]), "body": body["body"]}


@pytest.mark.usefixtures("clean")
def test_prometheus_asgi_app_answers_any_header_bytes_with_a_valid_exposition() -> None:
    # a non-UTF-8 Accept (or Accept-Encoding, or query) byte raised UnicodeDecodeError into
    # the app (a 500 and a logged traceback); "version=x" raised TypeError in prometheus_client
    import gzip

    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
    from prometheus_client.parser import text_string_to_metric_families as text

    registry = CollectorRegistry()
    Counter_("app_logins", "Logins.", registry=registry).inc()
    syncperf.configure(prometheus=registry)
    with syncperf.sync_operation("pull", entity="note"):
        pass
    app = prometheus_asgi_app()

    @settings(max_examples=150, deadline=None)
    @given(accept=_HEADER, encoding=_HEADER, query=_HEADER)
    @example(accept=b"text/plain; q=\xe9", encoding=b"gz\xffip", query=b"name[]=\xff")
    @example(accept=b"text/plain;version=x", encoding=b"", query=b"")
    @example(accept=b"application/openmetrics-text;version=a.b", encoding=b"", query=b"")
    def check(accept: bytes, encoding: bytes, query: bytes) -> None:
        headers = [(b"accept", accept), (b"accept-encoding", encoding)]
        response = _asgi_get(app, headers, query)
        assert response["status"] == 200
        body = response["body"]
        if response["headers"].get(b"Content-Encoding") == b"gzip":
            body = gzip.decompress(body)
        parse = om if response["headers"][b"Content-Type"].startswith(b"application/") else text
        names = {f.name for f in parse(body.decode())}
        if b"name" not in query.lower() and b"%" not in query:  # no name[] filter
            assert {"app_logins", "sync_operation_duration_seconds"} <= names

    check()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads (3.12+)
def test_prometheus_asgi_app_answers_in_a_worker_forked_after_it_served_a_scrape() -> None:
    # the scrape threads were built once: a worker forked (gunicorn --preload) after the
    # parent had served a scrape inherited the pool's "an idle thread exists", a thread it
    # does not have, and its first scrape never answered
    registry = CollectorRegistry()
    Counter_("scrapes_total", "Scrapes.", registry=registry).inc()
    app = prometheus_asgi_app(registry)

    def status() -> int:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(app({"type": "http", "headers": [], "query_string": b""}, receive, send))
        return int(sent[0]["status"])

    assert status() == 200
    assert in_a_worker(lambda: [status(), status()], timeout=5) == [200, 200]
    assert status() == 200  # the parent's threads still serve it


# --- composition: any order, any repeat ------------------------------------------------------


def _scrape(endpoint: PrometheusEndpoint) -> str:
    with urllib.request.urlopen(endpoint.url, timeout=5) as response:
        return str(response.read().decode())


def _one_pull() -> None:
    with syncperf.sync_operation("pull"):
        pass


DURATION_COUNT = "sync_operation_duration_seconds_count"


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("prometheus_first", [False, True], ids=["otlp-first", "prometheus-first"])
def test_otlp_and_prometheus_setups_compose_in_either_order(prometheus_first: bool) -> None:
    if prometheus_first:
        endpoint = setup_prometheus(port=0)
        setup_otlp()
    else:
        setup_otlp()
        endpoint = setup_prometheus(port=0)
    rt = _runtime.current()
    assert len(rt.exporters) == 1
    assert [registry for registry, _ in rt.prometheus] == [endpoint.registry]
    _one_pull()
    assert f"{PULLS} 1.0" in _scrape(endpoint)


@pytest.mark.usefixtures("clean")
def test_configure_before_between_and_after_the_setups_keeps_every_output() -> None:
    syncperf.configure(max_entities=7)
    endpoint = setup_prometheus(port=0)
    syncperf.configure(max_entities=8)
    setup_otlp()
    syncperf.configure(max_entities=9)
    rt = _runtime.current()
    assert rt.config.max_entities == 9
    assert len(rt.exporters) == 1
    assert [registry for registry, _ in rt.prometheus] == [endpoint.registry]
    _one_pull()
    assert f"{PULLS} 1.0" in _scrape(endpoint)


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("output", ["setup_prometheus", "configure"])
def test_in_multiprocess_mode_a_new_configuration_keeps_serving_counts_that_never_go_back(
    output: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    def worker() -> list[float]:
        served = CollectorRegistry()
        endpoint = setup_prometheus(port=0) if output == "setup_prometheus" else None
        seen = []
        for count, options in [(100, {}), (10, {"max_entities": 50}), (5, {"max_entities": 9})]:
            if endpoint is None:
                syncperf.configure(prometheus=served, **options)
            elif options:
                syncperf.configure(**options)
            for _ in range(count):
                _one_pull()
            seen.append(pulls(_scrape(endpoint) if endpoint else generate_latest(served).decode()))
        return seen

    assert in_a_worker(worker) == [100, 110, 115]
    group = CollectorRegistry()
    MultiProcessCollector(group, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert pulls(generate_latest(group).decode()) == 115


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("output", ["setup_prometheus", "configure"])
def test_a_new_configuration_keeps_serving_counts_recorded_since_the_last_scrape(
    output: str,
) -> None:
    from syncperf._metrics.prometheus import scrape

    served = CollectorRegistry()
    endpoint = setup_prometheus(port=0) if output == "setup_prometheus" else None
    if endpoint is None:
        syncperf.configure(prometheus=served)
    registry = served if endpoint is None else endpoint.registry

    def seen() -> list[float]:
        direct = scrape(registry, None, None, {})[2].decode()  # syncperf's own rendering
        return [pulls(direct), pulls(generate_latest(registry).decode())]

    _one_pull()
    assert seen() == [1, 1]
    for count, options in [(3, {"max_entities": 50}), (4, {"max_entities": 9})]:
        for _ in range(count):
            _one_pull()  # recorded in the runtime the configuration replaces, never scraped
        if endpoint is None:
            syncperf.configure(prometheus=served, **options)
        else:
            syncperf.configure(**options)
        _one_pull()
    assert seen() == [10, 10]  # every pull, in a counter that never went back


def _samples(exposition: str, name: str) -> dict[frozenset[tuple[str, str]], list[float]]:
    """Samples of ``name`` by label set as Prometheus reads them (an empty label is none)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[frozenset[tuple[str, str]], list[float]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name:
                labels = frozenset((k, v) for k, v in sample.labels.items() if v != "")
                found.setdefault(labels, []).append(sample.value)
    return found


@pytest.mark.usefixtures("clean")
def test_in_multiprocess_mode_a_series_keeps_one_sample_when_its_family_gains_a_label(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first error adds ``error.type`` to the duration family: the success series written
    before must go on as the same sample, not as a second one (which Prometheus, reading an
    empty label as none, takes for the same series and keeps only one of)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    def push(fail: bool = False) -> None:
        failed = pytest.raises(TimeoutError) if fail else nullcontext()
        with failed, syncperf.sync_operation("push", entity="todo"):
            if fail:
                raise TimeoutError

    def worker() -> str:
        served = CollectorRegistry()
        syncperf.configure(prometheus=served)
        push()
        generate_latest(served)  # this worker's files written with the first label set
        push()
        push(fail=True)
        return generate_latest(served).decode()

    def success(exposition: str) -> dict[frozenset[tuple[str, str]], list[float]]:
        return {
            labels: values
            for labels, values in _samples(exposition, DURATION_COUNT).items()
            if ("sync_outcome", "success") in labels
        }

    key = frozenset(
        {("sync_operation", "push"), ("sync_entity", "todo"), ("sync_outcome", "success")}
    )
    assert success(str(in_a_worker(worker))) == {key: [2.0]}
    group = CollectorRegistry()
    MultiProcessCollector(group, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert success(generate_latest(group).decode()) == {key: [2.0]}


@pytest.mark.usefixtures("clean")
def test_in_multiprocess_mode_a_gauge_no_longer_observed_is_dropped_not_frozen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/outbox.md: a failing probe drops both gauges for that collection; in multiprocess
    mode the worker's file must not keep serving the last good values."""
    from syncperf.outbox import Outbox

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    def worker() -> list[list[str]]:
        served = CollectorRegistry()
        syncperf.configure(prometheus=served)
        failing = [False]

        def stats() -> tuple[int, float]:
            if failing[0]:
                raise ConnectionError("database down")
            return (5, 42.0)

        outbox = Outbox("orders", stats=stats)
        seen = []
        for fail in (False, True, True, False):
            failing[0] = fail
            lines = generate_latest(served).decode().splitlines()
            seen.append(sorted(x for x in lines if x.startswith(("outbox_depth", "outbox_oldest"))))
        del outbox
        return seen

    good = [
        'outbox_depth{outbox_name="orders"} 5.0',
        'outbox_oldest_age_seconds{outbox_name="orders"} 42.0',
    ]
    assert in_a_worker(worker) == [good, [], [], good]


@pytest.mark.usefixtures("clean")
def test_a_setup_without_options_keeps_the_configured_settings() -> None:
    syncperf.configure(max_entities=7)
    setup_prometheus(port=0)
    setup_otlp()
    assert _runtime.current().config.max_entities == 7


@pytest.mark.usefixtures("clean")
def test_repeated_setups_keep_one_exporter_and_one_collector() -> None:
    first = setup_otlp()
    endpoint = setup_prometheus(port=0)
    second = setup_otlp()
    assert setup_prometheus(port=0) is endpoint
    assert setup_prometheus(port=endpoint.port) is endpoint
    rt = _runtime.current()
    assert len(rt.exporters) == 1
    assert rt.exporters[0].exporter is second._exporter is not first._exporter
    assert len(rt.prometheus) == 1
    assert first.tracer_provider is second.tracer_provider  # the global one, reused
    _one_pull()
    body = _scrape(endpoint)
    assert body.count("# TYPE sync_operation_duration_seconds histogram") == 1
    assert f"{PULLS} 1.0" in body


@pytest.mark.usefixtures("clean")
def test_flushes_keep_no_entry_for_a_provider_that_was_shut_down_or_is_gone() -> None:
    # every setup_otlp() that builds a meter provider adds its flush to FLUSHES for
    # force_flush(); a provider shut down, or collected, drops out: the list stays bounded
    gc.collect()  # earlier tests' providers may still drop out (when a runtime that read
    before = len(outputs.FLUSHES)  # them shuts down): the count can only go down by them
    for _ in range(30):
        handle = setup_otlp()
        entry = outputs._entries[handle.meter_provider]
        assert entry in outputs.FLUSHES
        handle.shutdown()
        assert entry not in outputs.FLUSHES  # shut down: flushing it has nothing to do
        assert len(outputs.FLUSHES) <= before
        _reset_globals()
    alive = setup_otlp()
    _reset_globals()
    for _ in range(30):
        setup_otlp()  # never shut down: dropped once nothing holds it
        _reset_globals()
    gc.collect()
    assert len(outputs.FLUSHES) <= before + 2  # the one ``alive`` holds, the latest
    assert alive.meter_provider is not None  # (held to here)


@pytest.mark.usefixtures("clean")
def test_closing_an_endpoint_and_shutting_otlp_down_remove_only_their_own_output() -> None:
    handle = setup_otlp()
    endpoint = setup_prometheus(port=0)
    endpoint.close()
    rt = _runtime.current()
    assert rt.prometheus == [] and len(rt.exporters) == 1
    endpoint = setup_prometheus(port=0)
    handle.shutdown()
    assert rt.exporters == [] and len(rt.prometheus) == 1


@pytest.mark.usefixtures("clean")
def test_capture_leaves_the_applications_outputs_alone() -> None:
    setup_otlp()
    endpoint = setup_prometheus(port=0)
    outer = _runtime.current()
    with capture() as cap:
        _one_pull()
        assert cap.total("sync.operation.duration") == 1
        assert _runtime.current().exporters == [] and _runtime.current().prometheus == []
    assert _runtime.current() is outer
    _one_pull()
    assert f"{PULLS} 1.0" in _scrape(endpoint)
    assert outer.exporters[0].exporter.inner._shutdown is False  # not shut by the capture


@pytest.mark.usefixtures("clean")
def test_under_the_launcher_other_exporter_names_are_the_launchers_and_setup_otlp_joins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # docs/export.md, zero-code: OTEL_METRICS_EXPORTER=otlp,prometheus, and a setup_otlp()
    # left in the code joins the providers the launcher built (it raised ConfigError).
    from opentelemetry.sdk.metrics import MeterProvider

    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp,prometheus")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,console")
    tracer_provider = TracerProvider()
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    handle = setup_otlp()
    assert handle.tracer_provider is tracer_provider
    assert not handle.owns_tracer_provider
    assert handle.joined_meter_provider is meter_provider
    assert _processors(tracer_provider) == []


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("exporters", ["console", "prometheus", "console,prometheus"])
def test_setup_otlp_joins_the_applications_providers_whatever_exporters_they_name(
    monkeypatch: pytest.MonkeyPatch, exporters: str
) -> None:
    # docs/export.md: other exporter names are accepted when a global SDK provider exists,
    # and setup_otlp() joins it (with no "otlp" among them, syncperf's metrics were dropped).
    from opentelemetry.sdk.metrics import MeterProvider

    monkeypatch.setenv("OTEL_METRICS_EXPORTER", exporters)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", exporters)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")  # not read: nothing OTLP
    reader = InMemoryMetricReader()
    tracer_provider = TracerProvider()
    meter_provider = MeterProvider(metric_readers=[reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    handle = setup_otlp()
    assert handle.joined_meter_provider is meter_provider
    assert handle.tracer_provider is tracer_provider and not handle.owns_tracer_provider
    assert (handle.traces_protocol, handle.metrics_protocol) == (None, None)
    assert _runtime.current().exporters == [] and _processors(tracer_provider) == []
    _one_pull()
    data = reader.get_metrics_data()
    scopes = {sm.scope.name for rm in data.resource_metrics for sm in rm.scope_metrics}
    assert "syncperf" in scopes


@pytest.mark.usefixtures("clean")
def test_with_exporters_none_setup_otlp_does_not_join_the_applications_meter_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    trace.set_tracer_provider(TracerProvider())
    handle = setup_otlp()
    assert handle.joined_meter_provider is None and handle.tracer_provider is None
    _one_pull()
    data = reader.get_metrics_data()
    assert data is None or not [
        sm for rm in data.resource_metrics for sm in rm.scope_metrics if sm.scope.name == "syncperf"
    ]


@pytest.mark.usefixtures("clean")
def test_the_meter_provider_setup_otlp_built_is_no_provider_to_join_for_other_exporters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup_otlp(traces=False)  # its own global meter provider: it exports OTLP only
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    with pytest.raises(syncperf.ConfigError) as raised:
        setup_otlp(traces=False)
    assert raised.value.option == "OTEL_METRICS_EXPORTER"


@pytest.mark.usefixtures("clean")
def test_without_providers_to_join_an_exporter_setup_otlp_cannot_install_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp,prometheus")
    with pytest.raises(syncperf.ConfigError) as raised:
        setup_otlp()
    assert raised.value.option == "OTEL_METRICS_EXPORTER"


class _Stuck(SpanExporter):
    """A span exporter that waits for ``release`` (a collector that accepts, never answers)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Any) -> SpanExportResult:
        self.release.wait(30)
        return SpanExportResult.SUCCESS


@pytest.mark.usefixtures("clean")
def test_otlp_shutdown_waits_at_most_the_shutdown_timeout_for_a_stalled_span_processor() -> None:
    stuck = _Stuck()
    provider = TracerProvider(shutdown_on_exit=False)  # the application's, with its own export
    provider.add_span_processor(SimpleSpanProcessor(stuck))
    trace.set_tracer_provider(provider)
    handle = setup_otlp(metrics=False, shutdown_timeout=0.3)
    try:
        for _ in range(3):
            _one_pull()
        started = time.monotonic()
        handle.shutdown()
        assert time.monotonic() - started < 1.5  # 30 s per span when it ended them itself
    finally:
        stuck.release.set()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.usefixtures("clean")
def test_otlp_shutdown_waits_at_most_the_shutdown_timeout_for_a_silent_collector(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """docs/export.md: only shutdown waits, never longer than shutdown_timeout; the last
    metric export, the exporters' and the providers' shutdowns included."""
    from tests.integration.otlp_receiver import SilentListener

    listener = SilentListener()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_TIMEOUT", "2000")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    try:
        handle = setup_otlp(protocol=protocol, endpoint=listener.endpoint, shutdown_timeout=0.5)
        for _ in range(3):
            _one_pull()
        started = time.monotonic()
        handle.shutdown()
        assert time.monotonic() - started < 1.5  # 4 s and more when each step took its own
    finally:
        listener.close()
        for thread in threading.enumerate():  # what went on in the background: not into
            if thread.name.endswith("-shutdown"):  # the next tests (the retries' jitter)
                thread.join(15)


@pytest.mark.usefixtures("clean")
def test_metrics_default_to_the_resource_of_the_applications_tracer_provider() -> None:
    from opentelemetry.sdk.resources import Resource

    mine = TracerProvider(resource=Resource.create({"service.name": "sync-api"}))
    trace.set_tracer_provider(mine)
    handle = setup_otlp()
    assert handle.tracer_provider is mine
    assert _runtime.current().resource.attributes["service.name"] == "sync-api"
    (periodic,) = _runtime.current().exporters
    assert periodic.reader._resource.attributes["service.name"] == "sync-api"
    provider_resource = handle.meter_provider._sdk_config.resource
    assert provider_resource.attributes["service.name"] == "sync-api"


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize(
    "var",
    [
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    ],
)
def test_an_empty_exporter_variable_is_unset_for_either_protocol(
    monkeypatch: pytest.MonkeyPatch, protocol: str, var: str
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TIMEOUT")
    monkeypatch.delenv("OTEL_METRIC_EXPORT_TIMEOUT")
    monkeypatch.setenv(var, "")
    handle = setup_otlp(protocol=protocol, shutdown_timeout=0.5)
    assert handle.metrics_protocol == protocol
    exporter = _metric_exporter()
    timeout = exporter._timeout if protocol == "grpc" else exporter._client._timeout
    assert timeout == 10.0  # the exporters' default


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize(
    ("var", "raw", "accepted"),
    [
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "seconds"),
        ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "-1", "seconds"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "nan", "seconds"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", "gzip"),
        ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "zstd\nx", "gzip"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "Bearer s3cr3t", "seconds"),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "Bearer s3cr3t", "gzip"),
    ],
)
def test_an_invalid_exporter_variable_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, protocol: str, var: str, raw: str, accepted: str
) -> None:
    monkeypatch.setenv(var, raw)
    with pytest.raises(ConfigError) as info:
        setup_otlp(protocol=protocol)
    message = str(info.value)
    assert info.value.option == var
    assert accepted in message
    assert raw not in message and "not quoted" in message  # a token may be misplaced there
    assert len(message.splitlines()) == 1
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # nothing set


@pytest.mark.usefixtures("clean")
def test_deflate_is_accepted_over_http_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "Deflate")
    setup_otlp(protocol="http/protobuf")
    assert _metric_exporter()._compression.value == Compression.Deflate.value
    with pytest.raises(ConfigError, match="gzip or none"):
        setup_otlp(protocol="grpc")


@pytest.mark.usefixtures("clean")
def test_headers_in_code_merge_over_the_variables_lowercased_for_both_protocols(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=env,x-team=sync")
    sent = {}
    for protocol in ("grpc", "http/protobuf"):
        setup_otlp(protocol=protocol, headers={"Authorization": "Bearer t", "X-API-Key": "code"})
        exporter = _metric_exporter()
        headers = dict(exporter._headers) if protocol == "grpc" else exporter._client._headers
        sent[protocol] = {
            k: v for k, v in headers.items() if k in ("authorization", "x-api-key", "x-team")
        }
    expected = {"authorization": "Bearer t", "x-api-key": "code", "x-team": "sync"}
    assert sent == {"grpc": expected, "http/protobuf": expected}


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_an_environ_given_to_setup_otlp_names_endpoint_headers_timeout_resource_temporality(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    # The process's variables, all different from the environment given: none may be used.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc" if protocol != "grpc" else "")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-leak=process")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "false")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "process")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "leak.attr=1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative")
    environ = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:7",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-team=given",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
        "OTEL_METRIC_EXPORT_TIMEOUT": "5000",
        "OTEL_SERVICE_NAME": "from-environ",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=given",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
    }
    handle = setup_otlp(environ=environ, shutdown_timeout=0.5)
    assert handle.metrics_protocol == protocol
    for resource in (handle.tracer_provider.resource, _runtime.current().resource):
        assert resource.attributes["service.name"] == "from-environ"
        assert resource.attributes["deployment.environment.name"] == "given"
        assert "leak.attr" not in resource.attributes
    exporter = _metric_exporter()
    if protocol == "grpc":
        assert (exporter._endpoint, exporter._insecure, exporter._timeout) == (
            "127.0.0.1:7",
            True,
            3,
        )
        headers = dict(exporter._headers)
    else:
        assert exporter._endpoint == "http://127.0.0.1:7/v1/metrics"
        assert exporter._client._timeout == 3
        headers = exporter._client._headers
    assert headers["x-team"] == "given"
    assert "x-leak" not in headers
    wrapper = _runtime.current().exporters[0].exporter
    assert wrapper._preferred_temporality[Counter] is AggregationTemporality.DELTA


@pytest.mark.usefixtures("clean")
def test_the_metric_exporters_request_timeout_is_bounded_by_the_export_timeout() -> None:
    handle = setup_otlp(protocol="grpc", timeout=5, export_timeout=1.5)
    assert _metric_exporter()._timeout == 1.5
    assert _span_exporter(handle.tracer_provider)._timeout == 5  # spans: not metrics' bound


@pytest.mark.usefixtures("clean")
def test_the_default_histogram_aggregation_variable_leaves_syncperfs_buckets_explicit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.export import Histogram as HistogramData
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

    variable = "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION"
    monkeypatch.setenv(variable, "base2_exponential_bucket_histogram")
    handle = setup_otlp()
    (reader,) = handle.meter_provider._metric_readers  # for other instrumentation
    exponential = reader._exporter._preferred_aggregation[Histogram]
    assert isinstance(exponential, ExponentialBucketHistogramAggregation)
    with syncperf.sync_operation("push", entity="todo"):
        pass
    (periodic,) = _runtime.current().exporters
    data = periodic.reader.collect()
    (duration,) = [
        m
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "sync.operation.duration"
    ]
    assert isinstance(duration.data, HistogramData)  # explicit buckets, as documented
    assert 0.2 in duration.data.data_points[0].explicit_bounds


@pytest.mark.usefixtures("clean")
def test_an_application_metric_named_like_a_syncperf_one_is_refused() -> None:
    # both were exposed, under one name, and Prometheus dropped one of them
    served = CollectorRegistry()
    Counter_("sync_conflicts", "My own conflicts.", ["sync_entity"], registry=served)
    before = dict(served._collector_to_names)
    with pytest.raises(ConfigError) as raised:
        syncperf.configure(prometheus=served)
    assert "sync_conflicts" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        setup_prometheus(port=0, registry=served)
    assert "sync_conflicts" in str(raised.value)
    assert served._collector_to_names == before  # nothing of syncperf's left in it

    other = CollectorRegistry()
    syncperf.configure(prometheus=other)
    with pytest.raises(ValueError, match="sync_conflicts"):  # registered after syncperf
        Counter_("sync_conflicts", "My own conflicts.", registry=other)


@pytest.mark.usefixtures("clean")
def test_a_new_configuration_serving_the_same_registry_keeps_name_filters_working() -> None:
    from syncperf._metrics.prometheus import scrape

    served = CollectorRegistry()
    Counter_("app_logins", "Logins.", registry=served).inc()
    syncperf.configure(prometheus=served)
    syncperf.configure(prometheus=served, max_entities=50)  # syncperf's own never clash
    with syncperf.sync_operation("push", entity="todo") as operation:
        operation.record_conflict()
    names = {"name[]": ["sync_conflicts_total", "app_logins_total"]}
    body = scrape(served, None, None, names)[2].decode()
    samples = [line for line in body.splitlines() if line[:1] != "#"]
    assert len(samples) == 2
    assert 'sync_conflicts_total{sync_entity="todo"} 1.0' in samples


def test_a_provider_collected_at_interpreter_exit_drops_its_flush_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At exit the interpreter clears module globals before it collects what is left: the
    entry's weak callback must need none of them (it printed 'Exception ignored')."""
    provider = MeterProvider(shutdown_on_exit=False)
    outputs.flush_also(provider)
    entry = outputs._entries[provider]
    flushes = outputs.FLUSHES
    for name in ("FLUSHES", "_drop", "contextlib"):
        monkeypatch.setattr(outputs, name, None)
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    del provider
    gc.collect()
    assert unraisable == []
    assert entry not in flushes
