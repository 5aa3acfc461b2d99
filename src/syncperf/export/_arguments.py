"""The types of ``setup_otlp()``'s and ``setup_prometheus()``'s own arguments, checked before
anything changes: a wrong one is a ``ConfigError`` naming it, not an ``AttributeError`` from
deep in an exporter, nor ``traces="false"`` taken as true."""

from __future__ import annotations

from collections.abc import Mapping

from syncperf._config import MAX_SECONDS, check_float, check_registry
from syncperf.exceptions import ConfigError


class _TypeOnly:
    """Stands for a value that may hold a secret (a header's token, an endpoint's password)
    in a ``ConfigError``: the message shows its type only."""

    def __init__(self, value: object) -> None:
        self.kind = type(value).__name__

    def __repr__(self) -> str:
        return f"<{self.kind} value>"


def check_otlp(
    protocol: object,
    endpoint: object,
    headers: object,
    timeout: object,
    signals: Mapping[str, object],
    global_meter_provider: object,
) -> None:
    """``setup_otlp``'s arguments (``signals``: ``traces`` and ``metrics``)."""
    if protocol is not None and not isinstance(protocol, str):
        raise ConfigError("protocol", protocol, "grpc, http/protobuf or None")
    if endpoint is not None and not isinstance(endpoint, str):
        raise ConfigError("endpoint", _TypeOnly(endpoint), "a URL (a string) or None")
    if headers is not None and not (
        isinstance(headers, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        accepted = "a mapping of header names to values, all strings, or None"
        raise ConfigError("headers", _TypeOnly(headers), accepted)
    if timeout is not None:
        check_float("timeout", timeout, low=0.0, high=MAX_SECONDS, open_low=True)
    for name, value in signals.items():
        if value is not None and not isinstance(value, bool):
            raise ConfigError(name, value, "True, False or None (the OTEL_* variables)")
    if not isinstance(global_meter_provider, bool):
        raise ConfigError("global_meter_provider", global_meter_provider, "True or False")


def check_prometheus(host: object, registry: object) -> None:
    """``setup_prometheus``'s ``host`` and ``registry``."""
    if not isinstance(host, str):
        raise ConfigError("host", host, "an address to bind (a string)")
    if registry is not None:
        check_registry("registry", registry, "None or ")
