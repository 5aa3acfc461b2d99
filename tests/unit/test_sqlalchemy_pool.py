"""syncperf.sqlalchemy's pool gauges on SQLite: in every runtime that records the pool, and in a
forked child."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncperf.sqlalchemy import instrument_engine
from syncperf.testing import Capture, capture

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
