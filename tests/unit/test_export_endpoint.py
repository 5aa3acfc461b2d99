"""An OTLP endpoint the exporter cannot use is a ``ConfigError`` naming where it came from,
never quoting it: an endpoint may hold a password, which the exporters then quoted in a
warning on every failed export (gRPC sends no ``user:password@``, so it was only leaked)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import syncperf
from syncperf import ConfigError
from syncperf.export import setup_otlp
from syncperf.export._settings import exporter_kwargs
from tests.unit.test_export_setup import _metric_exporter, clean

__all__ = ["clean"]  # the fixture, used by name

SECRET = "pl4nted-S3CRET-e9"
PROTOCOLS = ["grpc", "http/protobuf"]
BAD_BOTH = [
    f"ftp://user:{SECRET}@127.0.0.1:4318",
    f"http://user:{SECRET}@127.0.0.1:99999",
    f"http://127.0.0.1:{SECRET}",
    f"http://[::1{SECRET}",
    f"http://user:{SECRET}@:4318",  # no host
]
BAD = {
    "grpc": [
        *BAD_BOTH,
        f"http://user:{SECRET}@127.0.0.1:4317",  # gRPC cannot send them
        f"https://user:{SECRET}@collector:4317",
        f"user:{SECRET}@127.0.0.1:4317",
        f"127.0.0.1:4317/{SECRET}",
    ],
    "http/protobuf": [
        *BAD_BOTH,
        f"user:{SECRET}@127.0.0.1:4318",
        "127.0.0.1:4318",
        f"unix:///tmp/{SECRET}.sock",  # a gRPC target
    ],
}
GOOD = {
    "grpc": [
        "127.0.0.1:4317",
        "localhost:4317",
        "http://[::1]:4317",
        "https://collector:4317",
        "unix:/run/otel/collector.sock",
        "unix:///run/otel/collector.sock",
        "unix-abstract:otel",
        "dns:///collector:4317",
    ],
    "http/protobuf": [
        f"http://user:{SECRET}@127.0.0.1:4318",  # sent as basic auth
        "https://[::1]:4318/base/",
        "http://collector",
    ],
}


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''} {r.exc_info!r}" for r in caplog.records
    )


def _cases() -> list[tuple[str, str]]:
    return [(protocol, endpoint) for protocol in PROTOCOLS for endpoint in BAD[protocol]]


@pytest.mark.parametrize(("protocol", "endpoint"), _cases())
@pytest.mark.parametrize(
    "option",
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "endpoint"],
)
def test_an_endpoint_the_exporter_cannot_use_is_a_config_error_not_quoting_it(
    caplog: pytest.LogCaptureFixture, protocol: str, endpoint: str, option: str
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {} if option == "endpoint" else {option: endpoint}
    explicit = endpoint if option == "endpoint" else None
    with pytest.raises(ConfigError) as info:
        exporter_kwargs(protocol, "METRICS", env, explicit, None, None)
    assert info.value.option == option
    assert info.value.__cause__ is None and info.value.__suppress_context__
    for text in (str(info.value), repr(info.value.value), _logged(caplog)):
        assert SECRET not in text and "S3CRET" not in text


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_per_signal_variable_is_named_for_its_signal(protocol: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"ftp://{SECRET}"}
    with pytest.raises(ConfigError) as info:
        exporter_kwargs(protocol, "TRACES", env, None, None, None)
    assert info.value.option == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    exporter_kwargs(protocol, "METRICS", env, None, None, None)  # not the metrics' variable


@pytest.mark.parametrize(("protocol", "endpoint"), [(p, e) for p in PROTOCOLS for e in GOOD[p]])
def test_an_endpoint_the_exporter_can_use_is_accepted(protocol: str, endpoint: str) -> None:
    kwargs = exporter_kwargs(protocol, "METRICS", {}, endpoint, None, None)
    if protocol == "grpc":
        assert kwargs["endpoint"] == endpoint
        assert kwargs["insecure"] is endpoint.startswith("http://")
    else:
        assert kwargs["endpoint"] == endpoint.rstrip("/") + "/v1/metrics"


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("endpoint", [f"http://[::1{SECRET}", f"http://u:{SECRET}@h:4317"])
def test_setup_otlp_refuses_a_bad_grpc_endpoint_before_installing_anything(
    endpoint: str,
) -> None:
    with pytest.raises(ConfigError) as info:
        setup_otlp(
            environ={"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
        )
    assert info.value.option == "OTEL_EXPORTER_OTLP_ENDPOINT"
    assert SECRET not in str(info.value)


class _Refusing(BaseHTTPRequestHandler):
    """A collector answering every export with 503, or 400 (not retried)."""

    status = 503

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(f"refused {self.headers.get('Authorization')}".encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("where", ["refused", "503", "400"])
def test_credentials_of_an_http_endpoint_are_never_logged(
    caplog: pytest.LogCaptureFixture, collector: ThreadingHTTPServer, where: str
) -> None:
    caplog.set_level(logging.DEBUG)
    _Refusing.status = 400 if where == "400" else 503
    port = 9 if where == "refused" else collector.server_address[1]
    endpoint = f"http://user:{SECRET}@127.0.0.1:{port}"
    setup_otlp(protocol="http/protobuf", endpoint=endpoint, export_interval=60)
    syncperf.instrument_sync("push")(lambda: None)()
    syncperf.force_flush(timeout=3)
    assert "user" in _metric_exporter()._endpoint  # kept: sent as basic auth
    assert SECRET not in _logged(caplog)


_TOKENS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    token=_TOKENS,
    mark=st.sampled_from(["?api_key=", "?", "#", "/otlp?token=", "/#key="]),
    option=st.sampled_from(["endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT"]),
    signal=st.sampled_from(["TRACES", "METRICS"]),
)
def test_a_base_http_endpoint_with_a_query_or_fragment_is_refused_not_quoting_it(
    token: str, mark: str, option: str, signal: str
) -> None:
    # /v1/<signal> would be added after the query (a wrong request), and the exporter quotes
    # its endpoint in a warning on every failed export.
    secret = f"{SECRET}{token}"
    endpoint = f"http://127.0.0.1:4318{mark}{secret}"
    env = {} if option == "endpoint" else {option: endpoint}
    explicit = endpoint if option == "endpoint" else None
    with pytest.raises(ConfigError) as info:
        exporter_kwargs("http/protobuf", signal, env, explicit, None, None)
    assert info.value.option == option
    assert "query" in str(info.value)
    for text in (str(info.value), repr(info.value.value)):
        assert SECRET not in text and "S3CRET" not in text


def test_a_per_signal_http_endpoint_is_used_as_given_query_included() -> None:
    # The exporter sends to the per-signal URL as it is: a query there reaches the collector.
    url = "https://collector:4318/v1/traces?tenant=a"
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url}
    assert exporter_kwargs("http/protobuf", "TRACES", env, None, None, None)["endpoint"] == url
