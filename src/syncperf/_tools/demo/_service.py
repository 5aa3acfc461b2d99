"""The demo's sync service: FastAPI + SQLAlchemy, a transactional outbox and its relay.

Endpoints (``{entity}`` is ``todo``, ``list`` or ``comment``):

* ``GET /sync/{entity}/pull?cursor=N&checkpoint=MS``: changes after a cursor, one query.
  ``checkpoint`` is the ``timestamp`` (server milliseconds) of the client's previous pull of
  the entity: syncperf records how far behind the client is (``sync.pull.staleness``).
  ``comment`` is the deliberate N+1: it reads the change log, then each record with its own
  ``SELECT``.
  ``&snapshot=true`` is a full re-sync that first runs a deliberately slow query (0.6 s) on
  the ``snapshot_lock`` table. Every pull also reads the deletions after the cursor from
  ``tombstones``, a table of old deletions that lacks the index on ``(entity, seq)`` the
  query needs: syncperf's query plans report it (a ``seq_scan`` finding).
* ``POST /sync/{entity}/push``: ``{"changes": [{"id", "base_version", "title", "done"}]}``
  with optimistic versions. A change whose ``base_version`` is not the server's version is a
  conflict (the server wins). Applied changes, their change-log rows and outbox rows are
  written in one transaction (statements batched: no N+1). An ``Idempotency-Key`` header
  stores the response; a retry with the same key gets it back with
  ``Idempotent-Replayed: true``. A change without a title violates ``NOT NULL``: the
  transaction rolls back and the push answers 500.

Clients report their own health in a ``Sync-Client`` header on every sync request (the
middleware reads it), and post what they measured while offline to ``/client-metrics/``
(``syncperf.asgi.client_metrics_app``).

The relay (a thread) publishes pending outbox rows to an in-memory broker that refuses a few
messages (they are retried on the next round).
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect

import syncperf
from syncperf._tools.demo._schema import (
    ENTITIES,
    N_PLUS_ONE_ENTITY,
    changes,
    idempotency,
    make_engine,
    outbox,
    records,
    reset_schema,
    tombstones,
    utcnow,
)

SLOW_QUERY_SECONDS = 0.6
"""The deliberately slow snapshot query (syncperf's default slow-query threshold is 0.5 s)."""
PULL_LIMIT = 200
ROUTES = {"/sync/{entity}/pull": "pull", "/sync/{entity}/push": "push"}
"""The sync routes given to ``SyncPerfMiddleware``."""
CLIENT_METRICS = "/client-metrics"
"""Where ``client_metrics_app()`` is mounted."""


@dataclass
class Broker:
    """An in-memory message broker that refuses ``failure_rate`` of the sends."""

    failure_rate: float = 0.02
    seed: int = 0
    delivered: int = 0
    _random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def send(self, payload: str) -> None:
        """Deliver one message, or raise ``ConnectionError`` (a transient broker failure)."""
        if self._random.random() < self.failure_rate:
            raise ConnectionError("broker busy")
        self.delivered += 1


class Service:
    """The sync backend: database, outbox, relay and the FastAPI app.

    Args:
        url: SQLAlchemy URL (``postgresql://`` is given the psycopg driver).
        instrumented: Add ``SyncPerfMiddleware``, instrument the engine and the outbox.
        relay_interval: Seconds between two relay rounds.
        seed: Seed of the broker's failures.
    """

    def __init__(
        self, url: str, *, instrumented: bool = True, relay_interval: float = 0.5, seed: int = 0
    ) -> None:
        self.engine = make_engine(url)
        self.sqlite = self.engine.dialect.name == "sqlite"
        # SQLite has one writer at a time: writers queue here instead of in busy timeouts.
        self.write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.sqlite else contextlib.nullcontext()
        )
        reset_schema(self.engine)
        self.instrumented = instrumented
        self.handle: Any = None
        self.outbox: Any = None
        if instrumented:
            from syncperf.outbox import Outbox, sqlalchemy_probe
            from syncperf.sqlalchemy import instrument_engine

            memory = self.sqlite and self.engine.url.database in (None, "", ":memory:")
            self.handle = instrument_engine(self.engine, plans=not memory)
            self.outbox = Outbox(
                "changes",
                destination="changes",
                system="memory",
                stats=sqlalchemy_probe(self.engine, "outbox", status="status"),
                stats_timeout=10.0,  # generous: the demo runs on busy laptops and CI machines
            )
        self.broker = Broker(seed=seed)
        self.relay_interval = relay_interval
        self._stop = threading.Event()
        self._relay: threading.Thread | None = None
        self.app = self._build_app()

    # --- life cycle ----------------------------------------------------------------------

    def start_relay(self) -> None:
        """Start the relay thread."""
        self._relay = threading.Thread(target=self._relay_loop, name="demo-relay", daemon=True)
        self._relay.start()

    def stop_relay(self) -> None:
        """Stop the relay thread (after the batch it is publishing)."""
        self._stop.set()
        if self._relay is not None:
            self._relay.join(30)

    def close(self) -> None:
        """Stop the relay, stop observing the outbox, uninstrument and dispose the engine."""
        self.stop_relay()
        if self.outbox is not None:
            self.outbox.close()
        if self.handle is not None:
            self.handle.uninstrument()
        self.engine.dispose()

    def outbox_counts(self) -> dict[str, int]:
        """Outbox rows per status."""
        with self.engine.connect() as connection:
            rows = connection.execute(text("SELECT status, count(*) FROM outbox GROUP BY status"))
            return {str(status): int(count) for status, count in rows}

    # --- handlers ------------------------------------------------------------------------

    def pull(self, entity: str, cursor: int, snapshot: bool) -> dict[str, Any]:
        """Changes of ``entity`` after ``cursor`` (see the module docstring)."""
        with self.engine.connect() as connection:
            if snapshot:
                sleep = "pg_sleep" if not self.sqlite else "demo_sleep"
                connection.execute(
                    text(f"SELECT {sleep}(:s) FROM snapshot_lock LIMIT 1"),
                    {"s": SLOW_QUERY_SECONDS},
                )
                cursor = 0
            if entity == N_PLUS_ONE_ENTITY:
                log = connection.execute(
                    select(changes.c.seq, changes.c.record_id, changes.c.kind)
                    .where(changes.c.entity == entity, changes.c.seq > cursor)
                    .order_by(changes.c.seq)
                    .limit(PULL_LIMIT)
                ).all()
                rows = []
                for seq, record_id, kind in log:  # the N+1: one SELECT per change
                    record = connection.execute(
                        select(
                            records.c.id, records.c.title, records.c.done, records.c.version
                        ).where(records.c.entity == entity, records.c.id == record_id)
                    ).one()
                    rows.append((seq, kind, *record))
            else:
                rows = [
                    tuple(row)
                    for row in connection.execute(
                        select(
                            changes.c.seq,
                            changes.c.kind,
                            records.c.id,
                            records.c.title,
                            records.c.done,
                            records.c.version,
                        )
                        .join(
                            records,
                            (records.c.entity == changes.c.entity)
                            & (records.c.id == changes.c.record_id),
                        )
                        .where(changes.c.entity == entity, changes.c.seq > cursor)
                        .order_by(changes.c.seq)
                        .limit(PULL_LIMIT)
                    )
                ]
            connection.execute(  # the statement without its index (a plan finding)
                select(tombstones.c.record_id).where(
                    tombstones.c.entity == entity, tombstones.c.seq > cursor
                )
            ).all()
        op = syncperf.current_operation()
        op.set_batch_size(len(rows))
        kinds: dict[str, int] = {}
        for row in rows:
            kinds[row[1]] = kinds.get(row[1], 0) + 1
        for kind, n in kinds.items():
            op.record_items(n, change=kind)
        return {
            "changes": [
                {"id": r[2], "kind": r[1], "title": r[3], "done": r[4], "version": r[5]}
                for r in rows
            ],
            "cursor": rows[-1][0] if rows else cursor,
        }

    def push(
        self, entity: str, body: dict[str, Any], key: str | None
    ) -> tuple[int, dict[str, Any], bool]:
        """Apply a push; returns ``(status, body, replayed)``."""
        if key is not None:
            with self.engine.connect() as connection:
                stored = connection.execute(
                    select(idempotency.c.status, idempotency.c.body).where(idempotency.c.key == key)
                ).first()
            if stored is not None:
                return int(stored[0]), json.loads(stored[1]), True
        items: Sequence[dict[str, Any]] = body.get("changes", [])
        try:
            status, result, created, updated, conflicts = self._apply(entity, items, key)
        except IntegrityError:
            return 500, {"error": "rejected by the database"}, False
        op = syncperf.current_operation()
        op.set_batch_size(len(items))
        if created:
            op.record_items(created, change="created")
        if updated:
            op.record_items(updated, change="updated")
        if conflicts:
            op.record_conflict(count=conflicts, resolution="server_wins")
        return status, result, False

    def _apply(
        self, entity: str, items: Sequence[dict[str, Any]], key: str | None
    ) -> tuple[int, dict[str, Any], int, int, int]:
        ids = [str(item["id"]) for item in items]
        with self.write_lock, Session(self.engine) as connection, connection.begin():
            query = select(records.c.id, records.c.version).where(
                records.c.entity == entity, records.c.id.in_(ids)
            )
            if not self.sqlite:
                query = query.with_for_update()
            current = {row[0]: row[1] for row in connection.execute(query)}
            inserts, updates, conflicts, log, applied = _plan(entity, items, ids, current)
            self._write(connection, entity, inserts, updates, log)
            result = {"applied": applied, "conflicts": conflicts}
            status = 200
            if key is not None:
                connection.execute(
                    insert(idempotency).values(key=key, status=status, body=json.dumps(result))
                )
        return status, result, len(inserts), len(updates), len(conflicts)

    def _write(
        self,
        connection: Session,
        entity: str,
        inserts: list[dict[str, Any]],
        updates: list[dict[str, Any]],
        log: list[dict[str, Any]],
    ) -> None:
        if inserts:
            connection.execute(insert(records), inserts)
        if updates:
            connection.execute(
                update(records)
                .where(records.c.entity == entity, records.c.id == bindparam("b_id"))
                .values(
                    title=bindparam("title"),
                    done=bindparam("done"),
                    version=bindparam("version"),
                ),
                updates,
            )
        if log:
            connection.execute(insert(changes), log)
            now = utcnow()
            traceparent = None
            if self.outbox is not None:
                # counted when the transaction commits, never for a rolled-back push
                traceparent = self.outbox.enqueue(len(log), session=connection)
            connection.execute(
                insert(outbox),
                [
                    {
                        "entity": entity,
                        "record_id": row["record_id"],
                        "payload": json.dumps(row),
                        "created_at": now,
                        "status": "pending",
                        "attempts": 0,
                        "traceparent": traceparent,
                    }
                    for row in log
                ],
            )

    # --- relay ---------------------------------------------------------------------------

    def _relay_loop(self) -> None:
        while not self._stop.wait(self.relay_interval):
            with contextlib.suppress(Exception):  # a relay round failing must not end the demo
                while self.relay_once() and not self._stop.is_set():
                    pass

    def relay_once(self, limit: int = 200) -> int:
        """Publish one batch of pending outbox rows; returns how many were claimed."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(outbox.c.id, outbox.c.payload, outbox.c.created_at, outbox.c.attempts)
                .where(outbox.c.status == "pending")
                .order_by(outbox.c.id)
                .limit(limit)
            ).all()
        if not rows:
            return 0
        with self.write_lock, self._publishing(len(rows)) as batch:
            published, failed = [], []
            for row in rows:
                attempt = row.attempts + 1
                try:
                    self.broker.send(row.payload)
                except ConnectionError as error:
                    failed.append({"b_id": row.id, "attempts": attempt, "status": "pending"})
                    if batch is not None:
                        batch.failed(error, attempt=attempt)
                else:
                    published.append({"b_id": row.id, "attempts": attempt, "status": "published"})
                    if batch is not None:
                        batch.published(_as_utc(row.created_at), attempt=attempt)
            with self.engine.begin() as connection:
                connection.execute(
                    update(outbox)
                    .where(outbox.c.id == bindparam("b_id"))
                    .values(status=bindparam("status"), attempts=bindparam("attempts")),
                    published + failed,
                )
        return len(published)

    @contextlib.contextmanager
    def _publishing(self, count: int) -> Iterator[Any]:
        if self.outbox is None:
            yield None
            return
        with self.outbox.publish(count=count) as batch:
            yield batch

    # --- the app -------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="syncperf demo sync service")
        service = self

        @app.get("/sync/{entity}/pull")
        def pull(
            entity: str, cursor: int = 0, snapshot: bool = False, checkpoint: int = 0
        ) -> JSONResponse:
            if entity not in ENTITIES:
                return JSONResponse({"error": "unknown entity"}, status_code=404)
            # named now (the middleware names a path entity only once the response is known),
            # so per-query reports such as N+1 detections carry it too
            op = syncperf.current_operation()
            op.set_entity(entity)
            op.record_checkpoint(checkpoint / 1000)  # 0: a first pull, nothing recorded
            timestamp = time.time_ns() // 1_000_000
            return JSONResponse({**service.pull(entity, cursor, snapshot), "timestamp": timestamp})

        @app.post("/sync/{entity}/push")
        async def push(
            entity: str, request: Request, idempotency_key: str | None = Header(default=None)
        ) -> JSONResponse:
            if entity not in ENTITIES:
                return JSONResponse({"error": "unknown entity"}, status_code=404)
            syncperf.current_operation().set_entity(entity)
            try:
                body = await request.json()
            except ClientDisconnect:  # abandoned (a second Ctrl-C): no one to answer
                return JSONResponse(None, status_code=499)  # recorded as client_disconnected
            from starlette.concurrency import run_in_threadpool

            status, result, replayed = await run_in_threadpool(
                service.push, entity, body, idempotency_key
            )
            headers = {"Idempotent-Replayed": "true"} if replayed else None
            return JSONResponse(result, status_code=status, headers=headers)

        @app.get("/health")
        def health() -> dict[str, str]:
            return {"status": "ok"}

        if self.instrumented:
            from syncperf.asgi import SyncPerfMiddleware, client_metrics_app

            app.add_middleware(SyncPerfMiddleware, routes=ROUTES)
            app.mount(CLIENT_METRICS, client_metrics_app())
        return app


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _plan(
    entity: str, items: Sequence[dict[str, Any]], ids: list[str], current: dict[str, int]
) -> tuple[list[dict[str, Any]], ...]:
    """``(inserts, updates, conflicts, change log, applied)`` of a push against ``current``
    (record id -> server version; updated in place)."""
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    conflicts: list[dict[str, Any]] = []
    log: list[dict[str, Any]] = []
    versions: dict[str, int] = {}
    applied: list[dict[str, Any]] = []
    for item, record_id in zip(items, ids, strict=True):
        server = current.get(record_id)
        base = item.get("base_version", 0)
        if server is None and base == 0 and record_id not in versions:
            version, kind = 1, "created"
            inserts.append(
                {
                    "entity": entity,
                    "id": record_id,
                    "title": item.get("title"),
                    "done": bool(item.get("done", False)),
                    "version": 1,
                }
            )
        elif server is not None and base == server:
            version, kind = server + 1, "updated"
            current[record_id] = version
            updates.append(
                {
                    "b_id": record_id,
                    "title": item.get("title"),
                    "done": bool(item.get("done", False)),
                    "version": version,
                }
            )
        else:
            conflicts.append({"id": record_id, "server_version": server})
            continue
        versions[record_id] = version
        applied.append({"id": record_id, "kind": kind, "version": version})
        log.append({"entity": entity, "record_id": record_id, "kind": kind, "version": version})
    return inserts, updates, conflicts, log, applied
