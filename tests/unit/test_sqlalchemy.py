"""syncperf.sqlalchemy on SQLite: per-operation counts, N+1, slow queries, spans, secrets."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry, generate_latest

# Imported before any test runs SQLAlchemyInstrumentor: importing sqlalchemy.ext.asyncio for the
# first time while contrib has create_engine wrapped binds the wrapper into it for good.
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)

import syncperf
from syncperf import _gate as gate
from syncperf import _sql as sql
from syncperf._runtime import Runtime
from syncperf.exceptions import ConfigError
from syncperf.sqlalchemy import EngineInstrumentation, instrument_engine
from syncperf.sqlalchemy import _queries as queries_module
from syncperf.sqlalchemy._detections import MAX_TRACKED, SCRATCH
from syncperf.sqlalchemy._ends import ends
from syncperf.sqlalchemy._names import connection_attributes, pool_name
from syncperf.sqlalchemy._queries import QuerySeries
from syncperf.testing import Capture, capture

SECRET = "tok_s3cr3t_9f8e7d6c5b4a"
SECRET_NUMBER = 8675309123


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    eng = sa.create_engine("sqlite://")

    @sa.event.listens_for(eng, "connect")
    def _functions(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.create_function("sleep_ms", 1, lambda ms: time.sleep(ms / 1000) or ms)

    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE todo (id INTEGER PRIMARY KEY, title TEXT, owner INT)")
        conn.execute(
            sa.text("INSERT INTO todo (id, title, owner) VALUES (:id, :title, :owner)"),
            [{"id": i, "title": f"t{i}", "owner": i % 3} for i in range(60)],
        )
    yield eng
    eng.dispose()


@pytest.fixture
def instrumented(engine: sa.Engine) -> Iterator[EngineInstrumentation]:
    handle = instrument_engine(engine)
    yield handle
    handle.uninstrument()


def kept_series(cap: Capture, handle: EngineInstrumentation) -> dict[Any, Any]:
    """The series ``handle``'s engine keeps pre-bound on the capture's runtime."""
    return cap.runtime.state(QuerySeries, handle._recorder.serial).durations


def select_one(conn: sa.Connection, todo_id: int) -> Any:
    return conn.execute(sa.text("SELECT title FROM todo WHERE id = :id"), {"id": todo_id}).all()


# --- per-operation cost --------------------------------------------------------------------


def test_queries_and_db_time_per_operation_are_exact(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    with syncperf.sync_operation("pull", entity="todo"), engine.connect() as conn:
        for todo_id in range(7):
            select_one(conn, todo_id)

    (queries,) = syncperf_capture.points("sync.db.queries", {"sync.operation": "pull"})
    assert (queries.count, queries.sum) == (1, 7)
    (db_time,) = syncperf_capture.points("sync.db.duration", {"sync.entity": "todo"})
    assert db_time.count == 1
    assert 0 < db_time.sum < 1
    (span,) = [s for s in syncperf_capture.spans() if s.name == "sync pull"]
    assert span.attributes is not None
    assert span.attributes["sync.db.queries"] == 7
    assert span.attributes["sync.db.duration"] == pytest.approx(db_time.sum)


def test_an_executemany_counts_once_whatever_its_rows(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    # one driver call (cursor.executemany), as it is one db.client.operation.duration
    rows = [{"id": i, "title": f"u{i}"} for i in range(25)]
    with syncperf.sync_operation("push", entity="many"), engine.begin() as conn:
        conn.execute(sa.text("UPDATE todo SET title = :title WHERE id = :id"), rows)
    (queries,) = syncperf_capture.points("sync.db.queries", {"sync.entity": "many"})
    assert queries.sum == 2  # the UPDATE and the COMMIT
    (update,) = syncperf_capture.points(
        "db.client.operation.duration", {"db.operation.name": "UPDATE"}
    )
    assert update.count == 1


def _queries(cap: Capture, entity: str) -> float:
    (point,) = cap.points("sync.db.queries", {"sync.entity": entity})
    return float(point.sum)


def test_a_commit_or_rollback_the_database_runs_is_a_query(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    with syncperf.sync_operation("push", entity="commit"), engine.begin() as conn:
        conn.exec_driver_sql("UPDATE todo SET title = 'x' WHERE id = 1")
    with syncperf.sync_operation("push", entity="rollback"), engine.connect() as conn:
        conn.exec_driver_sql("UPDATE todo SET title = 'y' WHERE id = 1")  # never committed
    with syncperf.sync_operation("pull", entity="read"), engine.connect() as conn:
        select_one(conn, 1)  # SQLite opens no transaction for a read: nothing to roll back
    with (
        syncperf.sync_operation("pull", entity="nested"),
        engine.begin() as conn,
    ):
        conn.exec_driver_sql("UPDATE todo SET title = 'z' WHERE id = 2")
        with conn.begin_nested():  # SAVEPOINT, RELEASE: statements, as ever
            conn.exec_driver_sql("UPDATE todo SET title = 'z' WHERE id = 3")

    assert _queries(syncperf_capture, "commit") == 2  # UPDATE, COMMIT
    assert _queries(syncperf_capture, "rollback") == 2  # UPDATE, ROLLBACK
    assert _queries(syncperf_capture, "read") == 1  # and no ROLLBACK at the checkin either
    assert _queries(syncperf_capture, "nested") == 5  # UPDATE, SAVEPOINT, UPDATE, RELEASE, COMMIT
    operations = {"COMMIT": 2, "ROLLBACK": 1}
    for operation, count in operations.items():
        (point,) = syncperf_capture.points(
            "db.client.operation.duration", {"db.operation.name": operation}
        )
        assert point.count == count
        assert "db.collection.name" not in point.attributes
    commits = [s for s in syncperf_capture.spans() if s.name == "COMMIT"]
    assert len(commits) == 2
    for span in commits:
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.attributes is not None
        assert span.attributes["db.query.text"] == "COMMIT"
        assert span.attributes["db.operation.name"] == "COMMIT"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="sqlite3 errors carry their code from 3.11")
def test_a_commit_that_fails_is_a_failed_query(syncperf_capture: Capture, tmp_path: Any) -> None:
    eng = sa.create_engine(f"sqlite:///{tmp_path}/fk.db")

    @sa.event.listens_for(eng, "connect")
    def _foreign_keys(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute("PRAGMA foreign_keys = ON")

    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE p (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql(
            "CREATE TABLE c (id INTEGER PRIMARY KEY, "
            "p_id INTEGER REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)"
        )
    handle = instrument_engine(eng)
    try:
        with (
            pytest.raises(sa.exc.IntegrityError),  # the deferred constraint, at COMMIT
            syncperf.sync_operation("push", entity="c"),
            eng.begin() as conn,
        ):
            conn.exec_driver_sql("INSERT INTO c VALUES (1, 999)")
    finally:
        handle.uninstrument()
        eng.dispose()
    (failed,) = syncperf_capture.points(
        "db.client.operation.duration", {"db.operation.name": "COMMIT"}
    )
    assert failed.attributes["error.type"] == "sqlite3.IntegrityError"
    assert failed.attributes["db.response.status_code"] == "SQLITE_CONSTRAINT_FOREIGNKEY"
    assert _queries(syncperf_capture, "c") == 3  # INSERT, COMMIT (failed), ROLLBACK


def test_an_operation_without_queries_records_zero_when_an_engine_is_instrumented(
    syncperf_capture: Capture, instrumented: EngineInstrumentation
) -> None:
    with syncperf.sync_operation("pull", entity="todo"):
        pass

    (queries,) = syncperf_capture.points("sync.db.queries", {"sync.operation": "pull"})
    assert (queries.count, queries.sum) == (1, 0)


def test_instrumenting_before_capture_still_counts_inside_it(
    engine: sa.Engine,
) -> None:
    handle = instrument_engine(engine)
    try:
        with capture() as cap, syncperf.sync_operation("push"):
            pass
        (queries,) = cap.points("sync.db.queries", {"sync.operation": "push"})
        assert queries.sum == 0
    finally:
        handle.uninstrument()


def test_queries_outside_an_operation_feed_only_the_query_histogram(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    with engine.connect() as conn:
        select_one(conn, 1)
        select_one(conn, 2)

    assert syncperf_capture.metric("sync.db.queries") is None
    (point,) = syncperf_capture.points(
        "db.client.operation.duration",
        {"db.system.name": "sqlite", "db.operation.name": "SELECT", "db.collection.name": "todo"},
    )
    assert point.count == 2
    assert "error.type" not in point.attributes


def test_query_histogram_has_sub_millisecond_and_kpi_boundaries(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    with engine.connect() as conn:
        select_one(conn, 1)

    (point,) = syncperf_capture.points("db.client.operation.duration")
    bounds = list(point.explicit_bounds)
    for boundary in (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0):
        assert boundary in bounds
    metric = syncperf_capture.metric("db.client.operation.duration")
    assert metric is not None
    assert metric.unit == "s"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="sqlite3 errors carry their code from 3.11")
def test_failed_queries_carry_error_type_on_metric_and_span(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    tracer = syncperf_capture.tracer_provider.get_tracer("test")
    with (
        tracer.start_as_current_span("request"),
        engine.connect() as conn,
        pytest.raises(sa.exc.OperationalError) as raised,
    ):
        conn.execute(sa.text("SELECT * FROM missing_table"))
    assert "missing_table" in str(raised.value)  # the user's exception is untouched

    (point,) = syncperf_capture.points(
        "db.client.operation.duration", {"error.type": "sqlite3.OperationalError"}
    )
    assert point.count == 1
    assert point.attributes["db.collection.name"] == "missing_table"
    (span,) = [s for s in syncperf_capture.spans() if s.kind is SpanKind.CLIENT]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "sqlite3.OperationalError"
    # SQLite has no SQLSTATE: its (extended) result code name is the response status code
    assert span.attributes["db.response.status_code"] == "SQLITE_ERROR"
    assert point.attributes["db.response.status_code"] == "SQLITE_ERROR"


def test_a_failed_query_counts_towards_the_operation(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    with syncperf.sync_operation("push"), engine.connect() as conn:
        select_one(conn, 1)
        with pytest.raises(sa.exc.OperationalError):
            conn.execute(sa.text("SELECT * FROM missing_table"))

    (queries,) = syncperf_capture.points("sync.db.queries", {"sync.operation": "push"})
    assert queries.sum == 2


def test_distinct_literal_statements_do_not_grow_the_runtime_cache(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    cache = kept_series(syncperf_capture, instrumented)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 0").all()
        before = len(cache)
        for i in range(2500):  # literals inlined: every statement string is new
            conn.exec_driver_sql(f"SELECT title FROM todo WHERE id = {i}").all()
            conn.exec_driver_sql(f"SELECT {i}").all()
        for i in range(50):
            with pytest.raises(sa.exc.OperationalError):
                conn.exec_driver_sql(f"SELECT * FROM missing_table WHERE id = {i}")

    assert len(cache) - before <= 5
    assert syncperf_capture.total("db.client.operation.duration") == 5051


def test_unbounded_table_names_do_not_grow_the_runtime_cache_past_its_limit(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    cache = kept_series(syncperf_capture, instrumented)
    before = len(cache)
    with engine.connect() as conn:
        for i in range(1300):
            with pytest.raises(sa.exc.OperationalError):
                conn.exec_driver_sql(f"SELECT * FROM tmp_{i}")

    assert len(cache) - before <= 1000 + 3
    assert syncperf_capture.total("db.client.operation.duration") == 1300


def test_an_n_plus_one_loop_over_a_50_item_push_is_detected(
    syncperf_capture: Capture,
    engine: sa.Engine,
    instrumented: EngineInstrumentation,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING, "syncperf"),
        syncperf.sync_operation("push", entity="todo") as op,
        engine.connect() as conn,
    ):
        op.set_batch_size(50)
        for todo_id in range(50):
            select_one(conn, todo_id)

    (detection,) = syncperf_capture.points("sync.db.n_plus_one")
    assert detection.value == 1
    assert detection.attributes == {
        "sync.operation": "push",
        "sync.entity": "todo",
        "db.collection.name": "todo",
    }
    (span,) = [s for s in syncperf_capture.spans() if s.name == "sync push"]
    (event,) = [e for e in span.events if e.name == "sync.db.n_plus_one"]
    assert event.attributes is not None
    assert event.attributes["db.query.text"] == "SELECT title FROM todo WHERE id = ?"
    assert event.attributes["db.collection.name"] == "todo"
    assert span.attributes is not None
    assert span.attributes["sync.db.n_plus_one"] == 1
    (record,) = [r for r in caplog.records if "N+1" in r.getMessage()]
    assert "SELECT title FROM todo WHERE id = ?" in record.getMessage()
    assert "sync push" in record.getMessage()
    assert record.levelno == logging.WARNING


def test_the_batched_version_of_the_push_is_not_an_n_plus_one(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    todo = sa.table("todo", sa.column("id"), sa.column("title"))
    with syncperf.sync_operation("push", entity="todo"), engine.connect() as conn:
        conn.execute(sa.select(todo.c.title).where(todo.c.id.in_(range(50)))).all()
        conn.execute(sa.update(todo).values(title="x").where(todo.c.id.in_(range(50))))

    assert syncperf_capture.metric("sync.db.n_plus_one") is None
    (queries,) = syncperf_capture.points("sync.db.queries", {"sync.operation": "push"})
    assert queries.sum == 3  # and the ROLLBACK of the update, never committed


class _Base(DeclarativeBase):
    pass


class _Parent(_Base):
    __tablename__ = "parent"
    id: Mapped[int] = mapped_column(primary_key=True)
    kids: Mapped[list[_Kid]] = relationship()


class _Kid(_Base):
    __tablename__ = "kid"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int] = mapped_column(sa.ForeignKey("parent.id"))


def test_the_pages_of_a_bulk_insert_and_of_selectinload_are_not_an_n_plus_one(
    syncperf_capture: Capture,
) -> None:
    # SQLAlchemy pages both: the bulk insert in batches (one row per batch on SQLite, whose
    # RETURNING order is not guaranteed), selectinload in IN lists of 500 keys
    eng = sa.create_engine("sqlite://")
    _Base.metadata.create_all(eng)
    handle = instrument_engine(eng, n_plus_one_threshold=2)  # three pages of kids reach it
    try:
        with syncperf.sync_operation("push", entity="parent"), Session(eng) as session:
            session.add_all([_Parent() for _ in range(1500)])
            session.commit()
        with syncperf.sync_operation("pull", entity="parent"), Session(eng) as session:
            session.scalars(sa.select(_Parent).options(selectinload(_Parent.kids))).all()
    finally:
        handle.uninstrument()
        eng.dispose()
    assert syncperf_capture.metric("sync.db.n_plus_one") is None
    (pull,) = syncperf_capture.points("sync.db.queries", {"sync.operation": "pull"})
    assert pull.sum >= 4  # the parents, three pages of kids (and the transaction's end)


def _bulk_engine() -> sa.Engine:
    eng = sa.create_engine("sqlite://")
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE bulk (id INTEGER PRIMARY KEY, title TEXT, n INT)")
    return eng


_BULK = sa.table("bulk", sa.column("id"), sa.column("title"), sa.column("n"))


def test_the_pages_of_a_bulk_insert_are_classified_once_whatever_their_sizes(
    syncperf_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a page carries one placeholder row per item, so each batch size is another string; each
    # is classified as its single-row statement (once), not sanitized whole (~1 us a character)
    classified: list[str] = []
    classify = sql.classify

    def counted(statement: str, **kwargs: Any) -> Any:
        classified.append(statement)
        return classify(statement, **kwargs)

    monkeypatch.setattr(queries_module, "classify", counted)
    eng = _bulk_engine()
    handle = instrument_engine(eng)
    tracer = syncperf_capture.tracer_provider.get_tracer("test")
    try:
        with tracer.start_as_current_span("req"), eng.begin() as conn:
            for size in range(20, 40):
                rows = [{"title": f"t{i}"} for i in range(size)]
                conn.execute(sa.insert(_BULK).returning(_BULK.c.id), rows).all()
    finally:
        handle.uninstrument()
        eng.dispose()
    inserts = [statement for statement in classified if statement.startswith("INSERT")]
    assert inserts == ["INSERT INTO bulk (title) VALUES (?) RETURNING id"]
    (point,) = syncperf_capture.points(
        "db.client.operation.duration", {"db.operation.name": "INSERT"}
    )
    assert point.count == 20  # one page each
    texts = {
        span.attributes.get("db.query.text")
        for span in syncperf_capture.spans()
        if span.kind is SpanKind.CLIENT and span.attributes is not None
    }
    assert "INSERT INTO bulk (title) VALUES (?) RETURNING id" in texts


def test_a_loop_over_chunks_is_not_an_n_plus_one_but_one_over_small_lists_is(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    todo = sa.table("todo", sa.column("id"), sa.column("title"))
    with syncperf.sync_operation("push", entity="chunks"), engine.connect() as conn:
        for start in range(0, 600, 50):  # batched by the application: 50 keys a query
            conn.execute(sa.select(todo.c.title).where(todo.c.id.in_(range(start, start + 50))))
    assert syncperf_capture.metric("sync.db.n_plus_one") is None
    with syncperf.sync_operation("push", entity="tags"), engine.connect() as conn:
        for i in range(12):  # one query per item, each with its own few keys
            conn.execute(sa.select(todo.c.title).where(todo.c.id.in_(range(1 + i % 4))))
    (detection,) = syncperf_capture.points("sync.db.n_plus_one")
    assert detection.attributes["sync.entity"] == "tags"


def test_an_applications_chunks_sent_as_executemany_are_not_an_n_plus_one(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    # conn.execute(insert(t), rows) in chunks: one cursor.executemany each, one VALUES row
    todo = sa.table("todo", sa.column("id"), sa.column("title"))
    rows = [{"id": 100 + i, "title": f"c{i}"} for i in range(1000)]
    with syncperf.sync_operation("push", entity="chunks"), engine.begin() as conn:
        for start in range(0, len(rows), 100):
            conn.execute(sa.insert(todo), rows[start : start + 100])
        for start in range(0, len(rows), 100):  # and so for an UPDATE's
            conn.execute(
                sa.text("UPDATE todo SET title = :title WHERE id = :id"), rows[start : start + 100]
            )
    assert syncperf_capture.metric("sync.db.n_plus_one") is None
    assert _queries(syncperf_capture, "chunks") == 21  # each chunk is still a query


def test_n_plus_one_fires_at_the_default_threshold_of_ten(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    with syncperf.sync_operation("pull"), engine.connect() as conn:
        for todo_id in range(9):
            select_one(conn, todo_id)
    assert syncperf_capture.metric("sync.db.n_plus_one") is None

    with syncperf.sync_operation("pull"), engine.connect() as conn:
        for todo_id in range(25):  # once per statement per operation, not per execution
            select_one(conn, todo_id)
    assert syncperf_capture.total("sync.db.n_plus_one") == 1


def test_statements_differing_only_in_literals_are_one_statement_for_n_plus_one(
    syncperf_capture: Capture, engine: sa.Engine
) -> None:
    handle = instrument_engine(engine, n_plus_one_threshold=3)
    try:
        with syncperf.sync_operation("pull"), engine.connect() as conn:
            for todo_id in range(3):
                conn.execute(sa.text(f"SELECT title FROM todo WHERE id = {todo_id}")).all()
    finally:
        handle.uninstrument()
    assert syncperf_capture.total("sync.db.n_plus_one") == 1


def test_n_plus_one_warnings_are_rate_limited_but_counted(
    syncperf_capture: Capture, engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    handle = instrument_engine(engine, n_plus_one_threshold=2)
    try:
        with caplog.at_level(logging.WARNING, "syncperf"):
            for _ in range(3):
                with syncperf.sync_operation("pull"), engine.connect() as conn:
                    select_one(conn, 1)
                    select_one(conn, 2)
    finally:
        handle.uninstrument()
    assert syncperf_capture.total("sync.db.n_plus_one") == 3
    assert len([r for r in caplog.records if "N+1" in r.getMessage()]) == 1


def test_n_plus_one_tracks_a_bounded_number_of_distinct_statements_per_operation(
    syncperf_capture: Capture, engine: sa.Engine
) -> None:
    handle = instrument_engine(engine, n_plus_one_threshold=3)
    try:
        with syncperf.sync_operation("pull") as op, engine.connect() as conn:
            for i in range(MAX_TRACKED + 40):
                conn.exec_driver_sql(f"SELECT title AS c{i} FROM todo WHERE id = 1").all()
            counts = op.scratch[SCRATCH]
            assert len(counts) == MAX_TRACKED
    finally:
        handle.uninstrument()
    untracked = {"syncperf.reason": "n_plus_one_untracked"}
    assert syncperf_capture.total("syncperf.dropped", untracked) == 40


def test_n_plus_one_is_still_detected_for_the_statements_tracked_once_the_bound_is_reached(
    syncperf_capture: Capture, engine: sa.Engine
) -> None:
    handle = instrument_engine(engine, n_plus_one_threshold=3)
    try:
        with syncperf.sync_operation("pull"), engine.connect() as conn:
            for i in range(MAX_TRACKED + 5):
                conn.exec_driver_sql(f"SELECT title AS c{i} FROM todo WHERE id = 1").all()
            for _ in range(2):  # the first statement, tracked: its 2nd and 3rd executions
                conn.exec_driver_sql("SELECT title AS c0 FROM todo WHERE id = 1").all()
            for _ in range(5):  # one past the bound, never tracked
                conn.exec_driver_sql(f"SELECT title AS c{MAX_TRACKED} FROM todo WHERE id = 1")
    finally:
        handle.uninstrument()
    assert syncperf_capture.total("sync.db.n_plus_one") == 1
    (span,) = [s for s in syncperf_capture.spans() if s.name == "sync pull"]
    (event,) = [e for e in span.events if e.name == "sync.db.n_plus_one"]
    assert event.attributes is not None
    assert "AS c0 FROM" in str(event.attributes["db.query.text"])


def test_n_plus_one_detection_can_be_turned_off(
    syncperf_capture: Capture, engine: sa.Engine
) -> None:
    handle = instrument_engine(engine, n_plus_one_threshold=None)
    try:
        with syncperf.sync_operation("pull"), engine.connect() as conn:
            for todo_id in range(20):
                select_one(conn, todo_id)
    finally:
        handle.uninstrument()
    assert syncperf_capture.metric("sync.db.n_plus_one") is None


# --- slow queries ----------------------------------------------------------------------------


def test_a_slow_query_is_counted_with_an_event_and_a_log(
    syncperf_capture: Capture, engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    handle = instrument_engine(engine, slow_query_threshold=0.03)
    try:
        with (
            caplog.at_level(logging.WARNING, "syncperf"),
            syncperf.sync_operation("push", entity="todo"),
            engine.connect() as conn,
        ):
            conn.execute(sa.text("SELECT sleep_ms(60) FROM todo WHERE id = 1")).all()
            select_one(conn, 1)
    finally:
        handle.uninstrument()

    (slow,) = syncperf_capture.points("sync.db.slow_queries")
    assert slow.value == 1
    assert slow.attributes == {"db.operation.name": "SELECT", "db.collection.name": "todo"}
    (span,) = [s for s in syncperf_capture.spans() if s.name == "sync push"]
    (event,) = [e for e in span.events if e.name == "sync.db.slow_query"]
    assert event.attributes is not None
    assert event.attributes["db.query.text"] == "SELECT sleep_ms(?) FROM todo WHERE id = ?"
    assert event.attributes["sync.db.query.duration"] >= 0.06
    (record,) = [r for r in caplog.records if "slow query" in r.getMessage()]
    assert "SELECT sleep_ms(?) FROM todo WHERE id = ?" in record.getMessage()
    assert "sync push" in record.getMessage()


def test_fast_queries_are_not_slow_at_the_default_threshold(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    assert instrumented.slow_query_threshold == 0.5
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT sleep_ms(5)")).all()
    assert syncperf_capture.metric("sync.db.slow_queries") is None


# --- spans -----------------------------------------------------------------------------------


def test_no_client_span_without_a_parent(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    with engine.connect() as conn:
        select_one(conn, 1)
    assert syncperf_capture.spans() == []


def test_no_client_span_under_a_sampled_out_parent(engine: sa.Engine) -> None:
    handle = instrument_engine(engine)
    try:
        with capture(sampler=ParentBased(ALWAYS_OFF)) as cap:
            tracer = cap.tracer_provider.get_tracer("test")
            with tracer.start_as_current_span("request"), engine.connect() as conn:
                select_one(conn, 1)
            assert cap.spans() == []
            assert cap.total("db.client.operation.duration") == 1  # metrics are never sampled
    finally:
        handle.uninstrument()


def test_a_client_span_under_a_sampled_parent_follows_the_conventions(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    tracer = syncperf_capture.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as parent, engine.connect() as conn:
        started = time.time_ns()
        select_one(conn, 1)
        finished = time.time_ns()

    (span,) = [s for s in syncperf_capture.spans() if s.kind is SpanKind.CLIENT]
    assert span.name == "SELECT todo"
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.attributes == {
        "db.system.name": "sqlite",
        "db.operation.name": "SELECT",
        "db.collection.name": "todo",
        "db.query.text": "SELECT title FROM todo WHERE id = ?",
    }
    assert span.start_time is not None
    assert span.end_time is not None
    assert started <= span.start_time <= span.end_time <= finished


def test_spans_and_query_text_can_be_turned_off(
    syncperf_capture: Capture, engine: sa.Engine
) -> None:
    tracer = syncperf_capture.tracer_provider.get_tracer("test")
    handle = instrument_engine(engine, query_text=False)
    try:
        with tracer.start_as_current_span("request"), engine.connect() as conn:
            select_one(conn, 1)
    finally:
        handle.uninstrument()
    (span,) = [s for s in syncperf_capture.spans() if s.kind is SpanKind.CLIENT]
    assert span.attributes is not None
    assert "db.query.text" not in span.attributes

    syncperf_capture.clear_spans()
    handle = instrument_engine(engine, spans=False)
    try:
        with tracer.start_as_current_span("request"), engine.connect() as conn:
            select_one(conn, 1)
    finally:
        handle.uninstrument()
    assert [s.name for s in syncperf_capture.spans()] == ["request"]


def test_one_span_per_query_alongside_the_opentelemetry_instrumentor(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    otel = SQLAlchemyInstrumentor()
    otel.instrument(
        engine=engine, tracer_provider=syncperf_capture.tracer_provider, skip_dep_check=True
    )
    try:
        tracer = syncperf_capture.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("request"), engine.connect() as conn:
            select_one(conn, 1)
            select_one(conn, 2)
    finally:
        otel.uninstrument()
    selects = [
        s for s in syncperf_capture.spans() if s.kind is SpanKind.CLIENT and s.name != "connect"
    ]
    assert len(selects) == 2
    assert all(s.instrumentation_scope.name.startswith("opentelemetry") for s in selects)
    assert syncperf_capture.total("db.client.operation.duration") == 2  # metrics still ours


# --- secrets ---------------------------------------------------------------------------------


def _exported_text(cap: Capture, caplog: pytest.LogCaptureFixture) -> str:
    parts: list[str] = []
    for span in cap.spans():
        parts.append(span.name)
        parts.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            parts.append(event.name)
            parts.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
    for metric in cap.metrics():
        for point in metric.data.data_points:
            parts.extend(f"{k}={v}" for k, v in (point.attributes or {}).items())
    parts.extend(record.getMessage() for record in caplog.records)
    return "\n".join(parts)


def test_no_bound_or_literal_value_reaches_spans_events_logs_or_metrics(
    syncperf_capture: Capture, engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    handle = instrument_engine(engine, n_plus_one_threshold=2, slow_query_threshold=0.001)
    tracer = syncperf_capture.tracer_provider.get_tracer("test")
    try:
        with (
            caplog.at_level(logging.DEBUG, "syncperf"),
            tracer.start_as_current_span("req"),
            syncperf.sync_operation("push", entity="todo"),
            engine.connect() as conn,
        ):
            for _ in range(3):
                conn.execute(  # bound parameters
                    sa.text("SELECT sleep_ms(3), :t, :n"), {"t": SECRET, "n": SECRET_NUMBER}
                ).all()
                conn.execute(  # literals inlined into the statement
                    sa.text(
                        f"SELECT sleep_ms(3), title FROM todo WHERE title = '{SECRET}' "
                        f"OR owner = {SECRET_NUMBER} /* {SECRET} */"
                    )
                ).all()
            with pytest.raises(sa.exc.OperationalError):
                conn.execute(sa.text(f"SELECT '{SECRET}' FROM nowhere"))
    finally:
        handle.uninstrument()

    exported = _exported_text(syncperf_capture, caplog)
    assert "sync.db.n_plus_one" in exported and "sync.db.slow_query" in exported
    assert "db.query.text=SELECT sleep_ms(?), ?, ?" in exported
    literal = "SELECT sleep_ms(?), title FROM todo WHERE title = ? OR owner = ?"
    assert f"db.query.text={literal}" in exported
    assert SECRET not in exported
    assert str(SECRET_NUMBER) not in exported
    assert "s3cr3t" not in exported


def test_no_literal_of_a_bulk_insert_page_reaches_spans_events_logs_or_metrics(
    syncperf_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    # pages are classified through their single-row statement, where the literals are too
    eng = _bulk_engine()
    handle = instrument_engine(eng, slow_query_threshold=0.000001)
    tracer = syncperf_capture.tracer_provider.get_tracer("test")
    insert = sa.insert(_BULK).values(
        title=sa.literal_column(f"'{SECRET}'"), n=sa.literal_column(str(SECRET_NUMBER))
    )
    try:
        with (
            caplog.at_level(logging.DEBUG, "syncperf"),
            tracer.start_as_current_span("req"),
            syncperf.sync_operation("push", entity="bulk"),
            eng.begin() as conn,
        ):
            for size in (2, 3, 12):
                rows = [{"id": size * 100 + i} for i in range(size)]
                conn.execute(insert.returning(_BULK.c.id), rows).all()
    finally:
        handle.uninstrument()
        eng.dispose()

    exported = _exported_text(syncperf_capture, caplog)
    assert "db.query.text=INSERT INTO bulk (id, title, n) VALUES (?) RETURNING id" in exported
    assert "sync.db.slow_query" in exported
    assert "s3cr3t" not in exported
    assert str(SECRET_NUMBER) not in exported


def test_sqlite_double_quoted_literals_and_comment_text_never_reach_events_logs_or_names(
    syncperf_capture: Capture, engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    handle = instrument_engine(engine, n_plus_one_threshold=2, slow_query_threshold=0.001)
    tracer = syncperf_capture.tracer_provider.get_tracer("test")
    try:
        with (
            caplog.at_level(logging.DEBUG, "syncperf"),
            tracer.start_as_current_span("req"),
            syncperf.sync_operation("push", entity="todo"),
            engine.connect() as conn,
        ):
            for _ in range(3):
                conn.execute(  # SQLite reads "..." as a string when no such column exists
                    sa.text(f'SELECT sleep_ms(3), id FROM todo WHERE title = "{SECRET}"')
                ).all()
                conn.exec_driver_sql(  # and so after ON and BY, where an expression stands
                    f'SELECT todo.id FROM todo JOIN todo AS b ON "{SECRET}" = b.title '
                    f'GROUP BY "{SECRET}" ORDER BY "{SECRET}2"'
                ).all()
            with pytest.raises(sa.exc.OperationalError):  # SQLite does not nest comments
                conn.exec_driver_sql(f"/* a /* b */ {SECRET} */ SELECT 1")
            with pytest.raises(sa.exc.OperationalError):
                conn.exec_driver_sql(f"{SECRET} FROM todo")
    finally:
        handle.uninstrument()

    exported = _exported_text(syncperf_capture, caplog)
    assert "db.query.text=SELECT sleep_ms(?), id FROM todo WHERE title = ?" in exported
    joined = "SELECT todo.id FROM todo JOIN todo AS b ON ? = b.title GROUP BY ? ORDER BY ?"
    assert f"db.query.text={joined}" in exported
    assert "s3cr3t" not in exported
    names = {
        p.attributes.get("db.operation.name")
        for p in syncperf_capture.points("db.client.operation.duration")
    }
    assert names <= {"SELECT", None}


# --- life cycle and configuration ------------------------------------------------------------


def test_instrumenting_twice_returns_the_same_handle(engine: sa.Engine) -> None:
    first = instrument_engine(engine)
    try:
        assert instrument_engine(engine) is first
        assert Runtime.db_instrumented >= 1
        with pytest.raises(ConfigError, match="engine"):
            instrument_engine(engine, n_plus_one_threshold=3)
    finally:
        first.uninstrument()


def test_each_query_is_recorded_once_even_when_instrumented_twice(
    syncperf_capture: Capture, engine: sa.Engine
) -> None:
    handles = [instrument_engine(engine), instrument_engine(engine)]
    try:
        with syncperf.sync_operation("pull"), engine.connect() as conn:
            select_one(conn, 1)
    finally:
        handles[0].uninstrument()
    assert syncperf_capture.points("sync.db.queries")[0].sum == 1


def test_an_engine_derived_with_execution_options_shares_the_handle_and_counts_once(
    syncperf_capture: Capture, engine: sa.Engine
) -> None:
    derived = engine.execution_options(stream_results=False)
    handle = instrument_engine(engine)
    try:
        assert instrument_engine(derived) is handle
        assert instrument_engine(derived.execution_options(logging_token="x")) is handle
        with syncperf.sync_operation("push"), derived.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        handle.uninstrument()
    assert syncperf_capture.points("sync.db.queries")[0].sum == 1
    assert syncperf_capture.total("db.client.operation.duration") == 1
    assert syncperf_capture.total("db.client.connection.wait_time") == 1
    assert "do_execute" not in vars(engine.dialect)
    assert "connect" not in vars(engine.pool)


def test_instrumenting_a_derived_engine_first_instruments_the_engine_it_derives_from(
    syncperf_capture: Capture, engine: sa.Engine
) -> None:
    import gc

    before = Runtime.db_instrumented
    derived = engine.execution_options(stream_results=False)
    handle = instrument_engine(derived)
    assert handle.engine is engine
    assert instrument_engine(engine) is handle
    del derived
    gc.collect()  # the engine it derives from lives on: still instrumented
    assert handle.active and Runtime.db_instrumented == before + 1
    with syncperf.sync_operation("push"), engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    handle.uninstrument()
    assert Runtime.db_instrumented == before
    assert "do_execute" not in vars(engine.dialect)
    assert syncperf_capture.points("sync.db.queries")[0].sum == 1


def test_a_collected_derived_and_base_engine_release_their_count() -> None:
    import gc

    before = Runtime.db_instrumented
    eng = sa.create_engine("sqlite://")
    derived = eng.execution_options(stream_results=False)
    instrument_engine(derived)
    instrument_engine(eng)
    assert Runtime.db_instrumented == before + 1
    del eng, derived
    gc.collect()
    assert Runtime.db_instrumented == before


def test_uninstrument_removes_everything(syncperf_capture: Capture, engine: sa.Engine) -> None:
    before = Runtime.db_instrumented
    handle = instrument_engine(engine)
    assert Runtime.db_instrumented == before + 1
    assert "connect" in vars(engine.pool)
    handle.uninstrument()
    handle.uninstrument()  # idempotent
    assert Runtime.db_instrumented == before
    assert "connect" not in vars(engine.pool)
    assert not set(vars(engine.dialect)) & {"do_execute", "do_commit", "do_rollback"}
    assert not handle.active
    with engine.connect() as conn:
        select_one(conn, 1)
    assert syncperf_capture.metric("db.client.operation.duration") is None
    assert instrument_engine(engine) is not handle
    instrument_engine(engine).uninstrument()


def test_two_phase_steps_are_wrapped_only_where_the_driver_bypasses_do_execute() -> None:
    # psycopg's dialect calls the driver's tpc_* (nothing else sees them); asyncpg's runs
    # PREPARE TRANSACTION as a statement (measured already), SQLite has no two-phase commit
    from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg

    steps = {"do_prepare_twophase", "do_commit_twophase", "do_rollback_twophase"}
    psycopg = sa.create_engine("postgresql+psycopg://u@127.0.0.1:1/db")
    handle = instrument_engine(psycopg)
    assert steps <= set(vars(psycopg.dialect))
    handle.uninstrument()
    assert not steps & set(vars(psycopg.dialect))
    for other in (asyncpg(), sa.create_engine("sqlite://").dialect):
        assert not steps & {name for name, _ in ends(other)}


def test_a_collected_engine_releases_its_count() -> None:
    import gc

    before = Runtime.db_instrumented
    eng = sa.create_engine("sqlite://")
    instrument_engine(eng)
    assert Runtime.db_instrumented == before + 1
    del eng
    gc.collect()
    assert Runtime.db_instrumented == before


@pytest.mark.parametrize("uninstrument", [False, True])
def test_an_engine_collected_or_uninstrumented_releases_its_callbacks_and_states(
    syncperf_capture: Capture, uninstrument: bool
) -> None:
    # collected without uninstrument(): its pool observers stayed in the registry (4 gauge
    # callbacks per engine, every collection calling them); either way its query and pool
    # series stayed in the runtime (rt.state(..., serial))
    import gc

    from syncperf import _runtime

    rt = _runtime.installed or _runtime.current()

    def held() -> tuple[int, int]:
        callbacks = sum(len(getattr(i, "callbacks", ())) for i in rt.registry.instruments.values())
        return callbacks, sum(1 for slot in list(rt._state) if isinstance(slot, tuple))

    before = held()
    for _ in range(5):
        eng = sa.create_engine("sqlite://")
        handle = instrument_engine(eng)
        with syncperf.sync_operation("push"), eng.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        if uninstrument:
            handle.uninstrument()
        eng.dispose()  # closes its connection; the engine itself still goes with ``del``
        del eng, handle, conn
    gc.collect()
    assert held() != before or uninstrument  # pool observers report zero once, then go
    syncperf_capture.metrics()
    syncperf_capture.metrics()
    assert held() == before
    assert syncperf_capture.total("db.client.operation.duration") == 5  # nothing recorded lost


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("n_plus_one_threshold", 1),
        ("n_plus_one_threshold", 2.5),
        ("n_plus_one_threshold", True),
        ("slow_query_threshold", 0),
        ("slow_query_threshold", -1.0),
        ("slow_query_threshold", "1s"),
        ("slow_query_threshold", 1e300),  # would overflow as nanoseconds
        ("log_interval", float("inf")),
        ("pool_name", ""),
        ("pool_name", "p\ud800"),  # a lone surrogate: no scrape could encode it
        ("pool_name", "main\nfake_metric 1"),
        ("pool_name", "p" * 129),
        ("pool_name", 7),
        ("spans", "yes"),
        ("query_text", 1),
        ("pool_metrics", None),
        ("log_interval", -1),
    ],
)
def test_bad_options_raise_config_error_naming_the_option(
    engine: sa.Engine, option: str, value: object
) -> None:
    with pytest.raises(ConfigError) as raised:
        instrument_engine(engine, **{option: value})
    assert raised.value.option == option


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logging_name=st.text(min_size=1, max_size=300))
def test_a_default_pool_name_from_any_logging_name_is_a_valid_name(logging_name: str) -> None:
    eng = sa.create_engine("sqlite://")
    eng.pool.logging_name = logging_name
    handle = instrument_engine(eng)
    try:
        assert gate.name(handle.pool_name) == handle.pool_name
        if gate.name(logging_name) == logging_name:
            assert handle.pool_name == logging_name
    finally:
        handle.uninstrument()
        eng.dispose()


@pytest.mark.parametrize(
    ("url", "pool_name", "connection"),
    [
        (
            "postgresql+psycopg://u:p@ss@db.example:5/app",  # '@' not escaped: host 'ss@db...'
            "postgresql://db.example:5/app",
            {"server.address": "db.example", "server.port": 5, "db.namespace": "app"},
        ),
        (
            # '@' then '/' in the password: SQLAlchemy reads host 'x', database '9SECRET@db...'
            "postgresql+psycopg://app:Tr0ub4dor@x/9SECRET@db.internal:5432/app",
            "postgresql://db.internal:5432/app",
            {"server.address": "db.internal", "server.port": 5432, "db.namespace": "app"},
        ),
        (
            "postgresql+psycopg://app:Tr0ub4dor@x/9SECRET@[::1]/app",
            "postgresql://::1/app",
            {"server.address": "::1", "server.port": None, "db.namespace": "app"},
        ),
        (  # the address went into the query string: nothing of it is known
            "postgresql+psycopg://app:Tr0ub4dor@x?9SECRET=y@db.internal:5432/app",
            "postgresql:///",
            {"server.address": None, "server.port": None, "db.namespace": None},
        ),
        (
            "postgresql+psycopg://u:pw@db.example/a\nb",
            "postgresql://db.example/ab",
            {"server.address": "db.example", "db.namespace": "ab"},
        ),
        (
            "postgresql+psycopg://u:pw@h/" + "d" * 200,
            ("postgresql://h/" + "d" * 200)[:125] + "...",
            {"server.address": "h", "db.namespace": "d" * 125 + "..."},
        ),
    ],
)
def test_names_and_addresses_from_the_url_are_valid_names_without_credentials(
    url: str, pool_name: str, connection: dict[str, Any]
) -> None:
    eng = sa.create_engine(url)
    handle = instrument_engine(eng)
    try:
        assert handle.pool_name == pool_name
        base = handle._recorder._base
        assert {key: base.get(key) for key in connection} == connection
        for fragment in ("ss@", "SECRET", "'x'", "Tr0ub4dor"):
            assert fragment not in repr(base)
            assert fragment not in handle.pool_name
    finally:
        handle.uninstrument()
        eng.dispose()


_URL_SECRET = "pW9zq7"
_URL_PIECE = st.text(alphabet="@/:#%.-_~&=!$abc19[", max_size=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=_URL_PIECE, after=_URL_PIECE, query=st.sampled_from(["", "?sslmode=require"]))
def test_no_piece_of_a_password_with_unescaped_separators_reaches_a_name_or_address(
    before: str, after: str, query: str
) -> None:
    # '?' and ']' are left out: after '@', a '?' without '=' or a '[...]' followed by more
    # makes SQLAlchemy drop the rest of the URL without a trace (docs/security.md)
    password = before + _URL_SECRET + after
    url = f"postgresql+psycopg://app:{password}@db.internal:5432/app{query}"
    try:
        parsed = sa.engine.make_url(url)
    except ValueError:  # e.g. a port that is no number: create_engine() raises too
        return
    eng = sa.create_engine(parsed)
    try:
        exported = repr(connection_attributes("postgresql", eng.url)) + pool_name(eng)
    finally:
        eng.dispose()
    for fragment in (_URL_SECRET, _URL_SECRET[:3], _URL_SECRET[3:]):
        assert fragment not in exported, (url, exported)


def test_a_bad_pool_logging_name_never_breaks_a_prometheus_scrape() -> None:
    registry = CollectorRegistry()
    eng = sa.create_engine("sqlite://")
    eng.pool.logging_name = "p\ud800\nq" + "x" * 200
    with capture(strict=False, prometheus=registry):
        handle = instrument_engine(eng)
        try:
            with syncperf.sync_operation("pull"), eng.connect() as conn:
                select_one_value = conn.execute(sa.text("SELECT 1")).scalar()
            assert select_one_value == 1
            scrape = generate_latest(registry).decode()
        finally:
            handle.uninstrument()
            eng.dispose()
    assert 'db_client_connection_pool_name="pq' in scrape
    assert "x" * 130 not in scrape


def test_a_non_engine_is_rejected() -> None:
    with pytest.raises(ConfigError) as raised:
        instrument_engine("sqlite://")
    assert raised.value.option == "engine"


PLANTED_URL = "postgresql+psycopg://postgres:SuperSecretPw9@db.example/app?password=SuperSecretPw9"


def _unquoted(error: ConfigError) -> None:
    for text in (str(error), repr(error), repr(error.value), str(error.value)):
        assert "SuperSecretPw9" not in text


@pytest.mark.parametrize(
    "value",
    [PLANTED_URL, sa.engine.make_url(PLANTED_URL), {"url": PLANTED_URL}, [PLANTED_URL]],
    ids=["str", "url", "dict", "list"],
)
def test_a_url_given_for_the_engine_is_described_not_quoted(value: object) -> None:
    with pytest.raises(ConfigError) as raised:
        instrument_engine(value)
    assert raised.value.option == "engine"
    assert "not quoted" in repr(raised.value.value)
    _unquoted(raised.value)


def test_an_engine_instrumented_with_other_options_is_not_quoted() -> None:
    eng = sa.create_engine(
        "sqlite:///file:planted?mode=memory&password=SuperSecretPw9&uri=true",
        poolclass=sa.pool.StaticPool,
    )
    handle = instrument_engine(eng)
    try:
        with pytest.raises(ConfigError) as raised:
            instrument_engine(eng, n_plus_one_threshold=3)
        assert raised.value.option == "engine"
        _unquoted(raised.value)
    finally:
        handle.uninstrument()
        eng.dispose()


@pytest.mark.parametrize(
    ("option", "value"),
    [("pool_name", PLANTED_URL + "x" * 130), ("plans", PLANTED_URL)],
    ids=["pool_name", "plans"],
)
def test_option_values_that_may_hold_a_url_are_not_quoted(
    engine: sa.Engine, option: str, value: Any
) -> None:
    with pytest.raises(ConfigError) as raised:
        instrument_engine(engine, **{option: value})
    assert raised.value.option == option
    _unquoted(raised.value)


async def test_an_async_engine_is_instrumented_once(syncperf_capture: Capture) -> None:
    async_engine = create_async_engine("sqlite+aiosqlite://")
    handle = instrument_engine(async_engine)
    try:
        assert instrument_engine(async_engine.sync_engine) is handle
        async with (
            syncperf.sync_operation("pull", entity="todo"),
            async_engine.connect() as conn,
        ):
            for value in range(4):
                await conn.execute(sa.text("SELECT :v"), {"v": value})
        tracer = syncperf_capture.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("request"):
            async with async_engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
    finally:
        handle.uninstrument()
        await async_engine.dispose()

    (queries,) = syncperf_capture.points("sync.db.queries", {"sync.operation": "pull"})
    assert queries.sum == 4
    spans = syncperf_capture.spans()
    (sync_span,) = [s for s in spans if s.name == "sync pull"]
    (request,) = [s for s in spans if s.name == "request"]
    client = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert [s.name for s in client] == ["SELECT"] * 5  # one per query, never two
    parents = sorted(s.parent.span_id for s in client if s.parent is not None)
    expected = [sync_span.context.span_id] * 4 + [request.context.span_id]
    assert parents == sorted(expected)


# --- pool ------------------------------------------------------------------------------------


def _pool_value(cap: Capture, name: str, **attrs: str) -> float:
    return sum(p.value for p in cap.points(name, attrs))


def test_queries_add_no_connection_event_listeners(engine: sa.Engine) -> None:
    handle = instrument_engine(engine)
    try:
        assert not engine._has_events  # SQLAlchemy's fast, event-free execution path stays on
        assert "do_execute" in vars(engine.dialect)
    finally:
        handle.uninstrument()
    assert "do_execute" not in vars(engine.dialect)


def test_queue_pool_counts_idle_and_used_connections(
    syncperf_capture: Capture, tmp_path: Any
) -> None:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", pool_size=2, max_overflow=3)
    handle = instrument_engine(eng, pool_name="main")
    try:
        first, second = eng.connect(), eng.connect()
        first.execute(sa.text("SELECT 1"))
        second.execute(sa.text("SELECT 1"))
        used = {"db.client.connection.state": "used"}
        idle = {"db.client.connection.state": "idle"}
        assert _pool_value(syncperf_capture, "db.client.connection.count", **used) == 2
        assert _pool_value(syncperf_capture, "db.client.connection.count", **idle) == 0
        second.close()
        assert _pool_value(syncperf_capture, "db.client.connection.count", **used) == 1
        assert _pool_value(syncperf_capture, "db.client.connection.count", **idle) == 1
        assert _pool_value(syncperf_capture, "db.client.connection.max") == 5
        assert _pool_value(syncperf_capture, "db.client.connection.idle.max") == 2
        first.close()
        (use,) = syncperf_capture.points("db.client.connection.use_time")
        assert use.count == 2
        assert use.attributes == {"db.client.connection.pool.name": "main"}
        metric = syncperf_capture.metric("db.client.connection.count")
        assert metric is not None
        assert not metric.data.is_monotonic  # an UpDownCounter, per the conventions
    finally:
        handle.uninstrument()
        eng.dispose()
    assert _pool_value(syncperf_capture, "db.client.connection.count") == 0  # zeros once
    assert _pool_value(syncperf_capture, "db.client.connection.max") == 0
    instrument = syncperf_capture.runtime.registry.instruments["db.client.connection.count"]
    assert instrument.callbacks == []  # then the observer is gone


_EXIT_EXPORT = textwrap.dedent("""
    import json, sys
    import syncperf  # first: its exit hook is registered before weakref.finalize's
    import sqlalchemy as sa
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
    from syncperf.sqlalchemy import instrument_engine

    class Printing(MetricExporter):
        def export(self, metrics_data, timeout_millis=10_000, **kwargs):
            counts = {
                point.attributes["db.client.connection.state"]: point.value
                for resource in metrics_data.resource_metrics
                for scope in resource.scope_metrics
                for metric in scope.metrics
                if metric.name == "db.client.connection.count"
                for point in metric.data.data_points
            }
            print(json.dumps(counts), flush=True)
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis=10_000):
            return True

        def shutdown(self, timeout_millis=30_000, **kwargs):
            pass

    syncperf.configure(metric_exporters=[Printing()])
    engine = sa.create_engine("sqlite:///" + sys.argv[1])
    instrument_engine(engine)
    held = engine.connect()  # still in use when the process exits
    held.execute(sa.text("SELECT 1"))
