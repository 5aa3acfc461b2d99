"""The request headers ``Exchange.open`` reads, in one pass: ``read_headers``.

The compiled reader (``_speedups.read_headers``) reads a list or tuple of pairs of exact
``bytes`` (what every server sends) and hands any other header list to ``read_headers_py``
from its start, so both return the same for any input (``tests/unit/test_asgi_headers.py``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from syncperf._accel import speedups
from syncperf._client_header import HEADER as CLIENT_HEADER
from syncperf._client_header import MAX_HEADER
from syncperf.asgi._routes import EVENT_STREAM

__all__ = ["Read", "read_headers", "read_headers_py"]

Read = tuple[int, bytes | None, list[bytes] | None, bool, bool]
"""``(content_length, idempotency_key, sync_client_lines, propagated, event_stream)``."""


def read_headers_py(headers: Any, idem_name: bytes, fields: Collection[bytes]) -> Read | None:
    """What a request's headers tell, or None when they are not a list of pairs of bytes
    (the caller reads them again, those pairs only).

    Returns:
        ``content_length`` (the last ``Content-Length``; -1: none, or not up to 15 digits),
        the ``idem_name`` header's value, the ``Sync-Client`` lines (several form one list;
        the lines after ``MAX_HEADER`` bytes are not kept), whether a header named in
        ``fields`` (a propagator's) is there, and whether ``Accept`` asks for an event stream.
    """
    content_length = -1
    idem_key: bytes | None = None
    client: list[bytes] | None = None
    client_size = 0
    propagated = stream = False
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
            elif name in fields:
                propagated = True
    except (TypeError, ValueError, AttributeError):  # not a list of pairs of bytes
        return None
    return content_length, idem_key, client, propagated, stream


read_headers = read_headers_py
if speedups is not None:
    speedups.bind_headers(read_headers_py, CLIENT_HEADER, MAX_HEADER, EVENT_STREAM)
    read_headers = speedups.read_headers
