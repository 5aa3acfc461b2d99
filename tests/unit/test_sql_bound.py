"""The sanitizer's work per statement is bounded: only a prefix of a long statement is read."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

import syncperf
from syncperf import _sql, _sql_lex
from syncperf._evicting import Evicting
from syncperf._sql import MAX_LEXED, MAX_TEXT, classify, normalize
from syncperf.sqlalchemy import instrument_engine
from syncperf.testing import Capture

_DIALECTS = ["postgresql", "sqlite", "mysql"]
_MEGABYTE = 1 << 20


def _lexed_lengths(statement: str, dialect: str, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every text the lexer was handed while ``statement`` was classified."""
    lengths: list[int] = []
    original = _sql_lex._lex

    def counted(text: str, *args: Any) -> list[_sql_lex.Token]:
        lengths.append(len(text))
        return original(text, *args)

    with monkeypatch.context() as patch:
        patch.setattr(_sql_lex, "_lex", counted)
        classify(statement, dialect=dialect)
    return lengths


@pytest.mark.parametrize("dialect", _DIALECTS)
@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO t (a, b) VALUES " + ", ".join(f"({i}, 'v{i}')" for i in range(60_000)),
        "SELECT * FROM t WHERE id IN (" + ", ".join(str(i) for i in range(200_000)) + ")",
        "SELECT 1;\r" * 120_000,  # ; and \r: every reading of several() too
        "SELECT '" + "x" * _MEGABYTE + "'",
        "SELECT " + "(" * _MEGABYTE + "1" + ")" * _MEGABYTE,
    ],
    ids=["values", "in-list", "statements", "string", "parens"],
)
def test_a_megabyte_statement_is_lexed_up_to_the_prefix_only(
    statement: str, dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lengths = _lexed_lengths(statement, dialect, monkeypatch)
    assert lengths
    assert max(lengths) <= MAX_LEXED
    assert sum(lengths) <= 2 * MAX_LEXED


@pytest.mark.parametrize("dialect", _DIALECTS)
@pytest.mark.parametrize(
    "tail",
    ["\r;", "\r/* ; x */", "\r-- ; x", "\r'; x'"],  # every reading of several(), none a second
)
def test_a_statement_within_the_prefix_is_not_lexed_again_and_again(
    tail: str, dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    statement = "SELECT " + "(" * (MAX_LEXED - 20) + tail
    assert len(statement) <= MAX_LEXED
    assert sum(_lexed_lengths(statement, dialect, monkeypatch)) <= 2 * MAX_LEXED


def test_a_short_statement_is_still_read_every_way() -> None:
    assert not classify("SELECT '; x' -- ;\r\n").several
    assert classify("SELECT 1 -- note\r; SELECT 2").several
    assert classify("SELECT 1 # x ; SELECT 2", dialect="mysql").several


def test_the_prefix_is_a_few_kilobytes() -> None:
    assert MAX_TEXT < MAX_LEXED <= 4 * 1024  # the worst case stays well under 50 ms


@pytest.mark.parametrize("dialect", _DIALECTS)
def test_a_cut_statement_keeps_its_verb_and_is_never_explained(dialect: str) -> None:
    statement = "UPDATE todo SET a = 1 WHERE id IN (" + ", ".join(["7"] * 10_000) + ")"
    found = classify(statement, dialect=dialect)
    assert (found.operation, found.collection) == ("UPDATE", "todo")
    assert found.several  # the plan worker never EXPLAINs what it has not read whole
    assert found.text.startswith("UPDATE todo SET a = ? WHERE id IN (?, ?")
    assert found.text.endswith("...")
    assert len(found.text) <= MAX_TEXT


@pytest.mark.parametrize("dialect", _DIALECTS)
def test_what_follows_the_prefix_changes_nothing(dialect: str) -> None:
    head = "SELECT a FROM t WHERE b IN (" + ", ".join(["1"] * MAX_LEXED)
    first = classify(head + ") AND c = 'x'", dialect=dialect)
    second = classify(head + "; DROP TABLE t; SELECT 'secret'", dialect=dialect)
    assert first == second
    assert first.operation == "SELECT"
    assert first.several


def test_a_statement_that_fits_is_read_whole() -> None:
    statement = "SELECT a FROM t WHERE b = " + " " * (MAX_LEXED - 40) + "'x'"
    assert len(statement) <= MAX_LEXED
    found = classify(statement)
    assert (found.text, found.several) == ("SELECT a FROM t WHERE b = ?", False)


@pytest.mark.parametrize("dialect", _DIALECTS)
@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ('SELECT a FROM t WHERE "unterminated 12345 zqsecret', "SELECT a FROM t WHERE ?"),
        ("SELECT a FROM t WHERE `unterminated 12345 zqsecret", "SELECT a FROM t WHERE ?"),
        ("SELECT a FROM t WHERE s = '%x' -- c\r\"\nAND n = 12345", "SELECT a FROM t WHERE s = ? ?"),
    ],
)
def test_an_unterminated_quoted_name_is_a_value(
    statement: str, expected: str, dialect: str
) -> None:
    found = classify(statement, dialect=dialect)
    assert "12345" not in found.text and "zqsecret" not in found.text
    if dialect == "postgresql":
        assert found.text == expected


