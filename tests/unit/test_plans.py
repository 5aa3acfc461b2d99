"""Query plans of sync statements: the analysis of plans, the options, SQLite end to end."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import syncperf
from syncperf._config import Config
from syncperf.exceptions import ConfigError
from syncperf.sqlalchemy import EngineInstrumentation, PlanOptions, instrument_engine
from syncperf.sqlalchemy._explain import Finding, _summary, postgresql_findings, sqlite_findings
from syncperf.sqlalchemy._plans import Planner
from syncperf.testing import Capture, capture

SECRET = "pl4n_un1t_s3cr3t"
WORK_MEM = 4 * 1024 * 1024


def _scan(table: str, rows: float, width: int = 40, **extra: Any) -> dict[str, Any]:
    return {
        "Node Type": "Seq Scan",
        "Relation Name": table,
        "Plan Rows": rows,
        "Plan Width": width,
        **extra,
    }


# --- PostgreSQL plans ---------------------------------------------------------------------


def test_a_seq_scan_of_a_large_table_is_a_finding_even_when_its_filter_keeps_few_rows() -> None:
    plan = _scan("todo", 3, Filter="(owner = 'x'::text)")
    assert postgresql_findings(plan, {"todo": 50_000}, WORK_MEM, 10_000) == [
        Finding("seq_scan", "todo", 50_000)
    ]


def test_a_seq_scan_of_a_small_table_is_not_a_finding() -> None:
    assert postgresql_findings(_scan("config", 12), {"config": 12}, WORK_MEM, 10_000) == []


def test_a_large_sort_and_a_sort_that_spills_are_findings() -> None:
    sort = {"Node Type": "Sort", "Plan Rows": 20_000, "Plan Width": 8, "Plans": [_scan("t", 1)]}
    assert [f.kind for f in postgresql_findings(sort, {}, WORK_MEM, 10_000)] == ["sort"]
    wide = {"Node Type": "Sort", "Plan Rows": 5_000, "Plan Width": 2_000, "Plans": [_scan("t", 1)]}
    assert postgresql_findings(wide, {}, WORK_MEM, 10_000) == [Finding("sort", "t", 5_000)]
    small = {"Node Type": "Sort", "Plan Rows": 50, "Plan Width": 8, "Plans": [_scan("t", 1)]}
    assert postgresql_findings(small, {}, WORK_MEM, 10_000) == []


def test_a_hash_join_whose_hash_exceeds_work_mem_is_a_finding() -> None:
    def join(rows: int) -> dict[str, Any]:
        hashed = {"Node Type": "Hash", "Plan Rows": rows, "Plan Width": 100}
        hashed["Plans"] = [_scan("item", rows, 100)]
        return {"Node Type": "Hash Join", "Plans": [_scan("todo", 10), hashed]}

    assert postgresql_findings(join(100_000), {"item": 0, "todo": 0}, WORK_MEM, 10**9) == [
        Finding("hash_join", "item", 100_000)
    ]
    assert postgresql_findings(join(1_000), {"item": 0, "todo": 0}, WORK_MEM, 10**9) == []


def test_one_finding_per_kind_and_table() -> None:
    plan = {"Node Type": "Append", "Plans": [_scan("t", 1), _scan("t", 1), _scan("u", 1)]}
    found = postgresql_findings(plan, {"t": 1e6, "u": 1e6}, WORK_MEM, 10)
    assert [(f.kind, f.table) for f in found] == [("seq_scan", "t"), ("seq_scan", "u")]


def test_the_plan_summary_names_nodes_tables_and_indexes_but_never_a_condition() -> None:
    plan = {
        "Node Type": "Sort",
        "Plan Rows": 10,
        "Total Cost": 9.5,
        "Sort Key": [f"(CASE WHEN owner = '{SECRET}' THEN 1 END)"],
        "Plans": [
            {
                "Node Type": "Index Scan",
                "Index Name": "todo_owner",
                "Relation Name": "todo",
                "Plan Rows": 10,
                "Total Cost": 8.0,
                "Index Cond": f"(owner = '{SECRET}'::text)",
                "Filter": f"(title <> '{SECRET}')",
                "Output": [f"'{SECRET}'::text"],
            }
        ],
    }
    summary = _summary(plan)
    assert summary == (
        "Sort (rows=10 cost=9.5) <- Index Scan using todo_owner on todo (rows=10 cost=8.0)"
    )
    assert SECRET not in summary


# --- SQLite plans -------------------------------------------------------------------------


def test_sqlite_scans_automatic_indexes_and_temp_sorts() -> None:
    details = [
        "SCAN t",
        "SEARCH b USING AUTOMATIC COVERING INDEX (x=?)",
        "USE TEMP B-TREE FOR ORDER BY",
    ]
    tables = {"t": ("todo", 20_000.0), "b": ("item", 30_000.0)}
    assert sqlite_findings(details, tables, "todo", 10_000) == [
        Finding("seq_scan", "todo", 20_000),
        Finding("seq_scan", "item", 30_000),
        Finding("sort", "item", 30_000),
    ]


def test_sqlite_index_searches_constant_rows_and_small_tables_are_not_findings() -> None:
    details = [
        "SEARCH t USING INDEX todo_owner (owner=?)",
        "SCAN CONSTANT ROW",
        "SCAN small",
        "USE TEMP B-TREE FOR ORDER BY",
    ]
    assert sqlite_findings(details, {"small": ("small", 40.0)}, "todo", 10_000) == []


# --- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("interval", -1),
        ("interval", float("inf")),
        ("interval", 1e300),  # would overflow as nanoseconds
        ("max_per_minute", 0),
        ("rows", 0),
        ("rows", 1.5),
        ("cost_jump", 1.0),
        ("timeout", 0),
        ("queue_size", True),
    ],
)
def test_a_bad_plan_option_is_a_config_error_naming_it(option: str, value: Any) -> None:
    with pytest.raises(ConfigError) as error:
        PlanOptions(**{option: value})
    assert error.value.option == option


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'plans.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE todo (id INTEGER PRIMARY KEY, owner TEXT, at INT)")
        conn.exec_driver_sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
            "INSERT INTO todo SELECT i, 'user' || (i % 50), i FROM n"
        )
    yield engine
    engine.dispose()


def test_plans_must_be_a_bool_none_or_plan_options(db: sa.Engine) -> None:
    with pytest.raises(ConfigError) as error:
        instrument_engine(db, plans="yes")
    assert error.value.option == "plans"


def test_plans_on_an_engine_that_cannot_have_them_is_a_config_error(tmp_path: Path) -> None:
    memory = sa.create_engine("sqlite://")  # another connection would see another database
    unsupported = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
    for engine in (memory, unsupported):
        with pytest.raises(ConfigError, match="synchronous driver"):
            instrument_engine(engine, plans=True)
    handle = instrument_engine(memory)  # plans follow the configuration: off, no error
    assert handle.plans is None
    handle.uninstrument()


def test_syncperf_plans_is_read_from_the_environment() -> None:
    assert Config.from_env({}).plans is False
    assert Config.from_env({"SYNCPERF_PLANS": "1"}).plans is True
    with pytest.raises(ConfigError) as error:
        Config.from_env({"SYNCPERF_PLANS": "sometimes"})
    assert error.value.option == "SYNCPERF_PLANS"


def test_plans_off_start_no_thread_and_add_no_state(
    syncperf_capture: Capture, db: sa.Engine
) -> None:
    handle = instrument_engine(db, plans=False)
    try:
        assert handle.plans is None
        with syncperf.sync_operation("pull"), db.connect() as conn:
            conn.execute(sa.text("SELECT id FROM todo WHERE owner = :o"), {"o": "user1"}).all()
    finally:
        handle.uninstrument()
    assert not [t for t in threading.enumerate() if t.name == "syncperf-plans"]
    assert syncperf_capture.metric("sync.db.plan.findings") is None


# --- SQLite end to end --------------------------------------------------------------------


@pytest.fixture
def planned(db: sa.Engine) -> Iterator[EngineInstrumentation]:
    handle = instrument_engine(db, plans=PlanOptions(interval=0, rows=1000), log_interval=0)
    yield handle
    handle.uninstrument()


def _planner(handle: EngineInstrumentation) -> Planner:
    assert handle.plans is not None
    return handle.plans


def _findings(cap: Capture, **attributes: str) -> int:
    return int(sum(p.value for p in cap.points("sync.db.plan.findings", attributes)))


def _pull(engine: sa.Engine, owner: str) -> None:
    with syncperf.sync_operation("pull", entity="todo"), engine.connect() as conn:
        conn.execute(
            sa.text("SELECT id FROM todo WHERE owner = :o ORDER BY at"), {"o": owner}
        ).all()


def test_sqlite_a_missing_index_is_found_and_adding_it_clears_it(
    syncperf_capture: Capture, db: sa.Engine, planned: EngineInstrumentation
) -> None:
    _pull(db, SECRET)
    assert _planner(planned).wait()
    seq = {"sync.db.plan.finding": "seq_scan", "db.collection.name": "todo"}
    assert _findings(syncperf_capture, **seq, **{"sync.entity": "todo"}) == 1
    assert _findings(syncperf_capture, **{"sync.db.plan.finding": "sort"}) == 1
    with db.begin() as conn:
        conn.exec_driver_sql("CREATE INDEX todo_owner_at ON todo (owner, at)")
    _pull(db, SECRET)
    assert _planner(planned).wait()
    assert _planner(planned).explained == 2
    assert _findings(syncperf_capture) == 2  # nothing new


def test_a_plan_read_after_its_span_ended_is_counted_without_a_span_event(
    syncperf_capture: Capture, db: sa.Engine, planned: EngineInstrumentation, monkeypatch: Any
) -> None:
    ended = threading.Event()
    read = Planner._read
    monkeypatch.setattr(Planner, "_read", lambda self, *a: (ended.wait(10), read(self, *a))[1])
    _pull(db, "user1")
    (span,) = [s for s in syncperf_capture.spans() if s.name == "sync pull"]  # span ended
    ended.set()
    assert _planner(planned).wait()
    assert _findings(syncperf_capture, **{"sync.db.plan.finding": "seq_scan"}) == 1
    assert not [e for e in span.events if e.name == "sync.db.plan.finding"]


def test_statements_outside_sync_operations_and_inserts_are_not_explained(
    syncperf_capture: Capture, db: sa.Engine, planned: EngineInstrumentation
) -> None:
    with db.begin() as conn:
        conn.execute(sa.text("SELECT id FROM todo WHERE owner = :o"), {"o": "user1"}).all()
    with syncperf.sync_operation("push"), db.begin() as conn:
        conn.execute(sa.text("INSERT INTO todo (owner, at) VALUES (:o, 1)"), {"o": "user1"})
    assert _planner(planned).wait()
    assert _planner(planned).explained == 0


def test_a_shape_is_explained_once_per_interval(syncperf_capture: Capture, db: sa.Engine) -> None:
    handle = instrument_engine(db, plans=PlanOptions(interval=3600, rows=1000))
    try:
        for owner in ("a", "b", "c"):  # one shape, three executions
            _pull(db, owner)
        assert _planner(handle).wait()
        assert _planner(handle).explained == 1
    finally:
        handle.uninstrument()


def test_a_plan_waits_for_a_spare_connection_and_is_put_off_without_one(
    syncperf_capture: Capture, tmp_path: Path
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'one.db'}", pool_size=1, max_overflow=0)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    handle = instrument_engine(engine, plans=PlanOptions(interval=3600, rows=1, timeout=0.2))
    planner = _planner(handle)
    try:
        with syncperf.sync_operation("pull"), engine.connect() as conn:  # holds the only one
            conn.execute(sa.text("SELECT id FROM t WHERE v = :v"), {"v": "x"}).all()
            assert planner.wait()
            assert (planner.explained, planner.deferred) == (0, 1)
        with syncperf.sync_operation("pull"), engine.connect() as conn:  # due again
            conn.execute(sa.text("SELECT id FROM t WHERE v = :v"), {"v": "y"}).all()
        assert planner.wait()  # the connection went back to the pool: the plan is read
        assert (planner.explained, planner.deferred) == (1, 1)
    finally:
        handle.uninstrument()
        engine.dispose()


def test_a_plan_that_cannot_be_read_is_counted_and_logged_once_without_data(
    db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with capture(strict=False) as cap:
        handle = instrument_engine(db, plans=PlanOptions(interval=0))
        try:
            with syncperf.sync_operation("pull"), db.connect() as conn:
                # a temporary table: the plan worker's own connection does not see it
                conn.exec_driver_sql("CREATE TEMP TABLE scratch (v TEXT)")
                for _ in range(2):
                    conn.execute(sa.text("SELECT v FROM scratch WHERE v = :v"), {"v": SECRET})
                assert _planner(handle).wait()
        finally:
            handle.uninstrument()
        (point,) = cap.points("syncperf.dropped", {"syncperf.reason": "plan_failed"})
        assert point.value == 2  # both executions failed to plan
    lines = [r.getMessage() for r in caplog.records if "query plan" in r.getMessage()]
    assert len(lines) == 1
    assert "OperationalError" in lines[0]
    assert SECRET not in caplog.text


def test_a_full_queue_drops_and_counts_without_blocking_the_request(
    db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    monkeypatch.setattr(Planner, "_explain", lambda self, job: release.wait(10))
    with capture(strict=False) as cap:
        handle = instrument_engine(db, plans=PlanOptions(interval=0, queue_size=1))
        try:
            with syncperf.sync_operation("pull"), db.connect() as conn:
                for i in range(5):  # five shapes; the worker holds one, the queue one more
                    conn.exec_driver_sql(f"SELECT id AS c{i} FROM todo")
            release.set()
            assert _planner(handle).wait()
        finally:
            handle.uninstrument()
        (point,) = cap.points("syncperf.dropped", {"syncperf.reason": "plan_queue_full"})
        assert 3 <= point.value <= 4


@pytest.mark.parametrize("waiter", ["wait_for_plans", "check_plugin"])
def test_waiting_for_plans_returns_once_every_queued_statement_was_explained(
    db: sa.Engine, monkeypatch: pytest.MonkeyPatch, waiter: str
) -> None:
    from syncperf._tools._record import _settle_plans
    from syncperf.sqlalchemy import wait_for_plans

    explained: list[str] = []
    slow = Planner._explain

    def explain(self: Planner, job: Any) -> None:
        threading.Event().wait(0.3)  # a slow EXPLAIN: the wait must outlast it
        slow(self, job)
        explained.append(job.shape)

    monkeypatch.setattr(Planner, "_explain", explain)
    with capture(strict=False):
        handle = instrument_engine(db, plans=PlanOptions(interval=0))
        try:
            _pull(db, SECRET)
            if waiter == "wait_for_plans":
                assert wait_for_plans()
            else:
                _settle_plans()  # what the pytest plugin does at each test's end
            assert len(explained) == 1
            _pull(db, "other")
            assert not wait_for_plans(timeout=0)  # a queued plan, no time to wait
        finally:
            handle.uninstrument()
    assert wait_for_plans(timeout=0)  # nothing instrumented, nothing queued
