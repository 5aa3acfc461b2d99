"""syncperf.sqlalchemy against a real PostgreSQL: psycopg (sync) and asyncpg (async)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)

import syncperf
from syncperf import _sql as sql
from syncperf.sqlalchemy import EngineInstrumentation, instrument_engine
from syncperf.sqlalchemy import _queries as queries_module
from syncperf.testing import Capture

pytestmark = pytest.mark.integration

SECRET = "pg_s3cr3t_3f1e0d9c8b7a"
SECRET_NUMBER = 4242424242421


def _url(dsn: str, driver: str) -> str:
    return dsn.replace("postgresql://", f"postgresql+{driver}://", 1)


@pytest.fixture
def table() -> str:
    return f"todo_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pg(postgres_dsn: str, table: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(_url(postgres_dsn, "psycopg"), pool_size=3, max_overflow=0)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, title TEXT UNIQUE, done BOOLEAN)"
        )
    yield engine
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    engine.dispose()


@pytest.fixture
def instrumented(pg: sa.Engine) -> Iterator[EngineInstrumentation]:
    handle = instrument_engine(pg)
    yield handle
    handle.uninstrument()


@pytest.fixture
async def apg(postgres_dsn: str, table: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(_url(postgres_dsn, "asyncpg"), pool_size=2, max_overflow=0)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, title TEXT UNIQUE, done BOOLEAN)"
        )
    yield engine
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    await engine.dispose()


def _items(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "title": f"item {i}", "done": False} for i in range(n)]


# --- per-operation counts and N+1 -----------------------------------------------------------


def test_n_plus_one_push_of_50_items_is_detected_with_exact_counts(
    syncperf_capture: Capture,
    pg: sa.Engine,
    instrumented: EngineInstrumentation,
    table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    items = _items(50)
    insert = sa.text(f"INSERT INTO {table} (id, title, done) VALUES (:id, :title, :done)")
    exists = sa.text(f"SELECT 1 FROM {table} WHERE id = :id")
    with (
        caplog.at_level(logging.WARNING, "syncperf"),
        syncperf.sync_operation("push", entity="todo") as op,
        pg.begin() as conn,
    ):
        op.set_batch_size(len(items))
        for item in items:  # the N+1: one lookup and one insert per pushed item
            conn.execute(exists, {"id": item["id"]}).first()
            conn.execute(insert, item)

    (queries,) = syncperf_capture.points("sync.db.queries", {"sync.operation": "push"})
    assert (queries.count, queries.sum) == (1, 101)  # and the COMMIT
    (detections,) = syncperf_capture.points("sync.db.n_plus_one", {"sync.entity": "todo"})
    assert detections.attributes["db.collection.name"] == table
    assert detections.value == 2  # the lookup and the insert
    (span,) = [s for s in syncperf_capture.spans() if s.name == "sync push"]
    texts = sorted(
        e.attributes["db.query.text"]
        for e in span.events
        if e.name == "sync.db.n_plus_one" and e.attributes is not None
    )
    assert texts == [
        f"INSERT INTO {table} (id, title, done) VALUES (?)",
        f"SELECT ? FROM {table} WHERE id = ?",
    ]
    assert span.attributes is not None
    assert span.attributes["sync.db.queries"] == 101
    warnings = [r.getMessage() for r in caplog.records if "N+1" in r.getMessage()]
    assert len(warnings) == 2
    assert all("sync push (entity todo)" in w for w in warnings)
    client = [s for s in syncperf_capture.spans() if s.kind is SpanKind.CLIENT]
    assert len(client) == 101
    assert client[0].attributes is not None
    assert client[0].attributes["db.system.name"] == "postgresql"
    assert client[0].attributes["db.namespace"] == "postgres"
    assert client[0].attributes["server.address"] == "127.0.0.1"


def test_the_batched_push_is_not_an_n_plus_one(
    syncperf_capture: Capture, pg: sa.Engine, instrumented: EngineInstrumentation, table: str
) -> None:
    items = _items(50)
    todo = sa.table(table, sa.column("id"), sa.column("title"), sa.column("done"))
    with syncperf.sync_operation("push", entity="todo"), pg.begin() as conn:
        known = conn.execute(sa.select(todo.c.id).where(todo.c.id.in_([i["id"] for i in items])))
        assert known.all() == []
        conn.execute(sa.insert(todo), items)  # one executemany

    (queries,) = syncperf_capture.points("sync.db.queries", {"sync.operation": "push"})
    assert queries.sum == 3  # SELECT, INSERT, COMMIT
    assert syncperf_capture.metric("sync.db.n_plus_one") is None
    with pg.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(todo)).scalar() == 50


async def test_async_engine_counts_exactly_and_detects_n_plus_one(
    syncperf_capture: Capture, apg: AsyncEngine, table: str
) -> None:
    handle = instrument_engine(apg)
    try:
        insert = sa.text(f"INSERT INTO {table} (id, title, done) VALUES (:id, :title, :done)")
        async with syncperf.sync_operation("push", entity="todo"), apg.begin() as conn:
            for item in _items(50):
                await conn.execute(insert, item)
        async with syncperf.sync_operation("pull", entity="todo"), apg.connect() as conn:
            rows = await conn.execute(sa.text(f"SELECT id FROM {table} WHERE id < :n"), {"n": 5})
            assert len(rows.all()) == 5
    finally:
        handle.uninstrument()

    (push,) = syncperf_capture.points("sync.db.queries", {"sync.operation": "push"})
    (pull,) = syncperf_capture.points("sync.db.queries", {"sync.operation": "pull"})
    assert (push.sum, pull.sum) == (51, 2)  # with the COMMIT; with the ROLLBACK of the read
    (detection,) = syncperf_capture.points("sync.db.n_plus_one")
    assert detection.attributes == {
        "sync.operation": "push",
        "sync.entity": "todo",
        "db.collection.name": table,
    }
    (histogram,) = syncperf_capture.points(
        "db.client.operation.duration", {"db.operation.name": "INSERT"}
    )
    assert histogram.count == 50
    assert histogram.attributes["db.system.name"] == "postgresql"


def test_the_pages_of_a_bulk_insert_and_of_selectinload_are_not_an_n_plus_one(
    syncperf_capture: Capture, pg: sa.Engine, table: str
) -> None:
    # SQLAlchemy pages both: the bulk insert 1,000 rows a query ("insertmanyvalues", with
    # server-generated keys), selectinload 500 keys a query
    class Base(DeclarativeBase):
        pass

    class Parent(Base):
        __tablename__ = f"{table}_parent"
        id: Mapped[int] = mapped_column(primary_key=True)
        kids: Mapped[list[Kid]] = relationship()

    class Kid(Base):
        __tablename__ = f"{table}_kid"
        id: Mapped[int] = mapped_column(primary_key=True)
        parent_id: Mapped[int] = mapped_column(sa.ForeignKey(f"{table}_parent.id"))

    Base.metadata.create_all(pg)
    handle = instrument_engine(pg, n_plus_one_threshold=2)  # three pages of each reach it
    try:
        with syncperf.sync_operation("push", entity="parent"), Session(pg) as session:
            session.add_all([Parent() for _ in range(2500)])
            session.commit()
        with syncperf.sync_operation("pull", entity="parent"), Session(pg) as session:
            parents = session.scalars(sa.select(Parent).options(selectinload(Parent.kids)))
            assert len(parents.all()) == 2500
    finally:
        handle.uninstrument()
        Base.metadata.drop_all(pg)
    assert syncperf_capture.metric("sync.db.n_plus_one") is None
    (push,) = syncperf_capture.points("sync.db.queries", {"sync.operation": "push"})
    assert push.sum >= 3  # three pages of the insert


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_the_pages_of_a_bulk_insert_are_classified_once_whatever_their_sizes(
    syncperf_capture: Capture,
    postgres_dsn: str,
    table: str,
    driver: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # keys in parameter order: each page is INSERT ... SELECT ... FROM (VALUES (...), ...) AS
    # imp_sen ... ORDER BY sen_counter, one placeholder row per item, so each size is another
    # string; classified once, as the single-row statement SQLAlchemy compiled
    classified: list[str] = []
    classify = sql.classify

    def counted(statement: str, **kwargs: Any) -> Any:
        classified.append(statement)
        return classify(statement, **kwargs)

    monkeypatch.setattr(queries_module, "classify", counted)
    metadata = sa.MetaData()
    todo = sa.Table(
        table,
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("title", sa.Text),
    )
    engine = create_async_engine(_url(postgres_dsn, driver), pool_size=1, max_overflow=0)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    handle = instrument_engine(engine)
    insert = sa.insert(todo).returning(todo.c.id, sort_by_parameter_order=True)
    try:
        with syncperf_capture.tracer_provider.get_tracer("test").start_as_current_span("req"):
            async with engine.begin() as conn:
                for size in range(20, 40):
                    rows = [{"title": f"t{i}"} for i in range(size)]
                    assert len((await conn.execute(insert, rows)).all()) == size
    finally:
        handle.uninstrument()
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
        await engine.dispose()
    (single,) = [statement for statement in classified if statement.startswith("INSERT")]
    assert "imp_sen" in single
    (point,) = syncperf_capture.points(
        "db.client.operation.duration", {"db.operation.name": "INSERT"}
    )
    assert point.count == 20  # one page each
    texts = {
        s.attributes["db.query.text"]
        for s in syncperf_capture.spans()
        if s.kind is SpanKind.CLIENT and s.attributes and s.attributes.get("db.collection.name")
    }
    assert texts == {
        f"INSERT INTO {table} (title) SELECT p0::VARCHAR FROM (VALUES (?)) AS imp_sen(p0, "
        f"sen_counter) ORDER BY sen_counter RETURNING {table}.id, {table}.id AS id__1"
    }


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_in_lists_with_bind_casts_are_one_statement_for_n_plus_one(
    syncperf_capture: Capture, pg: sa.Engine, postgres_dsn: str, table: str, driver: str
) -> None:
    # both drivers send IN ($1::BIGINT, $2::BIGINT) / IN (%(id_1_1)s::BIGINT, ...): one list
    # length each time, one statement for all of them
    engine = create_async_engine(_url(postgres_dsn, driver), pool_size=1, max_overflow=0)
    handle = instrument_engine(engine)
    todo = sa.table(table, sa.column("id", sa.BigInteger))
    try:
        async with syncperf.sync_operation("pull", entity="tag"), engine.connect() as conn:
            for i in range(12):  # the N+1: one lookup per item, each with its own tags
                await conn.execute(sa.select(todo.c.id).where(todo.c.id.in_(range(1 + i % 4))))
    finally:
        handle.uninstrument()
        await engine.dispose()
    (detection,) = syncperf_capture.points("sync.db.n_plus_one")
    assert detection.attributes["db.collection.name"] == table
    texts = {
        s.attributes["db.query.text"]
        for s in syncperf_capture.spans()
        if s.kind is SpanKind.CLIENT and s.attributes and s.attributes.get("db.collection.name")
    }
    assert texts == {f"SELECT {table}.id FROM {table} WHERE {table}.id IN (?)"}


# --- slow queries and errors ------------------------------------------------------------------


def test_pg_sleep_is_a_slow_query_at_the_default_threshold(
    syncperf_capture: Capture,
    pg: sa.Engine,
    instrumented: EngineInstrumentation,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING, "syncperf"),
        syncperf.sync_operation("pull", entity="todo"),
        pg.connect() as conn,
    ):
        conn.execute(sa.text("SELECT pg_sleep(0.6)")).all()
        conn.execute(sa.text("SELECT pg_sleep(0.01)")).all()

    (slow,) = syncperf_capture.points("sync.db.slow_queries")
    assert slow.value == 1
    assert slow.attributes == {"db.operation.name": "SELECT"}
    (span,) = [s for s in syncperf_capture.spans() if s.name == "sync pull"]
    (event,) = [e for e in span.events if e.name == "sync.db.slow_query"]
    assert event.attributes is not None
    assert event.attributes["db.query.text"] == "SELECT pg_sleep(?)"
    assert 0.6 <= event.attributes["sync.db.query.duration"] < 5
    (record,) = [r.getMessage() for r in caplog.records if "slow query" in r.getMessage()]
    assert "SELECT pg_sleep(?)" in record
    assert "sync pull" in record


def test_commit_time_and_commit_failures_are_measured(
    syncperf_capture: Capture, pg: sa.Engine, table: str
) -> None:
    # A deferred constraint is checked at COMMIT: here a slow one (a trigger) and a foreign
    # key that fails there; both were invisible while COMMIT was not measured
    parent, child = f"{table}_p", f"{table}_c"
    with pg.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {parent} (id INT PRIMARY KEY)")
        conn.exec_driver_sql(
            f"CREATE TABLE {child} (id INT PRIMARY KEY, "
            f"p INT REFERENCES {parent} DEFERRABLE INITIALLY DEFERRED)"
        )
        conn.exec_driver_sql(
            f"CREATE FUNCTION {parent}_slow() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(0.6); RETURN NULL; END $$"
        )
        conn.exec_driver_sql(
            f"CREATE CONSTRAINT TRIGGER {parent}_t AFTER INSERT ON {parent} "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {parent}_slow()"
        )
    handle = instrument_engine(pg)  # slow queries from 0.5 s
    try:
        with syncperf.sync_operation("push", entity="slow"), pg.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO {parent} VALUES (1)")
        with (
            pytest.raises(sa.exc.IntegrityError),
            syncperf.sync_operation("push", entity="bad"),
            pg.begin() as conn,
        ):
            conn.exec_driver_sql(f"INSERT INTO {child} VALUES (1, 999)")
        with syncperf.sync_operation("pull", entity="read"), pg.connect() as conn:
            conn.exec_driver_sql(f"SELECT id FROM {parent}").all()  # a transaction, rolled back
    finally:
        handle.uninstrument()
        with pg.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {child}, {parent}")
            conn.exec_driver_sql(f"DROP FUNCTION {parent}_slow")

    def one(name: str, entity: str) -> Any:
        (point,) = syncperf_capture.points(name, {"sync.entity": entity})
        return point

    assert one("sync.db.queries", "slow").sum == 2  # INSERT, COMMIT (no ROLLBACK at checkin)
    assert 0.6 <= one("sync.db.duration", "slow").sum < 5  # the COMMIT's wait included
    (slow,) = syncperf_capture.points("sync.db.slow_queries")
    assert slow.attributes == {"db.operation.name": "COMMIT"}
    assert one("sync.db.queries", "bad").sum == 2  # INSERT, COMMIT (failed: nothing to roll back)
    (failed,) = syncperf_capture.points(
        "db.client.operation.duration",
        {"db.operation.name": "COMMIT", "db.response.status_code": "23503"},
    )
    assert failed.attributes["error.type"] == "psycopg.errors.ForeignKeyViolation"
    assert failed.count == 1
    assert one("sync.db.queries", "read").sum == 2  # SELECT, ROLLBACK
    (failed_span,) = [
        s
        for s in syncperf_capture.spans()
        if s.status.status_code is StatusCode.ERROR and s.name == "COMMIT"
    ]
    assert failed_span.kind is SpanKind.CLIENT


def test_no_secret_reaches_any_exported_signal_even_from_error_messages(
    syncperf_capture: Capture, pg: sa.Engine, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    handle = instrument_engine(pg, n_plus_one_threshold=2, slow_query_threshold=0.001)
    tracer = syncperf_capture.tracer_provider.get_tracer("test")
    try:
        with (
            caplog.at_level(logging.DEBUG, "syncperf"),
            tracer.start_as_current_span("request"),
            syncperf.sync_operation("push", entity="todo"),
        ):
            with pg.begin() as conn:
                for i in range(3):
                    conn.execute(
                        sa.text(f"INSERT INTO {table} (id, title) VALUES (:id, :title)"),
                        {"id": SECRET_NUMBER + i, "title": f"{SECRET}-{i}"},
                    )
                    conn.execute(
                        sa.text(
                            f"SELECT pg_sleep(0.002), id FROM {table} "
                            f"WHERE title = '{SECRET}-{i}' OR id = {SECRET_NUMBER}"
                        )
                    ).all()
            with pytest.raises(sa.exc.IntegrityError) as raised, pg.begin() as conn:
                conn.execute(
                    sa.text(f"INSERT INTO {table} (id, title) VALUES (:id, :title)"),
                    {"id": 7, "title": f"{SECRET}-0"},
                )
            assert SECRET in str(raised.value)  # the driver's message does contain it
    finally:
        handle.uninstrument()

    parts: list[str] = []
    for span in syncperf_capture.spans():
        parts.append(span.name)
        parts.append(str(span.status.description))
        parts.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            parts.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
    for metric in syncperf_capture.metrics():
        for point in metric.data.data_points:
            parts.extend(f"{k}={v}" for k, v in (point.attributes or {}).items())
    parts.extend(r.getMessage() for r in caplog.records)
    exported = "\n".join(parts)

    assert "error.type=psycopg.errors.UniqueViolation" in exported
    assert "sync.db.n_plus_one" in exported and "sync.db.slow_query" in exported
    assert SECRET not in exported
    assert "s3cr3t" not in exported
    assert str(SECRET_NUMBER) not in exported
    failed = [s for s in syncperf_capture.spans() if s.status.status_code is StatusCode.ERROR]
    assert any(s.kind is SpanKind.CLIENT for s in failed)


@pytest.mark.parametrize("field", ["SCHEMA", "TABLE", "COLUMN", "CONSTRAINT"])
@pytest.mark.parametrize("code", ["P0001", "23505", "23514"])  # RAISE chooses the code too
@pytest.mark.parametrize("secret", [SECRET, "alice@example.com-pg_s3cr3t"])
def test_a_name_field_a_raise_fills_never_reaches_an_exported_signal(
    syncperf_capture: Capture,
    pg: sa.Engine,
    field: str,
    code: str,
    secret: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handle = instrument_engine(pg)
    tracer = syncperf_capture.tracer_provider.get_tracer("test")
    raise_ = (
        "DO $$BEGIN RAISE EXCEPTION USING MESSAGE = 'no', "
        f"ERRCODE = '{code}', {field} = '{secret}'; END$$"
    )
    try:
        with (
            caplog.at_level(logging.DEBUG, "syncperf"),
            tracer.start_as_current_span("request"),
            pytest.raises(sa.exc.DBAPIError),
            syncperf.sync_operation("push", entity="todo"),
            pg.connect() as conn,
        ):
            conn.exec_driver_sql(raise_)
    finally:
        handle.uninstrument()
    events = [e for s in syncperf_capture.spans() for e in s.events if e.name == "exception"]
    assert events
    exported = repr([dict(e.attributes or {}) for e in events])
    exported += "\n".join(r.getMessage() for r in caplog.records)
    assert f"SQLSTATE {code}" in exported
    assert secret not in exported and "s3cr3t" not in exported


def test_the_names_of_a_real_integrity_violation_are_exported(
    syncperf_capture: Capture, pg: sa.Engine, table: str
) -> None:
    handle = instrument_engine(pg)
    try:
        for statement in (
            f"INSERT INTO {table} (id, title) VALUES (1, 'a')",
            f"INSERT INTO {table} (id, title) VALUES (1, 'b')",  # the primary key
            f"INSERT INTO {table} (id, title) VALUES (NULL, 'c')",  # NOT NULL
        ):
            with (
                contextlib.suppress(sa.exc.IntegrityError),
                pg.begin() as conn,
                syncperf.sync_operation("push", entity="todo"),
            ):
                conn.exec_driver_sql(statement)
    finally:
        handle.uninstrument()
    messages = [
        str((e.attributes or {}).get("exception.message"))
        for s in syncperf_capture.spans()
        for e in s.events
        if e.name == "exception"
    ]
    assert any(f"schema public table {table} constraint {table}_pkey" in m for m in messages)
    assert any(f"schema public table {table} column id" in m for m in messages)


# --- connection pool --------------------------------------------------------------------------


def _value(cap: Capture, name: str, attrs: dict[str, Any] | None = None) -> float:
    points = cap.points(name, attrs)
    return sum(p.value for p in points)


def _wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_pool_exhaustion_shows_pending_requests_wait_time_and_timeouts(
    syncperf_capture: Capture, postgres_dsn: str
) -> None:
    engine = sa.create_engine(
        _url(postgres_dsn, "psycopg"), pool_size=1, max_overflow=0, pool_timeout=0.3
    )
    handle = instrument_engine(engine, pool_name="pg-main")
    pool = {"db.client.connection.pool.name": "pg-main"}
    try:
        held = engine.connect()
        held.execute(sa.text("SELECT 1"))
        assert (
            _value(
                syncperf_capture,
                "db.client.connection.count",
                {**pool, "db.client.connection.state": "used"},
            )
            == 1
        )
        assert _value(syncperf_capture, "db.client.connection.max", pool) == 1
        assert _value(syncperf_capture, "db.client.connection.idle.max", pool) == 1

        # 1. a waiter that gets the connection once it is returned
        got: list[float] = []

        def waiter() -> None:
            started = time.monotonic()
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            got.append(time.monotonic() - started)

        engine.pool._timeout = 5.0  # type: ignore[attr-defined]  # generous for this phase
        thread = threading.Thread(target=waiter)
        thread.start()
        assert _wait_until(
            lambda: _value(syncperf_capture, "db.client.connection.pending_requests", pool) == 1
        )
        time.sleep(0.15)
        held.close()
        thread.join(5)
        assert got and got[0] >= 0.15
        assert _value(syncperf_capture, "db.client.connection.pending_requests", pool) == 0
        (wait,) = syncperf_capture.points("db.client.connection.wait_time", pool)
        assert wait.max >= 0.15

        # 2. a checkout that times out
        engine.pool._timeout = 0.3  # type: ignore[attr-defined]
        held = engine.connect()
        with pytest.raises(sa.exc.TimeoutError):
            engine.connect()
        held.close()
        assert _value(syncperf_capture, "db.client.connection.timeouts", pool) == 1
        assert _value(syncperf_capture, "db.client.connection.pending_requests", pool) == 0
        (wait,) = syncperf_capture.points("db.client.connection.wait_time", pool)
        assert wait.count == 4  # held, waiter, held again, the timed-out one
        (use,) = syncperf_capture.points("db.client.connection.use_time", pool)
        assert use.count == 3
        assert use.max >= 0.15
        assert (
            _value(
                syncperf_capture,
                "db.client.connection.count",
                {**pool, "db.client.connection.state": "idle"},
            )
            == 1
        )
        assert (
            _value(
                syncperf_capture,
                "db.client.connection.count",
                {**pool, "db.client.connection.state": "used"},
            )
            == 0
        )
    finally:
        handle.uninstrument()
        engine.dispose()
    # after uninstrument the observed counts go back to zero, then stop
    assert _value(syncperf_capture, "db.client.connection.count", pool) == 0
    assert _value(syncperf_capture, "db.client.connection.max", pool) == 0


async def test_null_pool_reports_used_connections_and_no_maximum(
    syncperf_capture: Capture, postgres_dsn: str
) -> None:
    engine = create_async_engine(_url(postgres_dsn, "asyncpg"), poolclass=sa.pool.NullPool)
    handle = instrument_engine(engine, pool_name="pg-null")
    pool = {"db.client.connection.pool.name": "pg-null"}
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
            assert (
                _value(
                    syncperf_capture,
                    "db.client.connection.count",
                    {**pool, "db.client.connection.state": "used"},
                )
                == 1
            )
        assert (
            _value(
                syncperf_capture,
                "db.client.connection.count",
                {**pool, "db.client.connection.state": "used"},
            )
            == 0
        )
        assert (
            _value(
                syncperf_capture,
                "db.client.connection.count",
                {**pool, "db.client.connection.state": "idle"},
            )
            == 0
        )
        assert syncperf_capture.points("db.client.connection.max", pool) == []
        (wait,) = syncperf_capture.points("db.client.connection.wait_time", pool)
        assert wait.count == 1  # with NullPool, wait time is connection set-up time
    finally:
        handle.uninstrument()
        await engine.dispose()


def test_a_composed_psycopg_statement_is_measured_as_an_unknown_one(
    syncperf_capture: Capture, pg: sa.Engine, instrumented: EngineInstrumentation, table: str
) -> None:
    from psycopg import sql as pgsql

    statement = pgsql.SQL("SELECT {} FROM {}").format(
        pgsql.Literal(SECRET), pgsql.Identifier(table)
    )
    failing = pgsql.SQL("SELECT 1 / {}").format(pgsql.Literal(0))
    with syncperf.sync_operation("pull", entity="todo"), pg.connect() as conn:
        assert conn.exec_driver_sql(statement).all() == []  # type: ignore[arg-type]
        with pytest.raises(sa.exc.DataError):
            conn.exec_driver_sql(failing)  # type: ignore[arg-type]
    unknown = [
        point
        for point in syncperf_capture.points("db.client.operation.duration")
        if "db.operation.name" not in point.attributes
    ]
    assert sorted(point.attributes.get("error.type", "") for point in unknown) == [
        "",
        "psycopg.errors.DivisionByZero",
    ]
    assert syncperf_capture.total("syncperf.dropped") == 0
    spans = [s.to_json() for s in syncperf_capture.spans() if s.kind is SpanKind.CLIENT]
    assert not any(SECRET in span for span in spans)
