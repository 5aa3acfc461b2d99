"""``setup_otlp`` reads the exporters' variables itself: a secret in a malformed header
entry is never logged, and the process's variables cannot break an explicit ``environ=``."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any

import pytest

from syncperf import ConfigError, _runtime
from syncperf.export import setup_otlp
from syncperf.testing import capture
from tests.unit.test_export_setup import _metric_exporter, clean

__all__ = ["clean"]  # the fixture, used by name

SECRET = "s3cr3t-TOKEN-123"
PROTOCOLS = ["grpc", "http/protobuf"]


def _sent_headers(protocol: str) -> dict[str, str]:
    exporter = _metric_exporter()
    return dict(exporter._headers) if protocol == "grpc" else dict(exporter._client._headers)


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record of every logger, formatted, with its arguments and traceback."""
    return "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''} {r.exc_info!r}" for r in caplog.records
    )


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("given", [False, True])
@pytest.mark.parametrize(
    "entry",
    [
        f"Authorization: Bearer {SECRET}",  # the HTTP form, not name=value
        f"Authorization=Bearer {SECRET}\u00e9",  # not URL-encoded, not ASCII
        f"x-token={SECRET}%0D%0Ax-injected=1",  # a line break once decoded
        f"=Bearer {SECRET}",  # no name
    ],
)
def test_a_malformed_header_entry_is_warned_about_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    protocol: str,
    given: bool,
    entry: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    value = f"x-team=sync,{entry}"
    environ: dict[str, str] | None = None
    if given:
        environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
        environ["OTEL_EXPORTER_OTLP_HEADERS"] = value
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", value)  # the process's too
    else:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", value)
    setup_otlp(protocol=protocol, environ=environ, shutdown_timeout=0.5)
    headers = _sent_headers(protocol)
    assert headers["x-team"] == "sync"
    assert SECRET not in repr(headers)
    assert SECRET not in _logged(caplog)
    warned = [r.getMessage() for r in caplog.records if r.name == "syncperf"]
    assert any("OTEL_EXPORTER_OTLP_HEADERS" in m and "not quoted" in m for m in warned)


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {SECRET}\r\nx-injected: 1"},
        {f"Bearer {SECRET}": "x"},
        {"Authorization": SECRET.encode()},
        {"": SECRET},
        {"tenant": f"M\u00fcnchen {SECRET}"},  # not ASCII: neither exporter sent anything
    ],
)
def test_a_malformed_header_given_in_code_is_a_config_error_not_quoting_it(
    caplog: pytest.LogCaptureFixture, protocol: str, headers: dict[str, Any]
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as info:
        setup_otlp(protocol=protocol, headers=headers)
    assert info.value.option == "headers"
    assert SECRET not in str(info.value) and SECRET not in repr(info.value.value)
    assert SECRET not in _logged(caplog)


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("raw", ["10s", "", " "])
def test_the_process_timeout_variables_do_not_break_an_environ_given(
    monkeypatch: pytest.MonkeyPatch, protocol: str, raw: str
) -> None:
    for signal in ("METRICS", "TRACES"):
        monkeypatch.setenv(f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT", raw)
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
    }
    handle = setup_otlp(protocol=protocol, environ=environ, shutdown_timeout=0.5)
    assert handle.metrics_protocol == protocol
    exporter = _metric_exporter()
    assert (exporter._timeout if protocol == "grpc" else exporter._client._timeout) == 3
    for signal in ("METRICS", "TRACES"):  # the process's environment is left as it was
        assert os.environ[f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT"] == raw


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_bad_process_timeout_in_use_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s")
    with pytest.raises(ConfigError) as info:
        setup_otlp(protocol=protocol, shutdown_timeout=0.5)
    assert info.value.option == "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
    # Given a timeout, the variable is not in use: it breaks nothing.
    handle = setup_otlp(protocol=protocol, timeout=2, shutdown_timeout=0.5)
    assert handle.metrics_protocol == protocol


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("value", [f"Bearer {SECRET}", f"Bearer%20{SECRET}", SECRET])
def test_an_environ_given_never_sends_the_process_header_variables(
    monkeypatch: pytest.MonkeyPatch, protocol: str, value: str
) -> None:
    # "Bearer <token>" unencoded: the SDK takes it (liberally), and a strict parse of the
    # process's variable missed it, so it went to the other environment's endpoint
    for name in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS"):
        monkeypatch.setenv(name, f"authorization={value},x-tenant=process")
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    setup_otlp(protocol=protocol, environ=environ, traces=False, shutdown_timeout=0.5)
    sent = _sent_headers(protocol)
    assert "authorization" not in sent and "x-tenant" not in sent
    assert SECRET not in repr(sent)


_PACKAGES = {  # what each protocol's exporters import: hidden, it is not installed
    "grpc": ("opentelemetry.exporter.otlp.proto.grpc", "grpc"),
    "http/protobuf": ("opentelemetry.exporter.otlp.proto.http",),
}


def _uninstalled(monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    """Import the protocol's exporter packages as if they were not installed (a module set
    to None in ``sys.modules`` raises ``ModuleNotFoundError`` when imported)."""
    hidden = _PACKAGES[protocol]
    for name in [*sys.modules, *hidden]:
        if any(name == h or name.startswith(h + ".") for h in hidden):
            monkeypatch.setitem(sys.modules, name, None)


def _names_the_package(error: ConfigError, protocol: str) -> None:
    assert error.option == "protocol" and error.value == protocol
    package = "grpc" if protocol == "grpc" else "http"
    assert f"pip install opentelemetry-exporter-otlp-proto-{package}" in error.accepted
    assert "syncperf[otlp]" in error.accepted


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("inside_capture", [False, True])
@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_METRICS_EXPORTER": "none"},
    ],
    ids=["defaults", "compression", "metrics-only", "traces-only"],
)
def test_a_protocol_whose_exporter_is_not_installed_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, protocol: str, inside_capture: bool, env: dict[str, str]
) -> None:
    _uninstalled(monkeypatch, protocol)
    environ = {"OTEL_EXPORTER_OTLP_PROTOCOL": protocol, **env}
    inside = capture() if inside_capture else contextlib.nullcontext()
    with inside, pytest.raises(ConfigError) as info:
        setup_otlp(environ=environ)
    _names_the_package(info.value, protocol)
    assert _runtime.installed is None  # nothing changed


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_only_the_protocol_in_use_needs_its_exporter(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    _uninstalled(monkeypatch, protocol)
    other = next(p for p in PROTOCOLS if p != protocol)
    environ = {"OTEL_EXPORTER_OTLP_PROTOCOL": other}
    for signal in ("TRACES", "METRICS"):  # one signal's variable names the missing one
        with pytest.raises(ConfigError) as info:
            setup_otlp(environ={**environ, f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL": protocol})
        _names_the_package(info.value, protocol)
    off = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}
    for quiet in (off, {"OTEL_SDK_DISABLED": "true"}):  # nothing to export: nothing needed
        handle = setup_otlp(environ={"OTEL_EXPORTER_OTLP_PROTOCOL": protocol, **quiet})
        handle.shutdown()
    handle = setup_otlp(environ=environ, shutdown_timeout=0.5)
    assert (handle.traces_protocol, handle.metrics_protocol) == (other, other)


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_joining_the_application_providers_needs_no_exporter_package(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    _uninstalled(monkeypatch, protocol)
    trace.set_tracer_provider(TracerProvider())
    metrics.set_meter_provider(MeterProvider())
    handle = setup_otlp(environ={"OTEL_EXPORTER_OTLP_PROTOCOL": protocol})
    assert handle.joined_meter_provider is metrics.get_meter_provider()
