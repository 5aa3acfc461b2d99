"""Export set-up in one call: OTLP (gRPC or HTTP) and a Prometheus scrape endpoint.

For applications that have not configured OpenTelemetry themselves::

    import syncperf.export

    syncperf.export.setup_otlp()                   # OTEL_* variables decide the rest
    syncperf.export.setup_prometheus(port=9464)    # or scrape http://127.0.0.1:9464/metrics

``setup_otlp`` builds SDK providers with the OTLP exporters of the protocol named by
``OTEL_EXPORTER_OTLP_PROTOCOL`` (per-signal ``OTEL_EXPORTER_OTLP_{TRACES,METRICS}_PROTOCOL``
win), leaving every other ``OTEL_*`` variable to the SDK and exporters that define them
(endpoint, headers, timeout, compression, certificates, temporality preference, sampler,
batch processor, resource). Global providers that already exist are used, never replaced:
an application's own SDK ``MeterProvider`` gets syncperf's metrics in its readers
(``setup_meter_provider``), otherwise syncperf exports its aggregates itself.

The set-ups compose: each adds its output to every current and future configuration, in
any order, with ``configure()`` before, between or after; calling one again replaces its
own output rather than adding a second one.

Both are safe in forked workers: syncperf's export threads restart in the child and the
child starts with empty aggregates (see docs/export.md). Export failures never reach the
request path; they are counted in ``syncperf.export.failures`` by ``syncperf.signal``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from syncperf import _runtime
from syncperf._config import Config
from syncperf._metrics import outputs
from syncperf._runtime import configure
from syncperf.exceptions import ConfigError

__all__ = [
    "CountingSpanExporter",
    "OtlpExport",
    "PrometheusEndpoint",
    "RenewableMetricExporter",
    "prometheus_asgi_app",
    "setup_meter_provider",
    "setup_otlp",
    "setup_prometheus",
]

_logger = logging.getLogger("syncperf")
PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_PROTOCOL = "http/protobuf"
"""The OpenTelemetry specification's default when ``OTEL_EXPORTER_OTLP_PROTOCOL`` is unset."""
_EXPORTER_CHOICES = ("otlp", "none")


