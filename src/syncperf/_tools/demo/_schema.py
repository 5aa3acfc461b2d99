"""The demo service's database: its tables, engine and seed data.

``tombstones`` deliberately lacks the index on ``(entity, seq)`` its pulls need, so syncperf's
query plans report a sequential scan (docs/plans.md).
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    make_url,
    text,
)
from sqlalchemy.exc import ArgumentError

from syncperf.sqlalchemy._names import url_address

ENTITIES = ("todo", "list", "comment")
"""Entities the service syncs; ``comment`` pulls are the deliberate N+1."""
N_PLUS_ONE_ENTITY = "comment"
HOT_RECORDS = 8
"""Records per entity seeded at start; every client edits them, so edits collide."""
metadata = MetaData()
records = Table(
    "records",
    metadata,
    Column("entity", String(16), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("title", Text, nullable=False),
    Column("done", Boolean, nullable=False, default=False),
    Column("version", Integer, nullable=False),
)
changes = Table(
    "changes",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("entity", String(16), nullable=False, index=True),
    Column("record_id", String(64), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("version", Integer, nullable=False),
)
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entity", String(16), nullable=False),
    Column("record_id", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("traceparent", String(55)),
)
idempotency = Table(
    "idempotency",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("status", Integer, nullable=False),
    Column("body", Text, nullable=False),
)
snapshot_lock = Table("snapshot_lock", metadata, Column("id", Integer, primary_key=True))
tombstones = Table(  # deliberately without an index on (entity, seq): see the module docstring
    "tombstones",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entity", String(16), nullable=False),
    Column("record_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
)
TOMBSTONES = 20_000
"""Old deletions seeded at start: twice the 10,000 rows from which a sequential scan is a plan
finding by default."""


def utcnow() -> datetime:
    """Now, in UTC."""
    return datetime.now(timezone.utc)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and a ``demo_sleep()``."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.create_function("demo_sleep", 1, _sleep)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=10)


@dataclass(frozen=True)
class ShownUrl:
    """A database URL as the demo may print it: no password, no query parameter value.

    ``text`` shows the password and every query value (``?password=...`` is as much a
    credential as ``user:password@``) as ``***``, and drops what precedes the last ``@`` of
    a host parsed with one (a password with an unescaped ``@``). ``scrub()`` hides the same
    values in a driver's message, which may quote them (``invalid sslmode value: "..."``).
    """

    text: str
    secrets: tuple[str, ...] | None
    """The values hidden, longest first; None when the URL cannot be parsed."""

    @classmethod
    def of(cls, url: str) -> ShownUrl:
        """``url`` made printable; one that cannot be parsed shows as a placeholder."""
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            return cls("(not a SQLAlchemy URL)", None)
        host = parsed.host or ""
        secrets = {parsed.password or ""}
        for value in parsed.query.values():
            secrets.update((value,) if isinstance(value, str) else value)
        secrets = {s for s in secrets if len(s) >= 3}  # shorter: no secret, and ``***`` garbles
        database = parsed.database or ""
        if "@" in host:  # a fragment of the password, whatever its length
            secrets.add(host[: host.rindex("@") + 1])
        elif "@" in database:  # ``u:p@ss/w@host/db``: ``ss`` and ``w@`` are too
            secrets.update(s for s in (host, database[: database.rindex("@") + 1]) if s)
        address, port, name = url_address(parsed)
        shown = parsed.set(host=address or None, port=port, database=name or None, query={})
        text = shown.render_as_string(hide_password=True)
        if parsed.query:
            text += "?" + "&".join(f"{urllib.parse.quote(key)}=***" for key in parsed.query)
        return cls(text, tuple(sorted(secrets, key=len, reverse=True)))

    def scrub(self, message: str) -> str:
        """``message`` with every secret of the URL replaced by ``***``.

        The message of a URL that cannot be parsed may quote any part of it: none is kept.
        """
        if self.secrets is None:
            return "the URL cannot be parsed"
        for secret in self.secrets:
            message = message.replace(secret, "***")
        return message


def _sleep(seconds: float) -> int:
    time.sleep(seconds)
    return 0


def reset_schema(engine: Engine) -> None:
    """Drop and create the demo's tables, seed the hot records and the snapshot lock row."""
    metadata.drop_all(engine)
    metadata.create_all(engine)
    with engine.begin() as connection:
        rows = [
            {"entity": e, "id": f"{e}-{i}", "title": f"shared {e} {i}", "done": False, "version": 1}
            for e in ENTITIES
            for i in range(HOT_RECORDS)
        ]
        connection.execute(insert(records), rows)
        connection.execute(
            insert(changes),
            [
                {"entity": r["entity"], "record_id": r["id"], "kind": "created", "version": 1}
                for r in rows
            ],
        )
        connection.execute(insert(snapshot_lock).values(id=1))
        connection.execute(  # deleted long ago: before every cursor a client holds
            insert(tombstones),
            [
                {"entity": ENTITIES[i % len(ENTITIES)], "record_id": f"gone-{i}", "seq": 0}
                for i in range(TOMBSTONES)
            ],
        )
        if engine.dialect.name == "postgresql":  # as autovacuum would: planner statistics
            connection.execute(text("ANALYZE tombstones"))
