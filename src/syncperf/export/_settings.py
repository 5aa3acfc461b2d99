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

import contextlib
import logging
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from syncperf import _gate as gate
from syncperf import _otel_env as otel_env
from syncperf._config import HEADER_NAME, MAX_SECONDS
from syncperf._metrics import resources
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
        shown = raw if explicit is not None else gate.not_quoted(raw)  # a variable's: unquoted
        raise ConfigError(option, shown, f"a number of seconds > 0 and <= {MAX_SECONDS:g}")
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
        raise ConfigError(found[0], gate.not_quoted(found[1]), " or ".join(choices))
    return choices[name]


_GRPC_NAME = re.compile(r"[0-9a-z_.\-]+")
"""A gRPC metadata key, once lowercased (gRPC refuses any other; it wants bytes, not text, as
the value of one ending in ``-bin``, so such a name is not accepted either)."""
_VALUE = re.compile(r"[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
"""An encoded value in a header variable: printable ASCII but ``",;\\``; URL-decoded when it
has no space (the SDK also takes a plain one with spaces, as other languages' SDKs do)."""
_TEXT = re.compile(r"(?:[\x21-\x7e][\x20-\x7e]*)?")
"""A header value as sent: printable ASCII, not starting with a space. gRPC refuses anything
else (``é``, a tab), ``requests`` a leading blank and ``http.client`` what is not latin-1 (a
line break would inject a header); each of those failed every export of the signal."""
HEADERS_ACCEPTED = (
    "header names (letters, digits, !#$%&'*+-.^_`|~; over gRPC only letters, digits, _.- and"
    " no -bin suffix) to printable ASCII text not starting with a space"
)


def _sendable(protocol: str, name: object, value: object) -> bool:
    """Whether the exporter of ``protocol`` can send header ``name`` (lowercased) with
    ``value``: one it cannot send fails every export of its signal, the good headers too."""
    if not (isinstance(name, str) and HEADER_NAME.fullmatch(name)):  # the spec's too
        return False
    if not (isinstance(value, str) and _TEXT.fullmatch(value)):
        return False
    if protocol != "grpc":
        return True
    name = name.lower()
    return bool(_GRPC_NAME.fullmatch(name)) and not name.endswith("-bin")


def _parse_headers(protocol: str, var: str, raw: str) -> dict[str, str]:
    """``name=value`` entries of a header variable, names lowercased; an entry that is
    malformed, or that the exporter of ``protocol`` cannot send, is warned about by its
    position (never its name or value: a token may be in either) and ignored, the rest kept."""
    headers: dict[str, str] = {}
    for n, entry in enumerate(raw.split(","), 1):
        name, equals, value = (part.strip(" \t") for part in entry.partition("="))
        if not entry.strip(" \t"):
            continue
        if equals and _VALUE.fullmatch(value):
            if " " not in value:  # URL-encoded, as the specification says
                value = unquote(value)
            if _sendable(protocol, name, value):
                headers[name.lower()] = value
                continue
        otel_env.warn(f"{var} entry {n}", entry, "name=value, the value URL-encoded ASCII")
    return headers


def headers_of(
    explicit: Mapping[str, str] | None, protocol: str, signal: str, env: Mapping[str, str]
) -> dict[str, str]:
    """The request headers: the variables' (the per-signal one, else the general one), then
    ``explicit`` over them, every name lowercased as gRPC metadata requires (HTTP header
    names are case-insensitive), so both protocols send the same ones. A header given in
    code that the exporter of ``protocol`` cannot send raises ``ConfigError``, never
    quoting it."""
    found = variable(env, signal, "HEADERS")
    headers = {} if found is None else _parse_headers(protocol, *found)
    for name, value in (explicit or {}).items():
        if not _sendable(protocol, name, value):
            shown = f"{gate.describe(name)}: {gate.describe(value)}"
            raise ConfigError("headers", gate.NotQuoted(shown), HEADERS_ACCEPTED)
        headers[name.lower()] = value
    return headers


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
    url, scheme = endpoint_of(endpoint, protocol, signal, env)
    kwargs: dict[str, Any] = {
        "endpoint": url,
        "timeout": timeout_of(timeout, signal, env),
        "compression": compression_of(protocol, signal, env),
    }
    if protocol == "grpc":
        insecure = variable(env, signal, "INSECURE")
        if endpoint is not None and scheme == "http":
            kwargs["insecure"] = True
        elif insecure is not None:
            kwargs["insecure"] = insecure[1].lower() == "true"
        else:  # what the exporter decides by itself (https is never insecure)
            kwargs["insecure"] = scheme == "http"
    merged = headers_of(headers, protocol, signal, env)
    if merged:  # none: the exporter's own default headers
        kwargs["headers"] = merged
    if signal == "METRICS":
        kwargs["preferred_temporality"] = temporality_of(env)
        kwargs["preferred_aggregation"] = aggregation_of(env)
    return kwargs


def endpoint_of(
    explicit: str | None, protocol: str, signal: str, env: Mapping[str, str]
) -> tuple[str, str]:
    """The exporter's endpoint and its scheme (empty for a gRPC ``host:port``): over HTTP the
    signal's path is added to a base URL (one given in code, or the general variable), never
    to the per-signal variable, which the exporter uses as given (a query there reaches the
    collector). One the exporter cannot use raises ``ConfigError`` naming the option or
    variable, never quoting it (``check_endpoint``), as does a base URL with a ``?query`` or
    ``#fragment``: the path would follow it."""
    path = "/v1/" + signal.lower()
    per_signal = f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"
    based = protocol == "http/protobuf"
    if explicit is not None:
        option, raw, url = "endpoint", explicit, explicit
        if based:
            url = explicit.rstrip("/") + path
    elif otel_env.value(env, per_signal) is not None:
        option, based = per_signal, False
        raw = url = otel_env.value(env, per_signal) or ""
    else:
        option = "OTEL_EXPORTER_OTLP_ENDPOINT"
        raw = otel_env.value(env, option) or ""
        url = raw or ("http://localhost:4317" if protocol == "grpc" else "http://localhost:4318")
        if based:
            url = url.rstrip("/") + path
    return url, check_endpoint(option, raw, url, protocol, based=based)


GRPC_TARGETS = ("unix", "unix-abstract", "dns")
"""gRPC's own target schemes, which the exporter hands gRPC as they are."""
ENDPOINT_ACCEPTED = {
    "grpc": "an http:// or https:// URL, or host:port, with a host, a port from 0 to 65535"
    " if any, and no user:password@ (gRPC cannot send them); or a gRPC unix: or dns: target",
    "http/protobuf": "an http:// or https:// URL with a host and a port from 0 to 65535 if any"
    " (a base URL, to which /v1/<signal> is added: no ?query or #fragment; credentials go in"
    " headers)",
}


def check_endpoint(option: str, raw: str, url: str, protocol: str, based: bool = False) -> str:
    """``url``'s scheme (empty for a gRPC ``host:port``), parsed once; raises ``ConfigError``
    naming ``option``, ``raw`` described, never quoted: it may hold a password, which the
    exporters quote in a warning on every failed export. ``based``: ``raw`` is a base URL
    that ``url`` extends with the signal's path."""
    problem, scheme = _endpoint_problem(url, protocol)
    if not problem and based and ("?" in raw or "#" in raw):
        problem = "with a ?query or #fragment, after which /v1/<signal> would be added"
    if problem:
        shown = gate.NotQuoted(f"{gate.describe(raw)} {problem}")
        raise ConfigError(option, shown, ENDPOINT_ACCEPTED[protocol]) from None
    return scheme


def _endpoint_problem(url: str, protocol: str) -> tuple[str, str]:
    """What the exporter of ``protocol`` cannot use in ``url`` (empty when nothing) and its
    scheme: a URL that does not parse, a scheme but http or https (over gRPC, none is
    ``host:port``, which the exporter hands gRPC as is), no host, a port that is no number
    from 0 to 65535; over gRPC, credentials (it sends none: they were only logged) or more
    than ``host:port`` without a scheme."""
    bare = protocol == "grpc" and "://" not in url
    target = url.partition(":")[0]
    if protocol == "grpc" and target in GRPC_TARGETS and url[len(target) + 1 : len(target) + 2]:
        return "", target  # gRPC's own name syntax (``unix:/path``, ``dns:///host:port``)
    try:
        parts = urlsplit("//" + url if bare else url)
        parts.port  # noqa: B018 (raises on a port that is no number, or out of range)
    except ValueError:
        return "that does not parse as a URL with a port from 0 to 65535", ""
    if not bare and parts.scheme not in ("http", "https"):
        return "with a scheme other than http or https", ""
    if not parts.hostname:
        return "with no host", ""
    if protocol == "grpc" and (parts.username is not None or parts.password is not None):
        return "with user:password@, which gRPC cannot send", ""
    if bare and (parts.path or parts.query or parts.fragment):
        return "with more than host:port and no scheme", ""
    return "", "" if bare else parts.scheme


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


_HISTOGRAMS = ("explicit_bucket_histogram", "base2_exponential_bucket_histogram")


def aggregation_of(env: Mapping[str, str]) -> dict[type, Any]:
    """``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION`` as the exporters read it
    (an unknown value is warned about: explicit buckets)."""
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.view import (
        ExplicitBucketHistogramAggregation,
        ExponentialBucketHistogramAggregation,
    )

    var = "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION"
    raw = (otel_env.value(env, var) or _HISTOGRAMS[0]).lower()
    if raw not in _HISTOGRAMS:
        otel_env.warn(var, raw, " or ".join(_HISTOGRAMS))
    if raw == _HISTOGRAMS[1]:
        return {Histogram: ExponentialBucketHistogramAggregation()}
    return {Histogram: ExplicitBucketHistogramAggregation()}


def resource_of(env: Mapping[str, str]) -> Any:
    """The SDK's default resource, from ``env``'s ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` (``resources.env_resource``)."""
    return resources.env_resource(env)


class _HeaderValuesUnlogged(logging.Filter):
    """Drops the SDK's warning about a malformed header variable, which quotes the entry (a
    token may be in it): syncperf parsed the variable in use itself and warned, not quoting."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Header format invalid")


_SDK_HEADER_LOGGER = logging.getLogger("opentelemetry.util.re")
_UNLOGGED = _HeaderValuesUnlogged()


@contextlib.contextmanager
def _timeout_unread(cls: Any, signal: str) -> Iterator[None]:
    """While ``cls`` is built, its module (a gRPC exporter's) reads the process's environment
    without ``OTEL_EXPORTER_OTLP_{signal}_TIMEOUT``: it parses that as a number even when
    given a timeout, raising a bare ``ValueError`` on ``10s`` or an empty one, and syncperf
    resolved the timeout itself (``timeout_of``, from the environment in use, which may not
    be ``os.environ``). ``os.environ`` itself is left alone."""
    module = sys.modules.get(cls.__module__)
    if getattr(module, "environ", None) is not os.environ:
        yield
        return
    var = f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT"
    seen = {name: value for name, value in os.environ.items() if name != var}
    module.environ = seen  # type: ignore[union-attr]
    try:
        yield
    finally:
        module.environ = os.environ  # type: ignore[union-attr]


_READ_FOR_THE_EXPORTER = (
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
)


def build(cls: Any, kwargs: Mapping[str, Any], env: Mapping[str, str], signal: str) -> Any:
    """The exporter ``cls(**kwargs)``, sending exactly ``kwargs``' headers: the exporters
    also read the process's header variables (the gRPC ones when given none, the HTTP ones
    under those given), which for another environment than ``os.environ`` are not its, and
    keep (and log, with its value: not logged here) an entry syncperf refused."""
    from opentelemetry.exporter.otlp.proto.common._internal import metrics_encoder
    from opentelemetry.util.re import parse_env_headers

    from syncperf.export import _sdk_env

    _sdk_env.values_not_quoted()  # the HTTP exporter's own reading (os.environ) is logged

    view = {k: v for k, v in os.environ.items() if k not in _READ_FOR_THE_EXPORTER}
    _SDK_HEADER_LOGGER.addFilter(_UNLOGGED)
    try:  # what syncperf resolved is not read again (the exporter logs a value it refuses)
        with _timeout_unread(cls, signal), resources.swapped_environ([metrics_encoder], view):
            exporter = cls(**kwargs)
        headers = dict(kwargs.get("headers") or {})
        if "insecure" in kwargs:  # gRPC (only its keyword arguments name it)
            exporter._headers = tuple(headers.items())
        else:  # what the exporter added of the process's variable (its own parse)
            own = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_HEADERS")
            raw = own or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", "")
            process = parse_env_headers(raw, liberal=True)  # as the exporter parsed it
            sent = exporter._client._headers
            for name in set(process) - set(headers):
                sent.pop(name, None)
        return exporter
    finally:
        _SDK_HEADER_LOGGER.removeFilter(_UNLOGGED)
