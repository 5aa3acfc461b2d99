"""Secrets planted everywhere a client, a handler or a database puts data never leave syncperf.

A password, an email address and an API token travel through bound parameters, literal SQL of
both dialects (SQLite and PostgreSQL, through psycopg and asyncpg), a unique violation on a
real PostgreSQL raised inside sync operations, URL paths and query strings, request headers,
push payloads (plain and through a protocol adapter) and handler exceptions; the traffic goes
through the decorator, the ASGI middleware on a real uvicorn server and ``instrument_engine``.
Then every exported byte is searched: the spans and their events as exported in memory and as
OTLP/gRPC requests received by a real receiver, the metrics as OTLP requests and as a
Prometheus scrape over HTTP, and every log record of the ``syncperf`` loggers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI, Request
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

import syncperf
from syncperf.adapters import powersync
from syncperf.asgi import SyncPerfMiddleware, SyncRoute, client_metrics_app
from syncperf.export import prometheus_asgi_app
from syncperf.sqlalchemy import instrument_engine
from syncperf.testing import capture
from tests.integration.conftest import free_port
from tests.integration.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration

EMAIL = "alice@example.com"
PASSWORD = "Hunter2-e2e-Q7v!x"
TOKEN = "sk_live_e2e4eC39HqLyjWDarjtT1zdp7dc"
SECRETS = (EMAIL, PASSWORD, TOKEN, "alice@", "Hunter2", "sk_live", "Q7v!x", "HqLyjWD")
"""The planted values and fragments of them: none may appear anywhere."""

PATH_EMAIL = "carol@example.net"
"""Planted only in URL paths (a path parameter and a sync entity named by the path)."""
CLIENT_OP = "OP-c1ient-t3xt-88"
"""Planted only as a push entry's unknown CRUD op (the adapter rejects the payload)."""

ROW = {"email": EMAIL, "password": PASSWORD, "token": TOKEN}
HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "Cookie": f"session={PASSWORD}",
    "Idempotency-Key": TOKEN,
    "X-User-Email": EMAIL,
    "User-Agent": f"app/1.0 ({EMAIL})",
    # the client's own numbers: a token as the app version, an email in an unknown member,
    # a password where a number belongs
    "Sync-Client": f'pending=3, app="{TOKEN}", note="{EMAIL}", retries="{PASSWORD}"',
    "Sync-Client-Id": TOKEN,
}
BATCH = {  # stored client measurements, secrets in every text field a client controls
    "batch": TOKEN,
    "app": f"2.0.1-{TOKEN}",
    "records": [
        {"operation": "push", "entity": "account", "duration": 0.5, "outcome": "error",
         "pending": 4, "device": EMAIL},
        {"operation": "push", "entity": EMAIL, "pending": 1},
        {"operation": PASSWORD, "pending": 1},
        {"operation": "push", "outcome": TOKEN, "duration": 1.0},
    ],
}  # fmt: skip


@dataclass
class Exported:
    """Everything syncperf emitted, by where it went."""

    texts: dict[str, str] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    spans: list[Any] = field(default_factory=list)
    responses: list[int] = field(default_factory=list)

    def leaks(self, secrets: tuple[str, ...]) -> list[str]:
        found = [
            f"{secret!r} in {where}"
            for where, text in self.texts.items()
            for secret in secrets
            if secret in text
        ]
        found += [
            f"{secret!r} in {where}"
            for where, blob in self.blobs.items()
            for secret in secrets
            if secret.encode() in blob
        ]
        return found


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # includes any exc_info traceback
        self.lines.extend(f"{key}={value!r}" for key, value in vars(record).items())  # extra=


def _app(pg_async: Any, pg_sync: sa.Engine, lite: sa.Engine, registry: Any) -> FastAPI:
    app = FastAPI()

    @syncperf.instrument_sync("pull", entity="account")  # joins the middleware's operation
    def load(email: str) -> list[Any]:
        with pg_sync.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT id FROM account WHERE email = :email"), {"email": email}
            ).all()
        with lite.connect() as conn:  # SQLite reads "..." as a string: a literal value
            rows += conn.exec_driver_sql(f'SELECT id FROM account WHERE email = "{email}"').all()
            for _ in range(2):  # an N+1 with "..." values where an expression stands
                conn.exec_driver_sql(
                    f'SELECT a.id FROM account AS a JOIN account AS b ON "{email}" = b.email '
                    f'GROUP BY "{email}" ORDER BY "{email}"'
                ).all()
        return rows

    @app.post("/sync/{entity}/push")
    async def push(entity: str, request: Request) -> dict[str, Any]:
        body = await request.json()
        syncperf.current_operation().set_batch_size(len(body["changes"]))
        async with pg_async.begin() as conn:
            for change in body["changes"]:
                await conn.execute(
                    sa.text(
                        "INSERT INTO account (email, password, token) "
                        "VALUES (:email, :password, :token)"
                    ),
                    change,
                )
                for _ in range(2):  # an N+1 of a statement with inlined literals
                    await conn.exec_driver_sql(
                        f"SELECT id FROM account WHERE email = '{change['email']}' "
                        f"AND token = E'{change['token']}' /* {change['password']} */"
                    )
        if body.get("reject"):
            raise ValueError(f"push from {body['reject']} refused: password {PASSWORD}")
        return {"ok": True}

    @app.get("/sync/pull")
    def pull(request: Request) -> dict[str, Any]:
        return {"n": len(load(request.query_params["email"]))}

    @app.get("/users/{user}/pull")
    def user_pull(user: str) -> dict[str, Any]:
        return {"n": len(load(user))}

    @app.post("/powersync/upload")
    async def upload(request: Request) -> dict[str, Any]:
        await request.body()
        return {"ok": True}

    app.mount("/metrics", prometheus_asgi_app(registry))
    app.mount("/client-metrics", client_metrics_app())
    app.add_middleware(
        SyncPerfMiddleware,
        routes={
            "/sync/{entity}/push": "push",
            "/sync/pull": "pull",
            "/users/{user}/pull": "pull",
            "/powersync/upload": SyncRoute("push", adapter=powersync.Upload()),
        },
    )
    return app


