"""syncperf.outbox against a real PostgreSQL: a relay crashes mid-batch and restarts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.orm import Session

from syncperf.outbox import Outbox, sqlalchemy_probe
from syncperf.testing import Capture
from tests._examples import EXAMPLES, load_example

pytestmark = pytest.mark.integration

SCHEMA = "syncperf_outbox_it"


def example_module() -> ModuleType:
    return load_example("outbox_relay.py", "outbox_relay_pg_example")


@pytest.fixture
def engine(postgres_dsn: str) -> Iterator[Engine]:
    url = postgres_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {SCHEMA}"))
    admin.dispose()
    engine = create_engine(url, connect_args={"options": f"-csearch_path={SCHEMA}"})
    yield engine
    engine.dispose()


def gauge(cap: Capture, name: str) -> float | None:
    points = cap.points(name, {"outbox.name": "todos"})
    return points[0].value if points else None


def run_until_drained(relay: Any, engine: Engine, example: ModuleType, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not relay.run_once():
            if example.outbox_counts(engine).get("pending", 0) == 0:
                return
            time.sleep(0.05)  # leased rows: wait for their lease to expire
    raise AssertionError("the relay did not drain the outbox in time")


def test_relay_crash_and_restart_keeps_every_count_exact(
    engine: Engine, syncperf_capture: Capture
) -> None:
    example = example_module()
    example.metadata.create_all(engine)
    box = Outbox(
        "todos",
        destination="todo.events",
        stats=sqlalchemy_probe(engine, "outbox", status="status"),
        stats_timeout=5,
    )
    service = example.TodoService(engine, box)
    cap = syncperf_capture

    attempts_by_title: dict[str, int] = {}
    sends = 0
    lock = threading.Lock()

    def policy(crash_at: int | None) -> Any:
        def fail(row: dict[str, Any]) -> Exception | None:
            nonlocal sends
            title = json.loads(row["payload"])["title"]
            with lock:
                sends += 1
                attempts_by_title[title] = attempts_by_title.get(title, 0) + 1
                if crash_at is not None and sends == crash_at:
                    return example.RelayCrash("relay killed mid-batch")
                seen = attempts_by_title[title]
            if title.startswith("poison"):
                return example.BrokerError("payload rejected")
            if title.startswith("flaky") and seen == 1:
                return example.BrokerError("broker busy")
            return None

        return fail

    for index in range(12):
        second = f"flaky {index}" if index % 4 == 0 else f"more {index}"
        service.push([f"todo {index}", second])
    service.push(["poison pill"])
    with pytest.raises(ValueError, match="rejected"):
        service.push(["rolled back"], fail=True)
    assert gauge(cap, "outbox.depth") == 25

    # relay 1 crashes at its 4th send: its whole first batch (8 rows, attempt 1) rolls back
    crashed = example.Relay(
        engine, box, example.Broker(fail=policy(crash_at=4)), batch_size=8, lease=2.5
    )
    with pytest.raises(example.RelayCrash):
        crashed.drain()
    assert example.outbox_counts(engine) == {"pending": 25}
    # "flaky 0" failed on its own before the crash; the other 7 count with the crash's type
    assert cap.total("outbox.messages", {"outbox.event": "failed"}) == 8
    assert (
        cap.total(
            "outbox.messages",
            {"outbox.event": "failed", "error.type": "outbox_relay_pg_example.RelayCrash"},
        )
        == 7
    )
    assert cap.total("outbox.messages", {"outbox.event": "published"}) == 0

    # while no relay runs, the depth stays and the oldest message keeps ageing
    first_age = gauge(cap, "outbox.oldest_age")
    time.sleep(1.2)
    later_age = gauge(cap, "outbox.oldest_age")
    assert first_age is not None and later_age is not None
    assert later_age >= first_age + 1.0
    assert gauge(cap, "outbox.depth") == 25

    # restart: two relays drain concurrently (SKIP LOCKED); crashed rows return after the lease
    errors: list[BaseException] = []

    def worker() -> None:
        relay = example.Relay(
            engine, box, example.Broker(fail=policy(None)), batch_size=5, lease=2.5
        )
        try:
            run_until_drained(relay, engine, example, timeout=60)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not errors

    with engine.connect() as connection:
        statuses = example.outbox_counts(engine)
        attempts = connection.execute(select(func.sum(example.outbox.c.attempts))).scalar_one()
    assert statuses == {"published": 24, "dead": 1}

    event = {
        e: cap.total("outbox.messages", {"outbox.name": "todos", "outbox.event": e})
        for e in ("enqueued", "published", "failed", "retried", "dead_lettered")
    }
    # every committed message ended published or dead-lettered exactly once, as recorded
    assert event["enqueued"] == 25
    assert event["published"] == statuses["published"]
    assert event["dead_lettered"] == statuses["dead"]
    # every claim was one attempt, counted exactly once as published or failed ...
    assert event["published"] + event["failed"] == attempts
    # ... and every attempt after a message's first counted as retried
    assert event["retried"] == attempts - 25
    # the crashed batch (8, "flaky 0" among them), "flaky 4" and "flaky 8", the poison pill (2)
    assert event["retried"] >= 8 + 2 + 2
    assert cap.total("outbox.lag", {"outbox.name": "todos"}) == 24

    # the backlog is gone: depth back to zero, the oldest age falls to zero
    assert gauge(cap, "outbox.depth") == 0
    assert gauge(cap, "outbox.oldest_age") == 0
    assert cap.points("outbox.probe.failures") == []

    # send spans link back to the pushes' create spans, with the attempt number
    spans = cap.spans()
    creates = {s.context.span_id for s in spans if s.name == "create todo.events"}
    links = [link for s in spans if s.name == "send todo.events" for link in s.links]
    assert {link.context.span_id for link in links} <= creates
    assert len({link.context.span_id for link in links}) == 25
    assert max(link.attributes["outbox.attempt"] for link in links) >= 3
    box.close()


@pytest.mark.parametrize("isolation_level", [None, "AUTOCOMMIT"])
def test_probe_timeout_on_postgres_is_counted_not_raised(
    engine: Engine, syncperf_capture: Capture, isolation_level: str | None
) -> None:
    # AUTOCOMMIT: SET LOCAL outside a transaction block ends with its own statement; the probe
    # waited for the lock for as long as it was held (stats_timeout only stopped the waiting)
    example = example_module()
    example.metadata.create_all(engine)
    probed = engine
    if isolation_level is not None:
        probed = engine.execution_options(isolation_level=isolation_level)
    blocker = engine.connect()
    blocker.execute(text("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE"))
    try:
        box = Outbox(
            "todos", stats=sqlalchemy_probe(probed, "outbox", timeout=0.2), stats_timeout=3
        )
        assert gauge(syncperf_capture, "outbox.depth") is None
        failures = syncperf_capture.points("outbox.probe.failures", {"outbox.name": "todos"})
        # the server cancelled the query (SQLSTATE 57014) at the probe's timeout
        assert [p.attributes["error.type"] for p in failures] == ["timeout"]
    finally:
        blocker.rollback()
        blocker.close()
    assert gauge(syncperf_capture, "outbox.depth") == 0
    box.close()
    with probed.connect() as connection:  # no timeout, and no transaction, left behind
        assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "0"
        if isolation_level == "AUTOCOMMIT":
            xids = [connection.exec_driver_sql("SELECT txid_current()").scalar() for _ in "ab"]
            assert xids[0] != xids[1]


@pytest.mark.parametrize("totals", [False, True])
@pytest.mark.parametrize("status_type", ["text", "char(10)", "outbox_status"])
def test_the_probe_reads_enum_and_char_status_columns(
    engine: Engine, status_type: str, totals: bool
) -> None:
    # an enum: the IN list's binds were cast to VARCHAR (operator does not exist: outbox_status
    # = character varying) and every collection failed; char(10): the totals compared the
    # padded values with the pending ones in Python and found no pending row (depth 0)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TYPE outbox_status AS ENUM ('pending', 'published')")
        connection.exec_driver_sql(
            f"CREATE TABLE outbox (id serial, status {status_type}, attempts int DEFAULT 1, "
            "created_at timestamptz DEFAULT now() - interval '1 hour')"
        )
        connection.exec_driver_sql(
            "INSERT INTO outbox (status) VALUES ('pending'), ('pending'), ('pending'), "
            "('published')"
        )
    attempts = "attempts" if totals else None
    probe = sqlalchemy_probe(engine, "outbox", status="status", totals=totals, attempts=attempts)
    stats = probe()
    assert stats.depth == 3
    assert stats.oldest_age is not None and 3500 < stats.oldest_age < 3700
    if totals:
        assert stats.rows is not None
        assert stats.rows == {"pending": 3, "published": 1}  # char(10): without its padding
        assert stats.attempts == 4


@pytest.mark.parametrize("column_type", ["numeric", "double precision", "bigint"])
@pytest.mark.parametrize("totals", [False, True])
def test_the_probe_reads_posix_seconds_in_a_numeric_column(
    engine: Engine, column_type: str, totals: bool
) -> None:
    # numeric comes back as a Decimal, which the age check refused: every collection failed
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE outbox (status text, created_at {column_type})")
        connection.exec_driver_sql(
            "INSERT INTO outbox VALUES ('pending', extract(epoch from now()) - 60), "
            "('done', extract(epoch from now()))"
        )
    stats = sqlalchemy_probe(engine, "outbox", status="status", totals=totals)()
    assert stats.depth == 1
    assert stats.oldest_age is not None and 58 < stats.oldest_age < 70


def test_a_session_joined_into_an_external_transaction_counts_only_what_it_commits(
    engine: Engine, syncperf_capture: Capture
) -> None:
    # SQLAlchemy's documented test pattern: session.commit() fires after_commit, but the
    # rows are committed (or not) by the connection's own transaction
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE box (id serial PRIMARY KEY, n int)"))
    box = Outbox("todos")

    def push(connection: Any, n: int, savepoint: bool = False) -> None:
        with Session(bind=connection) as session:
            session.execute(text("INSERT INTO box (n) VALUES (:n)"), {"n": n})
            box.enqueue(session=session)
            session.commit()
        if savepoint:
            box.enqueue(session=session)  # ...and one not yet begun, closed before it began

    for n, end in enumerate(["rollback", "commit", "close", "savepoint", "twice"]):
        connection = engine.connect()
        outer = connection.begin()
        if end == "savepoint":  # the session makes a savepoint inside this one
            inner = connection.begin_nested()
            push(connection, n, savepoint=True)
            inner.rollback()
            outer.commit()
        elif end == "twice":
            push(connection, n)
            push(connection, n)
            outer.commit()
        else:
            push(connection, n)
            if end == "rollback":
                outer.rollback()
            elif end == "commit":
                outer.commit()
        connection.close()
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT count(*) FROM box")).scalar()
    assert kept == 3
    assert syncperf_capture.total("outbox.messages", {"outbox.event": "enqueued"}) == kept


async def test_an_async_session_joined_into_an_external_transaction_counts_only_its_commit(
    postgres_dsn: str, engine: Engine, syncperf_capture: Capture
) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE box (id serial PRIMARY KEY, n int)"))
    url = postgres_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    async_engine = create_async_engine(
        url, connect_args={"server_settings": {"search_path": SCHEMA}}
    )
    box = Outbox("todos")
    try:
        for n, commit in enumerate([False, True]):
            async with async_engine.connect() as connection:
                outer = await connection.begin()
                async with AsyncSession(bind=connection) as session:
                    await session.execute(text("INSERT INTO box (n) VALUES (:n)"), {"n": n})
                    box.enqueue(session=session)
                    await session.commit()
                await (outer.commit() if commit else outer.rollback())
    finally:
        await async_engine.dispose()
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT count(*) FROM box")).scalar()
    assert kept == 1
    assert syncperf_capture.total("outbox.messages", {"outbox.event": "enqueued"}) == kept


RELAY_PROCESS = """
import importlib.util, os, signal, sys
from sqlalchemy import create_engine
from syncperf.outbox import Outbox

