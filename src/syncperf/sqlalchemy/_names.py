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

__all__ = ["connection_attributes", "pool_name", "url_address", "url_host"]


def connection_attributes(system: str, url: URL) -> dict[str, Any]:
    """A query's ``db.system.name``, ``db.namespace``, ``server.address`` and ``server.port``."""
    attrs: dict[str, Any] = {"db.system.name": system}
    host, port, database = url_address(url)
    namespace = made_name(database)
    if namespace and namespace != ":memory:":
        attrs["db.namespace"] = namespace
    address = made_name(host)
    if address:
        attrs["server.address"] = address
    if port:
        attrs["server.port"] = port
    return attrs


def url_address(url: URL) -> tuple[str, int | None, str]:
    """The host, port and database of ``url``, never a piece of its password.

    SQLAlchemy ends a password at its first ``@``: the rest of a password with an unescaped
    ``@`` spills into what follows. ``u:p@ss@host/db`` reads host ``ss@host``;
    ``u:p@ss/w@host:5432/db`` host ``ss`` and database ``w@host:5432/db``; ``u:p@ss?k=w@host``
    host ``ss`` and a query. A host, port or database holds no ``@``: the address is what
    follows the last one, and nothing before it is kept (nothing at all when the last one is
    in the query string, which SQLAlchemy has taken apart). Two shapes leave no trace:
    SQLAlchemy drops the rest of the URL after ``@`` then ``?`` with no ``=`` (a query
    without a value), or ``@[...]`` followed by anything else than ``:``, ``/`` or ``?``.
    """
    if any("@" in f"{key}{value}" for key, value in url.query.items()):
        return "", None, ""
    database = url.database or ""
    if "@" not in database:
        return (url.host or "").rpartition("@")[2], url.port, database
    address, _, database = database.rpartition("@")[2].partition("/")
    host, colon, port = address.rpartition(":")
    if not (colon and port.isascii() and port.isdigit() and len(port) <= 5):
        host, port = address, ""  # no port (or an IPv6 address without one)
    return host.strip("[]"), int(port) if port else None, database


def url_host(url: URL) -> str:
    """The host of ``url``, or "" (see ``url_address``)."""
    return url_address(url)[0]


def pool_name(engine: Engine) -> str:
    """The pool's ``logging_name``, else ``{backend}://{host}:{port}/{database}``, made a name."""
    logging_name = getattr(engine.pool, "logging_name", None)
    if isinstance(logging_name, str):
        made = made_name(logging_name)
        if made:
            return made
    host, port, database = url_address(engine.url)
    if host and port:
        host = f"{host}:{port}"
    return made_name(f"{engine.url.get_backend_name()}://{host}/{database}") or "pool"
