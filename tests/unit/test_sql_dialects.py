"""Statement sanitizing where dialects lex differently (``syncperf._sql``), with real SQLite as
the oracle: whatever statement SQLite accepts, a string literal or comment planted in it never
survives in ``db.query.text``."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import sqlite3
import sys
from collections.abc import Callable
from contextlib import closing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncperf._sql import classify, normalize
from syncperf._sql_lex import lex

SECRET = "s3cretTOKEN"


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        # SQLite does not nest comments: the first */ ends one; a /* inside makes the rest one ?
        (f"SELECT c FROM t /* y /* */ WHERE c = '*/ {SECRET}'", "SELECT c FROM t ?"),
        (f"SELECT a /* x */ FROM t WHERE c = '*/ {SECRET}'", "SELECT a FROM t WHERE c = ?"),
        (f"SELECT a FROM t /* x /*/ WHERE c = '{SECRET}'", "SELECT a FROM t ?"),
        (f"SELECT a FROM t /* unterminated {SECRET}", "SELECT a FROM t"),
        # [bracketed] names; one holding a quote does not start a string (it is a value)
        (f"SELECT [it's] FROM t WHERE c = '{SECRET}'", "SELECT ? FROM t WHERE c = ?"),
        ("SELECT a FROM [my table]", "SELECT a FROM [my table]"),
        # "x" = after a comma is an assignment's target only in a SET list
        (f'SELECT c, "{SECRET}" = c FROM t', "SELECT c, ? = c FROM t"),
        (
            'UPDATE t SET a = 1, "b" = 2 WHERE c IN (1, "S" = c)',
            'UPDATE t SET a = ?, "b" = ? WHERE c IN (?, ? = c)',
        ),
        (
            'INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 1, "c" = 2 '
            'RETURNING a, "S" = a',
            'INSERT INTO t (a) VALUES (?) ON CONFLICT (a) DO UPDATE SET b = ?, "c" = ? '
            "RETURNING a, ? = a",
        ),
        ('UPDATE t SET a = f(1, "S" = 2), "b" = 3', 'UPDATE t SET a = f(?, ? = ?), "b" = ?'),
        # no E'...' and no dollar quoting in SQLite: E is a name, $a$ a parameter
        (f"SELECT E'C:\\', '{SECRET}' FROM t", "SELECT E?, ? FROM t"),
        (f"SELECT $a$, 'x$a$ {SECRET}' FROM t", "SELECT $a$, ? FROM t"),
        # ON f( in a view is a call, not CREATE INDEX's column list
        (
            f'CREATE VIEW v AS SELECT * FROM t JOIN u ON lower("{SECRET}") = u.x',
            "CREATE VIEW v AS SELECT * FROM t JOIN u ON lower(?) = u.x",
        ),
        ('CREATE UNIQUE INDEX i ON t ("a", "b")', 'CREATE UNIQUE INDEX i ON t ("a", "b")'),
        # %(name)s is a placeholder only with a name in it
        (f"SELECT 5 %(',)s' || '{SECRET}') FROM t", "SELECT ? %(? || ?) FROM t"),
    ],
)
def test_sqlite_lexing(statement: str, expected: str) -> None:
    assert normalize(statement, dialect="sqlite") == expected


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        # NO_BACKSLASH_ESCAPES: 'C:\' is a whole string; by default \' escapes the quote
        (
            f"SELECT id FROM f WHERE dir = 'C:\\' AND token = '{SECRET}'",
            "SELECT id FROM f WHERE dir = ?",
        ),
        (f"SELECT 'it\\'s', '{SECRET}'", "SELECT ?"),
        (f'SELECT "C:\\", "{SECRET}"', "SELECT ?"),
        ("SELECT 'a\\\\', 'b\\n', 'c''d' FROM t", "SELECT ?, ?, ? FROM t"),  # readings agree
        (f"SELECT E'C:\\', '{SECRET}'", "SELECT E?"),
        (f"SELECT '{SECRET}\\", "SELECT ?"),  # an unterminated string ending in a backslash
        # "--" starts a comment only before a space; /*! ... */ holds SQL to MySQL
        (f"SELECT 1--'\n' , '{SECRET}'", "SELECT ?--? , ?"),
        (f"SELECT 1 -- '\n , '{SECRET}'", "SELECT ? , ?"),
        (f"SELECT 1 /*! , '*/ {SECRET}' */", "SELECT ? ?"),
        (f"SELECT 1 /*+ '*/ {SECRET}' */", "SELECT ? ?"),
        (f"SELECT 1 /* a /* b */ , '*/ {SECRET}'", "SELECT ? ?"),
        (f"SELECT 1 /* it's */ , '{SECRET}'", "SELECT ? , ?"),
        (f"SELECT $a$, 'x$a$ {SECRET}'", "SELECT $a$, ?"),
    ],
)
def test_mysql_lexing_is_safe_with_and_without_backslash_escapes(
    statement: str, expected: str
) -> None:
    assert normalize(statement, dialect="mysql") == expected
    assert normalize(statement, dialect="mariadb") == expected


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        # standard_conforming_strings off: \' escapes the quote, as in E'...'
        (
            f"SELECT a FROM t WHERE a = 'it\\'s' AND token = '{SECRET}'",
            "SELECT a FROM t WHERE a = ?",
        ),
        ("SELECT E'it\\'s', 'C:\\\\', '\\d+' FROM t", "SELECT ?, ?, ? FROM t"),  # unambiguous
        ("/* a /* b */ secret */ SELECT 1", "SELECT ?"),  # comments nest
    ],
)
def test_postgresql_lexing_is_safe_with_standard_conforming_strings_off(
    statement: str, expected: str
) -> None:
    assert normalize(statement, dialect="postgresql") == expected


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_operand_of_is_distinct_from_is_no_collection(dialect: str) -> None:
    # to SQLite "s3cretTOKEN" is a string there (no such column)
    found = classify(f'SELECT 1 IS NOT DISTINCT FROM "{SECRET}" FROM t', dialect=dialect)
    assert found.collection == "t"


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT 1 /* a /* b */; DELETE FROM t",  # SQLite and MySQL: the ; ends the SELECT
        "SELECT a FROM t WHERE p = 'C:\\'; DELETE FROM t; -- '",  # NO_BACKSLASH_ESCAPES
    ],
)
@pytest.mark.parametrize("dialect", ["sqlite", "mysql", "postgresql"])
def test_a_semicolon_where_a_comment_or_string_may_end_counts_as_several(
    statement: str, dialect: str
) -> None:
    assert classify(statement, dialect=dialect).several


# --- a "--" comment ends at a carriage return on PostgreSQL, at a newline only elsewhere ------


def test_a_line_comment_ends_at_a_carriage_return_on_postgresql_only() -> None:
    statement = "SELECT 1 -- note\rFROM t"  # PostgreSQL's scan.l: newline is [\n\r]
    assert [text for _, text, _ in lex(statement)] == ["SELECT", "1", "FROM", "t"]
    assert [text for _, text, _ in lex(statement, sqlite=True)] == ["SELECT", "1"]
    assert [text for _, text, _ in lex(statement, mysql=True)] == ["SELECT", "1"]
    with closing(sqlite3.connect(":memory:")) as connection:
        assert connection.execute("SELECT 1 -- x\r; SELECT 2").fetchall() == [(1,)]


_LINE_COMMENT = st.sampled_from(["--", "-- ", "--x", "-- a;b", "#", "# x", "/* c */ --"])
_LINE_END = st.sampled_from(["\r", "\n", "\r\n", "\n\r", "\r\r", " \r ", "\r\t"])
_TRAIL = st.lists(st.sampled_from([" ", "\t", "\r", "\n", "-- end", "/* end */"]), max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    comment=_LINE_COMMENT,
    end=_LINE_END,
    second=st.sampled_from(["SELECT nextval('s')", "DELETE FROM t", "x"]),
    dialect=st.sampled_from(["postgresql", "sqlite", "mysql"]),
)
def test_a_statement_after_a_line_comment_and_a_semicolon_is_several_on_every_dialect(
    comment: str, end: str, second: str, dialect: str
) -> None:
    # a plan worker explaining this as one statement would run the second one on PostgreSQL
    assert classify(f"SELECT 1 {comment}{end}; {second}", dialect=dialect).several


@settings(max_examples=300, deadline=None)
@given(
    comment=_LINE_COMMENT,
    end=_LINE_END,
    trail=_TRAIL,
    dialect=st.sampled_from(["postgresql", "sqlite", "mysql"]),
)
def test_only_whitespace_and_comments_after_the_semicolon_is_one_statement(
    comment: str, end: str, trail: list[str], dialect: str
) -> None:
    statement = f"SELECT 1 {comment}{end};{''.join(trail)}"
    assert not classify(statement, dialect=dialect).several


def test_a_bracketed_sqlite_table_is_the_collection() -> None:
    found = classify("SELECT a FROM [my [table] WHERE b = 1", dialect="sqlite")
    assert found.collection == "my [table"


# --- real SQLite as the oracle ---------------------------------------------------------------

SCHEMA = """
CREATE TABLE t (a TEXT UNIQUE, b TEXT, "x y" TEXT, [q'r] TEXT, `z` TEXT, e TEXT);
CREATE TABLE u (x TEXT);
"""


def _accepts(connection: sqlite3.Connection, statement: str) -> bool:
    try:
        connection.execute("EXPLAIN " + statement)
    except sqlite3.ProgrammingError as error:
        return "supplied" in str(error)  # prepared: only the parameters' values are missing
    except (sqlite3.Error, UnicodeEncodeError, ValueError):
        return False
    return True


def _sqlite(double_quoted_strings: bool) -> Callable[[str], bool] | None:
    """Whether SQLite accepts a statement; ``double_quoted_strings=False``: with ``"x"``
    only ever a name (``SQLITE_DBCONFIG_DQS_DML`` / ``_DDL`` off), or None where that cannot
    be set from here."""
    connection = sqlite3.connect(":memory:")
    connection.executescript(SCHEMA)
    if double_quoted_strings:
        return lambda statement: _accepts(connection, statement)
    if hasattr(connection, "setconfig"):  # Python 3.12+
        connection.setconfig(sqlite3.SQLITE_DBCONFIG_DQS_DML, False)
        connection.setconfig(sqlite3.SQLITE_DBCONFIG_DQS_DDL, False)
        return lambda statement: _accepts(connection, statement)
    connection.close()  # not used below: SQLite is reached through ctypes instead
    # sqlite3_db_config takes varargs: through ctypes only where they pass like other args
    path = ctypes.util.find_library("sqlite3")
    if path is None or sys.platform != "linux" or platform.machine() != "x86_64":
        return None
    lib = ctypes.CDLL(path)
    db = ctypes.c_void_p()
    lib.sqlite3_open(b":memory:", ctypes.byref(db))
    for option in (1013, 1014):  # SQLITE_DBCONFIG_DQS_DML, SQLITE_DBCONFIG_DQS_DDL
        lib.sqlite3_db_config(db, ctypes.c_int(option), ctypes.c_int(0), ctypes.c_void_p())
    lib.sqlite3_exec(db, SCHEMA.encode(), None, None, None)

    def prepares(statement: str) -> bool:
        data = ("EXPLAIN " + statement).encode("utf-8", "replace")
        handle, tail = ctypes.c_void_p(), ctypes.c_char_p()
        code = lib.sqlite3_prepare_v2(db, data, len(data), ctypes.byref(handle), ctypes.byref(tail))
        lib.sqlite3_finalize(handle)
        return code == 0 and handle.value is not None and not (tail.value or b"").strip()

    return prepares


LENIENT = _sqlite(double_quoted_strings=True)
STRICT = _sqlite(double_quoted_strings=False)

# "zq" within text that would close what a lexer misread before it: a comment, a quote...
_UNITS = ["*/", "*/", "$a$", "$a$", "'", "]", '"', "\\", "/*", "--", "\n", " ", "`", "#", "%("]
secrets = st.tuples(
    st.lists(st.sampled_from(_UNITS), max_size=3), st.lists(st.sampled_from(_UNITS), max_size=2)
).map(lambda parts: "".join(parts[0]) + " zq" + "".join(parts[1]))
PLANT = "\x00"
"""Where the planted string or comment goes."""
ATOMS = [
    "a", "b", "t.a", '"a"', "[a]", "`a`", '"x y"', "[q'r]", "t.[q'r]", "E", "1", "1.5",
    "0x1F", "''", "'it''s'", "'*/'", "'/*'", "'--'", "'\\'", "x'00'", "NULL", "?", "?1", ":p",
    "@p", "$p", "$a$", "E'\\'", "'[a'", "'\"'", '"\'"', "e", "t.\"x y\"",
]  # fmt: skip
OPERATORS = ["=", "<>", "||", "+", "%", "AND", "OR", "LIKE", "IS", "IS DISTINCT FROM", "AS", ""]
TRAPS = ["E'\\'", "$a$", "[q'r]", "t.[q'r]", '"\'"', "'\\'", "[a]", "%(a)s", "e %('x)s')", "`'`"]
"""Values a lexer may misread so that it sees a quote open or close where SQLite does not."""
NOISE = [
    "/* a /* b */", "/* a /* b */", "/*/ c */", "/*/ c */", "/* c */", "-- c\n", "/*! c */",
    "/**/", "(", ")", ",", "E", "$", "%(", ")s", "*/",
]  # fmt: skip
"""Put between words; never an unclosed quote or bracket, which could make SQLite read the
planted text as SQL (then it is no longer a literal)."""
PLANTED = [PLANT, f"{PLANT} = a", f"lower({PLANT})", f"a || {PLANT}", f"{PLANT} a"]
"""Where a planted value stands: some of them a name could stand in too."""
TEMPLATES = [
    "SELECT {0}, {1} FROM t",
    "SELECT {0}, {1} FROM t",
    "SELECT {0} {1} FROM t",
    "SELECT a FROM t WHERE {0} = {1}",
    'SELECT {0} AS "al", {1} FROM t ORDER BY "al", {0}',
    'SELECT * FROM t JOIN u ON {0} = u.x WHERE t."a" IS DISTINCT FROM {1}',
    'UPDATE t SET a = {0}, "b" = {1} WHERE e IN ({0}, {1})',
    'INSERT INTO t (a, "b") VALUES ({0}, {1}) ON CONFLICT (a) DO UPDATE SET b = {1}, "e" = {0}',
    "CREATE VIEW v AS SELECT {0} FROM t JOIN u ON lower({1}) = u.x",
    'CREATE TRIGGER g AFTER INSERT ON t BEGIN UPDATE u SET x = {0}, "x" = {1}; END',
    "CREATE INDEX i ON t (a, lower({0})) WHERE b = {1}",
    "CREATE TABLE w (c TEXT DEFAULT ({0}), d TEXT CHECK (d <> {1}))",
    "WITH c(x) AS (SELECT {0}) SELECT x, {1} FROM c",
    "SELECT {0} FROM t GROUP BY {1} HAVING {0}",
    "SELECT count(*) OVER (PARTITION BY {0} ORDER BY {1}) FROM t",
    "INSERT INTO t (a, b) SELECT {0}, {1} FROM u",
    "UPDATE t SET (a, b) = ({0}, {1})",
    "DELETE FROM t WHERE {0} RETURNING {1}",
    "{0} SELECT {1}",
]


def _compound(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, st.sampled_from(OPERATORS), children).map(" ".join),
        st.tuples(st.sampled_from(["coalesce", "max"]), children, children).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"
        ),
        st.tuples(children, children).map(lambda t: f"CASE WHEN {t[0]} THEN {t[1]} END"),
        st.tuples(children, children).map(lambda t: f"{t[0]} IN ({t[1]})"),
        children.map("({})".format),
        children.map("lower({})".format),
    )


expressions = st.recursive(st.sampled_from(ATOMS) | st.just(PLANT), _compound, max_leaves=4)


def _planted(secret: str, form: str) -> str:
    if form == "string":
        return "'" + secret.replace("'", "''") + "'"
    if form == "dquote":
        return '"' + secret.replace('"', '""') + '"'
    if form == "comment":  # beside a value: the expression stays whole
        return "/*" + secret.replace("*/", "") + "*/ NULL"
    return "NULL --" + secret.replace("\n", "") + "\n"


def _statement(template: str, values: list[str], noise: list[tuple[int, str]]) -> str:
    """``template`` filled in, ``noise`` put between its words (never in a planted one)."""
    words = template.format(*values).split(" ")
    for at, piece in noise:
        words.insert(at % (len(words) + 1), piece)
    return " ".join(words)


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    template=st.sampled_from(TEMPLATES),
    first=st.sampled_from(TRAPS) | expressions,
    second=st.sampled_from(PLANTED) | expressions,
    noise=st.lists(st.tuples(st.integers(0, 99), st.sampled_from(NOISE)), max_size=2),
    secret=secrets,
    form=st.sampled_from(["string", "dquote", "comment", "line comment"]),
)
def test_no_literal_or_comment_sqlite_accepts_survives(
    template: str,
    first: str,
    second: str,
    noise: list[tuple[int, str]],
    secret: str,
    form: str,
) -> None:
    shape = _statement(template, [first, second], noise)
    statement = shape.replace(PLANT, _planted(secret, form))
    assert LENIENT is not None
    if PLANT not in shape or not LENIENT(statement):
        return  # nothing planted, or SQLite rejects it: no telling what its author meant
    # "zq" is a string if SQLite needs double-quoted strings for it and NULL can stand there
    if form == "dquote" and (
        STRICT is None or STRICT(statement) or not STRICT(shape.replace(PLANT, "NULL"))
    ):
        return
    found = classify(statement, dialect="sqlite")
    assert "zq" not in f"{found.text}|{found.operation}|{found.collection}", statement


@settings(max_examples=300, deadline=None)
@given(
    secret=secrets,
    escape=st.sampled_from(["backslash", "doubled"]),
    dialect=st.sampled_from(["mysql", "mariadb", "postgresql"]),
)
def test_no_literal_survives_either_reading_of_a_backslash(
    secret: str, escape: str, dialect: str
) -> None:
    """A statement written for one setting of backslash escapes (MySQL's default, or
    ``NO_BACKSLASH_ESCAPES`` / PostgreSQL's default) leaks nothing read under the other."""
    if escape == "backslash":
        quoted = "'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'"
    else:
        quoted = "'" + secret.replace("'", "''") + "'"
    line = quoted.replace("\n", " ")  # in a -- comment
    statements = [
        f"SELECT a FROM t WHERE p = 'C:\\' AND s = {quoted}",
        f"SELECT a FROM t WHERE p = 'C:\\\\' AND s = {quoted} OR s = {quoted}",
        f"INSERT INTO t (a, b) VALUES ({quoted}, 'x\\'), ({quoted}, {quoted})",
        f"UPDATE t SET a = {quoted} /* x\\' */, b = {quoted} -- {line}\nWHERE c = {quoted}",
    ]
    for statement in statements:
        found = classify(statement, dialect=dialect)
        assert "zq" not in f"{found.text}|{found.collection}", statement
