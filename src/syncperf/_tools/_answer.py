"""Reading a Prometheus answer: within a deadline, as JSON however deeply it nests."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
from typing import Any


def decode(raw: bytes) -> Any:
    """``raw`` as JSON; nesting too deep for the parser is a ``ValueError`` like any other
    body that is not JSON (``json`` raises ``RecursionError``)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("an answer nested too deeply") from None


def error_body(exc: urllib.error.HTTPError, deadline: float) -> Any:
    try:
        with exc:  # read1() leaves the connection open at the end of the body
            return decode(read_answer(exc, 65536, deadline))
    except (OSError, ValueError):
        return None


def read_answer(response: Any, most: int, deadline: float) -> bytes:
    """Up to ``most`` bytes of ``response``'s body, all before ``deadline`` (``monotonic``),
    else ``TimeoutError``. The socket's timeout bounds each read, not the answer: a server
    sending a byte every second would hold one ``read()`` for ever. ``read1`` returns what
    has arrived, and each wait is cut to the time left."""
    chunks: list[bytes] = []
    size = 0
    while size < most:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        _wait_at_most(response, left)
        chunk = response.read1(min(most - size, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _wait_at_most(response: Any, seconds: float) -> None:
    """Sets the timeout of the socket under ``response`` (an ``HTTPResponse``, or the
    ``HTTPError`` holding one: ``fp``, then its buffer's ``raw`` ``SocketIO``'s ``_sock``)."""
    layer = response
    for name in ("fp", "fp", "raw", "_sock"):
        if isinstance(layer, socket.socket):
            break
        layer = getattr(layer, name, layer)
    if isinstance(layer, socket.socket):
        layer.settimeout(seconds)
