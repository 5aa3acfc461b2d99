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
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from syncperf._accel import speedups
from syncperf._config import (
    HEADER_NAME_ACCEPTED,
    MAX_TTL,
    check_bool,
    check_float,
    check_header_name,
    check_int,
)
from syncperf._config_env import check_names
from syncperf._gate import check_operation, not_quoted
from syncperf._operation import active_operation
from syncperf._process_exit import flush_for_exit
from syncperf._runtime import current
from syncperf._stop_signal import arm
from syncperf.asgi._client_metrics import client_metrics_app
from syncperf.asgi._exchange import new_exchange
from syncperf.asgi._http import AsgiState
from syncperf.asgi._owners import contrib_in_stack
from syncperf.asgi._routes import (
    CompiledRoute,
    RouteTable,
    SyncRoute,
    exclusions,
    live_request,
    route_path,
)
from syncperf.asgi._scope import wrong_type
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
App = TypeVar("App")

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from syncperf.asgi._exchange import Exchange

Hit = tuple[CompiledRoute, str | None] | None
"""A request's sync route and its ``{entity}`` value (``RouteTable.match``), or None."""


class MiddlewareOptions(TypedDict, total=False):
    """``SyncPerfMiddleware``'s keyword options, as ``instrument_app`` takes them."""

    http_metrics: bool
    idempotency_header: str
    replay_header: str | None
    idempotency_ttl: float | None
    idempotency_max_keys: int
    live: Callable[[Scope], bool] | None
    max_body_bytes: int
    excluded_urls: str | None
    entities: Iterable[str] | None


"""The application ``instrument_app`` and ``uninstrument_app`` are given, and return."""

