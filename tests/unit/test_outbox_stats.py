"""syncperf.outbox gauges (depth, oldest age), the SQLAlchemy probe and commit-tied counting."""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session, registry, scoped_session, sessionmaker

import syncperf
from syncperf import _gate as gate
from syncperf._staleness import MAX_SKEW
from syncperf.exceptions import ConfigError, MeasurementError
from syncperf.outbox import MAX_NAMES, Outbox, OutboxStats, sqlalchemy_probe
from syncperf.outbox._gauges import MAX_STATUSES, GaugeCallbacks, _validate
from syncperf.outbox._sqlalchemy import _attempt_sum
from syncperf.testing import Capture, capture
from tests._forked import in_a_worker

SECRET = "sk_live_51OutboxStatsSecret"


def gauge(cap: Capture, name: str, outbox: str = "orders") -> float | None:
    points = cap.points(name, {"outbox.name": outbox})
    assert len(points) <= 1
    return points[0].value if points else None


def probe_failures(cap: Capture, outbox: str = "orders") -> dict[str, float]:
    return {
        p.attributes["error.type"]: p.value
        for p in cap.points("outbox.probe.failures", {"outbox.name": outbox})
    }


class Counting:
    """A stats callback that counts its calls."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


# --- gauges from a callback --------------------------------------------------------------


def test_gauges_report_depth_and_oldest_age_from_one_call_per_collection(
    syncperf_capture: Capture,
) -> None:
    stats = Counting(OutboxStats(7, 42.5))
    outbox = Outbox("orders", stats=stats)
    metrics = {m.name: m for m in syncperf_capture.metrics()}
    assert stats.calls == 1
    (depth,) = metrics["outbox.depth"].data.data_points
    (age,) = metrics["outbox.oldest_age"].data.data_points
    assert (depth.value, age.value) == (7, 42.5)
    assert dict(depth.attributes) == {"outbox.name": "orders"}
    assert metrics["outbox.depth"].unit == "{message}"
    assert metrics["outbox.oldest_age"].unit == "s"
    syncperf_capture.metrics()
    assert stats.calls == 2
    outbox.close()


def test_an_empty_outbox_has_age_zero(syncperf_capture: Capture) -> None:
    outbox = Outbox("orders", stats=lambda: (0, None))
    assert gauge(syncperf_capture, "outbox.depth") == 0
    assert gauge(syncperf_capture, "outbox.oldest_age") == 0
    outbox.close()


def test_an_unknown_age_reports_depth_only(syncperf_capture: Capture) -> None:
    outbox = Outbox("orders", stats=lambda: (3, None))
    metrics = {m.name: m for m in syncperf_capture.metrics()}
    assert metrics["outbox.depth"].data.data_points[0].value == 3
    assert "outbox.oldest_age" not in metrics
    outbox.close()


def test_a_failing_callback_drops_the_gauges_and_is_counted(syncperf_capture: Capture) -> None:
    stats = Counting(RuntimeError("db down"))
    outbox = Outbox("orders", stats=stats)
    names = {m.name for m in syncperf_capture.metrics()}  # strict mode: still never raises
    assert "outbox.depth" not in names and "outbox.oldest_age" not in names
    assert stats.calls == 1  # one failed call, not one per gauge
    assert probe_failures(syncperf_capture) == {"RuntimeError": 1}  # seen one pass later
    stats.result = OutboxStats(1, 5.0)
    assert gauge(syncperf_capture, "outbox.depth") == 1
    outbox.close()


class _Driver(Exception):
    """A DBAPI error as psycopg2 (``pgcode``) or psycopg 3 and asyncpg (``sqlstate``) raise it."""

    def __init__(self, **codes: object) -> None:
        super().__init__("canceling statement due to statement timeout")
        self.__dict__.update(codes)


OPERATIONAL = "sqlalchemy.exc.OperationalError"


class _Hostile(Exception):
    @property
    def sqlstate(self) -> str:
        raise RuntimeError(SECRET)


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (OperationalError("SELECT", {}, _Driver(pgcode="57014")), "timeout"),  # psycopg2
        (OperationalError("SELECT", {}, _Driver(sqlstate="57014")), "timeout"),  # psycopg 3
        (_Driver(sqlstate="57014"), "timeout"),  # the driver's own error, from a callback
        (
            OperationalError("SELECT", {}, _Driver(pgcode="08006")),
            "sqlalchemy.exc.OperationalError",
        ),
        (
            OperationalError("SELECT", {}, _Driver(sqlstate=57014)),
            "sqlalchemy.exc.OperationalError",
        ),
        (OperationalError("SELECT", {}, _Hostile()), "sqlalchemy.exc.OperationalError"),
    ],
)
def test_a_statement_the_database_cancelled_for_its_timeout_counts_as_a_timeout(
    raised: BaseException, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    # PostgreSQL's statement_timeout (the SQLAlchemy probe sets it to its timeout) cancels
    # the query with SQLSTATE 57014 (query_canceled) before stats_timeout stops the waiting.
    with capture() as cap:
        outbox = Outbox("orders", stats=Counting(raised))
        assert gauge(cap, "outbox.depth") is None
        assert probe_failures(cap) == {expected: 1}
        outbox.close()
    assert SECRET not in caplog.text


def test_a_nonsense_answer_counts_as_a_failure(syncperf_capture: Capture) -> None:
    outbox = Outbox("orders", stats=lambda: (-1, 2.0))
    assert gauge(syncperf_capture, "outbox.depth") is None
    assert probe_failures(syncperf_capture) == {"TypeError": 1}
    outbox.close()


class SecretInt(int):
    """An int whose conversions and comparisons raise, quoting a secret."""

    def __float__(self) -> float:
        raise RuntimeError("password=" + SECRET)

    __index__ = __int__ = __float__  # type: ignore[assignment]

    def __lt__(self, other: object) -> bool:
        raise RuntimeError("password=" + SECRET)

    __gt__ = __le__ = __ge__ = __lt__  # type: ignore[assignment]


class SecretFloat(float):
    def __lt__(self, other: object) -> bool:
        raise RuntimeError("password=" + SECRET)

    __gt__ = __le__ = __ge__ = __lt__  # type: ignore[assignment]


@pytest.mark.parametrize(
    "stats",
    [
        (2**53, 5.0),  # not exact as a double: would be exported rounded
        (2**60 + 1, 5.0),
        (2**1100, 5.0),  # no double at all
        (SecretInt(3), 5.0),
        (True, 5.0),
        (3, SecretInt(5)),
        (3, SecretFloat(5.0)),
        OutboxStats(2**60 + 1, 5.0, {"pending": 3}, None),
    ],
    ids=[
        "2**53",
        "2**60+1",
        "2**1100",
        "int-subclass",
        "bool",
        "age-int-sub",
        "age-float-sub",
        "stats",
    ],
)
def test_a_depth_or_age_that_is_no_bounded_number_fails_both_gauges(
    stats: Any, syncperf_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """As ``rows`` and ``attempts``: an int in [0, 2**53), exactly; an age an exact number."""
    outbox = Outbox("orders", stats=lambda: stats)
    try:
        names = {m.name for m in syncperf_capture.metrics()}
        assert "outbox.depth" not in names and "outbox.oldest_age" not in names
        assert probe_failures(syncperf_capture) == {"TypeError": 1}
        warnings = [r for r in caplog.records if r.name.startswith("syncperf")]
        assert len(warnings) == 1 and "failed" in warnings[0].getMessage()
        assert SECRET not in caplog.text
    finally:
        outbox.close()


@given(
    depth=st.integers(min_value=-(2**70), max_value=2**70),
    age=st.one_of(st.none(), st.floats(), st.integers(min_value=-(2**70), max_value=2**70)),
)
def test_any_depth_and_age_are_exported_exactly_or_fail_together(depth: int, age: Any) -> None:
    with capture() as cap:
        outbox = Outbox("fuzzed", stats=lambda: (depth, age))
        metrics = {
            m.name: m.data.data_points[0].value
            for m in cap.metrics()
            if m.name.startswith("outbox.")
        }
        outbox.close()
    age_ok = age is None or -MAX_SKEW <= age < math.inf  # NaN is not
    if 0 <= depth < 2**53 and (depth == 0 or age_ok):  # an empty outbox is age 0 whatever
        assert metrics["outbox.depth"] == depth
        expected = 0 if depth == 0 else None if age is None else max(0.0, float(age))
        assert metrics.get("outbox.oldest_age") == expected
    else:
        assert "outbox.depth" not in metrics and "outbox.oldest_age" not in metrics


@pytest.mark.parametrize("age", [math.inf, -math.inf, math.nan, 10**400])
def test_a_non_finite_oldest_age_is_nonsense_and_counts_as_a_failure(
    syncperf_capture: Capture, age: Any
) -> None:
    outbox = Outbox("orders", stats=lambda: (3, age))
    try:
        names = {m.name for m in syncperf_capture.metrics()}
        assert "outbox.depth" not in names and "outbox.oldest_age" not in names
        assert probe_failures(syncperf_capture) == {"TypeError": 1}
    finally:
        outbox.close()


@pytest.mark.parametrize("age", [-7200 * 1000.0, -MAX_SKEW - 1, -(2**52)])
def test_an_oldest_age_far_below_zero_is_a_failure_not_age_0(
    age: float, syncperf_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """``now - created_at_ms / 1000`` done as ``now - created_at_ms``: a huge negative age."""
    outbox = Outbox("orders", stats=lambda: (3, age))
    try:
        names = {m.name for m in syncperf_capture.metrics()}
        assert "outbox.depth" not in names and "outbox.oldest_age" not in names
        assert probe_failures(syncperf_capture) == {"invalid_created_at": 1}
        assert "in the future" in caplog.text and str(int(age)) not in caplog.text
    finally:
        outbox.close()


def test_an_oldest_age_a_little_below_zero_is_clock_skew_and_reads_0(
    syncperf_capture: Capture,
) -> None:
    outbox = Outbox("orders", stats=lambda: (3, -MAX_SKEW / 2))
    assert gauge(syncperf_capture, "outbox.oldest_age") == 0
    assert probe_failures(syncperf_capture) == {}
    outbox.close()


@pytest.mark.parametrize(
    "bad",
    ["pend\ud800", "x" * 100_000, "a\nb", "", 7, None],
    ids=["surrogate", "100kb", "newline", "empty", "int", "none"],
)
def test_a_status_no_exporter_can_carry_is_dropped_and_counted_and_the_rest_reported(
    bad: Any, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    with capture(strict=False, prometheus=registry) as cap:
        outbox = Outbox("orders", stats=lambda: OutboxStats(1, 5.0, rows={bad: 9, "pending": 1}))
        for _ in range(2):  # every scrape works
            text = generate_latest(registry).decode("utf-8")
        assert 'outbox_status="pending"' in text
        assert len(text) < 20_000
        rows = cap.points("outbox.rows", {"outbox.name": "orders"})
        assert {p.attributes["outbox.status"]: p.value for p in rows} == {"pending": 1}
        assert gauge(cap, "outbox.depth") == 1
        assert gauge(cap, "outbox.oldest_age") == 5.0
        assert set(probe_failures(cap)) == {"invalid_status"}
        outbox.close()
    assert "left out of outbox.rows" in caplog.text
    if isinstance(bad, str) and bad:
        assert bad not in caplog.text


def test_more_than_20_statuses_keep_the_20_largest_and_fold_the_rest_into_other(
    syncperf_capture: Capture,
) -> None:
    rows = {f"s{i:02}": 100 - i for i in range(25)} | {"z_tie": 81, "a_tie": 81}
    outbox = Outbox("orders", stats=lambda: OutboxStats(4, 2.0, rows=rows))
    points = syncperf_capture.points("outbox.rows", {"outbox.name": "orders"})
    reported = {p.attributes["outbox.status"]: p.value for p in points}
    kept = {f"s{i:02}": 100 - i for i in range(19)} | {"a_tie": 81}  # s19, z_tie: 81 too
    assert reported == kept | {"_other": sum(rows.values()) - sum(kept.values())}
    assert gauge(syncperf_capture, "outbox.depth") == 4
    assert gauge(syncperf_capture, "outbox.oldest_age") == 2.0
    assert probe_failures(syncperf_capture) == {}
    outbox.close()


@given(st.dictionaries(st.text(max_size=3), st.integers(min_value=0, max_value=10**6)))
def test_folded_statuses_keep_the_total_and_report_at_most_21_values(
    rows: dict[str, int],
) -> None:
    stats = _validate(OutboxStats(1, 1.0, rows=rows))
    assert stats.rows is not None
    assert len(stats.rows) <= MAX_STATUSES + 1
    assert sum(stats.rows.values()) == sum(n for k, n in rows.items() if gate.name(k))


def test_a_slow_callback_times_out_and_the_next_collection_fails_fast(
    syncperf_capture: Capture,
) -> None:
    release = threading.Event()

    def slow() -> OutboxStats:
        release.wait(5)
        return OutboxStats(1, 1.0)

    outbox = Outbox("orders", stats=slow, stats_timeout=0.05)
    started = time.monotonic()
    assert gauge(syncperf_capture, "outbox.depth") is None
    assert gauge(syncperf_capture, "outbox.depth") is None
    assert time.monotonic() - started < 1.0
    assert probe_failures(syncperf_capture) == {"timeout": 1, "busy": 1}
    release.set()
    deadline = time.monotonic() + 30  # each try has 50 ms: a loaded machine misses some
    while gauge(syncperf_capture, "outbox.depth") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gauge(syncperf_capture, "outbox.depth") == 1
    outbox.close()


def _depth_lines(registry: CollectorRegistry) -> list[str]:
    body = generate_latest(registry).decode()
    return [line for line in body.splitlines() if line.startswith("outbox_depth")]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads (3.12+)
@pytest.mark.parametrize("stats_timeout", [10.0, 0.05], ids=["inside", "timed_out"])
def test_a_worker_forked_while_the_parent_probes_runs_its_own_probe(
    stats_timeout: float,
) -> None:
    # gunicorn --preload forks a worker while the master's export is inside a probe: the
    # worker inherited the runner's lock held ("inside": its collections hung for ever,
    # holding the registry's) or the parent's call still running ("timed_out": busy for ever).
    parent = os.getpid()
    entered, release = threading.Event(), threading.Event()

    def stats() -> OutboxStats:
        if os.getpid() == parent:
            entered.set()
            release.wait(10)
        return OutboxStats(3, 1.5)

    registry = CollectorRegistry()
    with capture(strict=False, prometheus=registry):
        outbox = Outbox("orders", stats=stats, stats_timeout=stats_timeout)
        collecting = threading.Thread(target=generate_latest, args=(registry,))
        collecting.start()
        assert entered.wait(5)
        if stats_timeout < 1:
            collecting.join(5)  # the parent's collection gave up; its call still runs
        try:
            child = in_a_worker(lambda: [_depth_lines(registry) for _ in range(2)], timeout=30)
        finally:
            release.set()
            collecting.join(10)
            outbox.close()
    assert child == [['outbox_depth{outbox_name="orders"} 3.0']] * 2


def test_gauges_follow_configure_and_capture() -> None:
    outbox = Outbox("orders", stats=lambda: (2, 9.0))
    with capture() as first:
        assert gauge(first, "outbox.depth") == 2
    with capture() as second:
        assert gauge(second, "outbox.oldest_age") == 9.0
    outbox.close()


def test_closed_outboxes_stop_reporting(syncperf_capture: Capture) -> None:
    outbox = Outbox("orders", stats=lambda: (2, 9.0))
    assert gauge(syncperf_capture, "outbox.depth") == 2
    outbox.close()
    with capture() as later:
        assert later.metric("outbox.depth") is None


def _other_gauges(cap: Capture) -> dict[str, Any]:
    rows = cap.points("outbox.rows", {"outbox.name": "_other"})
    return {
        "depth": gauge(cap, "outbox.depth", "_other"),
        "oldest_age": gauge(cap, "outbox.oldest_age", "_other"),
        "rows": {p.attributes["outbox.status"]: p.value for p in rows},
        "attempts": gauge(cap, "outbox.attempts", "_other"),
    }


def _flat(point: tuple[dict[str, Any], float]) -> tuple[tuple[tuple[str, Any], ...], float]:
    return tuple(sorted(point[0].items())), point[1]


@given(
    st.lists(
        st.tuples(st.sampled_from(["_other", "orders"]), st.floats(0, 1e9), st.booleans()),
        max_size=6,
    )
)
def test_the_other_outboxes_points_are_summed_or_the_oldest_taken_the_rest_kept(
    answers: list[tuple[str, float, bool]],
) -> None:
    # The combination itself, over any mix of the outboxes' answers (one callback each).
    callbacks = GaugeCallbacks(None)  # type: ignore[arg-type]
    for token, (name, value, pending) in enumerate(answers):
        points = [({"outbox.name": name, "outbox.status": "pending"}, value)] if pending else []
        callbacks.callbacks[token] = {
            gauge: lambda p=points, a={"outbox.name": name}, v=value: [(a, v), *p]
            for gauge in ("outbox.depth", "outbox.oldest_age", "outbox.rows")
        }
    other = [(v, p) for n, v, p in answers if n == "_other"]
    kept = [({"outbox.name": "orders"}, v) for n, v, _ in answers if n == "orders"]
    kept += [({"outbox.name": "orders", "outbox.status": "pending"}, v)
             for n, v, p in answers if n == "orders" and p]  # fmt: skip
    for gauge, combine in (("outbox.depth", sum), ("outbox.oldest_age", max)):
        points = callbacks.observe(gauge)()
        named = [p for p in points if p[0]["outbox.name"] != "_other"]
        assert sorted(map(_flat, named)) == sorted(map(_flat, kept))
        combined = dict(_flat(p) for p in points if p[0]["outbox.name"] == "_other")
        assert len(combined) == len([a for a, _ in points if a["outbox.name"] == "_other"])
        expected: dict[Any, float] = {}
        if other:
            expected[(("outbox.name", "_other"),)] = combine(v for v, _ in other)
        if any(p for _, p in other):
            key = (("outbox.name", "_other"), ("outbox.status", "pending"))
            expected[key] = combine(v for v, p in other if p)
        assert combined == pytest.approx(expected)


def test_a_stuck_outbox_past_the_name_bound_is_not_hidden_by_a_healthy_one(
    syncperf_capture: Capture,
) -> None:
    for index in range(MAX_NAMES):
        Outbox(f"box{index}").enqueue()
    stuck = Outbox("stuck", stats=lambda: OutboxStats(500, 1000.0, {"pending": 500, "dead": 2}, 9))
    healthy = Outbox("healthy", stats=lambda: OutboxStats(1, 10.0, {"pending": 1}, 1))
    named = Outbox("box0", stats=lambda: (3, 5.0))  # a bound name is reported as itself
    assert _other_gauges(syncperf_capture) == {
        "depth": 501,
        "oldest_age": 1000.0,
        "rows": {"pending": 501, "dead": 2},
        "attempts": 10,
    }
    assert gauge(syncperf_capture, "outbox.depth", "box0") == 3
    for outbox in (stuck, healthy, named):
        outbox.close()


def test_an_outbox_the_application_drops_is_not_kept_alive_and_stops_reporting(
    syncperf_capture: Capture,
) -> None:
    import gc
    import weakref

    outbox = Outbox("orders", stats=lambda: (2, 9.0))
    outbox.enqueue(1)  # binds its series on the runtime
    assert gauge(syncperf_capture, "outbox.depth") == 2
    gone = weakref.ref(outbox)
    del outbox
    gc.collect()
    assert gone() is None
    assert syncperf_capture.metric("outbox.depth") is None


# --- the SQLAlchemy probe ----------------------------------------------------------------

metadata = MetaData()
outbox_table = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("aggregatetype", String),
    Column("status", String, default="pending"),
    Column("created_at", DateTime(timezone=True)),
    Column("attempts", Integer, default=0),
)


@pytest.fixture
def engine(tmp_path: Any) -> Any:
    engine = create_engine(f"sqlite:///{tmp_path / 'outbox.db'}")  # shared by the probe thread
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_probe_counts_pending_rows_and_ages_the_oldest(engine: Any) -> None:
    now = datetime.now(timezone.utc)
    with engine.begin() as connection:
        connection.execute(
            insert(outbox_table),
            [
                {"status": "pending", "created_at": now - timedelta(seconds=120)},
                {"status": "pending", "created_at": now - timedelta(seconds=10)},
                {"status": "published", "created_at": now - timedelta(seconds=900)},
            ],
        )
    stats = sqlalchemy_probe(engine, status="status")()
    assert stats.depth == 2
    assert stats.oldest_age is not None and 119 < stats.oldest_age < 130


def test_probe_without_status_counts_every_row(engine: Any) -> None:
    assert sqlalchemy_probe(engine)() == OutboxStats(0, None)
    with engine.begin() as connection:
        connection.execute(insert(outbox_table), [{"status": "x", "created_at": None}])
    assert sqlalchemy_probe(engine)().depth == 1


def test_probe_feeds_the_gauges(engine: Any, syncperf_capture: Capture) -> None:
    outbox = Outbox("orders", stats=sqlalchemy_probe(engine, status="status"))
    assert gauge(syncperf_capture, "outbox.depth") == 0
    with engine.begin() as connection:
        connection.execute(
            insert(outbox_table),
            [
                {"created_at": datetime.now(timezone.utc) - timedelta(seconds=60)},
            ],
        )
    assert gauge(syncperf_capture, "outbox.depth") == 1
    age = gauge(syncperf_capture, "outbox.oldest_age")
    assert age is not None and 59 < age < 70
    outbox.close()


def test_probe_totals_count_every_row_by_status_and_sum_the_attempts(
    engine: Any, syncperf_capture: Capture
) -> None:
    now = datetime.now(timezone.utc)
    with engine.begin() as connection:
        connection.execute(
            insert(outbox_table),
            [
                {"status": "pending", "created_at": now - timedelta(seconds=30), "attempts": 1},
                {"status": "published", "created_at": now - timedelta(seconds=90), "attempts": 2},
                {"status": "published", "created_at": now, "attempts": 1},
                {"status": "dead", "created_at": now, "attempts": 3},
            ],
        )
    probe = sqlalchemy_probe(engine, status="status", totals=True, attempts="attempts")
    stats = probe()
    assert stats.depth == 1
    assert stats.oldest_age is not None and 29 < stats.oldest_age < 40
    assert stats.rows == {"pending": 1, "published": 2, "dead": 1}
    assert stats.attempts == 7
    outbox = Outbox("orders", stats=probe)
    rows = syncperf_capture.points("outbox.rows", {"outbox.name": "orders"})
    assert {p.attributes["outbox.status"]: p.value for p in rows} == stats.rows
    assert gauge(syncperf_capture, "outbox.attempts") == 7
    assert gauge(syncperf_capture, "outbox.depth") == 1
    outbox.close()


@pytest.mark.parametrize("totals", [False, True])
def test_probe_skips_a_pending_status_whose_rows_have_no_created_at(
    engine: Any, totals: bool
) -> None:
    now = datetime.now(timezone.utc)
    with engine.begin() as connection:
        connection.execute(
            insert(outbox_table),
            [
                {"status": "a", "created_at": now - timedelta(seconds=60)},
                {"status": "b", "created_at": None},
            ],
        )
    stats = sqlalchemy_probe(engine, status="status", pending=("a", "b"), totals=totals)()
    assert stats.depth == 2
    assert stats.oldest_age is not None and 59 < stats.oldest_age < 70


def test_probe_totals_report_rows_without_a_status_as_null(engine: Any) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(outbox_table),
            [
                {"status": "pending", "created_at": datetime.now(timezone.utc)},
                {"status": None, "created_at": None},
            ],
        )
    stats = sqlalchemy_probe(engine, status="status", totals=True)()
    assert stats.rows == {"pending": 1, "_null": 1}
    assert stats.depth == 1


def test_probe_totals_strip_the_padding_of_fixed_width_statuses(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'padded.db'}")
    with engine.begin() as connection:  # SQLite keeps what it is given: char(n) padding, say
        connection.exec_driver_sql("CREATE TABLE outbox (status TEXT, created_at TEXT)")
        connection.exec_driver_sql(
            "INSERT INTO outbox VALUES ('pending   ', NULL), ('pending', NULL), ('done   ', NULL)"
        )
    pending = ("pending", "pending   ")
    stats = sqlalchemy_probe(engine, status="status", pending=pending, totals=True)()
    engine.dispose()
    assert stats.rows == {"pending": 2, "done": 1}
    assert stats.depth == 2


def test_probe_with_21_statuses_still_reports_depth_and_folds_the_smallest_into_other(
    engine: Any, syncperf_capture: Capture
) -> None:
    now = datetime.now(timezone.utc)
    values = [{"status": "pending", "created_at": now - timedelta(seconds=30), "attempts": 1}]
    values += [{"status": f"s{i:02}", "created_at": now, "attempts": 0} for i in range(20)]
    values += [{"status": "s00", "created_at": now, "attempts": 0}]
    with engine.begin() as connection:
        connection.execute(insert(outbox_table), values)
    probe = sqlalchemy_probe(engine, status="status", totals=True, attempts="attempts")
    outbox = Outbox("orders", stats=probe)
    assert gauge(syncperf_capture, "outbox.depth") == 1
    age = gauge(syncperf_capture, "outbox.oldest_age")
    assert age is not None and 29 < age < 40
    rows = syncperf_capture.points("outbox.rows", {"outbox.name": "orders"})
    reported = {p.attributes["outbox.status"]: p.value for p in rows}
    assert len(reported) == 21 and reported["_other"] == 1 and reported["s00"] == 2
    assert "s19" not in reported  # the 19 statuses of 1 row after s00 and pending: by name
    assert probe_failures(syncperf_capture) == {}
    outbox.close()


def test_probe_of_a_created_at_in_epoch_milliseconds_fails_and_says_so(
    tmp_path: Any, syncperf_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """A BIGINT column written by ``Date.now()`` or ``System.currentTimeMillis()``."""
    millis_table = Table(
        "outbox",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("created_at", BigInteger),
    )
    engine = create_engine(f"sqlite:///{tmp_path / 'millis.db'}")
    millis_table.metadata.create_all(engine)
    millis = int((time.time() - 7200) * 1000)
    with engine.begin() as connection:
        connection.execute(insert(millis_table), [{"created_at": millis}])
    outbox = Outbox("orders", stats=sqlalchemy_probe(engine))
    try:
        names = {m.name for m in syncperf_capture.metrics()}
        assert "outbox.depth" not in names and "outbox.oldest_age" not in names
        assert probe_failures(syncperf_capture) == {"invalid_created_at": 1}
        with engine.begin() as connection:  # the same table in POSIX seconds: 2 h old
            connection.execute(millis_table.update().values(created_at=millis // 1000))
        age = gauge(syncperf_capture, "outbox.oldest_age")
        assert age is not None and 7199 < age < 7260
    finally:
        outbox.close()
        engine.dispose()
    (warning,) = [r for r in caplog.records if r.name.startswith("syncperf")]
    assert "milliseconds" in warning.getMessage()
    assert str(millis) not in caplog.text and str(millis // 1000) not in caplog.text


def test_probe_on_a_missing_table_fails_without_raising(
    syncperf_capture: Capture, tmp_path: Any
) -> None:
    # A file, not ``:memory:``: the probe's thread opens its own connection, and a memory
    # database's pool (one connection per thread, each usable by its thread only) cannot close
    # it from this one: Python 3.13 warns of it (ResourceWarning) when it is collected.
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    outbox = Outbox("orders", stats=sqlalchemy_probe(engine, "nope"))
    assert gauge(syncperf_capture, "outbox.depth") is None
    assert probe_failures(syncperf_capture) == {"sqlalchemy.exc.OperationalError": 1}
    outbox.close()
    engine.dispose()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("table", ""),
        ("status", ""),
        ("pending", "pending"),
        ("pending", ()),
        ("timeout", 0),
        ("timeout", float("inf")),
        ("totals", True),  # needs a status column
        ("attempts", "attempts"),  # needs totals=True
    ],
)
def test_probe_rejects_bad_options(engine: Any, option: str, value: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        sqlalchemy_probe(engine, **{option: value})
    assert raised.value.option == option


def test_probe_asks_for_a_sync_engine() -> None:
    with pytest.raises(ConfigError) as raised:
        sqlalchemy_probe("sqlite://")  # type: ignore[arg-type]
    assert raised.value.option == "engine"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("engine", "postgresql://postgres:SuperSecretPw9@db.example/app"),
        ("engine", {"url": "postgresql://postgres:SuperSecretPw9@db.example/app"}),
        ("table", ["SELECT 'SuperSecretPw9'"]),
        ("status", ["SELECT 'SuperSecretPw9'"]),
        ("attempts", ["SELECT 'SuperSecretPw9'"]),
    ],
)
def test_probe_errors_do_not_quote_a_url_or_sql(engine: Any, option: str, value: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        if option == "engine":
            sqlalchemy_probe(value)
        else:
            sqlalchemy_probe(engine, **{option: value})
    assert raised.value.option == option
    for text in (str(raised.value), repr(raised.value), repr(raised.value.value)):
        assert "SuperSecretPw9" not in text


def test_probe_refuses_the_sync_engine_of_an_async_engine(tmp_path: Any) -> None:
    # its connections need the event loop's greenlet: every collection would fail
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
    try:
        with pytest.raises(ConfigError) as raised:
            sqlalchemy_probe(async_engine.sync_engine)
    finally:
        asyncio.run(async_engine.dispose())
    assert raised.value.option == "engine"
    assert "Engine" in str(raised.value) and "synchronous" in raised.value.accepted


@pytest.mark.parametrize(
    ("attempts", "total", "failures"),
    [
        ([1.0, 2.0], 3, {}),  # a REAL column of whole counts
        ([2.7], None, {"TypeError": 1}),  # no attempt count: nonsense, never 2
        ([1, 0.5], None, {"TypeError": 1}),
    ],
)
def test_probe_attempt_sums_must_be_whole_numbers(
    tmp_path: Any,
    syncperf_capture: Capture,
    attempts: list[float],
    total: int | None,
    failures: dict[str, float],
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'real.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE outbox (status TEXT, created_at TEXT, attempts REAL)"
        )
        for n in attempts:
            connection.exec_driver_sql(
                "INSERT INTO outbox VALUES ('published', '2026-01-01 00:00:00', ?)", (n,)
            )
    probe = sqlalchemy_probe(engine, status="status", totals=True, attempts="attempts")
    outbox = Outbox("orders", stats=probe)
    try:
        assert gauge(syncperf_capture, "outbox.attempts") == total
        assert probe_failures(syncperf_capture) == failures
    finally:
        outbox.close()
        engine.dispose()


@pytest.mark.parametrize(
    ("value", "whole"),
    [
        (None, 0),
        (3, 3),
        (Decimal("12"), 12),  # PostgreSQL's sum of a bigint or numeric column
        (Decimal("12.000"), 12),
        (4.0, 4),
        (Decimal("2.7"), None),
        (2.7, None),
        (float("nan"), None),
        (float("inf"), None),
        (Decimal("NaN"), None),
        (Decimal("sNaN"), None),
        (True, None),
        ("3", None),
    ],
)
def test_an_attempt_sum_is_an_int_or_a_whole_decimal_or_float(
    value: Any, whole: int | None
) -> None:
    if whole is None:
        with pytest.raises(TypeError):
            _attempt_sum(value)
    else:
        assert _attempt_sum(value) == whole
        assert type(_attempt_sum(value)) is int


# --- counting enqueues when the session commits ------------------------------------------


def test_enqueue_with_a_session_counts_on_commit_only(
    engine: Any, syncperf_capture: Capture
) -> None:
    outbox = Outbox("orders")
    with Session(engine) as session:
        outbox.enqueue(2, session=session)
        outbox.enqueue(session=session)
        assert syncperf_capture.total("outbox.messages", {"outbox.event": "enqueued"}) == 0
        session.commit()
    assert syncperf_capture.total("outbox.messages", {"outbox.event": "enqueued"}) == 3


def test_enqueue_with_a_session_is_forgotten_on_rollback_or_close(
    engine: Any, syncperf_capture: Capture
) -> None:
    outbox = Outbox("orders")
    with Session(engine) as session:
        session.execute(insert(outbox_table).values(status="pending"))
        outbox.enqueue(session=session)
        session.rollback()
    with Session(engine) as session:
        session.execute(insert(outbox_table).values(status="pending"))
        outbox.enqueue(session=session)
    with Session(engine) as session:  # a later commit does not count the forgotten ones
        session.execute(insert(outbox_table).values(status="pending"))
        outbox.enqueue(session=session)
        session.commit()
    assert syncperf_capture.total("outbox.messages", {"outbox.event": "enqueued"}) == 1


def test_enqueue_inside_a_savepoint_counts_with_the_outer_commit(
    engine: Any, syncperf_capture: Capture
) -> None:
    outbox = Outbox("orders")
    with Session(engine) as session:
        with session.begin_nested():
            outbox.enqueue(session=session)
        session.commit()
    assert syncperf_capture.total("outbox.messages", {"outbox.event": "enqueued"}) == 1


def enqueued(cap: Capture) -> float:
    return cap.total("outbox.messages", {"outbox.event": "enqueued"})


def rows(engine: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(outbox_table)).scalar())


def test_enqueue_inside_a_savepoint_that_rolls_back_is_forgotten(
    engine: Any, syncperf_capture: Capture
) -> None:
    outbox = Outbox("orders")
    with Session(engine) as session, session.begin():
        savepoint = session.begin_nested()
        session.execute(insert(outbox_table).values(status="pending"))
        outbox.enqueue(session=session)
        savepoint.rollback()
    assert rows(engine) == 0
    assert enqueued(syncperf_capture) == 0


def test_enqueue_inside_a_released_savepoint_waits_for_the_outer_commit(
    engine: Any, syncperf_capture: Capture
) -> None:
    outbox = Outbox("orders")
    with Session(engine) as session:
        with session.begin_nested():
            outbox.enqueue(2, session=session)
        assert enqueued(syncperf_capture) == 0  # released, not committed yet
        session.rollback()
    assert enqueued(syncperf_capture) == 0
    with Session(engine) as session:
        with session.begin_nested():
            outbox.enqueue(2, session=session)
        session.commit()
    assert enqueued(syncperf_capture) == 2


def test_nested_savepoints_count_exactly_what_survives(
    engine: Any, syncperf_capture: Capture
) -> None:
    outbox = Outbox("orders")
    with Session(engine) as session:
        session.execute(insert(outbox_table).values(status="pending"))
        outbox.enqueue(session=session)  # root: kept
        with session.begin_nested():
            session.execute(insert(outbox_table).values(status="pending"))
            outbox.enqueue(10, session=session)  # released into the root: kept
            inner = session.begin_nested()
            session.execute(insert(outbox_table).values(status="pending"))
            outbox.enqueue(100, session=session)
            inner.rollback()  # forgotten
            with session.begin_nested():
                session.execute(insert(outbox_table).values(status="pending"))
                outbox.enqueue(1000, session=session)  # kept
        failed = session.begin_nested()
        outbox.enqueue(10_000, session=session)
        failed.rollback()  # forgotten
        session.commit()
    assert rows(engine) == 3
    assert enqueued(syncperf_capture) == 1011


def sqlite_with_savepoints() -> Any:
    """An in-memory SQLite engine whose savepoints behave (SQLAlchemy's pysqlite recipe).

    pysqlite emits no BEGIN before a SAVEPOINT, so a savepoint opened first is the outermost
    transaction and releasing it commits for good: a later rollback or close would not undo
    its rows while SQLAlchemy (and syncperf's count) takes them as rolled back.
    """
    engine = create_engine("sqlite://")

    @event.listens_for(engine, "connect")
    def no_implicit_begin(connection: Any, record: Any) -> None:
        connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


@settings(deadline=None)  # an engine per example: slow on a busy machine
@given(st.lists(st.sampled_from(["enqueue", "nest", "release", "rollback"]), max_size=12))
def test_the_enqueued_count_matches_the_rows_any_savepoint_sequence_left(
    steps: list[str],
) -> None:
    engine = sqlite_with_savepoints()
    metadata.create_all(engine)
    outbox = Outbox("orders")
    with capture() as cap:
        with Session(engine) as session:
            savepoints: list[Any] = []
            for step in steps:
                if step == "enqueue":
                    session.execute(insert(outbox_table).values(status="pending"))
                    outbox.enqueue(session=session)
                elif step == "nest":
                    savepoints.append(session.begin_nested())
                elif savepoints and step == "release":
                    savepoints.pop().commit()
                elif savepoints:
                    savepoints.pop().rollback()
            session.commit()
        assert enqueued(cap) == rows(engine)
    engine.dispose()


class OutboxRow:
    """An outbox row written with ``session.add()``, which begins no transaction."""

    def __init__(self) -> None:
        self.status = "pending"


registry().map_imperatively(OutboxRow, outbox_table)


def test_an_enqueue_before_the_session_began_counts_with_the_transaction_that_follows(
    engine: Any, syncperf_capture: Capture
) -> None:
    outbox = Outbox("orders")
    with Session(engine) as session:  # the insert begins it
        outbox.enqueue(session=session)
        session.execute(insert(outbox_table).values(status="pending"))
        session.commit()
    with Session(engine) as session:  # commit() begins and commits it
        outbox.enqueue(session=session)
        session.add(OutboxRow())
        session.commit()
    with Session(engine) as session:  # an explicit begin after the enqueue
        outbox.enqueue(session=session)
        with session.begin():
            session.add(OutboxRow())
    with Session(engine) as session:  # begun by the insert, rolled back
        outbox.enqueue(session=session)
        session.execute(insert(outbox_table).values(status="pending"))
        session.rollback()
    assert (rows(engine), enqueued(syncperf_capture)) == (3, 3)


@pytest.mark.parametrize("end", ["close", "reset", "expunge_all"])
def test_an_enqueue_before_the_session_began_is_forgotten_when_it_closes(
    end: str, engine: Any, syncperf_capture: Capture
) -> None:
    """``expunge_all()`` too: on a session with nothing begun it is all ``close()`` does (the
    same state afterwards), and it drops the rows ``add()`` gave the session so far."""
    outbox = Outbox("orders")
    session = Session(engine)
    outbox.enqueue(2, session=session)  # a push that gave up before writing its row
    getattr(session, end)()  # nothing began: SQLAlchemy sends no transaction event
    with session.begin():  # the session used again
        session.add(OutboxRow())
    outbox.enqueue(session=session)
    session.add(OutboxRow())
    session.commit()
    session.close()
    assert (rows(engine), enqueued(syncperf_capture)) == (2, 1)


async def test_an_async_session_closed_before_it_began_forgets_the_enqueue(
    tmp_path: Any, syncperf_capture: Capture
) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    outbox = Outbox("orders")
    session = AsyncSession(engine)
    outbox.enqueue(session=session)
    await session.close()
    outbox.enqueue(session=session)  # the session used again: the first enqueue is gone
    session.add(OutboxRow())
    await session.commit()
    await session.close()
    await engine.dispose()
    assert enqueued(syncperf_capture) == 1


def test_enqueue_with_a_scoped_session_counts_on_commit_only(
    engine: Any, syncperf_capture: Capture
) -> None:
    """The registry proxy (Flask-SQLAlchemy's ``db.session``) stands for its current Session."""
    outbox = Outbox("orders")
    scoped = scoped_session(sessionmaker(engine))
    with pytest.raises(BrokerDown), scoped.begin():
        scoped.execute(insert(outbox_table).values(status="pending"))
        outbox.enqueue(session=scoped)
        raise BrokerDown  # the push is rejected: its transaction rolls back
    scoped.remove()
    with scoped.begin():
        scoped.execute(insert(outbox_table).values(status="pending"))
        outbox.enqueue(2, session=scoped)
        assert enqueued(syncperf_capture) == 0
    outbox.enqueue(session=scoped)  # before the session began: the next transaction's
    scoped.add(OutboxRow())
    scoped.commit()
    scoped.remove()
    assert (rows(engine), enqueued(syncperf_capture)) == (2, 3)


async def test_enqueue_with_an_async_scoped_session_counts_on_commit_only(
    tmp_path: Any, syncperf_capture: Capture
) -> None:
    from sqlalchemy.ext.asyncio import (
        async_scoped_session,
        async_sessionmaker,
        create_async_engine,
    )

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    outbox = Outbox("orders")
    scoped = async_scoped_session(async_sessionmaker(engine), scopefunc=asyncio.current_task)
    await scoped.execute(insert(outbox_table).values(status="pending"))
    outbox.enqueue(session=scoped)
    await scoped.rollback()
    outbox.enqueue(2, session=scoped)  # before the next transaction began: counts with it
    scoped.add(OutboxRow())
    await scoped.commit()
    await scoped.remove()
    await engine.dispose()
    assert enqueued(syncperf_capture) == 2


class BrokerDown(Exception):
    pass


@settings(deadline=None)  # an engine per example: slow on a busy machine
@given(
    st.lists(
        st.sampled_from(
            ["insert", "add", "abandon", "nest", "release", "rollback", "commit", "close"]
        ),
        max_size=14,
    )
)
def test_the_enqueued_count_matches_the_rows_whatever_the_session_did(steps: list[str]) -> None:
    """``insert`` and ``add`` write a row after the enqueue (each begins a transaction when
    none has begun); ``abandon`` closes the session right after the enqueue."""
    engine = sqlite_with_savepoints()
    metadata.create_all(engine)
    outbox = Outbox("orders")
    with capture() as cap, Session(engine) as session:
        savepoints: list[Any] = []
        for step in steps:
            if step in ("insert", "add", "abandon"):
                outbox.enqueue(session=session)
            if step == "add":
                session.add(OutboxRow())
            elif step == "insert":
                session.execute(insert(outbox_table).values(status="pending"))
            elif step == "nest":
                savepoints.append(session.begin_nested())
            elif savepoints and step in ("release", "rollback"):
                getattr(savepoints.pop(), "commit" if step == "release" else "rollback")()
            elif step in ("commit", "close", "abandon"):
                getattr(session, "commit" if step == "commit" else "close")()
                savepoints.clear()
        session.commit()
        assert enqueued(cap) == rows(engine)
    engine.dispose()


def test_enqueue_rejects_a_session_that_is_not_sqlalchemy(syncperf_capture: Capture) -> None:
    with pytest.raises(MeasurementError):
        Outbox("orders").enqueue(session=object())


def test_push_writes_row_and_enqueue_in_one_transaction(
    engine: Any, syncperf_capture: Capture
) -> None:
    outbox = Outbox("orders")

    @syncperf.instrument_sync("push", entity="order")
    def push(fail: bool) -> None:
        with Session(engine) as session, session.begin():
            session.execute(
                insert(outbox_table).values(
                    status="pending", aggregatetype=outbox.enqueue(session=session)
                )
            )
            if fail:
                raise ValueError("conflict")

    push(False)
    with pytest.raises(ValueError, match="conflict"):
        push(True)
    assert syncperf_capture.total("outbox.messages", {"outbox.event": "enqueued"}) == 1
    with Session(engine) as session:
        assert session.query(outbox_table).count() == 1


def test_two_open_outboxes_with_stats_may_not_share_a_name() -> None:
    from syncperf import ConfigError
    from syncperf.outbox import Outbox

    first = Outbox("dup_name", stats=lambda: (5, 1.0))
    try:
        with pytest.raises(ConfigError, match="dup_name"):
            Outbox("dup_name", stats=lambda: (7, 1.0))
    finally:
        first.close()
    Outbox("dup_name", stats=lambda: (7, 1.0)).close()  # fine once the first is closed
