"""``SyncPerfMiddleware``: drop-in sync observability for FastAPI, Starlette and any ASGI app.

A pure ASGI middleware (no ``BaseHTTPMiddleware``, no framework import)::

    from syncperf.asgi import SyncPerfMiddleware, SyncRoute

    app.add_middleware(
        SyncPerfMiddleware,
        routes={"/sync/pull": "pull", "/sync/{entity}/push": "push"},
    )

For a request to a sync route a sync operation is active while the handler runs, so
``syncperf.current_operation()`` and decorated handlers attach to it. Every HTTP request
also gets the ``http.server.*`` metrics of the semantic conventions, unless another
instrumentation (contrib's ``OpenTelemetryMiddleware`` / ``FastAPIInstrumentor`` or FastAPI's
native telemetry) already records them. See ``docs/asgi.md``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from opentelemetry import context as context_api
from opentelemetry import propagate
from opentelemetry.trace import SpanKind

from syncperf import _runtime
from syncperf._client_header import HEADER as CLIENT_HEADER
from syncperf._client_header import read as read_client_header
from syncperf._config import check_names, check_patterns
from syncperf._decorators import apply_http_status
from syncperf._operation import _CURRENT, SyncOperation, begin, check_operation, end, error_type
from syncperf._runtime import OTHER, Runtime, raised_at
from syncperf.asgi._client_metrics import client_metrics_app
from syncperf.asgi._http import (
    HEADERS,
    HTTP_KEY,
    METHODS,
    VERSIONS,
    SeenKeys,
    contrib_in_stack,
    http_series,
    key_hash,
    owners,
    propagation_fields,
)
from syncperf.asgi._routes import RouteTable, SyncRoute, framework_route, route_path
from syncperf.exceptions import ConfigError

__all__ = [
    "SyncPerfMiddleware",
    "SyncRoute",
    "client_metrics_app",
    "instrument_app",
    "live_request",
    "uninstrument_app",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_perf = time.perf_counter_ns
_store_ids = itertools.count()
_TRUE = (b"true", b"1")
_NO_FIELDS: frozenset[bytes] = frozenset()
_INTERNAL, _SERVER = SpanKind.INTERNAL, SpanKind.SERVER  # an enum member lookup costs ~70 ns


def live_request(scope: Scope) -> bool:
    """The default ``live`` predicate: ``?live=true`` (or ``1``) or ``Accept: text/event-stream``.

    Args:
        scope: The ASGI HTTP scope.

    Returns:
        True for a long-poll or streaming request.
    """
    query = scope.get("query_string")
    if query and b"live=" in query:
        for part in query.split(b"&"):
            if part in (b"live=true", b"live=1"):
                return True
    for name, value in scope.get("headers") or ():
        if name == b"accept" and b"text/event-stream" in value:
            return True
    return False


class SyncPerfMiddleware:
    """Measures sync routes as sync operations and every request as an HTTP server request.

    Args:
        app: The ASGI application to wrap.
        routes: Route template -> operation name or ``SyncRoute``, e.g.
            ``{"/sync/pull": "pull", "/sync/{entity}/push": "push"}``. Templates use the
            framework's syntax and are relative to the app's ``root_path``; an ``{entity}``
            path parameter names the entity. ``OPTIONS`` (CORS preflight) requests are never
            sync operations.
        http_metrics: Record ``http.server.request.duration``, ``.active_requests``,
            ``.request.body.size`` and ``.response.body.size``. Even when True they are left
            to another instrumentation that records them for the same request.
        idempotency_header: Request header carrying the idempotency key (IETF draft
            ``Idempotency-Key``). The key is never exported; on spans only as a hash.
        replay_header: Response header by which the application marks a replayed response
            (value ``true`` or ``1``); it counts an idempotency hit. None to disable.
        idempotency_ttl: Seconds; when set, a key repeating within this window also counts
            as a hit (opt-in; keeps at most ``idempotency_max_keys`` hashes).
        idempotency_max_keys: Bound of the key window.
        live: Predicate on the ASGI scope marking long-poll / streaming sync requests.
            They are reported as operation ``<operation>_live`` and kept out of
            ``http.server.request.duration``, so they cannot poison latency percentiles.
            None disables it; default ``live_request`` (``?live=true`` or SSE).
        max_body_bytes: Bodies buffered for a route's adapter are capped at this size;
            larger ones are not parsed (counted in ``syncperf.dropped``).
        excluded_urls: Comma-separated regular expressions, as the contrib instrumentations
            take them (e.g. ``"healthz,/metrics"``); a request whose URL matches one is not
            recorded at all. None (default): the ``excluded_urls`` setting, from
            ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS`` or ``OTEL_PYTHON_EXCLUDED_URLS``; ``""``:
            none, whatever the environment says.
        entities: The entity names a route's ``{entity}`` may report; any other value is
            reported as ``_other``. Without it (and without ``configure(entities=...)``) the
            first ``max_entities`` values any client sends become ``sync.entity`` series, and
            syncperf warns once.

    Raises:
        ConfigError: an option has a value that is not accepted.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[str, str | SyncRoute] | None = None,
        *,
        http_metrics: bool = True,
        idempotency_header: str = "idempotency-key",
        replay_header: str | None = "idempotent-replayed",
        idempotency_ttl: float | None = None,
        idempotency_max_keys: int = 10_000,
        live: Callable[[Scope], bool] | None = live_request,
        max_body_bytes: int = 1_048_576,
        excluded_urls: str | None = None,
        entities: Iterable[str] | None = None,
    ) -> None:
        if not callable(app):
            raise ConfigError("app", app, "an ASGI application")
        if not isinstance(http_metrics, bool):
            raise ConfigError("http_metrics", http_metrics, "True or False")
        if not isinstance(idempotency_header, str) or not idempotency_header:
            raise ConfigError("idempotency_header", idempotency_header, "a header name")
        if replay_header is not None and (not isinstance(replay_header, str) or not replay_header):
            raise ConfigError("replay_header", replay_header, "a header name or None")
        if idempotency_ttl is not None and (
            isinstance(idempotency_ttl, bool)
            or not isinstance(idempotency_ttl, (int, float))
            or not idempotency_ttl > 0
        ):
            raise ConfigError("idempotency_ttl", idempotency_ttl, "a number of seconds > 0 or None")
        if (
            isinstance(idempotency_max_keys, bool)
            or not isinstance(idempotency_max_keys, int)
            or idempotency_max_keys < 1
        ):
            raise ConfigError("idempotency_max_keys", idempotency_max_keys, "an integer >= 1")
        if live is not None and not callable(live):
            raise ConfigError("live", live, "a callable taking the ASGI scope, or None")
        if (
            isinstance(max_body_bytes, bool)
            or not isinstance(max_body_bytes, int)
            or max_body_bytes < 0
        ):
            raise ConfigError("max_body_bytes", max_body_bytes, "an integer >= 0")
        self._excluded = None if excluded_urls is None else _exclusions(excluded_urls)
        self.app = app
        self._routes = RouteTable(routes)
        self._has_routes = bool(self._routes)
        self._live_names = {
            c.route.operation: check_operation(c.route.operation + "_live", "routes")
            for c in (*self._routes.static.values(), *self._routes.dynamic)
        }
        self._http_metrics = http_metrics
        self._idem_name = idempotency_header.lower().encode("latin-1")
        self._replay_name = (
            None if replay_header is None else replay_header.lower().encode("latin-1")
        )
        self._ttl = idempotency_ttl
        self._max_keys = idempotency_max_keys
        self._store_key = ("syncperf.asgi", "idempotency", next(_store_ids))
        self._live = live
        self._max_body = max_body_bytes
        self._contrib: bool | None = None  # wiring of the app, decided on the first request
        self._entities = None if entities is None else check_names("entities", entities)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection (websocket passes through untouched; at the lifespan
        shutdown what syncperf recorded is exported, see ``flush_on_shutdown``)."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                send = flush_on_shutdown(send)
            await self.app(scope, receive, send)
            return
        rt = _runtime._current or _runtime.current()
        excluded = self._excluded
        if excluded is None:
            excluded = rt.cache.get(_EXCLUDED)
            if excluded is None:
                excluded = rt.cache[_EXCLUDED] = _exclusions(rt.config.excluded_urls)
        if not rt.enabled or (excluded and excluded.url_disabled(_url(scope))):
            await self.app(scope, receive, send)
            return
        t0 = _perf()
        contrib = self._contrib
        if contrib is None:
            contrib = self._contrib = contrib_in_stack(scope.get("app"))
        hit = self._routes.match(route_path(scope)) if self._has_routes else None
        if hit is not None and (scope.get("method") == "OPTIONS" or _CURRENT.get() is not None):
            hit = None  # preflight, or an outer sync operation already measures this request
        owner_span, owned, metered_into = owners(scope, contrib)
        metering = self._http_metrics
        if hit is None and not metering:
            await self.app(scope, receive, send)
            return

        # --- prologue: everything decided before the application runs -------------------
        method = scope.get("method") or "GET"
        if method not in METHODS:
            method = "_OTHER"
        scheme = scope.get("scheme") or "http"
        entry_root = scope.get("root_path", "")
        headers = scope.get("headers") or ()
        content_length = -1
        idem_key: bytes | None = None
        idem_name = self._idem_name
        traced = hit is not None and not owned and rt.tracing.active
        fields = propagation_fields(rt) if traced else _NO_FIELDS
        propagated = False  # only parse trace headers when there is something to continue
        client_header: bytes | None = None
        for name, value in headers:
            if name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
            elif name == idem_name:
                idem_key = value
            elif name in fields:
                propagated = True
            elif name == CLIENT_HEADER:  # several lines form one list (RFC 9110)
                client_header = value if client_header is None else client_header + b"," + value
        op: SyncOperation | None = None
        token: Any = None
        live = False
        entity_value: str | None = None
        fresh = False  # this request's path entity took a new slot of the entity bound
        template: str | None = None
        adapter = None
        if hit is not None:
            compiled, entity_value = hit
            if entity_value is not None:
                entity_value = self._path_entity(rt, entity_value)
            route = compiled.route
            template = compiled.template
            adapter = route.adapter
            try:
                live = self._live is not None and bool(self._live(scope))
            except Exception as error:
                rt.internal_error("asgi_live_predicate_failed", error)
            operation = self._live_names[route.operation] if live else route.operation
            attributes = None
            if traced:
                if propagated:
                    token = context_api.attach(propagate.extract(headers, getter=HEADERS))
                attributes = {
                    "http.request.method": method,
                    "url.scheme": scheme,
                    "url.path": entry_root + template,  # never a path parameter's value
                    "http.route": template,
                }
            op = begin(
                rt,
                operation,
                route.entity,
                kind=_INTERNAL if owned else _SERVER,
                attributes=attributes,
            )
            if entity_value is not None:  # known while the handler runs (query metrics)
                fresh = entity_value not in rt.entities.names
                op.set_entity(entity_value)
                if fresh and op.entity != entity_value:
                    fresh = False  # not admitted (allow-list, bound reached)
            if owner_span is not None:
                owner_span.set_attribute("sync.operation", operation)
            if idem_key is not None:
                self._idempotency(rt, op, idem_key)
            if client_header is not None:
                read_client_header(rt, client_header, op.observed())
            if adapter is not None and getattr(adapter, "query", None):
                _feed_query(rt, op, adapter, scope.get("query_string"))

        hs = None
        if metering:
            hs = (
                rt.cache.get(HTTP_KEY) or http_series(rt)
                if metered_into is None
                else http_series(rt, metered_into)
            )
            with rt.lock:
                active = hs.active_series.get((method, scheme)) or hs.active_for(method, scheme)
                active.add(1)

        # --- the request ---------------------------------------------------------------------
        status: int | None = None
        sent = 0
        received = 0
        complete_ns = 0
        disconnected = False
        replayed = False
        cap = self._max_body
        read_ahead: list[Message] = []  # what the adapter read before the app: replayed
        response_chunks: list[bytes] | None = [] if adapter is not None else None
        replay_name = self._replay_name if op is not None else None
        prologue_ns = _perf() - t0

        async def wrapped_receive() -> Message:
            nonlocal received, disconnected
            if read_ahead:
                return read_ahead.pop(0)
            message = await receive()
            kind = message["type"]
            if kind == "http.request":
                received += len(message.get("body", b""))
            elif kind == "http.disconnect":
                disconnected = True
            return message

        async def read_request() -> None:
            """Read the body (up to ``cap``) for the adapter before the app sees it: its
            server-state callbacks must run before the handler changes that state."""
            nonlocal received, disconnected
            chunks: list[bytes] = []
            while True:
                message = await receive()
                read_ahead.append(message)
                if message["type"] != "http.request":
                    disconnected = message["type"] == "http.disconnect"
                    return
                body = message.get("body", b"")
                received += len(body)
                chunks.append(body)
                if not message.get("more_body", False) or received > cap:
                    break
            _feed(rt, op, adapter.on_request, chunks, received, cap)  # type: ignore[arg-type,union-attr]

        async def wrapped_send(message: Message) -> None:
            nonlocal status, sent, complete_ns, replayed, response_chunks
            kind = message["type"]
            final = False
            if kind == "http.response.body":
                body = message.get("body", b"")
                sent += len(body)
                if response_chunks is not None and sent <= cap:
                    response_chunks.append(body)
                final = not message.get("more_body", False)
            elif kind == "http.response.start":
                status = message["status"]
                if response_chunks is not None and not _json(message):
                    response_chunks = None  # not the protocol's answer (text, HTML...)
                if op is not None:
                    if replay_name is not None:
                        for name, value in message.get("headers") or ():
                            if name.lower() == replay_name and value.lower() in _TRUE:
                                replayed = True
                    if owner_span is not None and op.entity is not None:
                        owner_span.set_attribute("sync.entity", op.entity)
            elif kind == "http.response.pathsend":
                final = True
            await send(message)
            if final:
                complete_ns = _perf()

        failure: BaseException | None = None
        try:
            if adapter is not None:
                await read_request()
            await self.app(scope, wrapped_receive, wrapped_send)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            t_end = _perf()
            reason = None
            if failure is None and not complete_ns:
                reason = "client_disconnected" if disconnected else "incomplete_response"
            try:
                matched: str | None = None
                if op is not None:
                    try:
                        matched = self._finish_operation(
                            rt,
                            op,
                            failure,
                            status,
                            reason,
                            replayed,
                            entity_value if fresh else None,
                            template,
                            scope,
                            entry_root,
                            owned,
                            adapter,
                            response_chunks,
                            sent,
                            complete_ns,
                        )
                    finally:
                        if token is not None:
                            context_api.detach(token)
            finally:
                # Runs even when strict mode raised above: the gauge must return to zero.
                # Never replaces the application's exception (see _hook_failed).
                left = False
                try:
                    overhead = rt.overhead_series.get("asgi") or rt.overhead_for("asgi")
                    if hs is not None:
                        status_attr: int | None = status
                        if failure is not None:
                            etype: str | None = rt.error_types(error_type(failure))
                            status_attr = 500 if status is None else status
                        elif status is not None and status >= 500:
                            etype = str(status)
                        else:
                            etype = reason
                        if op is None:
                            matched = framework_route(scope, entry_root)
                        http_route = matched or template
                        version = scope.get("http_version")
                        size = content_length if content_length >= 0 else received
                        duration = ((complete_ns or t_end) - t0) / 1e9
                        key = (
                            method,
                            scheme,
                            status_attr,
                            http_route,
                            etype,
                            version if version in VERSIONS else None,
                        )
                        bound = hs.series.get(key)
                        with rt.lock:
                            active.add(-1)
                            left = True
                            dur, req_size, resp_size = bound or hs.bound(*key)
                            if not live:
                                dur.record(duration)
                            if size > 0 or content_length == 0:
                                req_size.record(size)
                            resp_size.record(sent)
                            overhead.record((prologue_ns + _perf() - t_end) / 1e9)
                    else:
                        with rt.lock:
                            overhead.record((prologue_ns + _perf() - t_end) / 1e9)
                except Exception as error:
                    _hook_failed(rt, "asgi_http_metrics_failed", error, failure)
                finally:
                    if hs is not None and not left:
                        with rt.lock:
                            active.add(-1)

    def _path_entity(self, rt: Runtime, value: str) -> str:
        """A route's ``{entity}`` value, bounded by ``entities=`` when given."""
        allowed = self._entities
        if allowed is None:
            rt.names_from_requests("the {entity} of a route")
            return value
        return value if value in allowed else OTHER

    def _idempotency(self, rt: Runtime, op: SyncOperation, key: bytes) -> None:
        """Hash the key onto the span and, opt-in, count a repeat within the TTL."""
        span = op._span
        if span is None and self._ttl is None:
            return
        digest = key_hash(key)
        if span is not None:
            span._attributes["sync.idempotency.key_hash"] = digest
        if self._ttl is not None:
            store = rt.cache.get(self._store_key)
            if store is None:
                store = rt.cache.setdefault(self._store_key, SeenKeys(self._ttl, self._max_keys))
            if store.seen(digest):
                op.record_idempotency_hit()

    def _finish_operation(
        self,
        rt: Runtime,
        op: SyncOperation,
        failure: BaseException | None,
        status: int | None,
        reason: str | None,
        replayed: bool,
        fresh_entity: str | None,
        template: str | None,
        scope: Scope,
        entry_root: str,
        owned: bool,
        adapter: Any,
        response_chunks: list[bytes] | None,
        sent: int,
        complete_ns: int,
    ) -> str | None:
        """Outcome from the response, adapter feeding, then ``end()``.

        Never raises, except in strict mode when the application itself did not raise.
        The operation's duration stops when the response was complete (``complete_ns``, 0
        when it never was): background tasks that run after it are not part of it.

        Returns:
            The route template the framework matched (``framework_route``), or None.
        """
        matched = None
        try:
            if response_chunks is not None:
                _feed(rt, op, adapter.on_response, response_chunks, sent, self._max_body)
            if replayed:
                op.record_idempotency_hit()
            if failure is None:
                if reason is not None and (status is None or status < 500):
                    op.set_error(reason)
                elif status is not None:
                    apply_http_status(op, status)
            if (
                fresh_entity is not None
                and status is not None
                and 400 <= status < 500
                and not op.conflicts
                and op.entity == fresh_entity
            ):
                # A rejected request (a junk URL answered 404) gives its path entity back:
                # junk cannot use up the max_entities bound.
                rt.entities.release(fresh_entity)
                op._entity = None
            matched = framework_route(scope, entry_root)
            span = op._span
            if span is not None and not owned:
                attrs = span._attributes  # syncperf's own values: valid by construction
                if status is not None or failure is not None:
                    attrs["http.response.status_code"] = 500 if status is None else status
                if matched is not None and matched != template:
                    attrs["http.route"] = matched
        except Exception as error:
            _hook_failed(rt, "asgi_outcome_failed", error, failure)
        finally:  # the operation ends even when strict mode raised just above
            try:
                end(op, failure, complete_ns or None)
            except Exception as error:
                _hook_failed(rt, "operation_end_failed", error, failure)
        return matched


