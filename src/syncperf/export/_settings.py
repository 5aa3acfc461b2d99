"""The OTLP exporters' settings, resolved by syncperf before it builds an exporter.

The exporters read some ``OTEL_EXPORTER_OTLP_*`` variables themselves, each its own way: the
gRPC ones raise a bare ``ValueError`` on an empty or malformed timeout and on an empty or
unknown compression, the HTTP ones log the value and go on; headers given in code replace
the variable's over gRPC (and fail every export unless lowercase) but add to it over HTTP.
syncperf reads these variables itself, as the specification says (empty is unset; a
per-signal variable wins over the general one), and hands the exporters explicit values, so
both protocols agree and a mistake is one ``ConfigError`` naming the variable, before
anything global changes.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlparse

from syncperf import _otel_env as otel_env
from syncperf._config import MAX_SECONDS
from syncperf.exceptions import ConfigError

DEFAULT_TIMEOUT = 10.0
"""Seconds per export request when no variable says otherwise (the exporters' default)."""


def variable(env: Mapping[str, str], signal: str, name: str) -> tuple[str, str] | None:
    """``(variable, value)`` of ``OTEL_EXPORTER_OTLP_{signal}_{name}``, else of the general
    ``OTEL_EXPORTER_OTLP_{name}``; None when both are unset or empty."""
    return otel_env.first(env, f"OTEL_EXPORTER_OTLP_{signal}_{name}", f"OTEL_EXPORTER_OTLP_{name}")


def timeout_of(explicit: float | None, signal: str, env: Mapping[str, str]) -> float:
    """Seconds per export request: ``explicit``, else the variables, else 10."""
    raw: object
    if explicit is not None:
        option, raw = "timeout", explicit
    else:
        found = variable(env, signal, "TIMEOUT")
        if found is None:
            return DEFAULT_TIMEOUT
        option, raw = found
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        seconds = math.nan
    if not 0 < seconds <= MAX_SECONDS:  # nan fails too
        raise ConfigError(option, raw, f"a number of seconds > 0 and <= {MAX_SECONDS:g}")
    return seconds


def compression_of(protocol: str, signal: str, env: Mapping[str, str]) -> Any:
    """The exporter's compression value named by the variables (none when unset)."""
    found = variable(env, signal, "COMPRESSION")
    name = "none" if found is None else found[1].lower()
    if protocol == "grpc":
        import grpc  # type: ignore[import-untyped]

        choices = {"gzip": grpc.Compression.Gzip, "none": grpc.Compression.NoCompression}
    else:
        from opentelemetry.exporter.otlp.proto.http import Compression

        choices = {"gzip": Compression.Gzip, "deflate": Compression.Deflate}
        choices["none"] = Compression.NoCompression
    if name not in choices:
        assert found is not None
        raise ConfigError(found[0], found[1], " or ".join(choices))
    return choices[name]


def headers_of(
    explicit: Mapping[str, str] | None, signal: str, env: Mapping[str, str]
) -> dict[str, str]:
    """The request headers: the variables' (the per-signal one, else the general one), then
    ``explicit`` over them, every name lowercased as gRPC metadata requires (HTTP header
    names are case-insensitive), so both protocols send the same ones."""
    from opentelemetry.util.re import parse_env_headers

    found = variable(env, signal, "HEADERS")
    headers = {} if found is None else dict(parse_env_headers(found[1], liberal=True))
    headers.update({str(name).lower(): value for name, value in (explicit or {}).items()})
    return headers


def forget_blank_timeouts(protocol: str) -> None:
    """Unset an empty ``OTEL_EXPORTER_OTLP_{TRACES,METRICS}_TIMEOUT`` in ``os.environ``, the
    same as unset to the specification: the gRPC exporters parse it as a number even when
    given a timeout, and raise on an empty one."""
    if protocol != "grpc":
        return
    for signal in ("TRACES", "METRICS"):
        var = f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT"
        if var in os.environ and not os.environ[var].strip():
            del os.environ[var]


def exporter_kwargs(
    protocol: str,
    signal: str,
    env: Mapping[str, str],
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
) -> dict[str, Any]:
    """Keyword arguments of the ``signal`` (``TRACES`` / ``METRICS``) exporter of
    ``protocol``; raises ``ConfigError`` for a variable that is not accepted."""
    forget_blank_timeouts(protocol)
    kwargs: dict[str, Any] = {
        "endpoint": endpoint_of(endpoint, protocol, signal, env),
        "timeout": timeout_of(timeout, signal, env),
        "compression": compression_of(protocol, signal, env),
    }
    if protocol == "grpc":
        insecure = variable(env, signal, "INSECURE")
        if endpoint is not None and endpoint.startswith("http://"):
            kwargs["insecure"] = True
        elif insecure is not None:
            kwargs["insecure"] = insecure[1].lower() == "true"
        else:  # what the exporter decides by itself (https is never insecure)
            kwargs["insecure"] = urlparse(kwargs["endpoint"]).scheme == "http"
    merged = headers_of(headers, signal, env)
    if merged:  # none: the exporter's own default headers
        kwargs["headers"] = merged
    if signal == "METRICS":
        kwargs["preferred_temporality"] = temporality_of(env)
    return kwargs


def endpoint_of(explicit: str | None, protocol: str, signal: str, env: Mapping[str, str]) -> str:
    """The exporter's endpoint: over HTTP the signal's path is added to a base URL (one
    given in code, or the general variable), never to the per-signal variable."""
    path = "/v1/" + signal.lower()
    if explicit is not None:
        return explicit.rstrip("/") + path if protocol == "http/protobuf" else explicit
    per_signal = otel_env.value(env, f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    if per_signal is not None:
        return per_signal
    base = otel_env.value(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if protocol == "grpc":
        return base or "http://localhost:4317"
    return (base or "http://localhost:4318").rstrip("/") + path


_DELTA_KINDS = {
    "delta": ("Counter", "Histogram", "ObservableCounter"),
    "lowmemory": ("Counter", "Histogram"),
    "cumulative": (),
}


def temporality_of(env: Mapping[str, str]) -> dict[type, Any]:
    """``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` as the exporters read it, for
    every instrument class (an unknown value is warned about: cumulative)."""
    from opentelemetry.sdk import metrics as sdk
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    var = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
    raw = (otel_env.value(env, var) or "cumulative").lower()
    if raw not in _DELTA_KINDS:
        otel_env.warn(var, raw, " or ".join(_DELTA_KINDS))
    delta = _DELTA_KINDS.get(raw, ())
    kinds = (
        "Counter UpDownCounter Histogram ObservableCounter ObservableUpDownCounter ObservableGauge"
    )
    return {
        getattr(sdk, kind): AggregationTemporality.DELTA
        if kind in delta
        else AggregationTemporality.CUMULATIVE
        for kind in kinds.split()
    }


def resource_of(env: Mapping[str, str]) -> Any:
    """The SDK's default resource, from ``env``'s ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES``: ``Resource.create()`` reads them from ``os.environ``, so for
    another environment only what it adds by itself (``telemetry.sdk.*``, the
    ``service.instance.id``) is kept of it."""
    from opentelemetry.sdk.resources import Resource

    created = Resource.create()
    if env is os.environ:
        return created
    attributes = {
        key: value
        for key, value in created.attributes.items()
        if key.startswith("telemetry.sdk.") or key == "service.instance.id"
    }
    for item in (otel_env.value(env, "OTEL_RESOURCE_ATTRIBUTES") or "").split(","):
        key, equals, value = item.partition("=")
        if key.strip() and equals:
            attributes[key.strip()] = unquote(value.strip())
    default = "unknown_service" + (f":{os.path.basename(sys.executable)}" if sys.executable else "")
    attributes.setdefault("service.name", default)
    name = otel_env.value(env, "OTEL_SERVICE_NAME")
    if name is not None:
        attributes["service.name"] = name
    return Resource(attributes)


def build(cls: Any, kwargs: Mapping[str, Any], env: Mapping[str, str], signal: str) -> Any:
    """The exporter ``cls(**kwargs)``, sending exactly ``kwargs``' headers: the exporters
    also read the process's header variables (the gRPC ones when given none, the HTTP ones
    under those given), which for another environment than ``os.environ`` are not its."""
    exporter = cls(**kwargs)
    if env is os.environ:
        return exporter
    headers = dict(kwargs.get("headers") or {})
    if "insecure" in kwargs:  # gRPC (only its keyword arguments name it)
        exporter._headers = tuple(headers.items())
    else:
        sent = exporter._client._headers
        for name in set(headers_of(None, signal, os.environ)) - set(headers):
            sent.pop(name, None)
    return exporter