""")


def test_the_exit_export_reports_the_pool_of_an_engine_alive_at_exit(tmp_path: Path) -> None:
    # The engine's finalizer ran at exit before syncperf's exit flush (atexit runs the last
    # registered first: weakref.finalize registers its hook with the first finalizer, which
    # importing sqlalchemy after syncperf makes) and released the pool's gauges: the exit
    # export reported 0 or none.
    src = str(Path(syncperf.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_EXPORT, str(tmp_path / "db.sqlite")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    exported = done.stdout.splitlines()
    assert exported  # the exit flush exported
    assert json.loads(exported[-1]) == {"used": 1, "idle": 0}


@pytest.mark.parametrize("at_return", [True, False])
def test_use_time_is_timed_at_the_pools_return_or_else_by_its_checkin_event(
    at_return: bool, syncperf_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The return to the pool is wrapped like ``connect`` (SQLAlchemy's dispatch of a
    ``checkin`` listener costs about a third of a session's pool metrics); a pool without
    ``_return_conn`` is timed by the ``checkin`` event. Both follow ``dispose()`` and leave
    nothing behind when uninstrumented."""
    from syncperf.sqlalchemy import _pool

    if not at_return:
        monkeypatch.setattr(_pool, "_returns", lambda pool: None)
    eng = sa.create_engine("sqlite://", poolclass=sa.pool.QueuePool)
    handle = instrument_engine(eng)
    try:
        assert sa.event.contains(eng, "checkin", handle._pool._on_checkin) is not at_return
        assert ("_return_conn" in vars(eng.pool)) is at_return
        for _ in range(2):
            with eng.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            eng.dispose()  # a new pool: wrapped again
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        assert syncperf_capture.total("db.client.connection.use_time") == 3
        assert eng.pool.checkedin() == 1  # returned to the pool
    finally:
        handle.uninstrument()
    assert not sa.event.contains(eng, "checkin", handle._pool._on_checkin)
    assert "_return_conn" not in vars(eng.pool)
    eng.dispose()


