"""The OTLP side of ``syncperf.export``: exporters by protocol, providers, and the wrappers
that count failed exports and rebuild exporters in forked children."""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from syncperf import _gate as gate
from syncperf import _otel_env as otel_env
from syncperf import _runtime
from syncperf._metrics import outputs, resources
from syncperf._metrics.bounded import Deadline
from syncperf.exceptions import ConfigError
from syncperf.export import _batch, _sdk_env, _settings, _split

_logger = logging.getLogger("syncperf")
PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_PROTOCOL = "http/protobuf"
"""The OpenTelemetry specification's default when ``OTEL_EXPORTER_OTLP_PROTOCOL`` is unset."""
_EXPORTER_CHOICES = ("otlp", "none")

OWN_METER_PROVIDERS: weakref.WeakSet[Any] = weakref.WeakSet()
"""Meter providers ``setup_otlp`` created: syncperf exports beside them, never into them."""


def disabled(env: Mapping[str, str]) -> bool:
    return otel_env.sdk_disabled(env)


def signal_on(var: str, env: Mapping[str, str], joining: bool = False) -> str | None:
    """What ``var`` (``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``) asks for: ``"otlp"``,
    ``"joined"`` (only other exporters, those of the global SDK provider, which syncperf
    joins) or None (``none``). Exporters other than ``otlp`` are refused (``setup_otlp``
    installs OTLP only) unless ``joining``: a global SDK provider of the application's
    exists (under ``opentelemetry-instrument``, the launcher built it with those exporters).
    """
    raw = (otel_env.value(env, var) or "otlp").lower()
    names = {n.strip() for n in raw.split(",") if n.strip()}
    unknown = names - set(_EXPORTER_CHOICES)
    if unknown and not joining:
        accepted = "otlp or none (setup_otlp installs OTLP exporters only)"
        raise ConfigError(var, gate.not_quoted(raw), accepted)
    return "otlp" if "otlp" in names else "joined" if unknown else None


