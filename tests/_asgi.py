"""One ASGI request driven by hand, for the middleware's unit tests."""

from __future__ import annotations

import asyncio
from typing import Any


def http_scope(**fields: Any) -> dict[str, Any]:
    """A plain HTTP ``GET /sync/pull`` scope; ``fields`` replace or add keys."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/sync/pull",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        **fields,
    }


def call(app: Any, scope: dict[str, Any]) -> list[Any]:
    """One request with an empty body; the messages the application sent."""
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent
