"""HTTP server metrics, coexistence detection and idempotency bookkeeping for ``asgi``.

* ``AsgiState``: the middleware's state on one runtime (``rt.state(AsgiState)``): its
  ``HttpSeries``, excluded URLs, propagation header names and idempotency windows.
  ``configure()`` / ``capture()`` replace the runtime, so nothing is kept on the middleware.
* ``HttpSeries``: the ``http.server.*`` instruments of one runtime (created in its registry)
  and their pre-bound series.
* ``SeenKeys``: a bounded, TTL'd set of hashed ``Idempotency-Key`` values.
* ``feed_body``: a buffered JSON body handed to a route's adapter.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from opentelemetry import propagate

from syncperf import _runtime
from syncperf._client_header import read as read_client_header
from syncperf._forklocks import renew_in_child
from syncperf._gate import describe, raised_at
from syncperf._metrics import catalogue
from syncperf._metrics.aggregates import HistogramSeries
from syncperf._metrics.batches import NS, Batch, batches
from syncperf._metrics.outputs import CARRIES
from syncperf._operation import SyncOperation, hold
from syncperf._replaced import REPLACED, replaced_by
from syncperf._runtime import Runtime
from syncperf.asgi._routes import exclusions
from syncperf.asgi._scope import wrong_type

__all__ = [
    "AsgiState",
    "HttpSeries",
    "SeenKeys",
    "feed_body",
    "answer_kind",
    "invalid_status",
    "key_hash",
    "record_key",
]


MAX_CACHED = 1000
"""Attribute sets ``HttpSeries.series`` caches at least (``max_series`` when more): past
them a request binds its series again (still recorded, in the overflow series once the
instrument is full), so distinct attribute sets cannot grow the cache without bound."""


class HttpSeries:
    """``http.server.*`` instruments of one runtime and their bound series."""

    __slots__ = (
        "_batches",
        "_beside",
        "_cap",
        "_rt",
        "active",
        "active_series",
        "duration",
        "request_size",
        "response_size",
        "series",
    )

    def __init__(self, rt: Runtime, beside: object = None) -> None:
        registry, limit = rt.registry, rt.config.max_series
        self._batches = rt.state(batches)
        self.duration = catalogue.HTTP_SERVER_REQUEST_DURATION.create(
            registry, max_series=limit, beside=beside
        )
        self._rt, self._beside = rt, beside
        self.active = catalogue.HTTP_SERVER_ACTIVE_REQUESTS.observe(
            registry, self._observe_active, max_series=limit, beside=beside
        )
        self.request_size = catalogue.HTTP_SERVER_REQUEST_BODY_SIZE.create(
            registry, max_series=limit, beside=beside
        )
        self.response_size = catalogue.HTTP_SERVER_RESPONSE_BODY_SIZE.create(
            registry, max_series=limit, beside=beside
        )
        self._cap = max(limit, MAX_CACHED)
        self.series: dict[tuple[Any, ...], Batch] = {}
        """A request's histogram values are queued (``Batch``), recorded in batches: one
        append per request instead of four ``record`` calls under the lock."""
        self.active_series: dict[tuple[str, str], deque[None]] = {}
        """Requests in flight per method and scheme (``http.server.active_requests``): appends
        and pops are atomic, no lock."""

    def active_for(self, method: str, scheme: str) -> deque[None]:
        """The in-flight deque of requests with ``method`` and ``scheme``."""
        key = (method, scheme)
        found = self.active_series.get(key)
        return found if found is not None else self.active_series.setdefault(key, deque())

    def _observe_active(self) -> list[tuple[dict[str, str | bool], float]]:
        """In flight per method and scheme: this runtime's requests and the open ones the
        runtimes it replaced began (each leaves the deque it entered when it ends)."""
        counts = {key: len(inflight) for key, inflight in list(self.active_series.items())}
        for http in self._replaced():
            for key, inflight in list(http.active_series.items()):
                if inflight:  # (idle keys: ``_carry_http`` gave this one those it had)
                    counts[key] = counts.get(key, 0) + len(inflight)
        return [({"http.request.method": m, "url.scheme": s}, n) for (m, s), n in counts.items()]

    def _replaced(self) -> Iterator[HttpSeries]:
        """The same series (same ``beside``) of the runtimes this one's replaced, still alive."""
        key = None if self._beside is None else id(self._beside)  # as ``AsgiState.http``'s
        for old in replaced_by(self._rt):
            state = old.peek(AsgiState)
            found = None if state is None else state._series.get(key)
            if found is not None:
                yield found

    def bound(
        self,
        overhead: HistogramSeries,
        method: str,
        scheme: str,
        status: int | None,
        route: str | None,
        error: str | None,
        version: str | None,
    ) -> Batch:
        """The batch a request with these attributes queues its values in: duration (ns),
        request and response body size (bytes), ``overhead`` (ns); ``series`` caches it under
        the attributes, up to its bound (call under ``rt.lock``)."""
        key = (method, scheme, status, route, error, version)
        found = self.series.get(key)
        if found is None:
            attrs: dict[str, Any] = {"http.request.method": method, "url.scheme": scheme}
            if status is not None:
                attrs["http.response.status_code"] = status
            if route is not None:
                attrs["http.route"] = route
            if error is not None:
                attrs["error.type"] = error
            if version is not None:
                attrs["network.protocol.version"] = version
            frozen = tuple(sorted(attrs.items()))
            found = self._batches.of(  # one batch per tuple of series: bounded as they are
                self.duration.histogram(frozen),
                self.request_size.histogram(frozen),
                self.response_size.histogram(frozen),
                overhead,
                scales=(NS, 1, 1, NS),
            )
            if len(self.series) < self._cap:
                self.series[key] = found
        return found