def test_a_quoted_name_at_the_end_is_kept() -> None:
    for statement in ('SELECT * FROM "user"', 'SELECT * FROM "a""b"', "SELECT * FROM `user`"):
        assert normalize(statement) == statement
    assert normalize("SELECT * FROM [user]", dialect="sqlite") == "SELECT * FROM [user]"
    assert classify('SELECT * FROM "public"."user"').collection == "public.user"


def test_a_statement_not_understood_stays_one_value_when_cut() -> None:
    assert normalize("secret_verb " + "x" * _MEGABYTE) == "?"


def _straddling(secret: str, dialect: str) -> list[str]:
    """Statements whose quoted token, comment or name ``secret`` starts before the cut and
    ends after it (``secret`` holds no quote, ``*``, ``/``, ``$``, ``-`` or newline)."""
    pad = "x" * MAX_LEXED
    shapes = [
        f"SELECT a FROM t WHERE s = '{pad}{secret}{pad}'",
        f"SELECT a FROM t /* {pad}{secret}{pad} */ WHERE b = ?",
        f"SELECT a FROM t -- {pad}{secret}{pad}\nWHERE b = ?",
        f'SELECT a FROM t WHERE s = "{pad}{secret}{pad}" AND b = ?',
        f"SELECT `{pad}{secret}{pad}` FROM t",
    ]
    if dialect == "postgresql":
        shapes += [
            f"SELECT $tag${pad}{secret}{pad}$tag$",
            f"SELECT $${pad}{secret}{pad}$$",
            f"SELECT E'{pad}{secret}{pad}'",
        ]
    if dialect == "sqlite":
        shapes += [f"SELECT [{pad}{secret}{pad}] FROM t", f'SELECT * FROM "{pad}{secret}{pad}"']
    return shapes


_SECRET = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=["Cs"], exclude_characters="'\"`[]*/$-\n\r\\"
    ),
    min_size=1,
    max_size=20,
).map(lambda s: "zq" + s)


@settings(max_examples=40, deadline=None)
@given(
    secret=_SECRET,
    shift=st.integers(min_value=0, max_value=64),
    dialect=st.sampled_from(_DIALECTS),
)
def test_no_secret_straddling_the_cut_is_exported(secret: str, shift: int, dialect: str) -> None:
    for shape in _straddling(secret, dialect):
        # the secret starts ``shift`` characters before the cut
        statement = shape.replace("x" * MAX_LEXED, "x" * (MAX_LEXED - shape.index("x") - shift), 1)
        found = classify(statement, dialect=dialect)
        exported = f"{found.text}|{found.operation}|{found.collection}"
        assert "zq" not in exported, (shape[:40], shift)
        assert "xxxx" not in exported, (shape[:40], shift)


