"""Lists and ``VALUES`` rows collapse whatever simple values they hold (``syncperf._sql``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects.postgresql import psycopg

import syncperf
from syncperf import _sql
from syncperf._sql import classify
from syncperf.sqlalchemy import instrument_engine
from syncperf.testing import Capture

_IN_ITEMS: dict[str, Callable[[int], str]] = {
    "placeholder": lambda i: "%s",
    "negative": lambda i: str(-i - 1),
    "signed placeholder": lambda i: "- ?",
    "null": lambda i: "NULL" if i % 3 == 2 else "?",
    "function": lambda i: "lower(%s)",
    "qualified function": lambda i: f"pg_catalog.lower(${i + 1})",
    "function of a cast": lambda i: "lower(%s::VARCHAR)",
    "cast function": lambda i: "CAST(%s AS INTEGER)",
    "cast of a function": lambda i: "lower(%s)::TEXT",
    "two casts": lambda i: f"${i + 1}::INTEGER::NUMERIC(10, 2)",
    "true": lambda i: "TRUE" if i % 2 else "false",
}

_ROW_SHAPES: dict[str, Callable[[int], str]] = {
    "now()": lambda i: f"(%(id_m{i})s, %(title_m{i})s, now())",
    "CURRENT_TIMESTAMP": lambda i: "(?, ?, CURRENT_TIMESTAMP)",
    "DEFAULT": lambda i: "(?, DEFAULT, ?)",
    "literals": lambda i: f"({i}, 'x{i}', -{i}, NULL)",
    "subquery": lambda i: f"({i}, (SELECT id FROM u WHERE name = 'n{i}'))",
    "expression": lambda i: f"(${2 * i + 1} + 1, lower(${2 * i + 2}), coalesce(?, ?, now()))",
}


def _in(item: Callable[[int], str], size: int) -> str:
    return "SELECT a FROM t WHERE b IN (" + ", ".join(item(i) for i in range(size)) + ") AND c = 1"


def _values(row: Callable[[int], str], size: int) -> str:
    return "INSERT INTO t (a, b, c) VALUES " + ", ".join(row(i) for i in range(size))


@pytest.mark.parametrize("shape", list(_IN_ITEMS))
def test_an_in_list_of_simple_values_is_one_statement_and_a_batch(shape: str) -> None:
    found = classify(_in(_IN_ITEMS[shape], 12))
    assert found.text == "SELECT a FROM t WHERE b IN (?) AND c = ?"
    assert found.batch == 12


@pytest.mark.parametrize("shape", list(_ROW_SHAPES))
def test_identical_values_rows_collapse_to_one_and_count_as_a_batch(shape: str) -> None:
    one, many = classify(_values(_ROW_SHAPES[shape], 1)), classify(_values(_ROW_SHAPES[shape], 20))
    assert many.text == one.text
    assert (one.batch, many.batch) == (0, 20)


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("INSERT INTO t VALUES (%s, now()), (%s, now())", "INSERT INTO t VALUES (?, now())"),
        ("INSERT INTO t VALUES (?, DEFAULT), (?, DEFAULT)", "INSERT INTO t VALUES (?, DEFAULT)"),
        ("INSERT INTO t VALUES (-1, 2), (3, -4), (?, ?)", "INSERT INTO t VALUES (?)"),
        (
            "SELECT set_config(?, ?, true), coalesce(?, NULL)",
            "SELECT set_config(?, ?, true), coalesce(?, NULL)",
        ),
        (
            "INSERT INTO t VALUES (1, (SELECT 2)) , (3, (SELECT 4)) ON CONFLICT (a) DO NOTHING",
            "INSERT INTO t VALUES (?, (SELECT ?)) ON CONFLICT (a) DO NOTHING",
        ),
        (
            'INSERT INTO t VALUES (?, "a(b"), (?, "a(b") RETURNING id',
            'INSERT INTO t VALUES (?, "a(b") RETURNING id',
        ),
        (
            "SELECT * FROM (VALUES (1, now()), (2, now())) AS v (a, b)",
            "SELECT * FROM (VALUES (?, now())) AS v (a, b)",
        ),
        ("SELECT a FROM t WHERE b IN (-1, +2, NULL, lower(?))", "SELECT a FROM t WHERE b IN (?)"),
        (
            "SELECT a FROM t WHERE b = ANY (ARRAY[1, 2, 3])",
            "SELECT a FROM t WHERE b = ANY (ARRAY[?])",
        ),
        ("SELECT ARRAY [?, lower(?)]", "SELECT ARRAY [?]"),
    ],
)
def test_the_collapsed_text(statement: str, expected: str) -> None:
    assert classify(statement).text == expected


@pytest.mark.parametrize(
    ("statement", "batch"),
    [
        ("INSERT INTO t VALUES (?, now()), (?, now()), (?, now())", 3),
        ("INSERT INTO t VALUES (?, (SELECT 1)), (?, ?)", 2),  # rows that differ count too
        ("SELECT a FROM t WHERE b = ANY (ARRAY[" + ", ".join(["%s"] * 12) + "])", 12),
        ("SELECT a FROM t WHERE b <> ALL (ARRAY[?, ?, ?])", 3),
        ("SELECT a FROM t WHERE b IN (coalesce(?, ?), coalesce(?, ?))", 2),
        ("SELECT a FROM t WHERE b IN (?::NUMERIC(10, 2), lower(?))", 2),
        ("INSERT INTO t (a, tags) VALUES (?, ARRAY[?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?])", 0),
        ("SELECT now(), lower(?), coalesce(?, ?) FROM t", 0),
        ("SELECT a FROM t WHERE (a, b) IN ((?, now()), (?, now()), (?, now()))", 3),
    ],
)
def test_the_batch(statement: str, batch: int) -> None:
    assert classify(statement).batch == batch


@settings(max_examples=60, deadline=None)
@given(
    shape=st.sampled_from(sorted(_IN_ITEMS)),
    sizes=st.lists(st.integers(min_value=1, max_value=50), min_size=2, max_size=4),
)
def test_in_lists_of_any_length_are_one_statement(shape: str, sizes: list[int]) -> None:
    found = [classify(_in(_IN_ITEMS[shape], size)) for size in sizes]
    assert len({each.text for each in found}) == 1
    assert [each.batch for each in found] == sizes


@settings(max_examples=60, deadline=None)
@given(
    shape=st.sampled_from(sorted(_ROW_SHAPES)),
    sizes=st.lists(st.integers(min_value=1, max_value=50), min_size=2, max_size=4),
)
def test_values_of_any_length_are_one_statement(shape: str, sizes: list[int]) -> None:
    found = [classify(_values(_ROW_SHAPES[shape], size)) for size in sizes]
    assert len({each.text for each in found}) == 1
    assert [each.batch for each in found] == [size if size > 1 else 0 for size in sizes]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=2, max_value=50), min_size=2, max_size=4),
    wrap=st.sampled_from(["= ANY (ARRAY[{}])", "= ANY(ARRAY[{}])", "IN ({})"]),
    item=st.sampled_from(["%s", "?::INTEGER", "lower(?)", "-1"]),
)
def test_arrays_and_lists_of_any_length_are_one_statement(
    sizes: list[int], wrap: str, item: str
) -> None:
    texts = {
        classify("SELECT a FROM t WHERE b " + wrap.format(", ".join([item] * size))).text
        for size in sizes
    }
    assert len(texts) == 1


def test_a_postgresql_multi_row_insert_with_a_default_function_is_one_row() -> None:
    table = _stamped(sa.MetaData())
    found = []
    for rows in (2, 20):
        statement = sa.insert(table).values([{"id": i, "title": "t"} for i in range(rows)])
        found.append(classify(str(statement.compile(dialect=psycopg.dialect()))))
    assert found[0].text == found[1].text
    assert found[1].text.endswith("VALUES (?::INTEGER, ?::VARCHAR, now())")
    assert (found[0].batch, found[1].batch) == (2, 20)


def _stamped(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "stamped",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), default=sa.func.now()),
    )


def test_chunked_inserts_with_a_default_function_are_not_an_n_plus_one(
    syncperf_capture: Capture,
) -> None:
    metadata = sa.MetaData()
    table = _stamped(metadata)
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    texts: set[str] = set()
    handle = instrument_engine(engine)
    try:
        with syncperf.sync_operation("push", entity="stamped"), engine.begin() as connection:
            for chunk in range(10):
                rows = [{"id": chunk * 20 + i, "title": f"t{i}"} for i in range(20)]
                connection.execute(sa.insert(table).values(rows))
    finally:
        handle.uninstrument()
        engine.dispose()
    for span in syncperf_capture.spans():
        if span.name.startswith("INSERT"):
            texts.add(str(span.attributes["db.query.text"]))
    assert texts == {"INSERT INTO stamped (id, title, created_at) VALUES (?, ?, CURRENT_TIMESTAMP)"}
    assert syncperf_capture.metric("sync.db.n_plus_one") is None


@pytest.mark.parametrize(
    "text",
    [
        "SELECT a FROM t WHERE b IN (" + "lower(?), " * 100_000 + "x + 1)",
        "SELECT a FROM t WHERE b = ANY (ARRAY[" + "-?, " * 100_000 + "x]",
        "INSERT INTO t VALUES " + "(?, now()), " * 100_000 + "(?, now()",
        "INSERT INTO t VALUES " + "(" * 100_000 + "?" + ")" * 100_000,
        "SELECT " + "VALUES (" * 50_000 + ")" * 50_000,
        "SELECT " + "VALUES (?), " * 50_000,
        "SELECT " + "lower(" * 100_000 + "?" + ")" * 100_000,
        "SELECT a IN (" + "?::NUMERIC(?, ?" * 50_000,
        "SELECT a IN (" + "?::a b c d e f g h " * 20_000 + "(",
        "SELECT a IN (?" + "::a b" * 100_000 + "(",
    ],
    ids=[
        "in",
        "array",
        "values",
        "nested",
        "nested-values",
        "values-runs",
        "calls",
        "casts",
        "words",
        "chain",
    ],
)
def test_collapsing_a_pathological_text_stays_linear(text: str) -> None:
    started = time.perf_counter()
    _sql._collapse(text)
    assert time.perf_counter() - started < 10.0  # linear: under 1 s; quadratic: hours


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["(", ")", "[", "]", ", ", "?", "-", "VALUES ", "IN ", "ANY ", "ARRAY", "lower",
             "NULL", "::INT", " AS ", '"', "`", " ", "x", "now()"]
        ),
        max_size=60,
    )
)  # fmt: skip
def test_collapsing_any_text_only_shortens_it(parts: list[str]) -> None:
    text = "".join(parts)
    collapsed, batch = _sql._collapse(text)
    assert len(collapsed) <= len(text)
    assert set(collapsed) <= set(text) | {"?"}
    assert batch >= 0
