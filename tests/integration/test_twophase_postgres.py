"""Two-phase commit on a real PostgreSQL: each step the driver sends is a measured query.

psycopg's dialect ends a two-phase transaction through the driver's ``tpc_*`` calls, which
bypass the dialect's ``do_execute`` / ``do_commit``; syncperf records them like a ``COMMIT``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

import syncperf
from syncperf.sqlalchemy import instrument_engine
from syncperf.testing import Capture

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(postgres_dsn: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_dsn.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        if conn.exec_driver_sql("SHOW max_prepared_transactions").scalar() == "0":
            pytest.skip("the server has prepared transactions off (max_prepared_transactions)")
    yield engine
    engine.dispose()


@pytest.fixture
def tables(engine: sa.Engine) -> Iterator[tuple[str, str]]:
    parent = f"tpc_{uuid.uuid4().hex[:8]}"
    child = f"{parent}_c"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {parent} (id INT PRIMARY KEY)")
        conn.exec_driver_sql(
            f"CREATE TABLE {child} (p INT REFERENCES {parent} DEFERRABLE INITIALLY DEFERRED)"
        )
    yield parent, child
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {child}, {parent}")


def _operations(cap: Capture, **attrs: str) -> dict[tuple[str, str | None], int]:
    """``db.client.operation.duration`` counts by operation name and SQLSTATE."""
    found: dict[tuple[str, str | None], int] = {}
    for point in cap.points("db.client.operation.duration", attrs):
        key = (
            point.attributes["db.operation.name"],
            point.attributes.get("db.response.status_code"),
        )
        found[key] = found.get(key, 0) + point.count
    return found


def test_a_prepared_and_committed_two_phase_transaction_counts_its_prepare_and_commit(
    syncperf_capture: Capture, engine: sa.Engine, tables: tuple[str, str]
) -> None:
    handle = instrument_engine(engine)
    try:
        with syncperf.sync_operation("push", entity="tpc"), engine.connect() as conn:
            tx = conn.begin_twophase()
            conn.exec_driver_sql(f"INSERT INTO {tables[0]} VALUES (1)")
            tx.prepare()
            tx.commit()
    finally:
        handle.uninstrument()
    (queries,) = syncperf_capture.points("sync.db.queries", {"sync.entity": "tpc"})
    assert queries.sum == 3  # INSERT, PREPARE TRANSACTION, COMMIT PREPARED
    operations = _operations(syncperf_capture)
    assert operations[("PREPARE", None)] == 1
    assert operations[("COMMIT", None)] == 1


def test_a_prepare_transaction_that_fails_is_a_failed_query_with_its_sqlstate(
    syncperf_capture: Capture, engine: sa.Engine, tables: tuple[str, str]
) -> None:
    handle = instrument_engine(engine)
    try:
        with (
            pytest.raises(sa.exc.DBAPIError),
            syncperf.sync_operation("push", entity="tpc"),
            engine.connect() as conn,
        ):
            tx = conn.begin_twophase()
            conn.exec_driver_sql(f"INSERT INTO {tables[1]} VALUES (42)")  # the deferred FK
            tx.prepare()
    finally:
        handle.uninstrument()
    (failed,) = syncperf_capture.points(
        "db.client.operation.duration", {"db.operation.name": "PREPARE"}
    )
    assert failed.attributes["db.response.status_code"] == "23503"
    assert failed.attributes["error.type"]
    spans = [s for s in syncperf_capture.spans() if s.name == "PREPARE"]
    assert [s.attributes["db.query.text"] for s in spans] == ["PREPARE TRANSACTION"]


def test_a_prepared_transaction_rolled_back_counts_its_rollback_prepared(
    syncperf_capture: Capture, engine: sa.Engine, tables: tuple[str, str]
) -> None:
    handle = instrument_engine(engine)
    try:
        with syncperf.sync_operation("push", entity="tpc"), engine.connect() as conn:
            tx = conn.begin_twophase()
            conn.exec_driver_sql(f"INSERT INTO {tables[0]} VALUES (2)")
            tx.prepare()
            tx.rollback()
    finally:
        handle.uninstrument()
    (queries,) = syncperf_capture.points("sync.db.queries", {"sync.entity": "tpc"})
    assert queries.sum == 3  # INSERT, PREPARE TRANSACTION, ROLLBACK PREPARED
    spans = [s for s in syncperf_capture.spans() if s.name == "ROLLBACK"]
    assert [s.attributes["db.query.text"] for s in spans] == ["ROLLBACK PREPARED"]


def test_a_two_phase_transaction_ended_unprepared_counts_one_commit(
    syncperf_capture: Capture, engine: sa.Engine, tables: tuple[str, str]
) -> None:
    handle = instrument_engine(engine)
    try:
        with syncperf.sync_operation("push", entity="tpc"), engine.connect() as conn:
            tx = conn.begin_twophase()
            conn.exec_driver_sql(f"INSERT INTO {tables[0]} VALUES (3)")
            tx.commit()  # never prepared: psycopg sends a plain COMMIT
    finally:
        handle.uninstrument()
    (queries,) = syncperf_capture.points("sync.db.queries", {"sync.entity": "tpc"})
    assert queries.sum == 2
    assert _operations(syncperf_capture)[("COMMIT", None)] == 1


def test_the_rollback_prepared_psycopg_sends_after_a_failed_prepare_is_recorded_as_it_ran(
    syncperf_capture: Capture, engine: sa.Engine, tables: tuple[str, str]
) -> None:
    # psycopg marks the transaction prepared before it sends PREPARE TRANSACTION: after a
    # failed one it ends with ROLLBACK PREPARED, which fails (nothing was prepared)
    handle = instrument_engine(engine)
    try:
        with (
            pytest.raises(sa.exc.DBAPIError),
            syncperf.sync_operation("push", entity="tpc"),
            engine.connect() as conn,
        ):
            tx = conn.begin_twophase()
            conn.exec_driver_sql(f"INSERT INTO {tables[1]} VALUES (42)")
            tx.prepare()
    finally:
        handle.uninstrument()
    assert _operations(syncperf_capture)[("ROLLBACK", "42704")] == 1
    spans = [s for s in syncperf_capture.spans() if s.name == "ROLLBACK"]
    assert [s.attributes["db.query.text"] for s in spans] == ["ROLLBACK PREPARED"]