def _serve(app: FastAPI) -> tuple[uvicorn.Server, threading.Thread, str]:
    async def served(scope: Any, receive: Any, send: Any) -> None:
        # Starlette answered 500 and re-raises; uvicorn would then reset the connection.
        with contextlib.suppress(Exception):
            await app(scope, receive, send)

    port = free_port()
    config = uvicorn.Config(
        served, host="127.0.0.1", port=port, log_level="critical", loop="asyncio", http="h11"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def _traffic(base: str) -> list[int]:
    statuses: list[int] = []
    with httpx.Client(base_url=base, headers=HEADERS, timeout=30) as client:
        bodies = (
            {"changes": [ROW]},  # inserted
            {"changes": [ROW]},  # unique violation on PostgreSQL: IntegrityError, a 500
            {"changes": [], "reject": EMAIL},  # the handler raises with the data in its message
        )
        statuses += [client.post("/sync/account/push", json=b).status_code for b in bodies]
        statuses.append(client.post(f"/sync/{PATH_EMAIL}/push", json={"changes": []}).status_code)
        query = {"email": EMAIL, "token": TOKEN, "password": PASSWORD}
        statuses.append(client.get("/sync/pull", params=query).status_code)
        statuses.append(client.get(f"/users/{PATH_EMAIL}/pull").status_code)
        entry = {"op": "PUT", "type": EMAIL, "id": TOKEN, "data": ROW}
        statuses.append(client.post("/powersync/upload", json={"batch": [entry]}).status_code)
        bad = {"op": CLIENT_OP, "type": "account", "id": "1", "data": ROW}
        statuses.append(client.post("/powersync/upload", json={"batch": [bad]}).status_code)
        statuses += [client.post("/client-metrics/", json=BATCH).status_code for _ in range(2)]
    return statuses


def _decorated_jobs(pg_sync: sa.Engine, lite: sa.Engine) -> None:
    """The decorator outside any request: constraint violations and literals of both dialects."""

    @syncperf.instrument_sync("push", entity="account", batch_size=lambda rows: rows[0][PASSWORD])
    def import_rows(rows: list[dict[str, str]]) -> None:  # the extractor fails: KeyError
        with pg_sync.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO account (email, password, token) "
                    "VALUES (:email, :password, :token)"
                ),
                rows,
            )

    @syncperf.instrument_sync("push", entity="account")
    def import_literals() -> None:
        with pg_sync.begin() as conn:
            conn.exec_driver_sql(f"SET application_name TO {TOKEN}")
            conn.exec_driver_sql(f"/* a /* b */ {PASSWORD} */ SELECT 1")
            conn.exec_driver_sql(f"SELECT $${PASSWORD}$$, $q${EMAIL}$q$, E'{TOKEN}\\n'")
        with lite.begin() as conn:
            for _ in range(2):
                conn.exec_driver_sql(
                    f"INSERT INTO account (email, password, token) "
                    f'VALUES ("{EMAIL}", \'{PASSWORD}\', "{TOKEN}")'
                )

    with pytest.raises(sa.exc.IntegrityError) as psycopg_error:
        import_rows([ROW])  # the row the first push inserted
    assert EMAIL in str(psycopg_error.value)  # the driver's message does quote the values
    with pytest.raises(sa.exc.IntegrityError) as sqlite_error:
        import_literals()
    assert TOKEN in str(sqlite_error.value)