class AsgiState:
    """The middleware's state on one runtime: ``rt.state(AsgiState)``.

    Attributes:
        excluded: The ``excluded_urls`` setting's ``ExcludeList``, or False for none.
    """

    __slots__ = (
        "__weakref__",
        "_fields",
        "_lock",
        "_rt",
        "_series",
        "_stores",
        "_textmap",
        "excluded",
    )

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._lock = threading.Lock()
        renew_in_child(self, "_lock")
        self._series: dict[int | None, HttpSeries] = {}
        self._stores: dict[object, SeenKeys] = {}
        self._textmap: object = None
        self._fields: frozenset[bytes] = frozenset()
        self.excluded = exclusions(rt.config.excluded_urls)

    def http(self, beside: object = None) -> HttpSeries:
        """The ``HttpSeries`` (made once); with ``beside``, the series of requests whose HTTP
        metrics another instrumentation records into that meter provider (kept out of the
        outputs that feed it, so no output has them twice)."""
        key = None if beside is None else id(beside)
        found = self._series.get(key)
        if found is None:
            with self._lock:
                found = self._series.get(key)
                if found is None:
                    found = self._series[key] = HttpSeries(self._rt, beside)
        return found

    def seen_keys(self, owner: object, ttl: float, max_keys: int) -> SeenKeys:
        """The idempotency window of one middleware (``owner``), made on first use."""
        found = self._stores.get(owner)
        if found is None:
            with self._lock:
                found = self._stores.setdefault(owner, SeenKeys(ttl, max_keys))
        return found

    def propagation_fields(self) -> frozenset[bytes]:
        """Header names the global propagator reads (kept until the propagator changes)."""
        textmap = propagate.get_global_textmap()
        if textmap is not self._textmap:
            self._fields = frozenset(f.lower().encode("latin-1") for f in textmap.fields)
            self._textmap = textmap
        return self._fields


def _carry_http(previous: Runtime, rt: Runtime) -> None:
    """``configure()`` replaced ``previous`` by ``rt``: ``rt`` counts the requests still in
    flight in ``previous`` (``HttpSeries._observe_active``) at once, before it serves any,
    and goes on reporting their series (at 0 once they end) after ``previous`` is gone."""
    state = previous.peek(AsgiState)
    if state is not None:
        shared = rt.state(AsgiState)
        for http in list(state._series.values()):
            carried = shared.http(http._beside)
            for method, scheme in list(http.active_series):
                carried.active_for(method, scheme)


CARRIES.append(_carry_http)


def _after_fork_in_child() -> None:
    """The parent's requests in flight are not the child's: its ``http.server.active_requests``
    counts its own (as ``sync.operations.active`` does). Each series gets a new deque, so one
    of the parent's that returns through the child takes its entry out of the old one."""
    for rt in {_runtime.installed, *REPLACED}:
        state = None if rt is None else rt.peek(AsgiState)
        for http in [] if state is None else list(state._series.values()):
            for key in list(http.active_series):
                http.active_series[key] = deque()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- headers and idempotency ---------------------------------------------------------------


def key_hash(key: bytes) -> str:
    """A short, stable hash of an idempotency key (the key itself is never exported)."""
    return hashlib.blake2b(key, digest_size=8, person=b"syncperf-idem").hexdigest()


def record_key(op: SyncOperation, key: bytes, shared: AsgiState, mw: Any) -> None:
    """An ``Idempotency-Key``: its hash onto the span and, opt-in (``mw``'s TTL), a repeat
    within the TTL counted as an idempotency hit."""
    ttl = mw._ttl
    span = op.span
    recording = span.is_recording()
    if not recording and ttl is None:
        return
    digest = key_hash(key)
    if recording:
        span.set_attribute("sync.idempotency.key_hash", digest)
    if ttl is not None and shared.seen_keys(mw._store_id, ttl, mw._max_keys).seen(digest):
        op.record_idempotency_hit()


class SeenKeys:
    """Idempotency-key hashes seen within ``ttl`` seconds; at most ``max_keys`` kept."""

    __slots__ = ("__weakref__", "_keys", "_lock", "max_keys", "ttl_ns")

    def __init__(self, ttl: float, max_keys: int) -> None:
        self.ttl_ns = int(ttl * 1e9)
        self.max_keys = max_keys
        self._keys: dict[str, int] = {}  # hash -> expiry (monotonic ns), oldest first
        self._lock = threading.Lock()
        renew_in_child(self, "_lock")

    def seen(self, digest: str) -> bool:
        """Record ``digest`` now; True when it was already seen within the TTL."""
        now = time.monotonic_ns()
        keys = self._keys
        with self._lock:
            expiry = keys.pop(digest, None)
            keys[digest] = now + self.ttl_ns
            while keys:
                oldest = next(iter(keys))
                if keys[oldest] > now and len(keys) <= self.max_keys:
                    break
                del keys[oldest]
            return expiry is not None and expiry > now

    def __len__(self) -> int:
        return len(self._keys)


