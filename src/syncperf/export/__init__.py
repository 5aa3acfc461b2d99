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

import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics as otel_metrics

from syncperf import _runtime
from syncperf._config import Config, check_registry
from syncperf._metrics import outputs
from syncperf._runtime import configure
from syncperf.exceptions import ConfigError
from syncperf.export import _in_capture, _otlp, _serve
from syncperf.export._arguments import check_otlp, check_prometheus
from syncperf.export._handle import OtlpExport
from syncperf.export._otlp import CountingSpanExporter, RenewableMetricExporter

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
    the standard ``OTEL_*`` variables, as the OpenTelemetry documentation says: syncperf
    resolves the exporters' endpoint, headers, insecure, timeout, compression and temporality
    preference and the resource variables itself (from ``environ`` when given) and hands them
    to the SDK, which reads the rest (docs/export.md). When a global SDK meter provider
    already exists (the application's, or the one ``opentelemetry-instrument`` built),
    syncperf's metrics join its readers instead.

    Args:
        protocol: ``"grpc"`` or ``"http/protobuf"``; default ``OTEL_EXPORTER_OTLP_PROTOCOL``
            (per-signal variables win), else ``"http/protobuf"`` as the specification says.
        endpoint: Collector endpoint for both signals (default: ``OTEL_EXPORTER_OTLP_*``
            variables, else the exporter's default, ``localhost:4317`` / ``:4318``). For
            HTTP give the base URL; ``/v1/traces`` and ``/v1/metrics`` are appended.
        headers: Request headers, added over ``OTEL_EXPORTER_OTLP_HEADERS`` (or the
            per-signal variable) for both protocols, names lowercased (gRPC metadata).
        timeout: Seconds per export request (default ``OTEL_EXPORTER_OTLP_TIMEOUT``); a
            metric export request takes at most ``export_timeout``.
        traces: Export spans (default: unless ``OTEL_TRACES_EXPORTER=none``; other names
            than ``otlp`` and ``none`` only with a global SDK tracer provider, used as is).
        metrics: Export syncperf's metrics (default: unless ``OTEL_METRICS_EXPORTER=none``;
            other names only with a global SDK meter provider, joined whatever its readers).
        global_meter_provider: Also install an SDK ``MeterProvider`` exporting over OTLP as
            the global one, for other instrumentation, when none is set.
        environ: Environment to read instead of ``os.environ`` (tests): the protocol,
            endpoint, headers, insecure, timeout, compression, temporality preference,
            service name, resource attributes, ``OTEL_BSP_*``, the sampler, the span
            limits and syncperf's own settings come from it; the exporters still read
            their certificate files from ``os.environ``.
        **options: ``syncperf.configure`` options (``export_interval``, ``max_entities``...);
            given any, the settings are rebuilt from them and the environment, else the
            current settings stay.

    Raises:
        ConfigError: an unknown protocol or exporter name, an option syncperf rejects, or the
            exporter package for the protocol is not installed.
    """
    signals = {"traces": traces, "metrics": metrics}
    check_otlp(protocol, endpoint, headers, timeout, signals, global_meter_provider)
    env = os.environ if environ is None else environ
    for name in ("metric_exporters", "tracer_provider"):
        if name in options:
            raise ConfigError(name, options[name], "not an option of setup_otlp (it sets it)")
    traces_to, metrics_to = _otlp.signals(traces, metrics, env)  # "otlp", "joined" or None
    traces_on, metrics_on = traces_to is not None, metrics_to is not None
    traces_protocol = _otlp.protocol_of(protocol, "TRACES", env) if traces_to == "otlp" else None
    metrics_protocol = _otlp.protocol_of(protocol, "METRICS", env) if metrics_to == "otlp" else None
    disabled = _otlp.disabled(env)
    resource = options.pop("resource", None) or _otlp.default_resource(env)
    # Every option is checked before anything global changes: a mistyped option raises
    # ConfigError with the tracer and meter providers and syncperf's runtime untouched.
    config = Config.from_env(environ, resource=resource, **options)
    if not options and _runtime.installed is not None:  # the settings that stay (_apply)
        config = _runtime.installed.config
    protocols = (None, None) if disabled else (traces_protocol, metrics_protocol)
    traces_kwargs, metrics_kwargs = _otlp.exporter_settings(
        protocols, env, endpoint, headers, timeout, config.export_timeout
    )
    if (cap := _in_capture.open_capture()) is not None:  # checked, noted, nothing installed
        return _in_capture.otlp(cap, config, options, traces_protocol, metrics_protocol)

    tracer_provider: Any = None
    owns = False
    if traces_on and not disabled:
        tracer_provider, owns = _otlp.tracer_provider_of(
            resource, traces_protocol, traces_kwargs, env
        )
    exporter = meter_provider = joined = None
    if metrics_on and not disabled:
        exporter, meter_provider, joined = _otlp.metric_outputs(
            resource, metrics_protocol, metrics_kwargs or {}, env, global_meter_provider, config
        )
    _otlp.install(tracer_provider if owns else None, meter_provider, exporter)
    rt = _apply(options, environ, resource=resource)
    if tracer_provider is not None:
        rt.tracing.resolve(time.perf_counter_ns())  # no wait for the next look at the global
    if joined is not None:
        _logger.info("syncperf: joining the existing global meter provider")
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


def _apply(
    options: Mapping[str, Any], environ: Mapping[str, str] | None = None, **defaults: Any
) -> Any:
    """Rebuild the settings from ``options`` and ``environ`` (``os.environ`` when None; when
    options are given, or when syncperf is not configured yet) and make the runtime feed
    every output; returns the runtime."""
    if options or _runtime.installed is None:
        configure(Config.from_env(environ, **{**defaults, **options}))
    rt = _runtime.current()
    rt.sync_outputs()
    return rt


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
    if provider in _otlp.OWN_METER_PROVIDERS:
        return False
    _runtime.current()
    _bridge.bridge(provider)
    return True


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
        """The scrape URL (an IPv6 host in brackets, its zone's ``%`` escaped: RFC 6874)."""
        host = f"[{self.host.replace('%', '%25')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and stop feeding the registry."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self not in _ENDPOINTS:  # closed already, or set up inside a capture: not served
            return
        _ENDPOINTS.remove(self)
        if not any(e.registry is self.registry for e in _ENDPOINTS):
            served = outputs.OUTPUTS.registries
            served[:] = [r for r in served if r is not self.registry]
            if _runtime.installed is not None:
                _runtime.installed.sync_outputs()


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
    Called again for the same address, it returns the running endpoint. One process binds
    the port: in a pre-fork server a second worker's call raises ``ConfigError``; serve
    ``prometheus_asgi_app()`` from the app in every worker instead, with
    ``PROMETHEUS_MULTIPROC_DIR`` set (docs/export.md, "Deployments").

    Args:
        port: TCP port (9464, OpenTelemetry's Prometheus exporter port, by default; 0 picks
            a free one).
        host: Address to bind.
        registry: A ``prometheus_client.CollectorRegistry`` (default: a new one holding only
            syncperf's metrics; pass ``prometheus_client.REGISTRY`` to add them to yours).
        **options: ``syncperf.configure`` options; given any, the settings are rebuilt
            from them and the environment, else the current settings stay.

    Raises:
        ConfigError: a bad port, a busy one, a host that is no address of this machine
            (``option`` "host"), an option syncperf rejects, or in multiprocess
            mode prometheus_client's global ``REGISTRY`` or a missing
            ``PROMETHEUS_MULTIPROC_DIR`` directory.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError("port", port, "an integer between 0 and 65535")
    check_prometheus(host, registry)
    if "prometheus" in options:
        raise ConfigError(
            "prometheus", options["prometheus"], "not an option of setup_prometheus (use registry=)"
        )
    try:
        from prometheus_client import CollectorRegistry
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "prometheus", True, "an installed prometheus-client: pip install 'syncperf[prometheus]'"
        ) from None
    # Options are checked and the port bound before syncperf is reconfigured: a bad option
    # or a busy port raises ConfigError and leaves the running configuration in place.
    config = Config.from_env(**options)
    if (cap := _in_capture.open_capture()) is not None:  # checked, noted, nothing served
        registry = CollectorRegistry() if registry is None else registry
        outputs.check(registry, "registry")
        return PrometheusEndpoint(host, port, registry, _in_capture.note(cap, config, options))
    for running in _ENDPOINTS:
        if (
            running.host == host
            and port in (0, running.port)
            and registry in (None, running.registry)
        ):
            running.config = _apply(options).config
            return running
    registry = CollectorRegistry() if registry is None else registry
    outputs.check(registry, "registry")  # multiprocess mode: not the global one
    try:
        server, thread = _serve.start_server(port, host, registry)
    except OSError as exc:
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            here = "an address of this machine (e.g. 127.0.0.1, 0.0.0.0, ::1)"
            raise ConfigError("host", host, f"{here}; {exc.strerror}") from None
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
        ConfigError: ``prometheus-client`` is not installed (the ``prometheus`` extra),
            ``registry`` is not a registry, or ``PROMETHEUS_MULTIPROC_DIR`` names no existing
            directory.
    """
    try:
        from prometheus_client import REGISTRY, CollectorRegistry
    except ImportError:
        raise ConfigError(
            "prometheus", True, "an installed prometheus-client: pip install 'syncperf[prometheus]'"
        ) from None
    from syncperf._metrics import multiprocess as _multiprocess

    if registry is not None:  # else every scrape would fail, not this call
        check_registry("registry", registry, "None or ")
    else:
        registry = _runtime.current().prometheus_registry
        if registry is None:
            registry = REGISTRY if _multiprocess.directory() is None else CollectorRegistry()
            if _in_capture.open_capture() is not None:  # served, not fed (the capture's own:
                return _serve.asgi_app(registry)  # capture(prometheus=registry))
            outputs.OUTPUTS.registries.append(registry)
            try:
                _runtime.current().sync_outputs()
            except BaseException:  # a missing multiprocess directory: nothing is kept
                served = outputs.OUTPUTS.registries
                served[:] = [r for r in served if r is not registry]
                raise
    return _serve.asgi_app(registry)
