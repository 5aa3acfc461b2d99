"""The set-ups of ``syncperf.export`` inside ``testing.capture()``: options checked, the
config noted on the capture, nothing global installed (docs/export.md, docs/testing.md)."""

from __future__ import annotations

import socket

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import syncperf.export
from syncperf import ConfigError
from syncperf._metrics import outputs
from syncperf.export import prometheus_asgi_app, setup_otlp, setup_prometheus
from syncperf.testing import capture
from tests.unit.test_export_setup import clean

__all__ = ["clean"]  # the fixture: no global providers, no runtime, fresh outputs

pytestmark = pytest.mark.usefixtures("clean")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- setup_otlp -----------------------------------------------------------------------------


def test_setup_otlp_inside_a_capture_sets_no_global_tracer_provider() -> None:
    with capture():
        handle = setup_otlp()
        assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert handle.tracer_provider is None


def test_setup_otlp_inside_a_capture_sets_no_global_meter_provider() -> None:
    with capture():
        handle = setup_otlp()
    assert not isinstance(metrics.get_meter_provider(), MeterProvider)
    assert handle.meter_provider is None


def test_setup_otlp_inside_a_capture_adds_no_exporter_to_the_applications_outputs() -> None:
    with capture():
        setup_otlp()
        assert outputs.OUTPUTS.exporters == {}
    assert outputs.OUTPUTS.exporters == {}
    assert syncperf.export._runtime.current().exporters == []


def test_setup_otlp_inside_a_capture_does_not_join_the_applications_meter_provider() -> None:
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    with capture():
        handle = setup_otlp()
    assert handle.joined_meter_provider is None
    assert getattr(reader._collect, "__syncperf_bridge__", None) is None  # not bridged


def test_setup_otlp_with_options_inside_a_capture_notes_its_config() -> None:
    with capture() as cap:
        handle = setup_otlp(max_entities=5)
        assert cap.configured == [handle.config]
        assert handle.config.max_entities == 5
        assert syncperf.export._runtime.current() is cap.runtime


def test_setup_otlp_inside_a_capture_still_rejects_bad_options() -> None:
    with capture() as cap:
        with pytest.raises(ConfigError, match="max_entities"):
            setup_otlp(max_entities=-1)
        with pytest.raises(ConfigError, match="protocol"):
            setup_otlp(protocol="http/json")
        assert cap.configured == []


def test_shutting_down_what_setup_otlp_noted_inside_a_capture_stops_nothing() -> None:
    with capture():
        handle = setup_otlp()
        handle.shutdown()
    assert outputs.OUTPUTS.exporters == {}


# --- setup_prometheus and prometheus_asgi_app -------------------------------------------------


def test_setup_prometheus_inside_a_capture_binds_no_port() -> None:
    port = _free_port()
    with capture():
        endpoint = setup_prometheus(port=port)
        with socket.socket() as again:  # nothing listens on it
            again.bind(("127.0.0.1", port))
    assert endpoint.port == port
    assert syncperf.export._ENDPOINTS == []


def test_setup_prometheus_inside_a_capture_adds_no_registry_to_the_applications_outputs() -> None:
    with capture():
        setup_prometheus(port=0)
    assert outputs.OUTPUTS.registries == []
    assert syncperf.export._runtime.current().prometheus == []


def test_setup_prometheus_with_options_inside_a_capture_notes_its_config() -> None:
    with capture() as cap:
        endpoint = setup_prometheus(port=0, max_entities=5)
        assert cap.configured == [endpoint.config]
        assert endpoint.config.max_entities == 5


def test_setup_prometheus_inside_a_capture_still_rejects_bad_options() -> None:
    with capture() as cap:
        with pytest.raises(ConfigError, match="port"):
            setup_prometheus(port=70_000)
        with pytest.raises(ConfigError, match="max_entities"):
            setup_prometheus(port=0, max_entities=-1)
        assert cap.configured == []


def test_closing_an_endpoint_set_up_inside_a_capture_leaves_the_applications_registry() -> None:
    registry = CollectorRegistry()
    prometheus_asgi_app(registry)  # served by the application: not one of syncperf's outputs
    outputs.OUTPUTS.registries.append(registry)  # as the application's own set-up would
    with capture():
        setup_prometheus(port=0, registry=registry).close()
    assert outputs.OUTPUTS.registries == [registry]


def test_prometheus_asgi_app_inside_a_capture_adds_no_registry_to_the_applications_outputs() -> (
    None
):
    with capture():
        prometheus_asgi_app()
    assert outputs.OUTPUTS.registries == []
