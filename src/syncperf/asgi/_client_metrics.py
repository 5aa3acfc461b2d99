"""``client_metrics_app()``: an ASGI endpoint for the numbers clients stored while offline.

A client measures its own syncs (duration and outcome as it saw them, pending changes,
retries, database size), keeps them while offline and posts them in batches::

    POST /client-metrics
    Content-Type: application/json
    Sync-Client-Id: 5b0e...          (optional: rate-limits per client, never exported)

    {"batch": "b-0193", "app": "1.4.2", "records": [
        {"operation": "push", "entity": "todo", "duration": 0.84, "outcome": "error",
         "pending": 12, "retries": 2, "last-sync-age": 340, "db-size": 5242880}]}

Answers: ``202`` (``{"accepted": n, "rejected": m}``; a batch id seen before answers ``202``
with ``"duplicate": true`` and records nothing), ``400`` (not such a JSON object), ``405``,
``413`` (body over ``max_body_bytes`` or more than ``max_records`` records), ``429`` (over
the client's rate; ``Retry-After`` says when to come back). Every value passes the same gate
as any other; a record with a bad field is rejected whole and counted in ``syncperf.dropped``
(reason ``invalid_client_metric``); each batch counts once in ``sync.client.batches`` by
``sync.client.batch.result``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from syncperf import _gate as gate
from syncperf._client_series import REPORTED, ClientSeries, app_version
from syncperf._config import MAX_TTL, check_float, check_int
from syncperf._forklocks import renew_in_child
from syncperf._gate import is_operation
from syncperf._process_exit import flush_for_exit
from syncperf._runtime import Runtime, current
from syncperf.asgi._http import SeenKeys, key_hash
from syncperf.exceptions import ConfigError

__all__ = ["client_metrics_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OUTCOMES = frozenset({"success", "conflict", "error"})
MAX_DURATION = 86400.0
"""Seconds: a client-side duration beyond a day is not a measurement."""
_JSON = [(b"content-type", b"application/json")]


class RateLimit:
    """A token bucket per client key: ``rate`` batches per second, bursts of ``burst``;
    at most ``max_clients`` buckets (the least recently seen are forgotten first)."""

    __slots__ = ("__weakref__", "_buckets", "_lock", "burst", "max_clients", "rate")

    def __init__(self, rate: float, burst: int, max_clients: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()
        renew_in_child(self, "_lock")

    def wait(self, key: str, now: float | None = None) -> float:
        """Take one token for ``key``: 0 when allowed, else the seconds until one is due."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            allowed = tokens >= 1
            self._buckets[key] = (tokens - 1 if allowed else tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return 0.0 if allowed else (1 - tokens) / self.rate


class _Refused(Exception):
    def __init__(self, status: int, result: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.result = result
        self.detail = detail


def client_metrics_app(
    *,
    max_body_bytes: int = 65_536,
    max_records: int = 500,
    dedupe_ttl: float = 86_400.0,
    dedupe_max_keys: int = 100_000,
    rate: float = 1.0,
    burst: int = 10,
    max_clients: int = 10_000,
    client_id_header: str | None = "sync-client-id",
) -> ASGIApp:
    """An ASGI app receiving batches of client-side metrics (mount it, e.g.
    ``app.mount("/client-metrics", client_metrics_app())``).

    Args:
        max_body_bytes: Largest body read; a larger one is answered 413 unread.
        max_records: Most records in one batch (413 above).
        dedupe_ttl: Seconds a batch id is remembered (a resent batch records nothing).
        dedupe_max_keys: Batch ids remembered at most (the oldest are forgotten first).
        rate: Batches per second each client may send on average.
        burst: Batches a client may send at once (after being offline, say).
        max_clients: Clients whose rate is tracked at most (the least recent are forgotten).
        client_id_header: Request header naming the client for rate limiting and dedupe
            (hashed, never exported); without it the peer address is used. None: always the
            peer address.

    Raises:
        ConfigError: an option is not accepted.
    """
    check_int("max_body_bytes", max_body_bytes, minimum=1)
    check_int("max_records", max_records, minimum=1)
    check_float("dedupe_ttl", dedupe_ttl, low=0, high=MAX_TTL, open_low=True)
    check_int("dedupe_max_keys", dedupe_max_keys, minimum=1)
    check_float("rate", rate, low=0, high=1e6, open_low=True)
    check_int("burst", burst, minimum=1)
    check_int("max_clients", max_clients, minimum=1)
    if client_id_header is not None and (
        not isinstance(client_id_header, str) or not client_id_header
    ):
        raise ConfigError("client_id_header", client_id_header, "a header name or None")
    id_name = None if client_id_header is None else client_id_header.lower().encode("latin-1")
    seen = SeenKeys(dedupe_ttl, dedupe_max_keys)
    limit = RateLimit(rate, burst, max_clients)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            return
        rt = current()
        if scope.get("method") != "POST":
            await _answer(send, 405, {"error": "POST a JSON batch"}, [(b"allow", b"POST")])
            return
        client = _client_key(scope, id_name)
        try:
            wait = limit.wait(client)
            if wait:
                raise _Refused(429, "rate_limited", f"retry in {math.ceil(wait)} s")
            body = await _read(scope, receive, max_body_bytes)
            batch_id, app_attr, records = _batch(body, max_records)
            if not rt.enabled:
                await _answer(send, 202, {"accepted": 0, "rejected": 0})
                return
            if seen.seen(key_hash(client.encode() + b"\0" + batch_id.encode())):
                _count(rt, "duplicate")
                await _answer(send, 202, {"accepted": 0, "rejected": 0, "duplicate": True})
                return
            accepted = _record(rt, app_attr, records)
        except _Refused as refused:
            _count(rt, refused.result)
            headers = [(b"retry-after", str(math.ceil(wait)).encode())] if wait else None
            await _answer(send, refused.status, {"error": refused.detail}, headers)
            return
        _count(rt, "accepted")
        await _answer(send, 202, {"accepted": accepted, "rejected": len(records) - accepted})

    return app


def _client_key(scope: Scope, id_name: bytes | None) -> str:
    """Who sent the batch: the client id header's hash, else the peer address."""
    if id_name is not None:
        for name, value in scope.get("headers") or ():
            if name == id_name and value:
                return "id:" + key_hash(value[:256])
    peer = scope.get("client")
    return "peer:" + (str(peer[0]) if peer else "?")


async def _read(scope: Scope, receive: Receive, cap: int) -> bytes:
    """The request body, or ``_Refused`` 413 past ``cap`` bytes (announced or sent)."""
    for name, value in scope.get("headers") or ():
        if name == b"content-length" and (
            not value.isdigit() or len(value) > 15 or int(value) > cap
        ):
            raise _Refused(413, "too_large", f"the body exceeds {cap} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Refused(400, "invalid", "the client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise _Refused(413, "too_large", f"the body exceeds {cap} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _batch(body: bytes, max_records: int) -> tuple[str, str | None, list[Any]]:
    """``(batch id, app version attribute, records)`` of a body, or ``_Refused`` 400/413."""
    try:
        batch = json.loads(body)
    except (ValueError, RecursionError):
        raise _Refused(400, "invalid", "the body is not JSON") from None
    if type(batch) is not dict:
        raise _Refused(400, "invalid", "the body is not a JSON object")
    batch_id = gate.name(batch.get("batch"))
    if batch_id is None:
        raise _Refused(400, "invalid", "batch: a string of 1 to 128 printable characters")
    records = batch.get("records")
    if type(records) is not list:
        raise _Refused(400, "invalid", "records: an array")
    if len(records) > max_records:
        raise _Refused(413, "too_large", f"more than {max_records} records")
    app = batch.get("app")
    if app is not None and type(app) is not str:
        raise _Refused(400, "invalid", "app: a string")
    return batch_id, app_version(app), records


def _record(rt: Runtime, app: str | None, records: list[Any]) -> int:
    """Record every valid record (each checked whole first); return how many."""
    cs = rt.state(ClientSeries)
    valid = []
    for record in records:
        checked = _check(rt, record)
        if checked is None:
            rt.drop(
                "invalid_client_metric",
                "syncperf rejected a client metric record (a missing operation, an unknown "
                "one, or a field of the wrong type or range); see docs/clients.md",
            )
        else:
            valid.append(checked)
    if valid:
        with rt.lock:
            for operation, entity, values, duration, outcome in valid:
                for key, value in values:
                    cs.series(cs.reported[key], operation, entity, app).record(value)
                if duration is not None:
                    cs.series(cs.duration, operation, entity, app, outcome).record(duration)
    return len(valid)


Checked = tuple[str, str | None, list[tuple[str, int]], float | None, str | None]


def _check(rt: Runtime, record: Any) -> Checked | None:
    """One record's values, or None when any field is not acceptable (checked before its
    entity is bounded: a rejected record leaves ``max_entities`` as it was)."""
    if type(record) is not dict:
        return None
    operation = gate.name(record.get("operation"))
    if operation is None or not is_operation(operation):
        return None
    entity = record.get("entity")
    if entity is not None:
        entity = gate.name(entity)
        if entity is None:
            return None
    values = []
    for key in REPORTED:
        value = record.get(key)
        if value is not None:
            if not gate.is_count(value):
                return None
            values.append((key, value))
    duration = record.get("duration")
    outcome = record.get("outcome")
    if (duration is None) != (outcome is None):
        return None
    if duration is not None:
        if type(duration) not in (int, float) or not 0 <= duration <= MAX_DURATION:
            return None  # NaN fails the comparison too
        if type(outcome) is not str or outcome not in OUTCOMES:
            return None
        duration = float(duration)
    if not values and duration is None:
        return None
    if entity is not None:  # only a record kept whole takes one of ``max_entities``
        rt.names_from_requests("client metric batches")
        entity = rt.entities(entity)
    return operation, entity, values, duration, outcome


def _count(rt: Runtime, result: str) -> None:
    cs = rt.state(ClientSeries)
    with rt.lock:
        cs.batches.sum((("sync.client.batch.result", result),)).add(1)


async def _answer(
    send: Send,
    status: int,
    body: dict[str, Any],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON, (b"content-length", str(len(payload)).encode()), *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Serve the lifespan protocol when the app runs on its own (nothing to start)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            flush_for_exit()
            await send({"type": "lifespan.shutdown.complete"})
            return
