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
from collections.abc import Mapping
from typing import Any

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
        "timeout": timeout_of(timeout, signal, env),
        "compression": compression_of(protocol, signal, env),
    }
    if endpoint is not None:
        if protocol == "http/protobuf":
            kwargs["endpoint"] = endpoint.rstrip("/") + "/v1/" + signal.lower()
        else:
            kwargs["endpoint"] = endpoint
            if endpoint.startswith("http://"):
                kwargs["insecure"] = True
    merged = headers_of(headers, signal, env)
    if merged:  # none: the exporter's own default headers
        kwargs["headers"] = merged
    return kwargs
