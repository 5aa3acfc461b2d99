"""The comments around a statement (a sqlcommenter comment, new in every statement) do not
make it a new statement to the per-engine cache, and classify as the statement without them."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncperf import _sql as sql
from syncperf._sql import classify
from syncperf._sql_comments import Bare, bare, clean_tokens
from syncperf._sql_lex import lex
from syncperf.sqlalchemy import _queries as queries_module
from syncperf.sqlalchemy import instrument_engine
from syncperf.testing import Capture

SECRET = "sk_live_51HxQ9planted7secret"
DIALECTS = ("postgresql", "sqlite", "mysql")
STATEMENTS = (
    "SELECT a, b FROM t WHERE id = ?",
    "SELECT 'x /* y */ z' FROM t",
    'SELECT "a""b" FROM "my table" WHERE c = \'it\'\'s\'',
    "UPDATE t SET a = 'sk_live_inline' WHERE id = 3",
    "SELECT $$ /* $$ FROM t",
    "SELECT 'unterminated",
    'SELECT "unterminated',
    "SELECT a FROM t -- trailing",
    "SELECT a FROM t WHERE b = 'a\\' -- '",
    "INSERT INTO t (a) VALUES (1), (2), (3)",
    "SELECT a /* inner */ FROM t",
    "SELECT a FROM t WHERE b IN (?, ?, ?)",
    "SELECT `a` FROM [b] WHERE c = E'x\\'y'",
    "SELECT a - -1 FROM t",
    "/",
    "-",
    "",
)
_PARTS = ["a", " ", "'", '"', "`", "$", "*/", "/*", "*", "/", "-", "--", "\n", "\r", "#", "!"]
_BODY = st.lists(
    st.sampled_from([*_PARTS, "+", ";", "\\", "=", "[", "]", "M", "E", SECRET]), max_size=12
).map("".join)
_COMMENT = st.one_of(
    _BODY.map(lambda body: f"/*{body}*/"),
    _BODY.map(lambda body: f"/*{body}"),  # unterminated
    _BODY.map(lambda body: f"/* a /* {body} */ b */"),  # nested: one comment only to PostgreSQL
    _BODY.map(lambda body: f"-- {body}\n"),
    _BODY.map(lambda body: f"--{body}"),
    st.just(f"/*traceparent='00-{SECRET}-01'*/"),
)
_AROUND = st.lists(st.tuples(st.sampled_from(["", " ", "\n", "\t "]), _COMMENT), max_size=3).map(
    lambda pieces: "".join(space + comment for space, comment in pieces)
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    statement=st.one_of(
        st.sampled_from(STATEMENTS),
        st.text(max_size=30),
        st.lists(st.sampled_from([*_PARTS, "SELECT", " x ", "E'", "$a$", "[", "\xa0"])).map(
            "".join
        ),
    ),
    before=_AROUND,
    after=_AROUND,
    dialect=st.sampled_from(DIALECTS),
)
@example("SELECT a FROM t -- trailing", "", " /*\na*/", "sqlite")  # the line comment ends in it
@example("SELECT 1 -- a", "", " \r/* b \n c */", "postgresql")
@example("SELECT 1 -- a", "", " \r/* b \n c */", "sqlite")
@example("SELECT 'a", "", f" /* b', {SECRET} FROM t */", "postgresql")
@example("SELECT a", "/* x /* y */ z */ ", "", "postgresql")
@example("SELECT a", "/* x /* y */ z */ ", "", "mysql")
@example("", "", "/* only a comment */", "postgresql")
@example("SELECT x/*", "", "/* a */", "postgresql")  # ends in a comment that swallows the rest
@example("SELECT syncperf_end/*", "", "/* a */", "postgresql")
@example("SELECT 1", "", "--/* a */", "mysql")  # two minus signs on MySQL
@example("SELECT 1", "", "-- a\r\n-- b", "postgresql")
@example("\xa0", "", "", "postgresql")  # a letter to the lexer, whitespace to str.strip()
@example("\xa0", " ", "", "postgresql")  # and whitespace after whitespace
@example("\xa0SELECT 1", "/* a */ ", "", "postgresql")
def test_a_statement_without_its_comments_classifies_as_with_them(
    statement: str, before: str, after: str, dialect: str
) -> None:
    commented = before + statement + after
    found = Bare[Any](dialect, 8).find(
        commented, lambda text, tokens: classify(text, dialect=dialect, tokens=tokens)
    )
    if found is not None:
        assert found == classify(commented, dialect=dialect)
        assert SECRET not in found.text or SECRET in str(bare(commented))  # in SQL, not a comment


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT 1 /*traceparent='00-ab-cd-01'*/", "SELECT 1"),
        ("/* app=x */ SELECT 1", "SELECT 1"),
        ("-- app=x\nSELECT 1 /* a */ -- b", "SELECT 1"),
        ("SELECT 1 /* a */", "SELECT 1"),
        ("/* only a comment */", ""),
        ("SELECT 1", None),  # nothing to remove
        ("SELECT 1 /* a /* b */", None),  # nests on PostgreSQL, not elsewhere
        ("SELECT 1 /* a */ b */", None),
        ("SELECT 1 /*! b */", None),  # MySQL runs it
        ("SELECT 1 /* a", None),  # unterminated
        ("SELECT 1; SELECT 2 /* a */", None),  # several statements: classified whole
        ("SELECT 1 --x", None),  # not a comment on MySQL
        ("SELECT 1 -- a\rb", None),  # b: a token on PostgreSQL only
        ("SELECT 1 -- a /*\nb */", None),  # b: a token: the line comment ends in the other
        ("SELECT 1 -- a\n/* b */", "SELECT 1"),  # where it ends depends on the dialect
    ],
)
def test_only_comments_outside_the_sql_are_removed(statement: str, expected: str | None) -> None:
    for mysql, sqlite in ((False, False), (True, False), (False, True)):
        stripped = bare(statement)
        if stripped is not None and clean_tokens(stripped, mysql=mysql, sqlite=sqlite) is None:
            stripped = None
        assert stripped == expected


@pytest.mark.parametrize(
    "statement",
    ["SELECT 'a", "SELECT 1 -- a", "SELECT $$a", 'SELECT "a', "SELECT a /* b", "SELECT x /*"],
)
def test_a_statement_ending_in_an_open_literal_or_comment_does_not_end_clean(
    statement: str,
) -> None:
    assert clean_tokens(statement, mysql=False, sqlite=False) is None


def test_the_tokens_of_a_statement_that_ends_clean_are_its_own() -> None:
    statement = "SELECT a, 'b' FROM \"t\" WHERE c = ? -- d\n"
    assert clean_tokens(statement, mysql=False, sqlite=False) == lex(statement)


def test_a_statement_too_long_to_read_whole_keeps_its_comments() -> None:
    assert bare("SELECT 1" + " " * sql.MAX_LEXED + "/* a */") is None


def test_differently_commented_executions_of_a_statement_are_classified_once(
    syncperf_capture: Capture, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    classified: list[str] = []
    original = sql.classify

    def counted(statement: str, **kwargs: Any) -> Any:
        classified.append(statement)
        return original(statement, **kwargs)

    monkeypatch.setattr(queries_module, "classify", counted)
    eng = sa.create_engine("sqlite://")
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER, title TEXT)")
    handle = instrument_engine(eng, query_text=True)
    tracer = syncperf_capture.tracer_provider.get_tracer("test")
    caplog.set_level(logging.DEBUG)
    try:
        with tracer.start_as_current_span("req"), eng.connect() as conn:
            for i in range(100):
                comment = f"/*traceparent='00-{i:032x}-{SECRET}-01'*/"
                conn.exec_driver_sql(f"SELECT title FROM t WHERE id = ? {comment}", (i,))
                conn.exec_driver_sql(f"{comment}\nSELECT title FROM t WHERE id = ?", (i,))
    finally:
        handle.uninstrument()
        eng.dispose()
    assert classified == ["SELECT title FROM t WHERE id = ?"]
    assert not [key for key in handle._recorder._queries if "traceparent" in key]  # not kept
    texts = {s.attributes.get("db.query.text") for s in syncperf_capture.spans()}
    assert "SELECT title FROM t WHERE id = ?" in texts
    exported = repr([s.to_json() for s in syncperf_capture.spans()]) + repr(
        syncperf_capture.metrics()
    )
    assert SECRET not in exported + caplog.text