def _json(start: Message) -> bool:
    """Whether a response's ``content-type`` is JSON (``application/json``, ``+json``)."""
    for name, value in start.get("headers") or ():
        if name.lower() == b"content-type":
            return b"json" in value.lower()
    return False


_SHUTDOWN_DONE = frozenset({"lifespan.shutdown.complete", "lifespan.shutdown.failed"})


def flush_on_shutdown(send: Send) -> Send:
    """Wrap a lifespan ``send`` so that, once the application finished its own shutdown,
    syncperf exports what it recorded before the server is told (bounded by the
    ``shutdown_timeout`` setting).

    uvicorn re-raises SIGTERM after its graceful stop, so the interpreter's exit hooks never
    run there: the lifespan shutdown is the last moment a server gives the application.
    """

    async def flushing_send(message: Message) -> None:
        if message.get("type") in _SHUTDOWN_DONE:
            _runtime.flush_for_exit()
        await send(message)

    return flushing_send


_EXCLUDED = ("syncperf.asgi", "excluded_urls")


def _exclusions(patterns: str | None) -> Any:
    """The contrib instrumentations' ``ExcludeList`` for ``patterns``, or False for none.

    Raises:
        ConfigError: ``patterns`` is not a string of valid regular expressions.
    """
    if patterns is None or patterns == "":
        return False
    check_patterns("excluded_urls", patterns)
    from opentelemetry.util.http import parse_excluded_urls

    return parse_excluded_urls(patterns)