spec = importlib.util.spec_from_file_location("relay_child", sys.argv[1])
example = importlib.util.module_from_spec(spec)
sys.modules["relay_child"] = example
spec.loader.exec_module(example)
engine = create_engine(sys.argv[2], connect_args={"options": "-csearch_path=%s" % sys.argv[3]})
sends = 0


def fail(row):
    global sends
    sends += 1
    if sends == 13:  # mid second batch, after its lease was committed
        os.kill(os.getpid(), signal.SIGKILL)


example.Relay(engine, Outbox("todos"), example.Broker(fail=fail), batch_size=10, lease=0.5).drain()
"""


def test_the_table_totals_survive_a_relay_killed_mid_batch(
    engine: Engine, postgres_dsn: str, syncperf_capture: Capture
) -> None:
    example = example_module()
    example.metadata.create_all(engine)
    probe = sqlalchemy_probe(engine, "outbox", status="status", totals=True, attempts="attempts")
    box = Outbox("todos", stats=probe, stats_timeout=5)
    try:
        example.TodoService(engine, box).push([f"todo {i}" for i in range(30)])
        url = postgres_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
        killed = subprocess.run(
            [sys.executable, "-c", RELAY_PROCESS, str(EXAMPLES / "outbox_relay.py"), url, SCHEMA],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        # the killed relay published its first batch; what it counted died with it
        relay = example.Relay(engine, box, example.Broker(), batch_size=10, lease=0.5)
        run_until_drained(relay, engine, example, timeout=20)

        cap = syncperf_capture
        rows = {p.attributes["outbox.status"]: p.value for p in cap.points("outbox.rows")}
        assert rows == {"published": 30}
        (attempts,) = cap.points("outbox.attempts", {"outbox.name": "todos"})
        assert attempts.value == 10 + 2 * 10 + 10  # the killed batch was attempted twice
        # this process's counters saw only the restart: 20 published, 10 of them retries
        assert cap.total("outbox.messages", {"outbox.event": "published"}) == 20
        assert cap.total("outbox.messages", {"outbox.event": "retried"}) == 10
    finally:
        box.close()  # its gauges must not outlive the test (it may sit in a cycle until gc)


def test_savepoints_on_postgres_count_exactly_the_enqueues_whose_rows_were_committed(
    engine: Engine, syncperf_capture: Capture
) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE box (id serial PRIMARY KEY, n int)"))
    box = Outbox("todos")

    def write(session: Session, n: int) -> None:
        session.execute(text("INSERT INTO box (n) VALUES (:n)"), {"n": n})
        box.enqueue(session=session)

    with Session(engine) as session, session.begin():
        write(session, 1)
        rejected = session.begin_nested()
        write(session, 2)
        rejected.rollback()  # a rejected push inside a savepoint
        with session.begin_nested():
            write(session, 3)
            inner = session.begin_nested()
            write(session, 4)
            inner.rollback()
    with Session(engine) as session, session.begin():
        with session.begin_nested():
            write(session, 5)  # released, then the whole transaction rolls back
        session.rollback()
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT count(*) FROM box")).scalar()
    assert kept == 2
    assert syncperf_capture.total("outbox.messages", {"outbox.event": "enqueued"}) == kept


def test_on_postgres_an_enqueue_before_the_session_began_counts_only_with_its_row(
    engine: Engine, syncperf_capture: Capture
) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE box (id serial PRIMARY KEY, n int)"))
    box = Outbox("todos")

    def write(session: Session, n: int) -> None:
        session.execute(text("INSERT INTO box (n) VALUES (:n)"), {"n": n})

    session = Session(engine)
    box.enqueue(session=session)  # a push that gave up before it began: forgotten
    session.close()
    box.enqueue(session=session)  # the session used again; the insert begins it
    write(session, 1)
    session.commit()
    box.enqueue(session=session)  # an explicit begin after the enqueue
    with session.begin():
        write(session, 2)
    box.enqueue(session=session)  # begun by the insert, rolled back
    write(session, 3)
    session.rollback()
    session.close()
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT count(*) FROM box")).scalar()
    assert kept == 2
    assert syncperf_capture.total("outbox.messages", {"outbox.event": "enqueued"}) == kept
