"""The ASGI scope values ``SyncPerfMiddleware`` reads, bounded before anything records them.

A scope is the server's, then the middlewares' in front of this one: a proxy-fix middleware
copies ``X-Forwarded-Proto`` into ``scope["scheme"]``, whatever the client sent. So

* ``http.request.method``, ``url.scheme`` and ``network.protocol.version`` take values from
  known sets only (``_OTHER`` for another method or scheme, as the semantic conventions bound
  the method): a client cannot plant text in an exported attribute or add series;
* a value of the wrong type (a server's or a middleware's bug: ``root_path=None``, a header
  that is not a pair of bytes) is dropped and counted in ``syncperf.dropped``
  (``asgi_invalid_scope``), logged once per scope key by type and size, never raised: the
  application still runs.

The common case costs a type check and a set lookup; the rest runs only for a bad value.

Trace context headers are parsed by OpenTelemetry's propagators (``extract``), whose parsers
log a malformed baggage or tracestate list-member verbatim, once per request: while syncperf
extracts, those records are dropped and counted (``propagation_log_suppressed``, logged once
without content), so a secret a client planted never reaches a log line. Outside syncperf's
extraction (the application's own) they are logged as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, TypeVar

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from syncperf._gate import describe

if TYPE_CHECKING:
    from syncperf._runtime import Runtime

__all__ = [
    "HEADERS",
    "METHODS",
    "SCHEMES",
    "VERSIONS",
    "bounded",
    "extract",
    "other_method",
    "other_scheme",
    "valid_headers",
    "wrong_type",
]

METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)
SCHEMES = frozenset({"http", "https", "ws", "wss"})
"""The schemes of an ASGI HTTP or WebSocket scope (``url.scheme``); any other is ``_OTHER``."""
VERSIONS = frozenset({"1.0", "1.1", "2", "3"})

_EXPECTED = {
    "method": "a str",
    "scheme": "a str",
    "path": "a str",
    "root_path": "a str",
    "http_version": "a str",
    "query_string": "bytes",
    "headers": "a list of (bytes, bytes) pairs",
}
_T = TypeVar("_T")


def wrong_type(rt: Runtime, key: str, value: object, replacement: _T) -> _T:
    """Count a scope value of the wrong type, log it once per key (by type and size, never
    its content) and return what replaces it. Never raises, not even in strict mode: the
    scope is not the application's to fix per request."""
    rt.drop(
        "asgi_invalid_scope",
        "syncperf ignored an ASGI scope value (asgi_invalid_scope): scope[%r] is %s, expected %s",
        key,
        describe(value),
        _EXPECTED.get(key, "another type"),
        key="asgi_invalid_scope:" + key,
    )
    return replacement


def other_method(rt: Runtime, value: object) -> str:
    """``http.request.method`` of a method not in ``METHODS``: ``_OTHER`` (none: ``GET``)."""
    if type(value) is str:
        return "_OTHER" if value else "GET"
    if value is None:
        return "GET"
    return wrong_type(rt, "method", value, "_OTHER")


def other_scheme(rt: Runtime, value: object) -> str:
    """``url.scheme`` of a scheme not in ``SCHEMES``: its lowercase form when that is one
    (schemes are case-insensitive, RFC 3986), else ``_OTHER``; none: ``http`` (ASGI's
    default)."""
    if type(value) is str:
        if not value:
            return "http"
        lower = value.lower() if len(value) <= 5 else ""
        return lower if lower in SCHEMES else "_OTHER"
    if value is None:
        return "http"
    return wrong_type(rt, "scheme", value, "_OTHER")


def bounded(rt: Runtime, scope: Mapping[str, object]) -> tuple[str, str, str]:
    """``(http.request.method, url.scheme, root_path)`` of a scope with a value that is not a
    known one (``asgi._read.read_scope`` reads the others)."""
    method, scheme = scope.get("method"), scope.get("scheme")
    method = method if type(method) is str and method in METHODS else other_method(rt, method)
    scheme = scheme if type(scheme) is str and scheme in SCHEMES else other_scheme(rt, scheme)
    root = scope.get("root_path", "")
    if type(root) is not str:  # None: none, as when missing
        root = "" if root is None else wrong_type(rt, "root_path", root, "")
    return method, scheme, root


def valid_headers(rt: Runtime, headers: object) -> list[tuple[bytes, bytes]]:
    """The (name, value) pairs of bytes of a ``headers`` scope value that also holds
    something else: the rest is dropped (counted once for the request)."""
    kept = []
    if type(headers) is list or type(headers) is tuple:
        for item in headers:
            if (type(item) is tuple or type(item) is list) and len(item) == 2:
                name, value = item
                if type(name) is bytes and type(value) is bytes:
                    kept.append((name, value))
    return wrong_type(rt, "headers", headers, kept)


class _HeaderGetter(Getter[Iterable[tuple[bytes, bytes]]]):
    """Reads propagation headers straight from the ASGI header list (pairs of bytes only)."""

    def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier if k == name and type(v) is bytes]
        return values or None

    def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier if type(k) is bytes]


HEADERS = _HeaderGetter()


_extracting = threading.local()
"""``rt``: the runtime of the request whose headers this thread is extracting, else None."""
PROPAGATION_LOGGERS = (
    "opentelemetry.baggage.propagation",
    "opentelemetry.trace.propagation.tracecontext",
    "opentelemetry.trace.span",  # ``TraceState.from_header``
)


class _WhileExtracting(logging.Filter):
    """Drops the propagators' records logged while syncperf extracts a request's context."""

    def filter(self, record: logging.LogRecord) -> bool:
        rt = getattr(_extracting, "rt", None)
        if rt is None:  # the application's own: as before
            return True
        rt.drop(
            "propagation_log_suppressed",
            "syncperf suppressed OpenTelemetry's warnings about a request's malformed trace "
            "context headers (propagation_log_suppressed): they quote the header",
        )
        return False


_FILTER = _WhileExtracting()
for _name in PROPAGATION_LOGGERS:
    logging.getLogger(_name).addFilter(_FILTER)


def extract(rt: Runtime, headers: Iterable[tuple[bytes, bytes]]) -> Context | None:
    """The trace context the global propagator reads from ``headers``, its parsers' records
    about them dropped and counted in ``rt``; None when the propagator raised (a vendor's
    choking on a hostile value): counted as ``propagation_failed``, logged without its
    message (which may quote the header), and the request has no parent. Strict mode raises."""
    _extracting.rt = rt
    try:
        return propagate.extract(headers, getter=HEADERS)
    except Exception as error:
        rt.internal_error("propagation_failed", error)
        return None
    finally:
        _extracting.rt = None
