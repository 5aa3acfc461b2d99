"""The per-engine statement caches stay bounded without dropping the statements in use: past
their capacity they set the oldest half aside, and a statement used since comes back without
being classified again (clearing the whole cache made every statement pay it again)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from syncperf import _sql as sql
from syncperf._evicting import Evicting
from syncperf.sqlalchemy import _queries as queries_module
from syncperf.sqlalchemy import instrument_engine
from syncperf.testing import Capture

_CAPACITY = 50


def _counting(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    classified: Counter[str] = Counter()
    original = sql.classify

    def counted(statement: str, **kwargs: Any) -> Any:
        classified[statement] += 1
        return original(statement, **kwargs)

    monkeypatch.setattr(queries_module, "classify", counted)
    monkeypatch.setattr(queries_module, "_MAX_STATEMENTS", _CAPACITY)
    return classified


def test_a_statement_in_use_stays_cached_past_the_capacity(
    syncperf_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    classified = _counting(monkeypatch)
    engine = sa.create_engine("sqlite://")
    recorder: Any = instrument_engine(engine)._recorder  # type: ignore[attr-defined]
    sizes = []
    with engine.connect() as connection:
        for i in range(3 * _CAPACITY + 7):
            connection.exec_driver_sql("SELECT 1")
            connection.exec_driver_sql(f"SELECT {i} + 1")  # a new statement each time
            sizes.append(len(recorder._queries))
    engine.dispose()
    assert classified["SELECT 1"] == 1
    assert max(sizes) <= _CAPACITY
    assert classified["SELECT 7 + 1"] == 1


def test_a_commented_statement_in_use_stays_cached_past_the_capacity(
    syncperf_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlcommenter: one comment a request; the statement without it is what is cached."""
    classified = _counting(monkeypatch)
    engine = sa.create_engine("sqlite://")
    recorder: Any = instrument_engine(engine)._recorder  # type: ignore[attr-defined]
    sizes = []
    with engine.connect() as connection:
        for i in range(3 * _CAPACITY + 7):
            comment = f"/*traceparent='00-{i:032x}-{i:016x}-01'*/"
            connection.exec_driver_sql(f"SELECT 1 {comment}")
            connection.exec_driver_sql(f"SELECT {i} + 1 {comment}")
            sizes.append(len(recorder._bare.known))
    engine.dispose()
    assert classified["SELECT 1"] == 1
    assert max(sizes) <= _CAPACITY


def test_evicting_keeps_what_is_recalled_and_stays_bounded() -> None:
    cache: Evicting[str, int] = Evicting(8)
    cache.put("hot", 0)
    for i in range(100):
        if cache.hot.get("hot") is None:
            assert cache.recall("hot", None) == 0
        cache.put(f"k{i}", i)
        assert len(cache.hot) <= 8
        assert len(cache) <= 12
    assert cache.recall("k0", None) is None  # long gone
    assert cache.hot["k99"] == 99


def test_evicting_from_many_threads_raises_nothing_and_stays_bounded() -> None:
    cache: Evicting[tuple[int, int], int] = Evicting(64)
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def hammer(n: int) -> None:
        start.wait()
        try:
            for i in range(5000):
                key = (n, i % 97)
                if cache.hot.get(key) is None and cache.recall(key, None) is None:
                    cache.put(key, i)
                assert len(cache.hot) <= 64 + 8  # a racing thread may add one more
        except BaseException as failure:  # reported below
            failures.append(failure)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert len(cache) <= 64 + 32 + 8