def _url(scope: Scope) -> str:
    """The URL the contrib instrumentations match excluded URLs against (no query string)."""
    host = None
    for name, value in scope.get("headers") or ():
        if name == b"host":
            host = value.decode("latin-1")
            break
    if host is None:
        server = scope.get("server") or ("0.0.0.0", 80)
        host = server[0] if server[1] in (80, 443, None) else f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme') or 'http'}://{host}{scope.get('path', '')}"


def _hook_failed(rt: Runtime, reason: str, error: Exception, failure: BaseException | None) -> None:
    """``rt.internal_error``, except that it never replaces the application's exception.

    When the application raised, a failure of syncperf's is counted and logged even in strict
    mode, and the application's exception propagates unchanged.
    """
    if failure is None:
        rt.internal_error(reason, error)
        return
    rt.drop(reason, "syncperf hook failed (%s): %s", reason, raised_at(error))


def _feed(
    rt: Runtime,
    op: SyncOperation,
    hook: Callable[[SyncOperation, Any], None],
    chunks: list[bytes] | None,
    size: int,
    cap: int,
) -> None:
    """JSON-decode a buffered body and hand it to an adapter hook (never raises)."""
    if not chunks or size == 0:
        return
    if size > cap:
        _drop(rt, "asgi_body_too_large", f"a body of {size} bytes exceeds max_body_bytes={cap}")
        return
    import json

    try:
        parsed = json.loads(b"".join(chunks))
    except ValueError:
        _drop(rt, "asgi_invalid_json", "a sync request or response body is not valid JSON")
        return
    try:
        hook(op, parsed)
    except Exception as error:
        rt.internal_error("adapter_failed", error)