@pytest.fixture(scope="module")
def exported(postgres_dsn: str) -> Iterator[Exported]:
    receiver = OtlpReceiver().start()
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True))
    )
    metrics_out = OTLPMetricExporter(endpoint=receiver.endpoint, insecure=True)
    registry = CollectorRegistry()
    records = _Records()
    logger = logging.getLogger("syncperf")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)

    pg_url = postgres_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    pg_sync = sa.create_engine(pg_url)
    pg_async = create_async_engine(
        postgres_dsn.replace("postgresql://", "postgresql+asyncpg://", 1), poolclass=NullPool
    )
    lite = sa.create_engine(  # one in-memory database shared by uvicorn's worker threads
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    with pg_sync.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS account")
        conn.exec_driver_sql(
            "CREATE TABLE account (id SERIAL PRIMARY KEY, email TEXT UNIQUE, password TEXT, "
            "token TEXT)"
        )
    with lite.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE account (id INTEGER PRIMARY KEY, email TEXT UNIQUE, password TEXT, "
            "token TEXT)"
        )
    found = Exported()
    try:
        with capture(
            strict=False,  # as in production: nothing raises, rejections are logged
            tracer_provider=provider,
            metric_exporters=[metrics_out],
            prometheus=registry,
            entities={"account"},  # names from paths and payloads go through the allow-list
        ) as cap:
            handles = [
                instrument_engine(
                    engine,
                    n_plus_one_threshold=2,
                    slow_query_threshold=1e-9,  # every query is slow: events and log lines
                    log_interval=0,
                )
                for engine in (pg_sync, pg_async, lite)
            ]
            server, thread, base = _serve(_app(pg_async, pg_sync, lite, registry))
            try:
                found.responses = _traffic(base)
                _decorated_jobs(pg_sync, lite)
                scrape = httpx.get(f"{base}/metrics/", timeout=10)
                assert scrape.status_code == 200
                found.texts["prometheus scrape"] = scrape.text
            finally:
                server.should_exit = True
                thread.join(10)
                for handle in handles:
                    handle.uninstrument()
            cap.runtime.flush()  # ends queued spans, exports the metrics over OTLP
            provider.force_flush()
            found.texts["prometheus exposition"] = generate_latest(registry).decode()
            found.texts["metrics as exported"] = repr(
                [(m.name, [p.attributes for p in m.data.data_points]) for m in cap.metrics()]
            )
        found.spans = list(memory.get_finished_spans())
        found.texts["spans"] = "\n".join(span.to_json() for span in found.spans)
        found.blobs["OTLP trace requests"] = b"".join(
            r.SerializeToString() for r in receiver.trace_requests
        )
        found.blobs["OTLP metric requests"] = b"".join(
            r.SerializeToString() for r in receiver.metric_requests
        )
        found.texts["syncperf log records"] = "\n".join(records.lines)
        yield found
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
        provider.shutdown()
        receiver.stop()
        with pg_sync.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS account")
        pg_sync.dispose()
        lite.dispose()


def test_the_traffic_reached_every_output(exported: Exported) -> None:
    """The searches below are meaningful: each output holds what the traffic produced."""
    assert exported.responses == [200, 500, 500, 200, 200, 200, 200, 200, 202, 202]
    exceptions = [
        dict(event.attributes or {})
        for span in exported.spans
        for event in span.events
        if event.name == "exception"
    ]
    types = {e["exception.type"] for e in exceptions}
    assert {"sqlalchemy.exc.IntegrityError", "ValueError"} <= types
    codes = {e.get("db.response.status_code") for e in exceptions}
    assert {"23505", "SQLITE_CONSTRAINT_UNIQUE"} <= codes  # asyncpg / psycopg and SQLite
    events = {event.name for span in exported.spans for event in span.events}
    assert {"sync.db.n_plus_one", "sync.db.slow_query"} <= events
    queries = {
        (span.attributes or {}).get("db.query.text")
        for span in exported.spans
        if span.name.startswith(("SELECT", "INSERT", "SET"))
    }
    assert "SELECT id FROM account WHERE email = ?" in queries  # SQLite's "..." literal
    joined = "SELECT a.id FROM account AS a JOIN account AS b ON ? = b.email GROUP BY ? ORDER BY ?"
    assert joined in queries
    assert "SELECT id FROM account WHERE email = ? AND token = ?" in queries
    assert "SET application_name TO ?" in queries
    assert "sync_operation_duration_seconds_count" in exported.texts["prometheus scrape"]
    scrape = exported.texts["prometheus scrape"]  # the header's and the batch's numbers
    assert 'sync_client_pending_changes_count{sync_client_app_version="_other"' in scrape
    assert 'sync_client_app_version="2.0.1"' in scrape
    assert 'sync_client_batch_result="duplicate"' in scrape
    assert 'syncperf_reason="invalid_client_header"' in scrape
    assert 'syncperf_reason="invalid_client_metric"' in scrape
    assert b"sync.operation.duration" in exported.blobs["OTLP metric requests"]
    assert b"sync push" in exported.blobs["OTLP trace requests"]
    assert "slow query" in exported.texts["syncperf log records"]
    assert "N+1 queries" in exported.texts["syncperf log records"]


def test_no_password_email_or_token_reaches_any_exported_byte(exported: Exported) -> None:
    assert exported.leaks(SECRETS) == []


def test_no_url_path_value_or_client_text_reaches_any_exported_byte(exported: Exported) -> None:
    # `url.path` on sync spans is the route template, and adapters describe bad payload
    # values by type, never by content (both leaked before issue 12).
    assert exported.leaks((PATH_EMAIL, "carol@", CLIENT_OP, "c1ient-t3xt")) == []