@settings(max_examples=30, deadline=None)
@given(
    head=st.sampled_from(["SELECT ", "INSERT INTO t VALUES (", "SET a = ", "", "WITH x AS ("]),
    body=st.text(max_size=64),
    filler=st.sampled_from(["'", '"', "$$", "/*", "--", "`", "[", "\\", "\ud800", "é", "("]),
    size=st.integers(min_value=MAX_LEXED + 1, max_value=3 * MAX_LEXED),  # secret beyond
    dialect=st.sampled_from(_DIALECTS),
)
def test_hostile_long_statements_are_classified_within_the_bound(
    head: str, body: str, filler: str, size: int, dialect: str
) -> None:
    statement = head + body + filler * (size // len(filler)) + "zqsecret"
    found = classify(statement, dialect=dialect)
    assert len(found.text) <= MAX_TEXT
    assert "zqsecret" not in found.text
    assert found.operation is None or found.operation in _sql.OPERATIONS
    assert found.several


_PLANTED = "tok_s3cr3t_cut_4b1d"


def _across_the_cut(before: str, after: str) -> str:
    """``before``, a pad and ``_PLANTED`` starting a few characters before the cut, then
    ``after``."""
    pad = "x" * (MAX_LEXED - len(before) - 8)
    return f"{before}{pad}{_PLANTED}{pad}{after}"


def test_no_planted_secret_across_the_cut_reaches_spans_events_logs_or_metrics(
    syncperf_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE todo (id INTEGER PRIMARY KEY, title TEXT)")
    handle = instrument_engine(engine, n_plus_one_threshold=2, slow_query_threshold=0.000001)
    assert syncperf_capture.tracer_provider is not None
    tracer = syncperf_capture.tracer_provider.get_tracer("test")
    try:
        with (
            caplog.at_level(logging.DEBUG, "syncperf"),
            tracer.start_as_current_span("req"),
            pytest.raises(sa.exc.OperationalError),
            syncperf.sync_operation("push", entity="todo"),
            engine.connect() as conn,
        ):
            for _ in range(3):
                conn.exec_driver_sql(_across_the_cut("SELECT id FROM todo WHERE title = '", "'"))
                conn.exec_driver_sql(_across_the_cut('SELECT id FROM todo WHERE title = "', '"'))
                conn.exec_driver_sql(_across_the_cut("SELECT id FROM todo /* ", " */"))
            conn.exec_driver_sql(_across_the_cut("SELECT '", "' FROM nowhere"))
    finally:
        handle.uninstrument()
        engine.dispose()

    parts: list[str] = []
    for span in syncperf_capture.spans():
        parts.append(span.name)
        parts.extend(k + "=" + str(v) for k, v in (span.attributes or {}).items())
        for event in span.events:
            parts.append(event.name)
            parts.extend(k + "=" + str(v) for k, v in (event.attributes or {}).items())
    for metric in syncperf_capture.metrics():
        for point in metric.data.data_points:
            parts.extend(k + "=" + str(v) for k, v in (point.attributes or {}).items())
    parts.extend(record.getMessage() for record in caplog.records)
    exported = "\n".join(parts)
    assert "db.query.text=SELECT id FROM todo WHERE title = ?..." in exported
    assert "[SQL: SELECT ?...]" in exported
    assert "sync.db.slow_query" in exported
    for fragment in (_PLANTED, "s3cr3t", "tok_s", "xxxx"):
        assert fragment not in exported


def test_the_statement_cache_never_keeps_more_of_a_statement_than_it_reads(
    syncperf_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distinct megabyte statements (literals inlined) would otherwise sit in the engine's
    statement cache whole, up to its 2,000 entries; a long one is kept by its prefix, and a
    repeated one is still classified once."""
    from syncperf.sqlalchemy import _queries

    classified: list[int] = []
    original = _queries.classify

    def counted(statement: str, **options: Any) -> Any:
        classified.append(len(statement))
        return original(statement, **options)

    monkeypatch.setattr(_queries, "classify", counted)
    engine = sa.create_engine("sqlite://")
    recorder: Any = instrument_engine(engine)._recorder  # type: ignore[attr-defined]
    with engine.connect() as connection:
        for i in range(20):
            connection.exec_driver_sql(f"SELECT '{i}{'x' * 200_000}'")
        for _ in range(5):
            connection.exec_driver_sql(f"SELECT '{'y' * 200_000}'")
    engine.dispose()
    caches = [value for value in vars(recorder).values() if isinstance(value, (dict, Evicting))]
    keys = [key[0] if isinstance(key, tuple) else key for cache in caches for key in cache]
    assert max(len(key) for key in keys) <= MAX_LEXED
    assert len([n for n in classified if n > MAX_LEXED]) == 21  # the repeated one once