@pytest.mark.parametrize("at_return", [True, False])
@pytest.mark.parametrize("poolclass", [sa.pool.QueuePool, sa.pool.NullPool])
def test_a_connection_returned_to_a_pool_that_dispose_replaced_is_timed(
    at_return: bool, poolclass: Any, syncperf_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection checked out before ``engine.dispose()`` goes back to its own, old pool
    when closed: its use is timed and it is no longer counted as used."""
    from syncperf.sqlalchemy import _pool

    if not at_return:
        monkeypatch.setattr(_pool, "_returns", lambda pool: None)
    eng = sa.create_engine("sqlite://", poolclass=poolclass)
    handle = instrument_engine(eng)
    used = {"db.client.connection.state": "used"}
    try:
        conn = eng.connect()
        conn.execute(sa.text("SELECT 1"))
        old = eng.pool
        eng.dispose()
        conn.close()
        with eng.connect() as again:
            again.execute(sa.text("SELECT 1"))
        assert syncperf_capture.total("db.client.connection.use_time") == 2
        assert _pool_value(syncperf_capture, "db.client.connection.count", **used) == 0
    finally:
        handle.uninstrument()
    assert "_return_conn" not in vars(old) and "_return_conn" not in vars(eng.pool)
    old.dispose()  # SQLAlchemy keeps a connection returned to a replaced pool in that pool
    eng.dispose()


@pytest.mark.parametrize("at_return", [True, False])
@pytest.mark.parametrize("poolclass", [sa.pool.QueuePool, sa.pool.NullPool])
def test_a_connection_still_checked_out_from_a_pool_that_dispose_replaced_is_used(
    at_return: bool,
    poolclass: Any,
    syncperf_capture: Capture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from syncperf.sqlalchemy import _pool

    if not at_return:
        monkeypatch.setattr(_pool, "_returns", lambda pool: None)
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", poolclass=poolclass)
    handle = instrument_engine(eng)
    used = {"db.client.connection.state": "used"}
    try:
        held = eng.connect()
        held.execute(sa.text("SELECT 1"))
        old = eng.pool
        eng.dispose()
        held.execute(sa.text("SELECT 2"))
        assert _pool_value(syncperf_capture, "db.client.connection.count", **used) == 1
        with eng.connect() as fresh:  # one from the new pool as well
            fresh.execute(sa.text("SELECT 3"))
            assert _pool_value(syncperf_capture, "db.client.connection.count", **used) == 2
        held.close()  # back to the old pool, which SQLAlchemy keeps it in
        assert _pool_value(syncperf_capture, "db.client.connection.count", **used) == 0
        old.dispose()
    finally:
        handle.uninstrument()
        eng.dispose()


def test_a_connection_detached_from_a_pool_that_dispose_replaced_is_no_longer_used(
    syncperf_capture: Capture, tmp_path: Path
) -> None:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    handle = instrument_engine(eng)
    used = {"db.client.connection.state": "used"}
    try:
        held = eng.connect()
        eng.dispose()
        held.detach()
        assert _pool_value(syncperf_capture, "db.client.connection.count", **used) == 0
        held.close()
    finally:
        handle.uninstrument()
        eng.dispose()


def test_engines_sharing_a_pool_name_report_the_sums_of_their_pools(
    syncperf_capture: Capture, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"  # the same URL: the same default name
    first = sa.create_engine(url, pool_size=2, max_overflow=3)
    second = sa.create_engine(url, pool_size=4, max_overflow=1)
    handles = [instrument_engine(first), instrument_engine(second)]
    assert handles[0].pool_name == handles[1].pool_name
    used = {"db.client.connection.state": "used"}
    held = [first.connect(), first.connect(), second.connect()]
    try:
        (point,) = syncperf_capture.points("db.client.connection.count", used)
        assert point.value == 3
        (point,) = syncperf_capture.points("db.client.connection.max")
        assert point.value == 10
        (point,) = syncperf_capture.points("db.client.connection.idle.max")
        assert point.value == 6
        handles[0].uninstrument()
        (point,) = syncperf_capture.points("db.client.connection.count", used)
        assert point.value == 1
        (point,) = syncperf_capture.points("db.client.connection.max")
        assert point.value == 5
    finally:
        for conn in held:
            conn.close()
        for handle in handles:
            handle.uninstrument()
        first.dispose()
        second.dispose()
    assert _pool_value(syncperf_capture, "db.client.connection.count") == 0  # zeros once
    assert _pool_value(syncperf_capture, "db.client.connection.max") == 0
    instrument = syncperf_capture.runtime.registry.instruments["db.client.connection.count"]
    assert instrument.callbacks == []  # then the observers are gone


@pytest.mark.parametrize("at_return", [True, False])
def test_a_failing_checkin_hook_still_returns_the_connection(
    at_return: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timed at the pool's return or by the ``checkin`` listener, a hook that fails is
    counted (here the series lookup of every checkout and every checkin) and the connection
    goes back to the pool all the same."""
    from syncperf.sqlalchemy import _pool

    def broken(self: Any, rt: Any) -> Any:
        raise RuntimeError("hook bug")

    if not at_return:
        monkeypatch.setattr(_pool, "_returns", lambda pool: None)
    monkeypatch.setattr(_pool.PoolMetrics, "series", broken)
    eng = sa.create_engine("sqlite://", poolclass=sa.pool.QueuePool)
    with capture(strict=False) as cap:
        handle = instrument_engine(eng)
        try:
            for _ in range(3):
                with eng.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
            assert eng.pool.checkedin() == 1 and eng.pool.checkedout() == 0
            dropped = {"syncperf.reason": "sqlalchemy_pool_hook_failed"}
            assert cap.total("syncperf.dropped", dropped) == 6
        finally:
            handle.uninstrument()
            eng.dispose()


def test_static_pool_has_one_connection_at_most(syncperf_capture: Capture) -> None:
    eng = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    handle = instrument_engine(eng)
    try:
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            assert (
                _pool_value(
                    syncperf_capture,
                    "db.client.connection.count",
                    **{"db.client.connection.state": "used"},
                )
                == 1
            )
        assert _pool_value(syncperf_capture, "db.client.connection.max") == 1
        assert (
            _pool_value(
                syncperf_capture,
                "db.client.connection.count",
                **{"db.client.connection.state": "idle"},
            )
            == 1
        )
    finally:
        handle.uninstrument()
        eng.dispose()


def test_overlapping_checkouts_of_a_static_pool_all_end_at_its_one_checkin(
    syncperf_capture: Capture,
) -> None:
    # SQLAlchemy checks a StaticPool's connection in once, at the first close (the second
    # close sends no checkin event). The counts follow the pool, and nothing is left behind
    # for ever (used stuck at 1, checkout stamps piling up on the connection record).
    eng = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    handle = instrument_engine(eng)
    used = {"db.client.connection.state": "used"}
    idle = {"db.client.connection.state": "idle"}
    try:
        for _ in range(3):
            first, second = eng.raw_connection(), eng.raw_connection()
            assert _pool_value(syncperf_capture, "db.client.connection.count", **used) == 1
            first.close()
            second.close()
            assert _pool_value(syncperf_capture, "db.client.connection.count", **used) == 0
            assert _pool_value(syncperf_capture, "db.client.connection.count", **idle) == 1
        assert syncperf_capture.total("db.client.connection.use_time") == 6
        record = vars(eng.pool)["connection"]
        assert not any(vars(record).get(name) for name in vars(record) if "syncperf" in name)
    finally:
        handle.uninstrument()
        eng.dispose()


def test_a_detached_connection_is_no_longer_counted_as_used(syncperf_capture: Capture) -> None:
    eng = sa.create_engine("sqlite://", poolclass=sa.pool.NullPool)
    handle = instrument_engine(eng)
    used = {"db.client.connection.state": "used"}
    try:
        conn = eng.connect()
        assert _pool_value(syncperf_capture, "db.client.connection.count", **used) == 1
        conn.detach()
        assert _pool_value(syncperf_capture, "db.client.connection.count", **used) == 0
        conn.close()
        assert _pool_value(syncperf_capture, "db.client.connection.count", **used) == 0
    finally:
        handle.uninstrument()


def test_a_nested_connect_of_a_singleton_thread_pool_is_one_checkout(
    syncperf_capture: Capture,
) -> None:
    eng = sa.create_engine("sqlite://", poolclass=sa.pool.SingletonThreadPool)
    handle = instrument_engine(eng)
    used = {"db.client.connection.state": "used"}
    try:
        outer = eng.raw_connection()
        inner = eng.raw_connection()  # the same connection, checked out again by this thread
        inner.close()
        assert _pool_value(syncperf_capture, "db.client.connection.count", **used) == 1
        outer.close()
        assert _pool_value(syncperf_capture, "db.client.connection.count", **used) == 0
        assert syncperf_capture.total("db.client.connection.use_time") == 1
        assert syncperf_capture.total("db.client.connection.wait_time") == 2
    finally:
        handle.uninstrument()
        eng.dispose()


def test_pending_requests_drop_to_zero_once_uninstrumented(syncperf_capture: Capture) -> None:
    eng = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    handle = instrument_engine(eng, pool_name="p")
    with eng.connect():
        pass
    assert syncperf_capture.points("db.client.connection.pending_requests")[0].value == 0
    handle.uninstrument()
    assert _pool_value(syncperf_capture, "db.client.connection.pending_requests") == 0
    assert _pool_value(syncperf_capture, "db.client.connection.pending_requests") == 0
    instrument = syncperf_capture.runtime.registry.instruments[
        "db.client.connection.pending_requests"
    ]
    assert instrument.callbacks == []  # observed, then gone
    eng.dispose()


def test_dispose_moves_the_pool_wrappers_to_the_new_pool(
    syncperf_capture: Capture, engine: sa.Engine
) -> None:
    handle = instrument_engine(engine)
    try:
        old_pool = engine.pool
        engine.dispose()
        assert engine.pool is not old_pool
        assert "connect" in vars(engine.pool)
        assert "connect" not in vars(old_pool)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        assert syncperf_capture.total("db.client.connection.wait_time") == 1
    finally:
        handle.uninstrument()
    assert "connect" not in vars(engine.pool)


def test_a_client_span_not_made_while_shedding_is_counted(
    syncperf_capture: Capture, engine: sa.Engine, instrumented: EngineInstrumentation
) -> None:
    syncperf_capture.runtime.shed_spans("test")
    tracer = syncperf_capture.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request"), engine.connect() as conn:
        select_one(conn, 1)
    assert [s for s in syncperf_capture.spans() if s.kind is SpanKind.CLIENT] == []
    assert syncperf_capture.total("syncperf.dropped", {"syncperf.reason": "span_shed"}) == 1


@pytest.mark.parametrize("by_keyword", [False, True])
def test_the_wrapped_dialect_methods_pass_the_context_however_it_is_given(
    by_keyword: bool, syncperf_capture: Capture
) -> None:
    engine = sa.create_engine("sqlite://")
    seen: list[Any] = []

    def no_params(cursor: Any, statement: str, context: Any = None) -> None:
        seen.append(context)
        cursor.execute(statement)

    engine.dialect.do_execute_no_params = no_params  # type: ignore[method-assign]
    handle = instrument_engine(engine)
    context = object()
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        if by_keyword:
            engine.dialect.do_execute_no_params(cursor, "SELECT 1", context=context)
        else:
            engine.dialect.do_execute_no_params(cursor, "SELECT 1", context)
        assert seen == [context]
        assert syncperf_capture.total("db.client.operation.duration") == 1
    finally:
        connection.close()
        handle.uninstrument()
        engine.dispose()


class _Composed:
    """A statement that is not a ``str`` (as psycopg's ``sql.Composed``): unhashable."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Composed) and other.text == self.text

    __hash__ = None  # type: ignore[assignment]


class _Hashable:
    """A statement that is not a ``str`` but hashable."""

    def __init__(self, text: str) -> None:
        self.text = text


@pytest.mark.parametrize("kind", [_Composed, _Hashable])
def test_a_statement_that_is_not_a_string_is_measured_as_an_unknown_one(
    syncperf_capture: Capture, kind: type[Any]
) -> None:
    # a driver that takes statement objects (psycopg's sql.Composed via exec_driver_sql)
    engine = sa.create_engine("sqlite://")

    def do_execute(cursor: Any, statement: Any, parameters: Any, context: Any = None) -> None:
        cursor.execute(getattr(statement, "text", statement), parameters)

    def no_params(cursor: Any, statement: Any, context: Any = None) -> None:
        cursor.execute(getattr(statement, "text", statement))

    engine.dialect.do_execute = do_execute  # type: ignore[method-assign]
    engine.dialect.do_execute_no_params = no_params  # type: ignore[method-assign]
    handle = instrument_engine(engine)
    try:
        with syncperf.sync_operation("pull", entity="todo"), engine.connect() as conn:
            assert conn.exec_driver_sql(kind(f"SELECT '{SECRET}'")).all() == [(SECRET,)]
            with pytest.raises(sa.exc.OperationalError):
                conn.exec_driver_sql(kind("SELECT nope FROM nowhere"))
    finally:
        handle.uninstrument()
        engine.dispose()
    points = syncperf_capture.points("db.client.operation.duration")
    assert sorted(p.count for p in points) == [1, 1]
    for point in points:
        assert "db.operation.name" not in point.attributes
        assert "db.collection.name" not in point.attributes
    (failed,) = [p for p in points if "error.type" in p.attributes]
    assert failed.attributes["error.type"] == "sqlite3.OperationalError"
    (queries,) = syncperf_capture.points("sync.db.queries", {"sync.operation": "pull"})
    assert (queries.count, queries.sum) == (1, 2)
    client = [s for s in syncperf_capture.spans() if s.kind is SpanKind.CLIENT]
    assert [s.name for s in client] == ["sqlite", "sqlite"]
    for span in client:
        assert "db.query.text" not in (span.attributes or {})
    assert SECRET not in json.dumps([s.to_json() for s in client])
