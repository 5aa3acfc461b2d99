"""One HTTP request through ``SyncPerfMiddleware``: the ``Exchange``.

The middleware decides whether a request is recorded at all, then makes one ``Exchange`` for
it (as Starlette's ``GZipMiddleware`` makes a responder): it wraps the server's ``receive`` and
``send`` and owns everything the request records, so the middleware keeps no per-request state:

* ``open``: what is decided before the application runs (``http.server.active_requests``,
  the request's headers, the sync operation of a sync route);
* ``run``: ``open``, then the application, with ``receive`` and ``send`` counting the bodies
  (and, for a route whose adapter reads the request, its body read first, or as the
  application reads it under ``Expect: 100-continue``), ``finish`` whatever raised (strict
  mode too);
* ``finish`` (``_finish``): the operation's outcome and end, then the HTTP metrics, never
  replacing the application's exception; the active-requests gauge returns to zero.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as context_api
from opentelemetry import propagate
from opentelemetry.trace import INVALID_SPAN, SpanKind

from syncperf._accel import speedups
from syncperf._decorators import Adapter
from syncperf._gate import name as gate_name
from syncperf._gate import text
from syncperf._lifecycle import begin
from syncperf._operation import SyncOperation
from syncperf._runtime import OTHER, Runtime
from syncperf._tracing.current import current_span
from syncperf.asgi._finish import finish
from syncperf.asgi._http import (
    AsgiState,
    HttpSeries,
    feed_body,
    read_client,
    record_key,
)
from syncperf.asgi._owners import owners
from syncperf.asgi._read import Read, read_headers, read_scope, sending
from syncperf.asgi._routes import CompiledRoute, is_live, live_query, live_request, mount_base
from syncperf.asgi._scope import bounded, extract, valid_headers

if TYPE_CHECKING:
    from collections import deque

    from syncperf.asgi import SyncPerfMiddleware

__all__ = ["Exchange", "new_exchange", "open_exchange"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_perf = time.perf_counter_ns
_NO_FIELDS: frozenset[bytes] = frozenset()
_NO_HEADERS: Read = (-1, None, None, False, False, False, False)
_INTERNAL, _SERVER = SpanKind.INTERNAL, SpanKind.SERVER  # an enum member lookup costs ~70 ns


class Exchange:
    """One request: wraps ``receive`` and ``send``, records the request when it ends."""

    # fmt: off
    __slots__ = (
        "active", "adapter", "answer_encoded", "complete_ns", "content_length", "continues",
        "current", "disconnected", "encoded", "entry_root", "held_entity", "http", "idem_key",
        "left_early", "live", "metered_into", "method",
        "mw", "op", "owned", "owner_span", "prologue_ns", "read_ahead", "received", "replayed",
        "response_chunks", "rt", "scheme", "scope", "sent", "server_receive", "server_send",
        "shared", "status", "t0", "template", "token",
    )
    # fmt: on

    def __init__(
        self, mw: SyncPerfMiddleware, rt: Runtime, shared: AsgiState, scope: Scope, t0: int
    ) -> None:
        self.mw = mw
        self.rt = rt
        self.shared = shared
        self.scope = scope
        self.t0 = t0
        self.op: SyncOperation | None = None
        self.token: Any = None  # the context of a propagated parent, detached at the end
        self.template: str | None = None
        self.adapter: Adapter | None = None
        self.live = False
        self.idem_key: bytes | None = None  # hashed only for a rescued span (``_finish``)
        self.held_entity: str | None = None  # a path entity admitted for now (``Bounded.hold``)
        self.http: HttpSeries | None = None
        self.active: deque[None] | None = None
        self.content_length = -1
        self.continues = False  # ``Expect: 100-continue``: the body waits until it is read
        self.encoded = self.answer_encoded = False  # a compressed request body, answer
        self.status: int | None = None
        self.sent = self.received = self.complete_ns = 0
        self.disconnected = self.replayed = False
        self.left_early = False  # disconnected before the response started: none was delivered
        self.read_ahead: list[Message] | None = None  # read for the adapter, replayed first
        self.response_chunks: list[bytes] | None = None
        self.prologue_ns = 0
        # bounded values (``_scope``): known ones read in one call, the rest when bad
        self.method, self.scheme, self.entry_root = read_scope(scope) or bounded(rt, scope)
        self.current = current_span()  # read once: ``owners`` and the span's parent
        self.owner_span, self.owned, self.metered_into = owners(
            scope, mw._contrib is True, self.current
        )

    # --- before the application ----------------------------------------------------------

    def open(self, hit: tuple[CompiledRoute, str | None] | None, metered: bool) -> None:
        """Count the request active (``metered``: this middleware records its HTTP metrics),
        read the headers, begin the sync operation of a sync route (``hit``)."""
        rt = self.rt
        if metered:  # first: a failure below (strict mode) still records the request
            metered_into = self.metered_into
            shared = self.shared
            http = shared.http() if metered_into is None else shared.http(metered_into)
            method, scheme = self.method, self.scheme
            active = http.active_series.get((method, scheme))
            if active is None:
                active = http.active_for(method, scheme)
            active.append(None)
            self.active, self.http = active, http
        headers = self.scope.get("headers") or ()
        tracing = rt.tracing  # "can spans be made": on, or turning on now (``Tracing.due``)
        traced = (
            hit is not None
            and not self.owned
            and (tracing.active or (self.t0 >= tracing.next_check and tracing.due(self.t0)))
        )
        fields = self.shared.propagation_fields() if traced else _NO_FIELDS
        found = read_headers(headers, self.mw._idem_name, fields)
        if found is None:  # not a list of pairs of bytes: read again, those pairs only
            headers = valid_headers(rt, headers)
            found = read_headers(headers, self.mw._idem_name, fields) or _NO_HEADERS
        self.content_length, idem_key, client, propagated, stream, encoded, continues = found
        self.encoded, self.continues = encoded, continues
        if hit is not None:
            op = self.start_operation(hit, traced, headers if propagated else None, stream)
            if idem_key is not None:
                self.idem_key = idem_key
                record_key(op, idem_key, self.shared, self.mw)
            read_client(rt, op, self.adapter, self.scope, client)  # Sync-Client, checkpoints
        self.prologue_ns = _perf() - self.t0
        if self.op is not None:  # the operation began with the request (``begin``'s ``now``)
            self.op._own_ns = self.prologue_ns

    def start_operation(
        self,
        hit: tuple[CompiledRoute, str | None],
        traced: bool,
        propagated: Iterable[tuple[bytes, bytes]] | None,
        stream: bool,
    ) -> SyncOperation:
        """Begin the sync operation; ``propagated``: the headers, when they carry a parent;
        ``stream``: an ``Accept`` header asks for an event stream."""
        rt, mw, scope = self.rt, self.mw, self.scope
        compiled, entity = hit
        route = compiled.route
        template = compiled.template  # relative to the app; ``http.route``: to the server
        self.template = http_route = mount_base(scope, self.entry_root) + template
        self.adapter = route.adapter
        if entity is not None:
            entity = self.path_entity(entity)
        try:
            self.live = is_live(mw._live, scope, stream)
        except Exception as error:
            rt.internal_error("asgi_live_predicate_failed", error)
        operation = mw._live_names[route.operation] if self.live else route.operation
        attributes = None
        if traced:
            parent = None if propagated is None else extract(rt, propagated)
            if parent is not None:  # None: the propagator failed (counted), no parent
                self.token = context_api.attach(parent)
            root = self.entry_root  # ``url.path``: the template, no path parameter's value
            attributes = {
                "http.request.method": self.method,
                "url.scheme": self.scheme,
                "url.path": text(root + template) if root else compiled.url_path,
                "http.route": http_route,
            }
        kind = _INTERNAL if self.owned else _SERVER
        current = None if self.token is not None else self.current  # None: the propagated one
        op = self.op = begin(rt, operation, route.entity, kind, attributes, self.t0, current)
        if entity is not None and gate_name(entity) is None:  # client data: never raised
            rt.drop("invalid_entity", "syncperf dropped a path entity that is not a valid name")
        elif entity is not None:  # known while the handler runs (query metrics); admitted
            op._entity, held = rt.entities.hold(entity)  # for now: kept unless rejected
            if held:
                self.held_entity = entity
        if self.owner_span is not None:
            self.owner_span.set_attribute("sync.operation", operation)
        if self.adapter is not None:
            self.response_chunks = []
            op._fed = True  # its adapter counts: a decorated handler joining it adds none
        return op

    def path_entity(self, value: str) -> str:
        """A route's ``{entity}`` value, bounded by ``entities=`` when given."""
        allowed = self.mw._entities
        if allowed is None:
            self.rt.names_from_requests("the {entity} of a route")
            return value
        return value if value in allowed else OTHER

    # --- the request ---------------------------------------------------------------------

    async def run(
        self,
        hit: tuple[CompiledRoute, str | None] | None,
        metered: bool,
        receive: Receive,
        send: Send,
    ) -> None:
        """``open``, run the application with the wrapped ``receive`` and ``send``, then
        ``finish``: even when ``open`` raised (strict mode refused a value), the operation
        ends and the request is recorded before the exception propagates."""
        self.server_receive, self.server_send = receive, send
        failure: BaseException | None = None
        try:
            open_exchange(self, hit, metered)
            app_receive: Receive = self.receive
            adapter = self.adapter
            if adapter is not None and getattr(adapter, "reads_request", True):
                if self.continues:
                    app_receive = self.feeding_receive()  # no read-ahead: nothing is uploaded
                else:  # unless the application reads it
                    await self.read_request()
            await self.mw.app(self.scope, app_receive, self.send)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            finish(self, failure)

    async def receive(self) -> Message:
        if self.read_ahead:
            return self.read_ahead.pop(0)
        message = await self.server_receive()
        kind = message["type"]
        if kind == "http.request":
            self.received += len(message.get("body", b""))
        elif kind == "http.disconnect":
            self.disconnected = True
            if self.status is None:  # sticky: a server repeats the disconnect when asked again
                self.left_early = True
        return message

    def feeding_receive(self) -> Receive:
        """``receive`` that feeds the adapter the body the application reads, when its last
        chunk arrives (``Expect: 100-continue``: reading ahead would have the server ask the
        client for a body the application may refuse unread)."""
        cap = self.mw._max_body
        chunks: list[bytes] = []

        async def receive() -> Message:
            message = await self.receive()
            if message["type"] == "http.request" and self.op is not None:
                body = message.get("body", b"")
                if body and self.received <= cap:
                    chunks.append(body)
                if not message.get("more_body", False):
                    hook = self.adapter.on_request  # type: ignore[union-attr]
                    feed_body(
                        self.rt, self.op, hook, chunks, self.received, cap, False, self.encoded
                    )
                    chunks.clear()  # fed once
            return message

        return receive

    async def read_request(self) -> None:
        """Read the body (up to ``max_body_bytes``) for the adapter before the app sees it:
        its server-state callbacks must run before the handler changes that state. Only the
        bytes are kept, replayed to the app as one message (then what ended the read: a
        disconnect), however many messages the client split the body into."""
        cap = self.mw._max_body
        chunks: list[bytes] = []
        more, ended = True, None
        while more and self.received <= cap:
            message = await self.server_receive()
            if message["type"] != "http.request":
                ended = message
                break
            body = message.get("body", b"")
            if body:
                chunks.append(body)
                self.received += len(body)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": more}]
        self.read_ahead = replay
        if ended is not None:
            self.disconnected = self.left_early = ended["type"] == "http.disconnect"
            replay.append(ended)
            return
        hook = self.adapter.on_request  # type: ignore[union-attr]
        feed_body(self.rt, self.op, hook, [body], self.received, cap, False, self.encoded)  # type: ignore[arg-type]

    async def send(self, message: Message) -> None:
        final = sending(self, message)  # the status, the body's size (``_read``)
        try:
            await self.server_send(message)
        except OSError:  # how an ASGI 2.4 server reports that the client is gone
            self.disconnected = True
            raise
        if final:
            self.complete_ns = _perf()


new_exchange: Callable[..., Exchange] = Exchange
open_exchange: Callable[[Exchange, Any, bool], None] = Exchange.open
if speedups is not None:  # ``__init__`` and ``open`` for most requests (``_speedups``)
    _KNOWN = (  # ``propagate``'s namespace: its global propagator (``AsgiState``'s fields)
        INVALID_SPAN, _SERVER, _NO_FIELDS, _NO_HEADERS, OTHER, live_request, live_query,
        vars(propagate),
    )  # fmt: skip
    speedups.bind_exchange(globals(), Exchange, Exchange.open, _KNOWN)
    new_exchange, open_exchange = speedups.new_exchange, speedups.open_exchange