@dataclass
class OtlpExport:
    """What ``setup_otlp`` installed.

    Attributes:
        config: The syncperf config now active.
        tracer_provider: The tracer provider sync spans go to (the existing global one, or
            the one created here), or None when traces are off.
        meter_provider: The global meter provider created here for other instrumentation,
            or None (one existed, or metrics are off).
        joined_meter_provider: The application's global SDK meter provider whose readers
            receive syncperf's metrics (instead of an exporter of syncperf's own), or None.
        traces_protocol: Protocol of the span exporter, or None.
        metrics_protocol: Protocol of the metric exporter, or None.
        owns_tracer_provider: True when the tracer provider was created (and set global) here.
    """

    config: Config
    tracer_provider: Any = None
    meter_provider: Any = None
    traces_protocol: str | None = None
    metrics_protocol: str | None = None
    owns_tracer_provider: bool = False
    joined_meter_provider: Any = None
    _exporter: Any = field(default=None, repr=False)
    _shut: bool = field(default=False, repr=False)

    def shutdown(self) -> None:
        """Flush and stop what ``setup_otlp`` created (a global provider stays registered)."""
        if self._shut:
            return
        self._shut = True
        rt = _runtime.current()
        rt.finisher.flush()
        if self._exporter is not None and outputs.OUTPUTS.exporters.get("otlp") is self._exporter:
            del outputs.OUTPUTS.exporters["otlp"]
            rt.sync_outputs()  # a last export, then the exporter shuts down
        if self.owns_tracer_provider and self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def setup_otlp(
    *,
    protocol: str | None = None,
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    traces: bool | None = None,
    metrics: bool | None = None,
    global_meter_provider: bool = True,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> OtlpExport:
    """Export sync spans and syncperf's metrics over OTLP; returns what was installed.

    Call it at start-up (in a pre-fork server, preferably in each worker, e.g. gunicorn's
    ``post_fork`` hook). It composes with ``configure()`` and ``setup_prometheus()`` in any
    order; called again, it replaces its own exporter. Everything left as None comes from
    the standard ``OTEL_*`` variables, read by the SDK and exporters themselves. When a
    global SDK meter provider already exists (the application's, or the one
    ``opentelemetry-instrument`` built), syncperf's metrics join its readers instead.

    Args:
        protocol: ``"grpc"`` or ``"http/protobuf"``; default ``OTEL_EXPORTER_OTLP_PROTOCOL``
            (per-signal variables win), else ``"http/protobuf"`` as the specification says.
        endpoint: Collector endpoint for both signals (default: ``OTEL_EXPORTER_OTLP_*``
            variables, else the exporter's default, ``localhost:4317`` / ``:4318``). For
            HTTP give the base URL; ``/v1/traces`` and ``/v1/metrics`` are appended.
        headers: Extra request headers (default ``OTEL_EXPORTER_OTLP_HEADERS``).
        timeout: Seconds per export request (default ``OTEL_EXPORTER_OTLP_TIMEOUT``).
        traces: Export spans (default: unless ``OTEL_TRACES_EXPORTER=none``).
        metrics: Export syncperf's metrics (default: unless ``OTEL_METRICS_EXPORTER=none``).
        global_meter_provider: Also install an SDK ``MeterProvider`` exporting over OTLP as
            the global one, for other instrumentation, when none is set.
        environ: Environment to read instead of ``os.environ`` (tests).
        **options: ``syncperf.configure`` options (``export_interval``, ``max_entities``...);
            given any, the settings are rebuilt from them and the environment, else the
            current settings stay.

    Raises:
        ConfigError: an unknown protocol or exporter name, an option syncperf rejects, or the
            exporter package for the protocol is not installed.
    """
    env = os.environ if environ is None else environ
    for name in ("metric_exporters", "tracer_provider"):
        if name in options:
            raise ConfigError(name, options[name], "not an option of setup_otlp (it sets it)")
    traces_on = _signal_on("OTEL_TRACES_EXPORTER", env) if traces is None else bool(traces)
    metrics_on = _signal_on("OTEL_METRICS_EXPORTER", env) if metrics is None else bool(metrics)
    traces_protocol = _protocol(protocol, "TRACES", env) if traces_on else None
    metrics_protocol = _protocol(protocol, "METRICS", env) if metrics_on else None
    disabled = _disabled(env)
    resource = options.pop("resource", None) or _resource()
    # Every option is checked before anything global changes: a mistyped option raises
    # ConfigError with the tracer and meter providers and syncperf's runtime untouched.
    Config.from_env(resource=resource, **options)

    tracer_provider: Any = None
    owns = False
    if traces_on and not disabled:
        tracer_provider = _sdk_provider(trace.get_tracer_provider())
        if tracer_provider is None:
            tracer_provider, owns = (
                _tracer_provider(resource, traces_protocol, endpoint, headers, timeout),
                True,
            )
        else:
            _logger.info("syncperf: using the existing global tracer provider")
    exporter: Any = None
    meter_provider: Any = None
    joined: Any = None
    if metrics_on and not disabled:
        existing = otel_metrics.get_meter_provider()
        if _is_proxy_meter_provider(existing) or existing in _OWN_METER_PROVIDERS:
            exporter = _metric_exporter(metrics_protocol, endpoint, headers, timeout)
            if global_meter_provider and _is_proxy_meter_provider(existing):
                meter_provider = _meter_provider(
                    resource, metrics_protocol, endpoint, headers, timeout
                )
            # FastAPI's native HTTP metrics in the global provider's OTLP export are not
            # repeated by syncperf's own exporter to the same collector.
            exporter.beside = meter_provider if meter_provider is not None else existing
        else:
            joined = existing
    if owns:
        trace.set_tracer_provider(tracer_provider)
    if meter_provider is not None:
        _OWN_METER_PROVIDERS.add(meter_provider)
        otel_metrics.set_meter_provider(meter_provider)
    if exporter is not None:
        outputs.OUTPUTS.exporters["otlp"] = exporter
    else:
        outputs.OUTPUTS.exporters.pop("otlp", None)
    rt = _apply(options, resource=resource)
    if tracer_provider is not None:
        rt.tracing.resolve(time.perf_counter_ns())  # no wait for the next look at the global
    if joined is not None:
        setup_meter_provider(joined)
    return OtlpExport(
        rt.config,
        tracer_provider,
        meter_provider,
        traces_protocol,
        metrics_protocol,
        owns,
        joined,
        exporter,
    )


_OWN_METER_PROVIDERS: weakref.WeakSet[Any] = weakref.WeakSet()
"""Meter providers ``setup_otlp`` created: syncperf exports beside them, never into them."""


def _apply(options: Mapping[str, Any], **defaults: Any) -> Any:
    """Rebuild the settings from ``options`` (when given, or when syncperf is not configured
    yet) and make the runtime feed every output; returns the runtime."""
    if options or _runtime._current is None:
        configure(Config.from_env(**{**defaults, **options}))
    return _runtime.sync_outputs()


def setup_meter_provider(meter_provider: Any = None) -> bool:
    """Give every reader of an SDK ``MeterProvider`` syncperf's metrics.

    Its readers (a ``PeriodicExportingMetricReader`` with any exporter, a
    ``PrometheusMetricReader``, an in-memory reader) then receive syncperf's aggregates in
    each collection, at their own temporality, with the provider's resource. syncperf keeps
    recording into its own aggregates: nothing goes through the SDK's instruments on the
    request path. Calling it again is harmless. Under ``opentelemetry-instrument`` it runs
    by itself (docs/export.md, "Zero-code").

    Args:
        meter_provider: An SDK ``MeterProvider`` (default: the global one).

    Returns:
        True when syncperf now feeds the provider's readers; False when there is no SDK
        meter provider, or it is the one ``setup_otlp`` created (syncperf exports beside
        it itself).
    """
    from opentelemetry.sdk.metrics import MeterProvider

    from syncperf.export import _bridge

    provider = otel_metrics.get_meter_provider() if meter_provider is None else meter_provider
    if not isinstance(provider, MeterProvider):
        if meter_provider is not None:
            raise ConfigError("meter_provider", meter_provider, "an SDK MeterProvider")
        return False
    if provider in _OWN_METER_PROVIDERS:
        return False
    _runtime.current()
    _bridge.bridge(provider)
    return True


def _disabled(env: Mapping[str, str]) -> bool:
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _signal_on(var: str, env: Mapping[str, str]) -> bool:
    raw = env.get(var, "otlp").strip().lower() or "otlp"
    names = {n.strip() for n in raw.split(",") if n.strip()}
    unknown = names - set(_EXPORTER_CHOICES)
    if unknown:
        raise ConfigError(var, raw, "otlp or none (setup_otlp installs OTLP exporters only)")
    return "otlp" in names


def _protocol(explicit: str | None, signal: str, env: Mapping[str, str]) -> str:
    if explicit is not None:
        option, value = "protocol", explicit
    elif (raw := env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")) is not None:
        option, value = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", raw
    else:
        option = "OTEL_EXPORTER_OTLP_PROTOCOL"
        value = env.get(option, DEFAULT_PROTOCOL)
    value = value.strip().lower()
    if value not in PROTOCOLS:
        raise ConfigError(option, value, " or ".join(PROTOCOLS))
    return value


def _resource() -> Any:
    from opentelemetry.sdk.resources import Resource

    return Resource.create()


def _sdk_provider(provider: Any) -> Any:
    """The provider when it is a real one (not the API's proxy or no-op)."""
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return provider


def _is_proxy_meter_provider(provider: Any) -> bool:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    return isinstance(provider, (_ProxyMeterProvider, NoOpMeterProvider))


def _kwargs(
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
    protocol: str | None,
    path: str,
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if endpoint is not None:
        if protocol == "http/protobuf":
            kwargs["endpoint"] = endpoint.rstrip("/") + path
        else:
            kwargs["endpoint"] = endpoint
            if endpoint.startswith("http://"):
                kwargs["insecure"] = True
    if headers is not None:
        kwargs["headers"] = dict(headers)
    if timeout is not None:
        kwargs["timeout"] = timeout
    return kwargs


def _import(protocol: str | None, signal: str) -> Any:
    module = {
        ("grpc", "trace"): "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        ("grpc", "metric"): "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        ("http/protobuf", "trace"): "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        ("http/protobuf", "metric"): "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    }[(protocol or DEFAULT_PROTOCOL, signal)]
    try:
        import importlib

        loaded = importlib.import_module(module)
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


def _tracer_provider(
    resource: Any,
    protocol: str | None,
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
) -> Any:
    from opentelemetry.sdk.trace import TracerProvider

    cls = _import(protocol, "trace")
    kwargs = _kwargs(endpoint, headers, timeout, protocol, "/v1/traces")
    # sampler: OTEL_TRACES_SAMPLER(_ARG); flushed at exit by syncperf, within its
    # shutdown_timeout (the SDK's own exit hook waits on a silent collector unbounded)
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    exporter = CountingSpanExporter(factory=lambda: cls(**kwargs))
    provider.add_span_processor(_CountingBatchSpanProcessor(exporter))  # OTEL_BSP_* honoured
    return provider


class _CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor; the spans it drops (its queue is full, or it was shut
    down) are counted in ``syncperf.dropped`` as well as logged by the SDK."""

    def __init__(self, exporter: SpanExporter) -> None:
        super().__init__(exporter)
        batch = getattr(self, "_batch_processor", None)
        metrics = getattr(batch, "_metrics", None)  # where the SDK reports each drop
        if metrics is not None:
            batch._metrics = _CountingDrops(metrics)  # type: ignore[union-attr]


class _CountingDrops:
    """The SDK batch processor's own metrics, with each drop also counted by syncperf."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        reason = "span_export_" + ("queue_full" if error_type == "queue_full" else "shutdown")
        rt = _runtime.current()
        if count > 1:  # ``drop`` below counts one
            with rt.lock:
                rt.dropped.sum((("syncperf.reason", reason),)).add(count - 1)
        rt.drop(reason, "syncperf: the batch span processor dropped spans (%s)", error_type)
        self._inner.drop_items(count, error_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _metric_exporter(
    protocol: str | None,
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
) -> Any:
    cls = _import(protocol, "metric")
    kwargs = _kwargs(endpoint, headers, timeout, protocol, "/v1/metrics")
    return RenewableMetricExporter(lambda: cls(**kwargs))


def _meter_provider(
    resource: Any,
    protocol: str | None,
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
) -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(  # OTEL_METRIC_EXPORT_INTERVAL / _TIMEOUT
        _metric_exporter(protocol, endpoint, headers, timeout)
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
        except Exception:
            _logger.debug("syncperf: span export raised", exc_info=True)
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
    ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` still applies).
    """

    def __init__(self, factory: Callable[[], MetricExporter]) -> None:
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
        """Export through the wrapped exporter."""
        return self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

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
        except Exception:  # never break the child over telemetry
            _logger.debug("syncperf: rebuilding an exporter after fork failed", exc_info=True)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_after_fork)


def count_failure(signal: str) -> None:
    """Add one to ``syncperf.export.failures`` for ``signal`` in the current runtime."""
    rt = _runtime.current()
    with rt.lock:
        rt.export_failures.sum((("syncperf.signal", signal),)).add(1)


# --- Prometheus ------------------------------------------------------------------------


@dataclass
class PrometheusEndpoint:
    """A running scrape endpoint.

    Attributes:
        host: Address the server is bound to.
        port: Port it listens on (the real one when 0 was asked for).
        registry: The ``prometheus_client`` registry it serves.
        config: The syncperf config now active.
    """

    host: str
    port: int
    registry: Any
    config: Config
    _server: Any = field(repr=False, default=None)
    _thread: threading.Thread | None = field(repr=False, default=None)

    @property
    def url(self) -> str:
        """The scrape URL."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and stop feeding the registry."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self in _ENDPOINTS:
            _ENDPOINTS.remove(self)
        if not any(e.registry is self.registry for e in _ENDPOINTS):
            served = outputs.OUTPUTS.registries
            served[:] = [r for r in served if r is not self.registry]
            if _runtime._current is not None:
                _runtime._current.sync_outputs()


_ENDPOINTS: list[PrometheusEndpoint] = []


def setup_prometheus(
    port: int = 9464,
    *,
    host: str = "127.0.0.1",
    registry: Any = None,
    **options: Any,
) -> PrometheusEndpoint:
    """Serve syncperf's metrics for Prometheus at ``http://host:port/metrics``.

    Adds ``registry`` to syncperf's outputs (composing with ``configure()`` and
    ``setup_otlp()`` in any order) and starts ``prometheus_client``'s HTTP server on a
    daemon thread. Bound to loopback by default; pass ``host="0.0.0.0"`` to expose it.
    Called again for the same address, it returns the running endpoint. With
    ``PROMETHEUS_MULTIPROC_DIR`` set (pre-fork workers), every scrape shows the totals of
    all worker processes (docs/export.md, "Deployments").

    Args:
        port: TCP port (9464, OpenTelemetry's Prometheus exporter port, by default; 0 picks
            a free one).
        host: Address to bind.
        registry: A ``prometheus_client.CollectorRegistry`` (default: a new one holding only
            syncperf's metrics; pass ``prometheus_client.REGISTRY`` to add them to yours).
        **options: ``syncperf.configure`` options; given any, the settings are rebuilt
            from them and the environment, else the current settings stay.

    Raises:
        ConfigError: a bad port, or an option syncperf rejects.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError("port", port, "an integer between 0 and 65535")
    if "prometheus" in options:
        raise ConfigError(
            "prometheus", options["prometheus"], "not an option of setup_prometheus (use registry=)"
        )
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "prometheus", True, "an installed prometheus-client: pip install 'syncperf[prometheus]'"
        ) from None
    # Options are checked and the port bound before syncperf is reconfigured: a bad option
    # or a busy port raises ConfigError and leaves the running configuration in place.
    Config.from_env(**options)
    for running in _ENDPOINTS:
        if (
            running.host == host
            and port in (0, running.port)
            and registry in (None, running.registry)
        ):
            running.config = _apply(options).config
            return running
    registry = CollectorRegistry() if registry is None else registry
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError("port", port, f"a free port on {host} ({exc.strerror})") from None
    try:
        if not any(r is registry for r in outputs.OUTPUTS.registries):
            outputs.OUTPUTS.registries.append(registry)
        rt = _apply(options)
    except BaseException:
        server.shutdown()
        server.server_close()
        outputs.OUTPUTS.registries[:] = [r for r in outputs.OUTPUTS.registries if r is not registry]
        raise
    endpoint = PrometheusEndpoint(
        host, int(server.server_address[1]), registry, rt.config, server, thread
    )
    _ENDPOINTS.append(endpoint)
    return endpoint


def prometheus_asgi_app(registry: Any = None) -> Any:
    """An ASGI app serving a registry (mount it, e.g. ``app.mount("/metrics", ...)``).

    Args:
        registry: The registry to serve; default: the first registry syncperf feeds, else
            ``prometheus_client``'s global one, which then gets syncperf's metrics (in
            multiprocess mode a new registry, as prometheus_client prescribes there).

    Raises:
        ConfigError: ``prometheus-client`` is not installed (the ``prometheus`` extra).
    """
    try:
        from prometheus_client import REGISTRY, CollectorRegistry, make_asgi_app
    except ImportError:
        raise ConfigError(
            "prometheus", True, "an installed prometheus-client: pip install 'syncperf[prometheus]'"
        ) from None
    from syncperf._metrics import multiprocess as _multiprocess

    if registry is None:
        registry = _runtime.current().prometheus_registry
        if registry is None:
            registry = REGISTRY if _multiprocess.directory() is None else CollectorRegistry()
            outputs.OUTPUTS.registries.append(registry)
            _runtime.sync_outputs()
    return make_asgi_app(registry=registry)