def signals(
    traces: bool | None, metrics_: bool | None, env: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """What traces and metrics do (``signal_on``): the explicit arguments (True: ``"otlp"``),
    else the ``OTEL_*_EXPORTER`` variables, joining the global SDK providers if any."""
    picked = ["otlp" if on else None for on in (traces, metrics_)]
    if traces is None:
        joining = sdk_provider(trace.get_tracer_provider()) is not None
        picked[0] = signal_on("OTEL_TRACES_EXPORTER", env, joining)
    if metrics_ is None:  # not the one setup_otlp built: it exports OTLP only
        picked[1] = signal_on("OTEL_METRICS_EXPORTER", env, not exports_metrics_itself())
    return picked[0], picked[1]


def protocol_of(explicit: str | None, signal: str, env: Mapping[str, str]) -> str:
    if explicit is not None:
        option, value = "protocol", explicit
    else:  # empty is unset: a per-signal variable falls back to the general one
        option, value = otel_env.first(
            env, f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
        ) or ("OTEL_EXPORTER_OTLP_PROTOCOL", DEFAULT_PROTOCOL)
    value = value.strip().lower()
    if value not in PROTOCOLS:
        shown = value if explicit is not None else gate.not_quoted(value)  # a variable's
        raise ConfigError(option, shown, " or ".join(PROTOCOLS))
    return value


def default_resource(env: Mapping[str, str]) -> Any:
    """Like ``configure()``: the resource of the application's SDK tracer provider (one
    syncperf does not own), so spans and metrics name the same service; else the SDK's
    default for ``env``."""
    existing = sdk_provider(trace.get_tracer_provider())
    resource = getattr(existing, "resource", None)
    return _settings.resource_of(env) if resource is None else resource


def sdk_provider(provider: Any) -> Any:
    """The provider when it is a real one (not the API's proxy or no-op)."""
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return provider


def is_proxy_meter_provider(provider: Any) -> bool:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    return isinstance(provider, (_ProxyMeterProvider, NoOpMeterProvider))


def exporter_class(protocol: str | None, signal: str) -> Any:
    """The OTLP exporter class of ``protocol`` for ``signal``; ConfigError if not installed."""
    module = {
        ("grpc", "trace"): "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        ("grpc", "metric"): "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        ("http/protobuf", "trace"): "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        ("http/protobuf", "metric"): "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    }[(protocol or DEFAULT_PROTOCOL, signal)]
    try:
        loaded = resources.import_quietly(module)
    except ImportError:
        package = (
            "opentelemetry-exporter-otlp-proto-grpc"
            if protocol == "grpc"
            else "opentelemetry-exporter-otlp-proto-http"
        )
        raise ConfigError(
            "protocol",
            protocol,
            f"a protocol whose exporter is installed (pip install {package}, or syncperf[otlp])",
        ) from None
    name = "OTLPSpanExporter" if signal == "trace" else "OTLPMetricExporter"
    return getattr(loaded, name)


def tracer_provider_for(
    resource: Any, protocol: str | None, kwargs: Mapping[str, Any], env: Mapping[str, str]
) -> Any:
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    cls = exporter_class(protocol, "trace")
    exporter = CountingSpanExporter(factory=lambda: _settings.build(cls, kwargs, env, "TRACES"))
    # the OTEL_* variables the SDK reads, read by syncperf first (_sdk_env); flushed at exit
    # by syncperf, within its shutdown_timeout (the SDK's own hook waits on a silent
    # collector unbounded)
    batch = _sdk_env.batch_arguments(env)
    chosen = _sdk_env.sampler(env)
    with _sdk_env.building(env, traces=True):
        provider = TracerProvider(
            sampler=chosen, resource=resource, shutdown_on_exit=False, span_limits=SpanLimits()
        )
        provider.add_span_processor(_batch.CountingBatchSpanProcessor(exporter, **batch))
    return provider


def metric_exporter(protocol: str | None, kwargs: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    cls = exporter_class(protocol, "metric")
    return RenewableMetricExporter(lambda: _settings.build(cls, kwargs, env, "METRICS"))


def meter_provider_for(
    resource: Any,
    protocol: str | None,
    kwargs: Mapping[str, Any],
    env: Mapping[str, str],
    config: Any,
) -> Any:
    """An SDK meter provider exporting over OTLP every ``config.export_interval`` (from
    ``OTEL_METRIC_EXPORT_INTERVAL`` / ``_TIMEOUT`` unless given: ``Config`` read them)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    exporter = metric_exporter(protocol, kwargs, env)
    with _sdk_env.building(env, traces=False):
        reader = PeriodicExportingMetricReader(
            exporter,
            export_interval_millis=config.export_interval * 1000,
            export_timeout_millis=config.export_timeout * 1000,
        )
        provider = MeterProvider(metric_readers=[reader], resource=resource, shutdown_on_exit=False)
    outputs.flush_also(provider)
    return provider


class CountingSpanExporter(SpanExporter):
    """Wraps a span exporter: failed or raising exports are counted, never propagated.

    Counts go to ``syncperf.export.failures{syncperf.signal="traces"}`` of the current
    runtime (the batch processor calls ``export`` on its own thread, never on a request).
    Built from a factory, the wrapped exporter is rebuilt in a forked child (a gRPC channel
    or HTTP session must not be shared across ``fork()``).
    """

    def __init__(
        self,
        inner: SpanExporter | None = None,
        *,
        factory: Callable[[], SpanExporter] | None = None,
    ) -> None:
        if inner is None:
            if factory is None:
                raise ConfigError("inner", None, "a SpanExporter or a factory")
            inner = factory()
        self.inner = inner
        self._factory = factory
        _renewable.add(self)

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        """Export through the wrapped exporter; count a failure."""
        try:
            result = self.inner.export(spans)
        except Exception as error:
            _logger.debug("syncperf: span export raised: %s", gate.raised_at(error))
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            count_failure("traces")
        return result

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the wrapped exporter."""
        return bool(self.inner.force_flush(timeout_millis))

    def renew(self) -> None:
        """Rebuild the wrapped exporter (after ``fork()``), when built from a factory."""
        if self._factory is not None:
            self.inner = self._factory()


class RenewableMetricExporter(MetricExporter):
    """A metric exporter built by ``factory``, rebuilt in a forked child.

    Keeps the wrapped exporter's temporality and aggregation preferences (so
    ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` still applies). Sends one export
    in requests of at most ``max_export_batch_size`` points (a collector refuses a gRPC
    message above 4 MiB by default), stopping at the first that fails.
    """

    def __init__(
        self,
        factory: Callable[[], MetricExporter],
        *,
        max_export_batch_size: int = _split.MAX_EXPORT_BATCH_SIZE,
    ) -> None:
        self.max_export_batch_size = _split.checked(max_export_batch_size)
        self._factory = factory
        self.inner = factory()
        self.beside: Any = None
        """The meter provider exporting to the same place (its series are not repeated)."""
        super().__init__(
            preferred_temporality=getattr(self.inner, "_preferred_temporality", None),
            preferred_aggregation=getattr(self.inner, "_preferred_aggregation", None),
        )
        _renewable.add(self)

    def export(
        self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        """Export through the wrapped exporter, in pieces, within ``timeout_millis``."""
        left = Deadline(timeout_millis / 1000).left
        for n, piece in enumerate(_split.split(metrics_data, self.max_export_batch_size)):
            if n and not left():  # out of time with pieces left (not after the last one)
                return MetricExportResult.FAILURE
            result = self.inner.export(piece, timeout_millis=left() * 1000, **kwargs)
            if result is not MetricExportResult.SUCCESS:
                return result  # what follows is dropped too (delta) or sent next time
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Flush the wrapped exporter."""
        return bool(self.inner.force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Shut the wrapped exporter down."""
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)

    def renew(self) -> None:
        """Rebuild the wrapped exporter (after ``fork()``)."""
        self.inner = self._factory()


_renewable: weakref.WeakSet[Any] = weakref.WeakSet()


def _renew_after_fork() -> None:
    for exporter in list(_renewable):
        try:
            exporter.renew()
        except Exception as error:  # never break the child over telemetry
            _logger.debug(
                "syncperf: rebuilding an exporter after fork failed: %s", gate.raised_at(error)
            )


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_after_fork)


def count_failure(signal: str) -> None:
    """Add one to ``syncperf.export.failures`` for ``signal`` in the current runtime."""
    rt = _runtime.current()
    with rt.lock:
        rt.export_failures.sum((("syncperf.signal", signal),)).add(1)


def tracer_provider_of(
    resource: Any, protocol: str | None, kwargs: Mapping[str, Any] | None, env: Mapping[str, str]
) -> tuple[Any, bool]:
    """``(provider, owned)``: the global SDK tracer provider, else a new one exporting over
    OTLP (owned: the caller makes it global)."""
    provider = sdk_provider(trace.get_tracer_provider())
    if provider is not None:
        _logger.info("syncperf: using the existing global tracer provider")
        return provider, False
    if kwargs is None:  # the settings were resolved for no exporter
        return None, False
    return tracer_provider_for(resource, protocol, kwargs, env), True


def metric_outputs(
    resource: Any,
    protocol: str | None,
    kwargs: Mapping[str, Any],
    env: Mapping[str, str],
    global_meter_provider: bool,
    config: Any,
) -> tuple[Any, Any, Any]:
    """``(exporter, meter provider, joined)``: syncperf's own metric exporter and a new
    global meter provider for other instrumentation, or the application's SDK meter
    provider whose readers syncperf's metrics join instead."""
    from opentelemetry import metrics

    existing = metrics.get_meter_provider()
    if not exports_metrics_itself():
        return None, None, existing
    exporter = metric_exporter(protocol, kwargs, env)
    meter_provider = None
    if global_meter_provider and is_proxy_meter_provider(existing):
        meter_provider = meter_provider_for(resource, protocol, kwargs, env, config)
    # FastAPI's native HTTP metrics in the global provider's OTLP export are not repeated by
    # syncperf's own exporter to the same collector.
    exporter.beside = meter_provider if meter_provider is not None else existing
    return exporter, meter_provider, None


def install(tracer_provider: Any, meter_provider: Any, exporter: Any) -> None:
    """Make the providers ``setup_otlp`` built global (None: none built), and ``exporter``
    syncperf's OTLP output (None: syncperf exports none of its own)."""
    if tracer_provider is not None:
        trace.set_tracer_provider(tracer_provider)
    if meter_provider is not None:
        OWN_METER_PROVIDERS.add(meter_provider)
        otel_metrics.set_meter_provider(meter_provider)
    if exporter is not None:
        outputs.OUTPUTS.exporters["otlp"] = exporter
    else:
        outputs.OUTPUTS.exporters.pop("otlp", None)


def exports_metrics_itself() -> bool:
    """True unless an SDK meter provider of the application's is global (syncperf joins it)."""
    existing = otel_metrics.get_meter_provider()
    return is_proxy_meter_provider(existing) or existing in OWN_METER_PROVIDERS


def exporter_settings(
    protocols: tuple[str | None, str | None],
    env: Mapping[str, str],
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
    export_timeout: float,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The span and the metric exporter's keyword arguments (``protocols``: the traces' and
    the metrics'), or None for a signal off, or whose provider is the application's: the
    variables syncperf would not use are not read. One metric export request takes at most
    ``export_timeout``: the exporters take no bound per export (they ignore the reader's
    ``timeout_millis``), so their own timeout is bounded. An exporter syncperf builds whose
    package is not installed is a ``ConfigError`` first (its settings import from it)."""
    traces, metrics_ = protocols
    if traces is not None and sdk_provider(trace.get_tracer_provider()) is None:
        exporter_class(traces, "trace")
        traces_kwargs = _settings.exporter_kwargs(traces, "TRACES", env, endpoint, headers, timeout)
    else:
        traces_kwargs = None
    metrics_kwargs = None
    if metrics_ is not None and exports_metrics_itself():
        exporter_class(metrics_, "metric")
        metrics_kwargs = _settings.exporter_kwargs(
            metrics_, "METRICS", env, endpoint, headers, timeout
        )
        metrics_kwargs["timeout"] = min(metrics_kwargs["timeout"], export_timeout)
    return traces_kwargs, metrics_kwargs


def shut_down(tracer_provider: Any, meter_provider: Any, left: Callable[[], float]) -> None:
    """Shut the SDK providers down, the meter provider given what is ``left()`` of the bound
    (the tracer provider's ``shutdown`` takes none)."""
    if meter_provider is not None:
        outputs.flush_no_more(meter_provider)
    for shut in (
        None if tracer_provider is None else tracer_provider.shutdown,
        None if meter_provider is None else lambda: meter_provider.shutdown(left() * 1000),
    ):
        try:
            if shut is not None:
                shut()
        except Exception as error:
            _logger.debug("syncperf: shutting a provider down failed: %s", gate.raised_at(error))
