"""The ASGI scope values ``SyncPerfMiddleware`` reads, bounded before anything records them.

A scope is the server's, then the middlewares' in front of this one: a proxy-fix middleware
copies ``X-Forwarded-Proto`` into ``scope["scheme"]``, whatever the client sent. So
``http.request.method``, ``url.scheme`` and ``network.protocol.version`` take values from
known sets only (``_OTHER`` for another method or scheme, as the semantic conventions bound
the method): a client cannot plant text in an exported attribute or add series.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.propagators.textmap import Getter

__all__ = ["HEADERS", "METHODS", "SCHEMES", "VERSIONS", "other_scheme"]

METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)
SCHEMES = frozenset({"http", "https", "ws", "wss"})
"""The schemes of an ASGI HTTP or WebSocket scope (``url.scheme``); any other is ``_OTHER``."""
VERSIONS = frozenset({"1.0", "1.1", "2", "3"})


def other_scheme(value: object) -> str:
    """``url.scheme`` of a scheme not in ``SCHEMES``: its lowercase form when that is one
    (schemes are case-insensitive, RFC 3986), else ``_OTHER``; none, ``http`` (ASGI's
    default)."""
    if not value:
        return "http"
    lower = value.lower() if type(value) is str and len(value) <= 5 else ""
    return lower if lower in SCHEMES else "_OTHER"


class _HeaderGetter(Getter[Iterable[tuple[bytes, bytes]]]):
    """Reads propagation headers straight from the ASGI header list."""

    def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier if k == name]
        return values or None

    def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


HEADERS = _HeaderGetter()
