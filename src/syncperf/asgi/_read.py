"""What an ``Exchange`` reads per request, each in one call:

* ``read_headers``: the request headers ``Exchange.open`` reads;
* ``read_scope``: the scope's method, scheme and root path, when each is a known value;
* ``mark_replayed``: the response's replay header;
* ``sending``: what ``Exchange.send`` records of a response message before the server sends
  it (the status, the body's size and, for an adapter, its bytes, a replayed answer).

Each is compiled (``_speedups``) when the extension is built: the compiled reader reads what
servers send (a dict scope; lists or tuples of pairs of exact ``bytes``) and hands anything
else, whole and from its start, to its pure-Python twin (``*_py``), so both answer the same
for any input (``tests/unit/test_asgi_read.py``).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

from syncperf._accel import speedups
from syncperf._client_header import HEADER as CLIENT_HEADER
from syncperf._client_header import MAX_HEADER
from syncperf.asgi._http import ENCODED_JSON, JSON, answer_kind, invalid_status
from syncperf.asgi._routes import EVENT_STREAM
from syncperf.asgi._scope import METHODS, SCHEMES

__all__ = [
    "Read",
    "mark_replayed",
    "mark_replayed_py",
    "read_headers",
    "read_headers_py",
    "read_scope",
    "read_scope_py",
    "sending",
    "sending_py",
]

Read = tuple[int, bytes | None, list[bytes] | None, bool, bool, bool, bool]
"""``(content_length, idempotency_key, sync_client_lines, propagated, event_stream, encoded,
continues)``."""


_IDENTITY = (b"", b"identity")


def read_headers_py(headers: Any, idem_name: bytes, fields: Collection[bytes]) -> Read | None:
    """What a request's headers tell, or None when they are not a list of pairs of bytes
    (the caller reads them again, those pairs only).

    Returns:
        ``content_length`` (the last ``Content-Length``; -1: none, or not up to 15 digits),
        the ``idem_name`` header's value, the ``Sync-Client`` lines (several form one list;
        the lines after ``MAX_HEADER`` bytes are not kept), whether a header named in
        ``fields`` (a propagator's) is there, whether ``Accept`` asks for an event stream,
        whether a ``Content-Encoding`` other than ``identity`` says the body is compressed
        (``encoded``), and whether ``Expect: 100-continue`` waits for the body to be read
        (``continues``).
    """
    content_length = -1
    idem_key: bytes | None = None
    client: list[bytes] | None = None
    client_size = 0
    propagated = stream = encoded = continues = False
    try:
        for name, value in headers:
            if name == b"content-length":
                content_length = int(value) if value.isdigit() and len(value) <= 15 else -1
            elif name == idem_name:
                if type(value) is not bytes:
                    return None
                idem_key = value
            elif name == CLIENT_HEADER:  # lines form one value, dropped whole past
                if type(value) is not bytes:  # MAX_HEADER bytes: the lines after
                    return None  # that are not even kept
                if client is None:
                    client, client_size = [value], len(value)
                elif client_size <= MAX_HEADER:
                    client.append(value)
                    client_size += 1 + len(value)  # joined with a comma
            elif name == b"accept":
                stream = stream or EVENT_STREAM in value
            else:
                if name == b"content-encoding" and type(value) is bytes:
                    encoded = encoded or value.strip().lower() not in _IDENTITY
                elif name == b"expect" and type(value) is bytes:
                    continues = continues or value.lower() == b"100-continue"
                if name in fields:
                    propagated = True
    except (TypeError, ValueError, AttributeError):  # not a list of pairs of bytes
        return None
    return content_length, idem_key, client, propagated, stream, encoded, continues


def read_scope_py(scope: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """``(method, scheme, root_path)`` when the method and scheme are known values (``METHODS``,
    ``SCHEMES``) and the root path a str (or missing: ""), else None: then the caller bounds
    them (``_scope.other_method``...)."""
    method, scheme, root = scope.get("method"), scope.get("scheme"), scope.get("root_path", "")
    if (
        type(method) is str
        and method in METHODS
        and type(scheme) is str
        and scheme in SCHEMES
        and type(root) is str
    ):
        return method, scheme, root
    return None


_TRUE = (b"true", b"1")


def mark_replayed_py(ex: Any, headers: Any, name: bytes) -> None:
    """``ex.replayed = True`` when a response header ``name`` says ``true`` or ``1`` (any
    case); response headers that are not pairs of bytes raise, as the application's bug."""
    for key, value in headers:
        if key.lower() == name and value.lower() in _TRUE:
            ex.replayed = True


def sending_py(ex: Any, message: Any) -> bool:
    """What ``Exchange.send`` records of ``message`` before the server sends it; whether the
    message completes the response."""
    kind = message["type"]
    if kind == "http.response.body":
        body = message.get("body", b"")
        sent = ex.sent = ex.sent + len(body)
        chunks = ex.response_chunks
        if chunks is not None and sent <= ex.mw._max_body:
            chunks.append(body)
        return not message.get("more_body", False)
    if kind == "http.response.start":
        status = message.get("status")
        if type(status) is not int and isinstance(status, int) and type(status) is not bool:
            status = int.__int__(status)  # HTTPStatus: its value, none of its methods
        if type(status) is int and 100 <= status <= 599:
            ex.status = status
        else:  # recorded without a status: not one an exporter or a dashboard can read
            invalid_status(ex.rt, status)
        if ex.response_chunks is not None:
            kind = answer_kind(message)
            if kind != JSON:  # not the protocol's answer (text, HTML...), or compressed
                ex.response_chunks = None
                ex.answer_encoded = kind == ENCODED_JSON
        op = ex.op
        if op is not None:
            replay_name = ex.mw._replay_name
            if replay_name is not None:
                mark_replayed(ex, message.get("headers") or (), replay_name)
            if ex.owner_span is not None and op.entity is not None:
                ex.owner_span.set_attribute("sync.entity", op.entity)
        return False
    if kind == "http.response.pathsend":
        try:  # the file the server sends (a bad path: its size is not recorded)
            size = os.stat(message["path"]).st_size
        except Exception:  # never raised into the application
            size = 0
        ex.sent += size
        return True
    return False


read_headers, read_scope, mark_replayed = read_headers_py, read_scope_py, mark_replayed_py
sending = sending_py
if speedups is not None:
    speedups.bind_read(
        (read_headers_py, read_scope_py, mark_replayed_py, sending_py),
        (CLIENT_HEADER, MAX_HEADER, EVENT_STREAM, METHODS, SCHEMES),
    )
    read_headers, read_scope = speedups.read_headers, speedups.read_scope
    mark_replayed, sending = speedups.mark_replayed, speedups.sending