# --- bodies for adapters ---------------------------------------------------------------

NOT_JSON, JSON, ENCODED_JSON = range(3)
"""What ``answer_kind`` tells of a response."""


def answer_kind(start: MutableMapping[str, Any]) -> int:
    """``JSON`` when a response's ``content-type`` is JSON (``application/json``, ``+json``),
    ``ENCODED_JSON`` when it is compressed as well (a ``Content-Encoding`` other than
    ``identity``), else ``NOT_JSON``. Headers that are not pairs of bytes raise, as the
    application's bug."""
    json = encoded = False
    for name, value in start.get("headers") or ():
        name = name.lower()
        if name == b"content-type":
            json = json or value.lower().find(b"json") >= 0  # (``in``: see ``live_query``)
        elif name == b"content-encoding":
            encoded = encoded or value.strip().lower() not in (b"", b"identity")
    return (ENCODED_JSON if encoded else JSON) if json else NOT_JSON


def feed_body(
    rt: Runtime,
    op: SyncOperation,
    hook: Callable[[SyncOperation, Any], None],
    chunks: list[bytes] | None,
    size: int,
    cap: int,
    answer: bool = False,
    encoded: bool = False,
) -> None:
    """JSON-decode a buffered body and hand it to an adapter hook (never raises).

    ``encoded``: the body is compressed (``Content-Encoding``), not JSON to parse.
    ``answer``: the body of a 2xx answer (``on_response``); one with nothing to read (a 204,
    an empty or non-JSON body) reaches the hook as None, so a push adapter that counts its
    rows when it reads the answer (``rxdb.Push``) still counts them. A shipped adapter holds
    what it reads (``HELD``) for ``finish`` to commit once the answer is known.
    """
    parsed = None
    if encoded and size:
        _drop(rt, "unsupported_encoding", "a sync body is compressed (Content-Encoding)")
        return
    if not chunks or size == 0:
        if not answer:
            return
    elif size > cap:
        _drop(rt, "asgi_body_too_large", f"a body of {size} bytes exceeds max_body_bytes={cap}")
        return
    else:
        import json

        body = b"".join(chunks)
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):  # nested deeper than the decoder reads: ~1,000
            if body[:2] == b"\x1f\x8b":  # gzip's magic: a compressed answer
                _drop(rt, "unsupported_encoding", "a sync response body is gzip-compressed")
                return
            _drop(rt, "asgi_invalid_json", "a sync request or response body is not valid JSON")
            return
    hold(op)  # until the answer decides them (``_http_status.settle``)
    try:
        hook(op, parsed)
    except Exception as error:
        rt.internal_error("adapter_failed", error)


def read_client(
    rt: Runtime,
    op: SyncOperation,
    adapter: Any,
    scope: MutableMapping[str, Any],
    client: list[bytes] | None,
) -> None:
    """What a sync request tells about its client: the ``Sync-Client`` header (``client``, its
    lines: several form one list, RFC 9110) and the query parameters its adapter reads
    (``adapter.query``: checkpoints) handed to ``on_query``. Never raises."""
    if client:
        read_client_header(rt, b",".join(client), op.observed())
    if adapter is not None and getattr(adapter, "query", None):
        query = scope.get("query_string")
        if query is not None and type(query) is not bytes:
            query = wrong_type(rt, "query_string", query, b"")
        try:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True) if query else ()
            adapter.on_query(op, {key: value for key, value in pairs if key in adapter.query})
        except Exception as error:
            rt.internal_error("adapter_failed", error)


def hook_failed(rt: Runtime, reason: str, error: Exception, failure: BaseException | None) -> None:
    """``rt.internal_error``, except that it never replaces the application's exception.

    When the application raised, a failure of syncperf's is counted and logged even in strict
    mode, and the application's exception propagates unchanged.
    """
    if failure is None:
        rt.internal_error(reason, error)
        return
    rt.drop(reason, "syncperf hook failed (%s): %s", reason, raised_at(error))


def invalid_status(rt: Runtime, status: object) -> None:
    """Count a response status that is not an HTTP status (an int in 100..599) and log it
    once, by type and size, never its content. Never raises, not even in strict mode: the
    response is the application's and goes to the server unchanged."""
    rt.drop(
        "asgi_invalid_status",
        "syncperf ignored a response status (asgi_invalid_status): %s, expected an int in "
        "100..599; the request is recorded without http.response.status_code",
        describe(status),
    )


def _drop(rt: Runtime, reason: str, detail: str) -> None:
    """Count a body the client or app sent that syncperf cannot read (never raises)."""
    rt.drop(reason, "syncperf could not read a body (%s): %s", reason, detail)
