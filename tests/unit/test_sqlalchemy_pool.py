"""syncperf.sqlalchemy's pool gauges on SQLite: in every runtime that records the pool, and in a
forked child."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncperf.sqlalchemy import instrument_engine
from syncperf.testing import Capture, capture
from tests._forked import in_a_worker

COUNT = "db.client.connection.count"
MAX = "db.client.connection.max"
USED = {"db.client.connection.state": "used"}


def _value(cap: Capture, name: str, **attrs: str) -> float:
    return float(sum(p.value for p in cap.points(name, attrs)))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", pool_size=2, max_overflow=3)
    yield eng
    eng.dispose()


def test_an_engine_instrumented_in_a_nested_capture_reports_its_gauges_to_the_outer_one(
    engine: sa.Engine,
) -> None:
    with capture() as outer:
        with capture():
            handle = instrument_engine(engine)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
                assert _value(outer, COUNT, **USED) == 1
                assert _value(outer, MAX) == 5
                assert outer.points("db.client.connection.wait_time")
        finally:
            handle.uninstrument()


def test_an_engine_instrumented_again_in_a_nested_capture_keeps_the_outer_ones_gauges(
    engine: sa.Engine,
) -> None:
    with capture() as outer:
        handle = instrument_engine(engine)
        try:
            with capture():
                handle.uninstrument()
                handle = instrument_engine(engine)
                engine.connect().close()
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
                assert _value(outer, COUNT, **USED) == 1
                assert _value(outer, MAX) == 5
        finally:
            handle.uninstrument()


def test_a_runtime_sees_the_gauges_of_a_connection_it_checks_in(engine: sa.Engine) -> None:
    with capture() as outer:
        with capture():
            handle = instrument_engine(engine)
            conn = engine.connect()
        try:
            conn.close()  # the outer runtime records its use time: it reports the pool too
            assert outer.points("db.client.connection.use_time")
            assert _value(outer, COUNT, **USED) == 0
            assert _value(outer, MAX) == 5
        finally:
            handle.uninstrument()


def _held_by_another_thread(engine: sa.Engine) -> tuple[threading.Thread, threading.Event]:
    """A thread holding a connection of ``engine`` until the returned event is set."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(30)
    return thread, release


def _used_in_a_child(engine: sa.Engine, dispose: bool) -> object:
    """In a forked child: the used count while the forking thread's connection (the
    parent's, which SQLAlchemy advises a child not to use) is held, after a connection of the
    child's own came and went, and once it is closed too."""

    def child() -> object:
        if dispose:
            engine.dispose(close=False)  # SQLAlchemy's advice for a forked child
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        with capture() as cap:
            first = _value(cap, COUNT, **USED)
            mine.close()
            return [first, _value(cap, COUNT, **USED)]

    with capture():
        handle = instrument_engine(engine)
        thread, release = _held_by_another_thread(engine)
        mine = engine.connect()  # held by the forking thread: the parent's, not the child's
        try:
            return in_a_worker(child)
        finally:
            release.set()
            thread.join()
            mine.close()
            handle.uninstrument()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("dispose", [False, True], ids=["inherited", "disposed"])
def test_a_forked_child_does_not_count_the_parents_other_threads_connections(
    engine: sa.Engine, dispose: bool
) -> None:
    # an inherited QueuePool counts the parent's checkouts itself (its ``checkedout()``)
    assert _used_in_a_child(engine, dispose) == ([2, 1] if not dispose else [0, 0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_counts_only_its_own_connections_of_a_null_pool(tmp_path: Path) -> None:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", poolclass=sa.pool.NullPool)
    try:
        assert _used_in_a_child(eng, dispose=False) == [0, 0]
    finally:
        eng.dispose()


IDLE = {"db.client.connection.state": "idle"}


def test_connections_closed_by_invalidation_are_not_counted_idle(engine: sa.Engine) -> None:
    """An invalidated connection is closed: its pool slot holds none until its next checkout
    reopens it (``Connection.invalidate()`` after an error the application handled)."""
    with capture() as cap:
        handle = instrument_engine(engine)
        first = [engine.connect() for _ in range(2)]
        for conn in first:
            conn.exec_driver_sql("select 1")
            conn.close()
        assert _value(cap, COUNT, **IDLE) == 2
        again = [engine.connect() for _ in range(2)]
        again[0].invalidate()
        for conn in again:
            conn.close()
        assert _value(cap, COUNT, **IDLE) == 1
        assert _value(cap, COUNT, **USED) == 0
        with engine.connect() as conn:  # reopened at its checkout, idle again after it
            conn.exec_driver_sql("select 1")
        assert _value(cap, COUNT, **IDLE) in (1, 2)  # whichever slot the queue handed out
        engine.dispose()
        assert _value(cap, COUNT, **IDLE) == 0
        handle.uninstrument()


def test_an_async_pools_invalidated_connections_are_not_counted_idle(tmp_path: Path) -> None:
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    async def run(cap: Capture) -> tuple[float, float]:
        eng = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.sqlite'}", pool_size=2)
        handle = instrument_engine(eng)
        conns = [await eng.connect() for _ in range(2)]
        for conn in conns:
            await conn.exec_driver_sql("select 1")
        await conns[0].invalidate()
        for conn in conns:
            await conn.close()
        idle = _value(cap, COUNT, **IDLE)
        await eng.dispose()
        try:
            return idle, _value(cap, COUNT, **IDLE)
        finally:
            handle.uninstrument()

    with capture() as cap:
        assert asyncio.run(run(cap)) == (1, 0)


def test_dropped_engines_of_distinct_pool_names_leave_no_bookkeeping_behind(tmp_path: Path) -> None:
    from syncperf.sqlalchemy._pool_gauges import _groups

    with capture() as cap:
        for tenant in range(40):  # one engine per tenant database: one pool name each
            eng = sa.create_engine(f"sqlite:///{tmp_path / f'tenant_{tenant}.db'}")
            instrument_engine(eng, plans=False)
            with eng.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            eng.dispose()
            del eng, conn
            gc.collect()
            cap.points(COUNT)  # the collection that reports the pool's zeros...
            cap.points(COUNT)  # ...and the one that stops its gauges
        assert len(cap.runtime.state(_groups)) <= 2
        live = sa.create_engine(f"sqlite:///{tmp_path / 'tenant_0.db'}")  # a name again
        handle = instrument_engine(live, plans=False)
        try:
            with live.connect():
                assert _value(cap, COUNT, **USED) == 1
            assert _value(cap, COUNT, **USED) == 0
            assert len(cap.runtime.state(_groups)) == 1
        finally:
            handle.uninstrument()
            live.dispose()
