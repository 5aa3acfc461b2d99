"""A statement longer than the prefix the sanitizer reads: its batch is counted whole, it is
never an N+1 merely because its prefix is shared, and no quoted name leaks a literal."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)

import syncperf
from syncperf._sql import MAX_LEXED, classify
from syncperf.sqlalchemy import instrument_engine
from syncperf.testing import Capture

_DIALECTS = ["postgresql", "sqlite", "mysql"]
_PLACEHOLDERS = {
    "qmark": lambda i: "?",
    "numeric": lambda i: f"${i}",
    "pyformat": lambda i: f"%(primary_keys_1_{i})s",
    "format": lambda i: "%s",
    "named": lambda i: f":id_{i}",
    "cast": lambda i: f"%(k_{i})s::INTEGER",
    "literal": lambda i: str(i * 7919),
}


def test_a_postgresql_selectinload_page_past_the_cut_is_a_batch() -> None:
    keys = ", ".join(f"%(primary_keys_1_{i})s" for i in range(1, 501))
    statement = (
        "SELECT addresses.user_id AS addresses_user_id, addresses.id AS addresses_id "
        f"FROM addresses WHERE addresses.user_id IN ({keys})"
    )
    assert len(statement) > MAX_LEXED
    found = classify(statement, dialect="postgresql")
    assert found.batch == 500
    assert found.text.endswith("...")


@settings(max_examples=150, deadline=None)
@given(
    dialect=st.sampled_from(_DIALECTS),
    style=st.sampled_from(sorted(_PLACEHOLDERS)),
    count=st.integers(min_value=10, max_value=3000),
    head=st.integers(min_value=0, max_value=2 * MAX_LEXED),
    spaced=st.booleans(),
)
def test_an_in_list_across_the_cut_is_counted_whole(
    dialect: str, style: str, count: int, head: int, spaced: bool
) -> None:
    item = _PLACEHOLDERS[style]
    statement = (
        "SELECT t.a" + ", t.a" * (head // 5) + " FROM t WHERE t.b IN ("
        + (", " if spaced else ",").join(item(i) for i in range(count))
        + ") AND t.c = 1"
    )  # fmt: skip
    found = classify(statement, dialect=dialect)
    assert found.batch == count
    assert found.operation == "SELECT"


@settings(max_examples=150, deadline=None)
@given(
    dialect=st.sampled_from(_DIALECTS),
    style=st.sampled_from(sorted(_PLACEHOLDERS)),
    rows=st.integers(min_value=10, max_value=1500),
    width=st.integers(min_value=1, max_value=40),
)
def test_values_rows_across_the_cut_are_counted_whole(
    dialect: str, style: str, rows: int, width: int
) -> None:
    item = _PLACEHOLDERS[style]
    row = "(" + ", ".join(item(i) for i in range(width)) + ")"
    statement = "INSERT INTO t (a) VALUES " + ", ".join([row] * rows)
    found = classify(statement, dialect=dialect)
    assert found.batch == rows
    assert found.operation == "INSERT"


@settings(max_examples=100, deadline=None)
@given(
    style=st.sampled_from(sorted(_PLACEHOLDERS)),
    function=st.sampled_from(["lower({})", "f({}::NUMERIC)", "lower({})::TEXT"]),
    count=st.integers(min_value=10, max_value=3000),
    head=st.integers(min_value=0, max_value=2 * MAX_LEXED),
)
def test_an_in_list_of_function_calls_across_the_cut_is_counted_whole(
    style: str, function: str, count: int, head: int
) -> None:
    item = _PLACEHOLDERS[style]
    statement = (
        "SELECT t.a" + ", t.a" * (head // 5) + " FROM t WHERE lower(t.b) IN ("
        + ", ".join(function.format(item(i)) for i in range(count))
        + ") AND t.c IN (1, 2)"
    )  # fmt: skip
    assert classify(statement).batch == count


_ARRAY_ITEMS = {**_PLACEHOLDERS, "array cast": lambda i: f"%(k_{i})s::INTEGER[]"}


@settings(max_examples=100, deadline=None)
@given(
    style=st.sampled_from(sorted(_ARRAY_ITEMS)),
    count=st.integers(min_value=10, max_value=3000),
    head=st.integers(min_value=0, max_value=2 * MAX_LEXED),
    wrap=st.sampled_from(["= ANY (ARRAY[{}])", "<> ALL(ARRAY [{}]) AND t.d = 2"]),
)
def test_an_any_array_list_across_the_cut_is_counted_whole(
    style: str, count: int, head: int, wrap: str
) -> None:
    item = _ARRAY_ITEMS[style]
    statement = (
        "SELECT t.a" + ", t.a" * (head // 5) + " FROM t WHERE t.b "
        + wrap.format(", ".join(item(i) for i in range(count)))
    )  # fmt: skip
    assert classify(statement).batch == count


def test_an_array_value_in_a_row_across_the_cut_is_not_a_batch() -> None:
    tags = ", ".join(f"%(tag_{i})s" for i in range(2000))
    assert classify(f"INSERT INTO t (a, tags) VALUES (%(a)s, ARRAY[{tags}])").batch < 10


class _Base(DeclarativeBase):
    pass


class _Parent(_Base):
    __tablename__ = "parent"
    id: Mapped[int] = mapped_column(primary_key=True)
    kids = relationship("_Kid")


_columns = {f"descriptive_attribute_number_{i:03d}": sa.Column(sa.Integer) for i in range(200)}
_Kid = type(
    "_Kid",
    (_Base,),
    {
        "__tablename__": "kid",
        "id": sa.Column(sa.Integer, primary_key=True),
        "parent_id": sa.Column(sa.ForeignKey("parent.id")),
        **_columns,
    },
)


def test_selectinload_pages_of_a_wide_table_are_not_an_n_plus_one(
    syncperf_capture: Capture,
) -> None:
    engine = sa.create_engine("sqlite://")
    _Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([_Parent() for _ in range(6000)])
        session.commit()
    handle = instrument_engine(engine)
    lengths: list[int] = []
    sa.event.listen(
        engine,
        "before_cursor_execute",
        lambda c, cur, statement, *a: (
            lengths.append(len(statement)) if " IN (" in statement else None
        ),
    )
    try:
        with syncperf.sync_operation("pull", entity="parent"), Session(engine) as session:
            session.scalars(sa.select(_Parent).options(selectinload(_Parent.kids))).all()
    finally:
        handle.uninstrument()
        engine.dispose()
    assert len(lengths) == 12 and min(lengths) > MAX_LEXED
    assert syncperf_capture.metric("sync.db.n_plus_one") is None


def test_distinct_long_statements_sharing_the_prefix_are_not_one_repeated(
    syncperf_capture: Capture,
) -> None:
    engine = sa.create_engine("sqlite://")
    columns = ", ".join(f"{i} AS column_{i:04d}" for i in range(MAX_LEXED // 10))
    handle = instrument_engine(engine, n_plus_one_threshold=3)
    try:
        with syncperf.sync_operation("pull"), engine.connect() as connection:
            for i in range(12):
                connection.exec_driver_sql(f"SELECT {columns}, 1 AS tail_{i} FROM (SELECT 1)")
    finally:
        handle.uninstrument()
        engine.dispose()
    assert syncperf_capture.metric("sync.db.n_plus_one") is None


def test_a_long_statement_repeated_is_still_an_n_plus_one(syncperf_capture: Capture) -> None:
    engine = sa.create_engine("sqlite://")
    columns = ", ".join(f"{i} AS column_{i:04d}" for i in range(MAX_LEXED // 10))
    handle = instrument_engine(engine, n_plus_one_threshold=3)
    try:
        with syncperf.sync_operation("pull"), engine.connect() as connection:
            for _ in range(3):
                connection.exec_driver_sql(f"SELECT {columns} FROM (SELECT 1) WHERE 1 = ?", (1,))
    finally:
        handle.uninstrument()
        engine.dispose()
    assert syncperf_capture.metric("sync.db.n_plus_one") is not None


_NAME_TEXT = st.text(alphabet='ab`"[] ', max_size=6)


@settings(max_examples=400, deadline=None)
@given(
    dialect=st.sampled_from(_DIALECTS),
    quote=st.sampled_from(['"', "`", "["]),
    inside=_NAME_TEXT,
    doubled=st.booleans(),
    closed=st.booleans(),
    tail=st.sampled_from(["", " ``", ' ""', " [", " `", ' "']),
)
def test_a_secret_after_a_quoted_name_never_leaks(
    dialect: str, quote: str, inside: str, doubled: bool, closed: bool, tail: str
) -> None:
    end = "]" if quote == "[" else quote
    name = quote + inside + (end * 2 if doubled else "") + (end if closed else "")
    statement = f"SELECT {name} FROM users WHERE password = 'hunter2' AND note = {tail}"
    assert "hunter2" not in classify(statement, dialect=dialect).text


@pytest.mark.parametrize("dialect", _DIALECTS)
def test_an_unterminated_backtick_name_ending_in_a_doubled_backtick_is_a_value(
    dialect: str,
) -> None:
    statement = "SELECT `x`` FROM users WHERE password = 'hunter2' AND note = ``"
    assert "hunter2" not in classify(statement, dialect=dialect).text
    assert classify("SELECT `a``b` FROM t", dialect="mysql").text == "SELECT `a``b` FROM t"
    assert classify("SELECT x FROM `a``b` WHERE y = 1", dialect="mysql").collection == "a`b"


def test_the_failed_statement_span_of_an_unterminated_backtick_name_leaks_nothing(
    syncperf_capture: Capture,
) -> None:
    engine = sa.create_engine("sqlite://")
    handle = instrument_engine(engine)
    try:
        with (
            pytest.raises(sa.exc.OperationalError),
            syncperf.sync_operation("pull"),
            engine.connect() as connection,
        ):
            connection.exec_driver_sql(
                "SELECT `x`` FROM users WHERE password = 'hunter2' AND note = ``"
            )
    finally:
        handle.uninstrument()
        engine.dispose()
    texts = [str(s.attributes.get("db.query.text")) for s in syncperf_capture.spans()]
    assert "SELECT ?" in texts
    assert not any("hunter2" in text for text in texts)
