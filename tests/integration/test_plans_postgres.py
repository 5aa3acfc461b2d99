"""Query plans of sync statements on a real PostgreSQL (psycopg): ``instrument_engine(plans=...)``.

EXPLAIN runs on the plan worker's own pooled connection, in a transaction rolled back, never with
ANALYZE; these tests read its findings, prove a write is not run again, hold the per-minute
budget under concurrent load and search every exported byte for a planted parameter.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from sqlalchemy.ext.asyncio import create_async_engine

import syncperf
from syncperf.sqlalchemy import EngineInstrumentation, PlanOptions, _plans, instrument_engine
from syncperf.sqlalchemy._plans import Planner
from syncperf.testing import Capture, capture
from tests.integration.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration

ROWS = 20_000
SECRET = "pl4n_s3cr3t_9b8a7c6d5e"
EVERY_TIME = PlanOptions(interval=0, rows=5_000)
"""Every execution inside a sync operation is explained (within the per-minute budget)."""


@pytest.fixture
def table() -> str:
    return f"todo_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pg(postgres_dsn: str, table: str) -> Iterator[sa.Engine]:
    url = postgres_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url, pool_size=4, max_overflow=0)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, owner TEXT NOT NULL, "
            "updated_at BIGINT NOT NULL, n INTEGER NOT NULL DEFAULT 0)"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {table} (id, owner, updated_at) "
            f"SELECT i, 'user' || mod(i, 500), i FROM generate_series(1, {ROWS}) AS i"
        )
    yield engine  # not analyzed: the planner estimates the table from its size on disk
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {table}_runs_f CASCADE")
        conn.exec_driver_sql(f"DROP SEQUENCE IF EXISTS {table}_runs")
    engine.dispose()


@pytest.fixture
def planned(pg: sa.Engine) -> Iterator[EngineInstrumentation]:
    handle = instrument_engine(pg, plans=EVERY_TIME, log_interval=0)
    yield handle
    handle.uninstrument()


def _planner(handle: EngineInstrumentation) -> Planner:
    assert handle.plans is not None
    return handle.plans


def _findings(cap: Capture, **attributes: str) -> int:
    return int(sum(p.value for p in cap.points("sync.db.plan.findings", attributes)))


def _pull(engine: sa.Engine, table: str, owner: str) -> None:
    with syncperf.sync_operation("pull", entity="todo"), engine.connect() as conn:
        conn.execute(
            sa.text(f"SELECT id, updated_at FROM {table} WHERE owner = :owner"), {"owner": owner}
        ).all()


def test_a_missing_index_is_a_seq_scan_finding_and_adding_it_clears_it(
    syncperf_capture: Capture, pg: sa.Engine, planned: EngineInstrumentation, table: str
) -> None:
    planner = _planner(planned)
    _pull(pg, table, "user7")
    assert planner.wait()
    assert planner.explained == 1
    seq = {"sync.db.plan.finding": "seq_scan", "db.collection.name": table}
    assert _findings(syncperf_capture, **seq, **{"sync.operation": "pull"}) == 1
    assert _findings(syncperf_capture, **{"sync.entity": "todo"}) == 1

    with pg.begin() as conn:
        conn.exec_driver_sql(f"CREATE INDEX {table}_owner ON {table} (owner)")
        conn.exec_driver_sql(f"ANALYZE {table}")
    _pull(pg, table, "user7")
    assert planner.wait()
    assert planner.explained == 2  # explained again: the plan now uses the index
    assert _findings(syncperf_capture, **seq) == 1  # no new finding


def test_a_plan_whose_estimated_cost_jumped_is_a_finding(
    syncperf_capture: Capture, pg: sa.Engine, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pg.begin() as conn:
        conn.exec_driver_sql(f"CREATE INDEX {table}_owner ON {table} (owner)")
        conn.exec_driver_sql(f"ANALYZE {table}")
    handle = instrument_engine(pg, plans=PlanOptions(interval=0, rows=10**9, cost_jump=2.0))
    try:
        _pull(pg, table, "user7")
        assert _planner(handle).wait()
        assert _findings(syncperf_capture) == 0  # the first plan of a shape: nothing to compare
        with pg.begin() as conn:
            conn.exec_driver_sql(f"DROP INDEX {table}_owner")
        _pull(pg, table, "user7")
        assert _planner(handle).wait()
    finally:
        handle.uninstrument()
    jump = {"sync.db.plan.finding": "cost_jump", "db.collection.name": table}
    assert _findings(syncperf_capture, **jump) == 1
    assert any("cost_jump on " + table + " (cost " in r.getMessage() for r in caplog.records)
    assert _findings(syncperf_capture) == 1  # the scan is below this test's row threshold


def test_a_sort_without_an_index_is_a_finding(
    syncperf_capture: Capture, pg: sa.Engine, planned: EngineInstrumentation, table: str
) -> None:
    with syncperf.sync_operation("pull", entity="todo"), pg.connect() as conn:
        conn.execute(
            sa.text(f"SELECT id FROM {table} WHERE n >= :n ORDER BY updated_at LIMIT 100"),
            {"n": 0},
        ).all()
    assert _planner(planned).wait()
    assert _findings(syncperf_capture, **{"sync.db.plan.finding": "sort"}) == 1
    assert _findings(syncperf_capture, **{"sync.db.plan.finding": "seq_scan"}) == 1


def test_a_finding_is_an_event_on_the_sync_span_while_it_is_open(
    syncperf_capture: Capture, pg: sa.Engine, planned: EngineInstrumentation, table: str
) -> None:
    with syncperf.sync_operation("pull", entity="todo"), pg.connect() as conn:
        conn.execute(sa.text(f"SELECT id FROM {table} WHERE owner = :o"), {"o": "user1"}).all()
        assert _planner(planned).wait()
    (span,) = [s for s in syncperf_capture.spans() if s.name == "sync pull"]
    (event,) = [e for e in span.events if e.name == "sync.db.plan.finding"]
    assert event.attributes["sync.db.plan.finding"] == "seq_scan"
    assert event.attributes["db.collection.name"] == table
    assert event.attributes["sync.db.plan.rows"] == pytest.approx(ROWS, rel=0.5)  # an estimate
    assert event.attributes["db.query.text"] == f"SELECT id FROM {table} WHERE owner = ?"


def test_a_write_is_planned_but_never_executed_again(
    syncperf_capture: Capture, pg: sa.Engine, planned: EngineInstrumentation, table: str
) -> None:
    # The trigger advances a sequence: that is not transactional, so a write executed in the
    # plan worker's rolled-back transaction would still show.
    runs = f"{table}_runs"
    with pg.begin() as conn:
        conn.exec_driver_sql(f"CREATE SEQUENCE {runs}")
        conn.exec_driver_sql(
            f"CREATE FUNCTION {runs}_f() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM nextval('{runs}'); RETURN NULL; END $$"
        )
        conn.exec_driver_sql(
            f"CREATE TRIGGER {runs}_t AFTER UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {runs}_f()"
        )
    with syncperf.sync_operation("push", entity="todo"), pg.begin() as conn:
        for i in range(1, 4):  # each execution is explained (interval 0)
            conn.execute(sa.text(f"UPDATE {table} SET n = n + 1 WHERE id = :id"), {"id": i})
            conn.execute(
                sa.text(f"UPDATE {table} SET n = n + 1 WHERE updated_at = :u"), {"u": i + 10}
            )
        conn.execute(sa.text(f"DELETE FROM {table} WHERE updated_at = :u"), {"u": 20})
    planner = _planner(planned)
    assert planner.wait()
    assert planner.explained == 7
    with pg.connect() as conn:
        fired = conn.exec_driver_sql(f"SELECT last_value FROM {runs}").scalar()
        total = conn.exec_driver_sql(f"SELECT sum(n) FROM {table}").scalar()
    assert fired == 7  # six updated rows, one deleted: once each
    assert total == 6
    seq = {"sync.db.plan.finding": "seq_scan", "sync.operation": "push"}
    assert _findings(syncperf_capture, **seq) == 4  # the updated_at writes and the delete


@pytest.mark.parametrize("isolation_level", ["READ COMMITTED", "AUTOCOMMIT"])
def test_a_string_of_several_statements_is_never_explained(
    postgres_dsn: str, pg: sa.Engine, table: str, isolation_level: str
) -> None:
    # psycopg sends a string without parameters as one simple query: PostgreSQL runs all of
    # it, and "EXPLAIN <string>" would run every statement after the first (not rolled back
    # under AUTOCOMMIT; nextval never is)
    url = postgres_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url, isolation_level=isolation_level)
    with engine.connect():  # the dialect's first-connect queries, outside any sync operation
        pass
    runs = f"{table}_runs"
    with pg.begin() as conn:
        conn.exec_driver_sql(f"CREATE SEQUENCE {runs}")
    handle = instrument_engine(engine, plans=EVERY_TIME)
    try:
        with syncperf.sync_operation("push", entity="todo"), engine.begin() as conn:
            conn.exec_driver_sql(
                f"SELECT id FROM {table} WHERE owner = 'a;b'; "
                f"UPDATE {table} SET n = n + 1 WHERE id = 1; SELECT nextval('{runs}')"
            )
            conn.exec_driver_sql(f"SELECT id FROM {table} WHERE owner = 'x'; -- done")
        planner = _planner(handle)
        assert planner.wait()
    finally:
        handle.uninstrument()
        engine.dispose()
    with pg.connect() as conn:  # the application's statements ran once, and only they did
        assert conn.exec_driver_sql(f"SELECT last_value FROM {runs}").scalar() == 1
        assert conn.exec_driver_sql(f"SELECT sum(n) FROM {table}").scalar() == 1
    assert planner.explained == 1  # the one statement (a trailing ';' and comment are fine)


@pytest.mark.parametrize("end", ["\r", "\r\n", "\n"])
def test_a_second_statement_after_a_line_comment_is_never_explained(
    postgres_dsn: str, pg: sa.Engine, table: str, end: str
) -> None:
    # PostgreSQL ends a "--" comment at a carriage return too: "SELECT 1 -- note\r; b" is two
    # statements, and EXPLAIN of it as a simple query would run b (a session lock held after)
    url = postgres_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect():  # the dialect's first-connect queries, outside any sync operation
        pass
    runs = f"{table}_runs"
    with pg.begin() as conn:
        conn.exec_driver_sql(f"CREATE SEQUENCE {runs}")
    handle = instrument_engine(engine, plans=EVERY_TIME)
    try:
        with syncperf.sync_operation("pull", entity="todo"), engine.connect() as conn:
            conn.exec_driver_sql(
                f"SELECT id FROM {table} WHERE owner = 'x' -- note{end}; "
                f"SELECT nextval('{runs}'), pg_advisory_lock(4242)"
            )
            conn.exec_driver_sql("SELECT pg_advisory_unlock(4242)")
        planner = _planner(handle)
        assert planner.wait()
    finally:
        handle.uninstrument()
        engine.dispose()
    with pg.connect() as conn:  # the application's statements ran once, and only they did
        assert conn.exec_driver_sql(f"SELECT last_value FROM {runs}").scalar() == 1
        assert conn.exec_driver_sql("SELECT pg_try_advisory_lock(4242)").scalar()
        conn.exec_driver_sql("SELECT pg_advisory_unlock(4242)")
    assert planner.explained == 1  # the application's unlock (EXPLAIN does not run it)


def test_the_per_minute_budget_holds_under_concurrent_load(
    syncperf_capture: Capture, pg: sa.Engine, table: str
) -> None:
    handle = instrument_engine(pg, plans=PlanOptions(interval=0, max_per_minute=5))
    planner = _planner(handle)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(50):  # 50 distinct shapes per thread (the alias differs)
                with syncperf.sync_operation("pull", entity="todo"), pg.connect() as conn:
                    conn.execute(
                        sa.text(f"SELECT id AS c{k}_{i} FROM {table} WHERE owner = :o"),
                        {"o": "user3"},
                    ).all()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    try:
        start = time.perf_counter_ns() // 60_000_000_000
        # three threads and the plan worker: the pool (4) has a connection for each
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        minutes = time.perf_counter_ns() // 60_000_000_000 - start + 1
        assert planner.wait()
    finally:
        handle.uninstrument()
    assert not errors
    assert minutes <= 2
    assert 5 <= planner.explained <= 5 * minutes
    assert planner.capped > 0
    assert planner.deferred == 0
    assert _findings(syncperf_capture, **{"sync.db.plan.finding": "seq_scan"}) == (
        planner.explained
    )
    assert not syncperf_capture.points("syncperf.dropped")


@pytest.mark.parametrize("isolation_level", ["READ COMMITTED", "AUTOCOMMIT"])
def test_a_migration_lock_times_the_plan_out_and_the_timeouts_stay_in_its_transaction(
    postgres_dsn: str, table: str, pg: sa.Engine, isolation_level: str
) -> None:
    # AUTOCOMMIT: the timeouts need a transaction to last past their own statement; without
    # one the EXPLAIN waited for the lock for as long as it was held, with the only connection
    url = postgres_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    one = sa.create_engine(url, pool_size=1, max_overflow=0, isolation_level=isolation_level)
    with one.connect():  # the dialect's first-connect queries, outside any sync operation
        pass
    with capture(strict=False) as cap:
        handle = instrument_engine(one, plans=PlanOptions(interval=0, timeout=2.0))
        planner = _planner(handle)
        migration = pg.connect()
        try:
            with syncperf.sync_operation("pull"):
                with one.connect() as conn:  # the worker waits for this, the only connection
                    conn.exec_driver_sql(f"SELECT id FROM {table} WHERE owner = 'x'").all()
                    conn.rollback()  # its own lock on the table goes
                    migration.begin()  # then a migration takes its lock, as ALTER TABLE would
                    migration.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                started = time.monotonic()
                assert planner.wait()
                waited = time.monotonic() - started
        finally:
            migration.rollback()
            migration.close()
            handle.uninstrument()
        assert 1.5 < waited < 10  # lock_timeout, not the migration, ended the wait
        assert planner.explained == 0
        (failed,) = cap.points("syncperf.dropped", {"syncperf.reason": "plan_failed"})
        assert failed.value == 1
        with one.connect() as conn:  # the worker's connection: no timeout left behind
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "0"
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "0"
            # ...and no transaction: under AUTOCOMMIT each statement is its own
            xids = [conn.exec_driver_sql("SELECT txid_current()").scalar() for _ in range(2)]
            assert (xids[0] != xids[1]) is (isolation_level == "AUTOCOMMIT")
    one.dispose()


async def test_an_autocommit_async_engine_times_the_plan_out_too(
    postgres_dsn: str, table: str, pg: sa.Engine
) -> None:
    url = postgres_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    handle = instrument_engine(engine, plans=PlanOptions(interval=0, timeout=2.0))
    planner = _planner(handle)
    try:
        async with engine.connect() as conn:  # the dialect's first-connect queries
            pass
        async with engine.connect() as conn:
            # this connection holds the lock the worker's own connection will wait for
            conn = await conn.execution_options(isolation_level="READ COMMITTED")
            async with conn.begin():
                await conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                async with syncperf.sync_operation("pull"):
                    await conn.exec_driver_sql(f"SELECT id FROM {table} WHERE owner = 'x'")
                started = time.monotonic()
                assert await asyncio.to_thread(planner.wait)
                waited = time.monotonic() - started
    finally:
        handle.uninstrument()
        await engine.dispose()
    assert 1.5 < waited < 10  # lock_timeout, not the end of the lock, ended the wait
    assert planner.explained == 0


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_async_engines_read_plans_on_the_workers_own_loop_and_connection(
    syncperf_capture: Capture, pg: sa.Engine, postgres_dsn: str, table: str, driver: str
) -> None:
    url = postgres_dsn.replace("postgresql://", f"postgresql+{driver}://", 1)
    engine = create_async_engine(url, pool_size=1, max_overflow=0)
    handle = instrument_engine(engine, plans=EVERY_TIME)
    planner = _planner(handle)
    try:
        async with engine.connect():  # the dialect's first-connect queries, outside any sync
            pass
        async with syncperf.sync_operation("pull", entity="todo"), engine.connect() as conn:
            statement = sa.text(f"SELECT id FROM {table} WHERE owner = :o")
            await conn.execute(statement, {"o": SECRET})
            # the application holds its pool's only connection: the worker has its own
            assert await asyncio.to_thread(planner.wait)
        async with syncperf.sync_operation("push", entity="todo"), engine.begin() as conn:
            await conn.execute(sa.text(f"UPDATE {table} SET n = n + 1 WHERE updated_at = 5"))
        assert await asyncio.to_thread(planner.wait)
    finally:
        handle.uninstrument()
        await engine.dispose()
    assert planner.explained == 2
    seq = {"sync.db.plan.finding": "seq_scan", "db.collection.name": table}
    assert _findings(syncperf_capture, **seq, **{"sync.operation": "pull"}) == 1
    assert _findings(syncperf_capture, **seq, **{"sync.operation": "push"}) == 1
    with pg.connect() as conn:  # the update ran once
        assert conn.exec_driver_sql(f"SELECT sum(n) FROM {table}").scalar() == 1


def _backends(pg: sa.Engine, name: str) -> int:
    with pg.connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"
        return int(conn.execute(sa.text(query), {"name": name}).scalar() or 0)


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_a_collected_engine_stops_its_plan_worker_and_closes_its_connection(
    pg: sa.Engine, postgres_dsn: str, table: str, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # never uninstrumented: the worker waited on its queue for good, holding its planner and
    # (async engines) the connection of its own pool, one thread and one backend per engine;
    # an idle async worker lets its pool go (which keeps the engine alive) after _IDLE
    monkeypatch.setattr(_plans, "_IDLE", 0.2, raising=False)
    url = postgres_dsn.replace("postgresql://", f"postgresql+{driver}://", 1)
    name = f"plans-gc-{uuid.uuid4().hex[:8]}"
    workers: list[threading.Thread] = []
    for _ in range(3):
        if driver == "asyncpg":
            settings = {"server_settings": {"application_name": name}}
            engine: Any = create_async_engine(url, pool_size=1, connect_args=settings)
            planner = _planner(instrument_engine(engine, plans=EVERY_TIME))
            async with syncperf.sync_operation("pull"), engine.connect() as conn:
                await conn.exec_driver_sql(f"SELECT id FROM {table} WHERE owner = 'x'")
            assert await asyncio.to_thread(planner.wait)
            await engine.dispose()
            del conn
        else:
            settings = {"application_name": name}
            engine = sa.create_engine(url, pool_size=1, connect_args=settings)
            planner = _planner(instrument_engine(engine, plans=EVERY_TIME))
            _pull(engine, table, "x")
            assert planner.wait()
            engine.dispose()
        assert planner._thread is not None
        workers.append(planner._thread)
        del engine, planner
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        any(w.is_alive() for w in workers) or _backends(pg, name)
    ):
        gc.collect()  # an engine is collected once its idle worker let its own pool go
        await asyncio.sleep(0.05)
    assert not any(w.is_alive() for w in workers)
    assert _backends(pg, name) == 0


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_a_planted_parameter_never_leaves_the_process(pg: sa.Engine, table: str) -> None:
    receiver = OtlpReceiver().start()
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True))
    )
    records = _Records()
    logger = logging.getLogger("syncperf")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        with capture(
            strict=False,
            tracer_provider=provider,
            metric_exporters=[OTLPMetricExporter(endpoint=receiver.endpoint, insecure=True)],
        ) as cap:
            handle = instrument_engine(pg, plans=EVERY_TIME, log_interval=0)
            try:
                with syncperf.sync_operation("pull", entity="todo"), pg.connect() as conn:
                    for statement in (
                        f"SELECT id FROM {table} WHERE owner = :o",
                        f"SELECT id FROM {table} WHERE owner <> :o ORDER BY owner",
                        f"UPDATE {table} SET owner = :o WHERE updated_at = -1",
                    ):
                        conn.execute(sa.text(statement), {"o": SECRET})
                    assert _planner(handle).wait()
            finally:
                handle.uninstrument()
            assert _findings(cap, **{"sync.db.plan.finding": "seq_scan"}) >= 3
            assert _findings(cap, **{"sync.db.plan.finding": "sort"}) == 1
            cap.runtime.flush()
            provider.force_flush()
        assert receiver.wait_for(lambda: bool(receiver.trace_requests))
        assert receiver.wait_for(lambda: bool(receiver.metric_requests))
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
        provider.shutdown()
        receiver.stop()
    exported = b"".join(r.SerializeToString() for r in receiver.trace_requests)
    exported += b"".join(r.SerializeToString() for r in receiver.metric_requests)
    assert b"sync.db.plan.finding" in exported  # the findings were exported...
    assert any("query plan of sync pull" in line for line in records.lines)  # ...and logged
    for fragment in (SECRET, "pl4n_s3cr3t", "9b8a7c6d5e"):
        assert fragment.encode() not in exported
        assert not [line for line in records.lines if fragment in line]


def test_plans_are_off_by_default_and_follow_syncperf_plans(
    pg: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = instrument_engine(pg)
    try:
        assert handle.plans is None
        monkeypatch.setenv("SYNCPERF_PLANS", "1")
        with capture():  # a new runtime (configure(), capture()) reads the environment
            assert handle.plans is not None
    finally:
        handle.uninstrument()