def _feed_query(rt: Runtime, op: SyncOperation, adapter: Any, query: bytes | None) -> None:
    """Hand the query parameters an adapter reads (``adapter.query``) to ``on_query``."""
    try:
        wanted = adapter.query
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True) if query else ()
        adapter.on_query(op, {key: value for key, value in pairs if key in wanted})
    except Exception as error:
        rt.internal_error("adapter_failed", error)


def _drop(rt: Runtime, reason: str, detail: str) -> None:
    """Count a body the client or app sent that syncperf cannot read (never raises)."""
    rt.drop(reason, "syncperf could not read a body (%s): %s", reason, detail)


def instrument_app(
    app: Any, routes: Mapping[str, str | SyncRoute] | None = None, **options: Any
) -> Any:
    """Add ``SyncPerfMiddleware`` to a FastAPI or Starlette app in one call.

    Equivalent to ``app.add_middleware(SyncPerfMiddleware, routes=routes, **options)``, but
    validates the options now and warns (on the ``syncperf`` logger) about sync templates
    that match none of the app's routes, which usually means a typo. An app that already has
    the middleware is left as it is (with a warning), as the contrib instrumentors do;
    ``uninstrument_app`` first to change its options.

    Args:
        app: A FastAPI or Starlette application (anything with ``add_middleware``).
        routes: Sync route templates, as for ``SyncPerfMiddleware``.
        **options: Other ``SyncPerfMiddleware`` options.

    Returns:
        The same app.

    Raises:
        ConfigError: ``app`` has no ``add_middleware`` or an option is not accepted.
    """
    if not callable(getattr(app, "add_middleware", None)):
        raise ConfigError("app", app, "a FastAPI or Starlette application")
    SyncPerfMiddleware(app, routes, **options)  # validate now, not on the first request
    if any(m.cls is SyncPerfMiddleware for m in getattr(app, "user_middleware", ())):
        import logging

        logging.getLogger("syncperf").warning(
            "syncperf: %r is already instrumented; instrument_app did nothing", app
        )
        return app
    known = set(_templates(getattr(app, "routes", ()), ""))
    if known:
        import logging

        for template in routes or {}:
            if template not in known:
                logging.getLogger("syncperf").warning(
                    "syncperf: sync route %r matches no route of %r", template, app
                )
    app.add_middleware(SyncPerfMiddleware, routes=routes, **options)
    return app


def uninstrument_app(app: Any) -> Any:
    """Remove ``SyncPerfMiddleware`` from a FastAPI or Starlette app (``instrument_app``'s
    or ``add_middleware``'s), even after it served requests.

    Args:
        app: A FastAPI or Starlette application.

    Returns:
        The same app.

    Raises:
        ConfigError: ``app`` is not a FastAPI or Starlette application.
    """
    middleware = getattr(app, "user_middleware", None)
    if not isinstance(middleware, list):
        raise ConfigError("app", app, "a FastAPI or Starlette application")
    kept = [m for m in middleware if m.cls is not SyncPerfMiddleware]
    if len(kept) != len(middleware):
        middleware[:] = kept
        app.middleware_stack = None  # built again, without it, on the next request
    return app


def _templates(routes: Any, prefix: str) -> list[str]:
    found: list[str] = []
    for route in routes or ():
        children = getattr(route, "routes", None)
        path = getattr(route, "path" if children else "path_format", None)
        if not isinstance(path, str):
            continue
        if children:
            found.extend(_templates(children, prefix + path))
        else:
            found.append(prefix + path)
    return found
