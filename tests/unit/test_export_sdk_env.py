"""The ``OTEL_*`` variables the SDK reads while ``setup_otlp`` builds providers: a value the
SDK would refuse is warned about by name and ignored, as if unset; no value is ever logged
or raised, and ``import syncperf`` never fails over one."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import metrics, trace

from syncperf import ConfigError
from syncperf.export import _sdk_env, setup_otlp
from tests.unit.test_export_setup import _processors, clean

__all__ = ["clean"]  # the fixture, used by name

SECRET = "sk-live-SECRET123"

INVALID = [
    ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "-5"),
    ("OTEL_BSP_SCHEDULE_DELAY", "-1"),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0"),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "99999"),
    ("OTEL_BSP_EXPORT_TIMEOUT", "-1"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "-1000"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
    ("OTEL_METRIC_EXPORT_TIMEOUT", "-1"),
    ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "-1"),
    ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "many"),
    ("OTEL_METRICS_EXEMPLAR_FILTER", "sometimes"),
    ("OTEL_TRACES_SAMPLER", "sometimes"),
]

SDK_READS = [
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
    "OTEL_EXPORTER_OTLP_INSECURE",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_METRIC_EXPORT_TIMEOUT",
    "OTEL_METRICS_EXEMPLAR_FILTER",
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS",
]


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record of every logger, formatted, with its arguments and traceback."""
    return "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''} {r.exc_info!r}" for r in caplog.records
    )


def _shut_down_globals() -> None:
    provider: Any = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()
    meter_provider: Any = metrics.get_meter_provider()
    if hasattr(meter_provider, "shutdown"):
        meter_provider.shutdown(timeout_millis=200)


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize(("var", "value"), INVALID)
def test_a_value_the_sdk_refuses_is_warned_about_by_name_and_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, var: str, value: str
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(var, value)
    setup_otlp(shutdown_timeout=0.5)
    warned = [r.getMessage() for r in caplog.records if r.name == "syncperf"]
    assert any(var in m and "not quoted" in m for m in warned), warned
    sdk = [r for r in caplog.records if r.name.startswith("opentelemetry")]
    assert not [r.getMessage() for r in sdk if r.levelno >= logging.WARNING]


@pytest.mark.usefixtures("clean")
def test_an_ignored_batch_variable_leaves_the_sdk_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "99999")  # above the queue: ignored
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "0")
    handle = setup_otlp(shutdown_timeout=0.5)
    (processor,) = _processors(handle.tracer_provider)
    batch = processor._batch_processor
    assert batch._max_queue_size == 100
    assert batch._max_export_batch_size == 100  # the default 512, capped at the queue
    assert batch._schedule_delay_millis == 5000


@pytest.mark.usefixtures("clean")
def test_valid_sdk_variables_are_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "1500")
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "ALWAYS_OFF")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "7")
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "40")
    handle = setup_otlp(shutdown_timeout=0.5)
    (reader,) = handle.meter_provider._metric_readers
    assert reader._export_interval_millis == 1500
    filter_ = handle.meter_provider._sdk_config.exemplar_filter
    assert type(filter_).__name__ == "AlwaysOffExemplarFilter"
    limits = handle.tracer_provider._span_limits
    assert limits.max_events == 7
    assert limits.max_attribute_length == 40


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("var", SDK_READS)
@pytest.mark.parametrize("planted", [SECRET, f"team=sync,{SECRET}", f" {SECRET}=1 "])
def test_a_planted_secret_in_any_variable_read_is_never_logged_or_raised(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    protocol: str,
    var: str,
    planted: str,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the root's included
    monkeypatch.setenv(var, planted)
    if not var.endswith("PROTOCOL"):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    try:
        setup_otlp(shutdown_timeout=0.5)
    except ConfigError as exc:
        assert var in str(exc)
        assert "secret123" not in str(exc).lower()
    finally:
        _shut_down_globals()
    assert "secret123" not in _logged(caplog).lower()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.getMessage()} {record.args!r} {record.exc_info!r}")


_SDK_BUILT = [
    v for v in SDK_READS if v.startswith(("OTEL_BSP", "OTEL_METRICS_EX", "OTEL_TRACES_S"))
]
_SDK_BUILT += [v for v in SDK_READS if v.endswith("_LIMIT") or "INTERNAL_METRICS" in v]


@settings(max_examples=60, deadline=None)
@given(
    planted=st.dictionaries(
        st.sampled_from(_SDK_BUILT),
        st.one_of(st.text(max_size=12), st.text(max_size=12).map(lambda t: t + SECRET + t)),
        max_size=4,
    )
)
def test_any_value_of_the_sdk_variables_builds_providers_without_quoting_it(
    planted: dict[str, str],
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    env = {k: v.replace("\x00", "") for k, v in planted.items()}
    records = _Records()
    root = logging.getLogger()
    root.addHandler(records)
    level, root.level = root.level, logging.DEBUG
    try:
        batch = _sdk_env.batch_arguments(env)
        sampler = _sdk_env.sampler(env)
        with _sdk_env.building(env, traces=True):
            provider = TracerProvider(sampler=sampler, span_limits=SpanLimits())
            processor = BatchSpanProcessor(SpanExporter(), **batch)
        with _sdk_env.building(env, traces=False):
            meter_provider = MeterProvider([InMemoryMetricReader()], shutdown_on_exit=False)
        processor.shutdown()
        provider.shutdown()
        meter_provider.shutdown()
    finally:
        root.removeHandler(records)
        root.level = level
    assert "secret123" not in "\n".join(records.lines).lower()


def _run(code: str, **planted: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(planted)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "var",
    ["OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT", "OTEL_BSP_MAX_QUEUE_SIZE"],
)
def test_import_and_metrics_only_use_survive_a_malformed_sdk_variable(var: str) -> None:
    code = "import syncperf.export as e; e.setup_prometheus(port=0); print('ok')"
    done = _run(code, **{var: SECRET})
    assert done.returncode == 0, done.stderr[-400:]
    assert done.stdout.strip() == "ok"
    assert "secret123" not in (done.stdout + done.stderr).lower()


def test_import_warns_about_a_malformed_span_attribute_count_limit_by_name() -> None:
    done = _run("import syncperf", OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=SECRET)
    assert done.returncode == 0, done.stderr[-400:]
    assert "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT" in done.stderr
    assert "secret123" not in done.stderr.lower()


_RESOURCE_CODE = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
if sys.argv[2] == "demo":  # syncperf demo --otlp checks the exporters import first
    from syncperf._tools.demo import _missing_extra
    assert _missing_extra(True, False) is None
from syncperf.export import setup_otlp
handle = setup_otlp(protocol=sys.argv[1], endpoint="http://127.0.0.1:1")
getattr(handle, "shutdown", lambda: None)()
print("ok")
"""


@pytest.mark.parametrize("via", ["setup_otlp", "demo"])
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_importing_the_exporters_never_quotes_a_malformed_resource_variable(
    protocol: str, via: str
) -> None:
    # The gRPC exporter imports the SDK's logs module, which reads the resource variables
    # when it is imported: a malformed entry or detector name would be logged word for word.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_RESOURCE_ATTRIBUTES"] = f"service.name=svc,db_password:{SECRET}"
    env["OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"] = f"otel,{SECRET}"
    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
    done = subprocess.run(
        [sys.executable, "-c", _RESOURCE_CODE, protocol, via],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-400:]
    assert done.stdout.strip() == "ok"
    assert "OTEL_RESOURCE_ATTRIBUTES entry 2" in done.stderr  # warned about by position
    assert "secret123" not in (done.stdout + done.stderr).lower()
