"""Names and addresses syncperf derives from an engine: valid names, never credentials.

The pool's name (``db.client.connection.pool.name``) and a query's ``db.namespace`` and
``server.address`` come from the engine's ``logging_name`` and URL, which may hold anything:
each is made a valid name (``syncperf._gate.made_name``), and the URL's password never
reaches one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from syncperf._gate import made_name

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

__all__ = ["connection_attributes", "pool_name", "url_host"]


def connection_attributes(system: str, url: URL) -> dict[str, Any]:
    """A query's ``db.system.name``, ``db.namespace``, ``server.address`` and ``server.port``."""
    attrs: dict[str, Any] = {"db.system.name": system}
    database = made_name(url.database or "")
    if database and database != ":memory:":
        attrs["db.namespace"] = database
    host = made_name(url_host(url))
    if host:
        attrs["server.address"] = host
    if url.port:
        attrs["server.port"] = int(url.port)
    return attrs


def url_host(url: URL) -> str:
    """The host of ``url``, or "".

    A password with an unescaped ``@`` (``u:p@ss@host``) makes SQLAlchemy read the host as
    ``ss@host``: a host never contains ``@``, so what precedes the last one is dropped.
    """
    return (url.host or "").rpartition("@")[2]


def pool_name(engine: Engine) -> str:
    """The pool's ``logging_name``, else ``{backend}://{host}:{port}/{database}``, made a name."""
    logging_name = getattr(engine.pool, "logging_name", None)
    if isinstance(logging_name, str):
        made = made_name(logging_name)
        if made:
            return made
    url = engine.url
    host = url_host(url)
    if host and url.port:
        host = f"{host}:{url.port}"
    return made_name(f"{url.get_backend_name()}://{host}/{url.database or ''}") or "pool"
