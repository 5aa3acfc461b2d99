"""Statement sanitizing and classification (``syncperf._sql_statement``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncperf._sql_statement import MAX_TEXT, classify, normalize


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT * FROM t WHERE a = 'x''y' AND b = 42", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("SELECT E'a\\'b', X'DEADBEEF', B'0101', N'n', U&'d\\0061t'", "SELECT ?, ?, ?, ?, ?"),
        ("SELECT $$dollar$$, $tag$quoted $x$ $tag$", "SELECT ?, ?"),
        ("SELECT 1.5e-3, .25, 0x1F, -7", "SELECT ?, ?, ?, -?"),
        ("SELECT a FROM t -- trailing 123\nWHERE b = :b", "SELECT a FROM t WHERE b = ?"),
        ("SELECT /* traceparent='00-abc' */ a FROM t", "SELECT a FROM t"),
        (
            "SELECT a FROM t WHERE id IN (%(id_1_1)s, %(id_1_2)s, %(id_1_3)s)",
            "SELECT a FROM t WHERE id IN (?)",
        ),
        ("INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?)", "INSERT INTO t (a, b) VALUES (?)"),
        ("SELECT a::text, t1.c2, $1, %s FROM t", "SELECT a::text, t1.c2, ?, ? FROM t"),
        ("SELECT   a\n\t FROM\n t  ", "SELECT a FROM t"),
        ("SELECT 'unterminated secret", "SELECT ?"),
        ('SELECT "Quoted Col" FROM "public"."User"', 'SELECT "Quoted Col" FROM "public"."User"'),
    ],
)
def test_literals_placeholders_and_comments_are_sanitized(statement: str, expected: str) -> None:
    assert normalize(statement) == expected


def test_mysql_lexing_treats_double_quotes_and_backslashes_as_string_syntax() -> None:
    statement = "SELECT \"a\\\"b secret\", 'c\\'d secret', `col` FROM `db`.`t` # note secret"
    text = normalize(statement, mysql=True)
    assert text == "SELECT ?, ?, `col` FROM `db`.`t`"
    assert classify(statement, mysql=True).collection == "db.t"


def test_long_statements_are_cut() -> None:
    text = normalize("SELECT " + ", ".join(f"col_{i}" for i in range(2000)) + " FROM t")
    assert len(text) == MAX_TEXT
    assert text.endswith("...")


@pytest.mark.parametrize(
    ("statement", "operation", "collection"),
    [
        ("SELECT a FROM todo WHERE id = ?", "SELECT", "todo"),
        ("select a from public.todo t join other o on o.id = t.id", "SELECT", "public.todo"),
        ('SELECT * FROM "public"."user"', "SELECT", "public.user"),
        ("SELECT (SELECT max(x) FROM inner_t) FROM outer_t", "SELECT", "outer_t"),
        ("SELECT a FROM (SELECT b FROM c) AS s", "SELECT", None),
        ("SELECT pg_sleep(1)", "SELECT", None),
        ("INSERT INTO todo (id) VALUES (?) RETURNING id", "INSERT", "todo"),
        ("INSERT OR REPLACE INTO todo VALUES (?)", "INSERT", "todo"),
        ("UPDATE ONLY todo SET a = ?", "UPDATE", "todo"),
        ("DELETE FROM todo WHERE id = ?", "DELETE", "todo"),
        ("WITH x AS (SELECT 1 FROM a) DELETE FROM b WHERE c IN (SELECT * FROM x)", "DELETE", "b"),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r",
            "SELECT",
            "r",
        ),
        ("MERGE INTO target USING src ON (target.id = src.id)", "MERGE", "target"),
        ("CREATE TABLE IF NOT EXISTS todo (id INTEGER)", "CREATE", "todo"),
        ("DROP TABLE todo", "DROP", "todo"),
        ("TRUNCATE todo", "TRUNCATE", "todo"),
        ("BEGIN", "BEGIN", None),
        ("(SELECT 1) UNION (SELECT 2)", "SELECT", None),
        ("-- only a comment", None, None),
        ("", None, None),
    ],
)
def test_operation_and_collection_names(
    statement: str, operation: str | None, collection: str | None
) -> None:
    found = classify(statement)
    assert (found.operation, found.collection) == (operation, collection)


_SECRET = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30
).map(lambda s: "zq" + s)


@settings(max_examples=300, deadline=None)
@given(secret=_SECRET, number=st.integers(min_value=10_000, max_value=10**15))
def test_no_string_or_number_literal_survives(secret: str, number: int) -> None:
    escaped = secret.replace("'", "''")
    e_escaped = escaped.replace("\\", "\\\\")
    dollar = secret.replace("$", "")
    statement = (
        f"SELECT a FROM t WHERE s = '{escaped}' AND n = {number} "
        f"AND e = E'{e_escaped}' AND d = $q${dollar}$q$"
    )
    text = normalize(statement)
    assert "zq" not in text
    assert str(number) not in text
    assert text == "SELECT a FROM t WHERE s = ? AND n = ? AND e = ? AND d = ?"


@settings(max_examples=200, deadline=None)
@given(secret=_SECRET)
def test_no_literal_survives_mysql_escaping(secret: str) -> None:
    escaped = secret.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"')
    text = normalize(f"SELECT a FROM t WHERE s = '{escaped}' OR d = \"{escaped}\"", mysql=True)
    assert text == "SELECT a FROM t WHERE s = ? OR d = ?"