_perf = time.perf_counter_ns
_store_ids = itertools.count()
_IDEM_ACCEPTED = HEADER_NAME_ACCEPTED + ", other than Content-Length"
_METERED = "syncperf.http_metrics"
"""Scope key: an outer ``SyncPerfMiddleware`` records this request's HTTP metrics, so one of a
mounted app (each team instruments its own) records only its sync operation: once each."""


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
            (value ``true`` or ``1``); it counts an idempotency hit. None to disable. Both
            are header names in any case: letters, digits and ``!#$%&'*+-.^_`|~`` (an RFC
            9110 token); ``idempotency_header`` is not ``Content-Length``.
        idempotency_ttl: Seconds; when set, a key repeating within this window also counts
            as a hit (opt-in; keeps at most ``idempotency_max_keys`` hashes).
        idempotency_max_keys: Bound of the key window.
        live: Predicate on the ASGI scope marking long-poll / streaming sync requests.
            They are reported as operation ``<operation>_live`` and kept out of
            ``http.server.request.duration``, so they cannot poison latency percentiles.
            None disables it; default ``live_request`` (``?live=true``, CouchDB's
            ``?feed=longpoll`` or SSE).
        max_body_bytes: Bodies buffered for a route's adapter are capped at this size;
            larger ones are not parsed (counted in ``syncperf.dropped``).
        excluded_urls: Comma-separated regular expressions, as the contrib instrumentations
            take them (e.g. ``"healthz,/metrics"``); a request whose path matches one is not
            recorded at all, unless it is a sync route (matched against the path only: the
            ``Host`` header is the client's to choose). None (default): the ``excluded_urls``
            setting, from ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS`` or
            ``OTEL_PYTHON_EXCLUDED_URLS``; ``""``: none, whatever the environment says.
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
        check_bool("http_metrics", http_metrics)
        idem_name = check_header_name("idempotency_header", idempotency_header)
        if idem_name == "content-length":  # read as the body's size, never as a key
            raise ConfigError("idempotency_header", idempotency_header, _IDEM_ACCEPTED)
        replay_name = None
        if replay_header is not None:
            replay_name = check_header_name("replay_header", replay_header, ", or None")
        if idempotency_ttl is not None:
            idempotency_ttl = check_float(
                "idempotency_ttl", idempotency_ttl, low=0, high=MAX_TTL, open_low=True
            )
        idempotency_max_keys = check_int("idempotency_max_keys", idempotency_max_keys, minimum=1)
        if live is not None and not callable(live):
            raise ConfigError("live", live, "a callable taking the ASGI scope, or None")
        max_body_bytes = check_int("max_body_bytes", max_body_bytes, minimum=0)
        self._excluded = None if excluded_urls is None else exclusions(excluded_urls)
        self.app = app
        self._routes = RouteTable(routes)
        self._has_routes = bool(self._routes)
        self._live_names = {
            c.route.operation: check_operation(c.route.operation + "_live", "routes")
            for c in (*self._routes.static.values(), *self._routes.dynamic)
        }
        self._http_metrics = http_metrics
        self._idem_name = idem_name.encode("ascii")
        self._replay_name = None if replay_name is None else replay_name.encode("ascii")
        self._ttl = idempotency_ttl
        self._max_keys = idempotency_max_keys
        self._store_id = next(_store_ids)  # its idempotency window, kept on the runtime
        self._live = live
        self._max_body = max_body_bytes
        self._contrib: bool | None = None  # wiring of the app, decided on the first request
        self._entities = None if entities is None else check_names("entities", entities)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection (websocket passes through untouched; on the server's
        stop signal and at the lifespan shutdown what syncperf recorded is exported, see
        ``flush_on_shutdown`` and ``syncperf._stop_signal``)."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                arm()
                send = flush_on_shutdown(send)
            await self.app(scope, receive, send)
            return
        entered = enter(self, scope)
        if entered is None:  # not recorded: passed through
            await self.app(scope, receive, send)
            return
        ex, hit, metered = entered
        await ex.run(hit, metered, receive, send)


def enter_py(mw: SyncPerfMiddleware, scope: Scope) -> tuple[Exchange, Hit, bool] | None:
    """What ``SyncPerfMiddleware`` decides about an HTTP request before the application runs:
    None when it is not recorded (passed through), else its ``Exchange``, its sync route
    (``hit``) and whether this middleware records its HTTP metrics (``metered``).

    Compiled (``_speedups.enter``) when the extension is built: the compiled one decides the
    same for a request after the first, and hands any other to this one whole."""
    rt = current()
    if not rt.enabled:
        return None
    t0 = _perf()
    if mw._contrib is None:  # the first request
        arm()  # mounted, or no lifespan: the stop signal is the only hook
        mw._contrib = contrib_in_stack(scope.get("app"))
    path = scope.get("path")
    if type(path) is not str:
        path = wrong_type(rt, "path", path, "")
    hit = mw._routes.match(route_path(path, scope.get("root_path"))) if mw._has_routes else None
    outer = active_operation()
    if hit is not None and (
        scope.get("method") == "OPTIONS" or (outer is not None and not outer._ended)
    ):
        hit = None  # preflight, or an outer sync operation already measures this request
    shared = rt.state(AsgiState)
    if hit is None:  # a sync route is never excluded (nor by a Host header the client chose)
        excluded = shared.excluded if mw._excluded is None else mw._excluded
        if excluded and excluded.url_disabled(path):
            return None
    metered = mw._http_metrics and _METERED not in scope
    if hit is None and not metered:
        return None
    if metered:  # a middleware of an app mounted inside this one leaves them to this one
        scope[_METERED] = True
    return new_exchange(mw, rt, shared, scope, t0), hit, metered


enter = enter_py
if speedups is not None:
    speedups.bind_enter(globals(), enter_py, _METERED)
    enter = speedups.enter


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
            flush_for_exit()
        await send(message)

    return flushing_send


def instrument_app(
    app: App,
    routes: Mapping[str, str | SyncRoute] | None = None,
    **options: Unpack[MiddlewareOptions],
) -> App:
    """Add ``SyncPerfMiddleware`` to a FastAPI or Starlette app in one call.

    Equivalent to ``app.add_middleware(SyncPerfMiddleware, routes=routes, **options)``, but
    validates the options now and warns (on the ``syncperf`` logger) about sync templates
    that match none of the app's routes, which usually means a typo. An app that already has
    the middleware is left as it is (with a warning), as the contrib instrumentors do;
    ``uninstrument_app`` first to change its options.

    Args:
        app: A FastAPI or Starlette application (anything with ``add_middleware``).
        routes: Sync route templates, as for ``SyncPerfMiddleware``.
        **options: ``SyncPerfMiddleware``'s keyword options (``MiddlewareOptions``); a
            misspelt one is a ``ConfigError`` (its value not quoted), and an error for a type
            checker.

    Returns:
        The same app.

    Raises:
        ConfigError: ``app`` has no ``add_middleware`` or an option is not accepted.
    """
    unknown = sorted(options.keys() - MiddlewareOptions.__annotations__.keys())
    if unknown:
        accepted = ", ".join(["routes", *MiddlewareOptions.__annotations__])
        value = options[unknown[0]]  # type: ignore[literal-required]
        raise ConfigError(unknown[0], not_quoted(value), "one of " + accepted)
    if not callable(getattr(app, "add_middleware", None)):
        raise ConfigError("app", app, "a FastAPI or Starlette application")
    # validate now, not on the first request (an app without __call__ is a ConfigError)
    SyncPerfMiddleware(app, routes, **options)  # type: ignore[arg-type]
    _add(app, routes, options)
    return app


def _add(
    app: Any, routes: Mapping[str, str | SyncRoute] | None, options: MiddlewareOptions
) -> None:
    """``instrument_app``'s work, its options checked."""
    if any(m.cls is SyncPerfMiddleware for m in getattr(app, "user_middleware", ())):
        import logging

        logging.getLogger("syncperf").warning(
            "syncperf: %r is already instrumented; instrument_app did nothing", app
        )
        return
    known = set(_templates(getattr(app, "routes", ()), ""))
    if known:
        import logging

        for template in routes or {}:
            if template not in known:
                logging.getLogger("syncperf").warning(
                    "syncperf: sync route %r matches no route of %r", template, app
                )
    app.add_middleware(SyncPerfMiddleware, routes=routes, **options)


def uninstrument_app(app: App) -> App:
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
        # built again, without it, on the next request
        app.middleware_stack = None  # type: ignore[attr-defined]
    return app


def _templates(routes: Any, prefix: str) -> list[str]:
    found: list[str] = []
    for route in routes or ():
        included = getattr(route, "effective_route_contexts", None)
        if callable(included):  # a router FastAPI (>= 0.16x) included whole: its routes with
            # every include prefix (a Starlette route or mount of it: its prefixed copy)
            contexts = [getattr(c, "starlette_route", None) or c for c in included()]
            found.extend(_templates(contexts, prefix))
            continue
        children = getattr(route, "routes", None)
        path = getattr(route, "path" if children else "path_format", None)
        if not isinstance(path, str):
            continue
        if children:
            found.extend(_templates(children, prefix + path))
        else:
            found.append(prefix + path)
    return found
