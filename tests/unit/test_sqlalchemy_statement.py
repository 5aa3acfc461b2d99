"""Statement sanitizing and classification (``syncperf._sql``)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects.postgresql import asyncpg, psycopg

from syncperf import _sql
from syncperf._sql import MAX_TEXT, classify, normalize
from syncperf._sql_lex import Token, lex


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT * FROM t WHERE a = 'x''y' AND b = 42", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("SELECT E'a\\'b', X'DEADBEEF', B'0101', N'n', U&'d\\0061t'", "SELECT ?, ?, ?, ?, ?"),
        ("SELECT $$dollar$$, $tag$quoted $x$ $tag$", "SELECT ?, ?"),
        ("SELECT 1.5e-3, .25, 0x1F, -7", "SELECT ?, ?, ?, -?"),
        ("SELECT 0b1010, 0o17, 0X1f_ff, 1_000_000, 2.5E+10", "SELECT ?, ?, ?, ?, ?"),
        ("SELECT a FROM t WHERE b = ?1 AND c = ?2", "SELECT a FROM t WHERE b = ? AND c = ?"),
        ("/* a /* b */ secret */ SELECT 1", "SELECT ?"),
        (
            "SELECT /* x /* y */ z */ a FROM t /* unterminated /* nested */ secret",
            "SELECT a FROM t",
        ),
        ("SELECT a -- secret */ 'x\nFROM t", "SELECT a FROM t"),
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


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (  # psycopg
            "SELECT a FROM t WHERE id IN (%(id_1_1)s::INTEGER, %(id_1_2)s::INTEGER)",
            "SELECT a FROM t WHERE id IN (?)",
        ),
        (  # asyncpg
            "SELECT a FROM t WHERE id IN ($1::INTEGER, $2::INTEGER, $3::INTEGER)",
            "SELECT a FROM t WHERE id IN (?)",
        ),
        (
            "SELECT a FROM t WHERE d IN ($1::TIMESTAMP WITH TIME ZONE, $2::TIMESTAMP WITH "
            "TIME ZONE) AND n IN ($3::NUMERIC(10, 2), $4::NUMERIC(10, 2)) AND x IN "
            '($5::INTEGER[], $6::INTEGER[]) AND e IN ($7::sch."my enum", $8::sch."my enum")',
            "SELECT a FROM t WHERE d IN (?) AND n IN (?) AND x IN (?) AND e IN (?)",
        ),
        (
            "INSERT INTO t (a, b) VALUES (%(a__0)s::INTEGER, %(b__0)s::VARCHAR), "
            "(%(a__1)s::INTEGER, %(b__1)s::VARCHAR)",
            "INSERT INTO t (a, b) VALUES (?)",
        ),
        (
            "INSERT INTO t (a) VALUES ($1::INTEGER), ($2::INTEGER), ($3::INTEGER)",
            "INSERT INTO t (a) VALUES (?)",
        ),
        (
            "SELECT a::text FROM t WHERE b = $1::VARCHAR",
            "SELECT a::text FROM t WHERE b = ?::VARCHAR",
        ),
    ],
)
def test_lists_of_placeholders_with_bind_casts_collapse(statement: str, expected: str) -> None:
    assert normalize(statement) == expected


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
def test_in_lists_of_any_length_are_one_statement_with_bind_casts(driver: str) -> None:
    dialect = psycopg.dialect() if driver == "psycopg" else asyncpg.dialect()
    t = sa.table("t", sa.column("id", sa.Integer), sa.column("d", sa.DateTime(timezone=True)))
    texts = set()
    for size in range(1, 40):
        statement = sa.select(t.c.id).where(t.c.id.in_(range(size)), t.c.d.in_([None] * size))
        compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        texts.add(normalize(str(compiled)))
    assert texts == {"SELECT t.id FROM t WHERE t.id IN (?) AND t.d IN (?)"}, texts


@pytest.mark.parametrize(
    ("statement", "batch"),
    [
        ("SELECT a FROM t WHERE id = ?", 0),
        ("SELECT a FROM t WHERE id IN (?)", 1),
        ("SELECT a FROM t WHERE id IN ($1::INTEGER, $2::INTEGER, $3::INTEGER) AND b IN (?, ?)", 3),
        ("SELECT a FROM t WHERE id NOT IN (?::NUMERIC(10, 2), ?::NUMERIC(10, 2))", 2),
        ("SELECT a FROM t WHERE (a, b) IN ((?, ?), (?, ?), (?, ?), (?, ?))", 4),
        ("INSERT INTO t (a, b, c) VALUES (?, ?, ?)", 0),  # one row: not a batch
        ("INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, DEFAULT)", 3),
        ("INSERT INTO t (a) VALUES ($1::INTEGER), ($2::INTEGER), ($3::INTEGER)", 3),
        ("SELECT coalesce(?, ?, ?), min(?, ?) FROM t", 0),  # arguments, not a list of values
    ],
)
def test_the_largest_in_list_or_values_rows_is_the_statements_batch(
    statement: str, batch: int
) -> None:
    assert classify(statement).batch == batch


@pytest.mark.parametrize(
    ("statement", "several"),
    [
        ("SELECT 1", False),
        ("SELECT 1;", False),
        ("SELECT 1; ; -- done\n", False),
        ("SELECT 1; INSERT INTO audit VALUES ('x'); SELECT nextval('s1')", True),
        ("SELECT 1;DELETE FROM t", True),
        ("SELECT 'a;b', \"i;j\" FROM t /* k; l */ -- m; n", False),
        # PostgreSQL's quotes and nested comments: SQLite and MySQL read a ; outside them
        ("SELECT E'c\\';d', $$e;f$$, $é$g;h$é$ FROM t", True),
        ("SELECT a FROM t /* x /* nested; */ still; a comment */ WHERE b = 1", True),
        ("SELECT x€$t$ FROM a; DELETE FROM b; --$t$", True),  # x€$t$ is a name, not a quote
        # standard_conforming_strings off: the backslash escapes the quote, the ; is outside
        ("SELECT '\\'';DELETE FROM t;--'", True),
        ("SELECT 1 # x; DELETE FROM t", True),  # '#' is an operator on PostgreSQL
    ],
)
def test_a_second_statement_after_a_semicolon_is_seen_however_it_is_quoted(
    statement: str, several: bool
) -> None:
    for dialect in ("postgresql", "sqlite", "mysql"):  # read both ways whatever the dialect
        assert classify(statement, dialect=dialect).several is several


def test_mysql_lexing_treats_double_quotes_and_backslashes_as_string_syntax() -> None:
    # a backslash escapes the next character; where a quote follows it, see test_sql_dialects
    statement = r"""SELECT "a\\""b secret", 'c\\''d secret', `col` FROM `db`.`t` # note secret"""
    text = normalize(statement, dialect="mysql")
    assert text == "SELECT ?, ?, `col` FROM `db`.`t`"
    assert classify(statement, dialect="mysql").collection == "db.t"


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            'SELECT id FROM users WHERE email = "alice@example.com"',
            "SELECT id FROM users WHERE email = ?",
        ),
        (
            'SELECT "user".id, "user"."select" FROM "user" WHERE "user".email == "x" OR a IN ("y")',
            'SELECT "user".id, "user"."select" FROM "user" WHERE "user".email == ? OR a IN (?)',
        ),
        (
            'INSERT INTO "user" ("select", name) VALUES ("a", "b"), ("c", "d")',
            'INSERT INTO "user" ("select", name) VALUES (?)',
        ),
        (
            'UPDATE "t" SET "col" = "v", "other" = lower("w") WHERE id = 1',
            'UPDATE "t" SET "col" = ?, "other" = lower(?) WHERE id = ?',
        ),
        (
            'CREATE TABLE IF NOT EXISTS "t" ("id" INTEGER, "n" TEXT DEFAULT "x", '
            'PRIMARY KEY ("id"))',
            'CREATE TABLE IF NOT EXISTS "t" ("id" INTEGER, "n" TEXT DEFAULT ?, PRIMARY KEY ("id"))',
        ),
        (
            'SELECT "secret", a AS "alias" FROM t ORDER BY "alias", "other"',
            'SELECT ?, a AS "alias" FROM t ORDER BY "alias", ?',
        ),
        (
            'SELECT * FROM a JOIN b ON "tok-SECRET" = b.x ORDER BY "SECRET2"',
            "SELECT * FROM a JOIN b ON ? = b.x ORDER BY ?",
        ),
        (
            'SELECT a FROM t GROUP BY "S" ORDER BY a, "S"',
            "SELECT a FROM t GROUP BY ? ORDER BY a, ?",
        ),
        (
            'SELECT rank() OVER (PARTITION BY "S" ORDER BY "S") FROM t',
            "SELECT rank() OVER (PARTITION BY ? ORDER BY ?) FROM t",
        ),
        (
            'SELECT * FROM (SELECT a FROM t ORDER BY "S") AS s ORDER BY "S"',
            "SELECT * FROM (SELECT a FROM t ORDER BY ?) AS s ORDER BY ?",
        ),
        (
            'SELECT a FROM t WHERE a IS DISTINCT FROM "S" OR a IS NOT DISTINCT FROM "S"',
            "SELECT a FROM t WHERE a IS DISTINCT FROM ? OR a IS NOT DISTINCT FROM ?",
        ),
        ('SELECT a FROM "t" INDEXED BY "i"', 'SELECT a FROM "t" INDEXED BY "i"'),
        ('CREATE INDEX "i" ON "t" ("a", "b")', 'CREATE INDEX "i" ON "t" ("a", "b")'),
        (
            'CREATE TRIGGER "g" AFTER INSERT ON "t" BEGIN SELECT 1; END',
            'CREATE TRIGGER "g" AFTER INSERT ON "t" BEGIN SELECT ?; END',
        ),
        (
            'CREATE VIEW "v" AS SELECT * FROM a JOIN b ON "S" = b.x',
            'CREATE VIEW "v" AS SELECT * FROM a JOIN b ON ? = b.x',
        ),
        ('SELECT * FROM t WHERE a = "unterminated secret', "SELECT * FROM t WHERE a = ?"),
    ],
)
def test_sqlite_double_quoted_values_are_literals_outside_identifier_positions(
    statement: str, expected: str
) -> None:
    assert normalize(statement, dialect="sqlite") == expected


def test_postgresql_double_quotes_are_identifiers() -> None:
    statement = 'SELECT "userId" FROM "Todo" WHERE "userId" = $1 AND "t"."x" = \'v\''
    expected = 'SELECT "userId" FROM "Todo" WHERE "userId" = ? AND "t"."x" = ?'
    assert normalize(statement, dialect="postgresql") == expected


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SET application_name TO secret", "SET application_name TO ?"),
        ("set local statement_timeout = 5000", "set local statement_timeout = ?"),
        ('SET SESSION search_path TO "my secret", public', "SET SESSION search_path TO ?"),
        ("SET TIME ZONE 'Europe/Paris'", "SET TIME ZONE ?"),
        ("SET TIME ZONE secret_zone", "SET TIME ZONE ?"),
        ("SET ROLE secret_role", "SET ROLE ?"),
        ("SET SESSION AUTHORIZATION secret_user", "SET SESSION AUTHORIZATION ?"),
        ("SET NAMES secret_charset", "SET NAMES ?"),
        ("ALTER ROLE app SET search_path TO secret, public", "ALTER ROLE app SET search_path TO ?"),
        ("ALTER DATABASE app SET work_mem = secret", "ALTER DATABASE app SET work_mem = ?"),
        ("PRAGMA key = passphrase", "PRAGMA key = ?"),
        ('PRAGMA main.key = "passphrase"', "PRAGMA main.key = ?"),
        ("UPDATE t SET a = b WHERE c = d", "UPDATE t SET a = b WHERE c = d"),
        ("SHOW search_path", "SHOW search_path"),
    ],
)
def test_setting_values_are_sanitized(statement: str, expected: str) -> None:
    assert normalize(statement) == expected
    assert normalize(statement, dialect="sqlite") == expected


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            "SELECT set_config('app.x', 'y', true); SET LOCAL app.user_token TO tokLive",
            "SELECT set_config(?, ?, true); SET LOCAL app.user_token TO ?",
        ),
        ("SELECT ?; SET SESSION AUTHORIZATION alice", "SELECT ?; SET SESSION AUTHORIZATION ?"),
        ("LOCK TABLE t; SET ROLE admin_x", "LOCK TABLE t; SET ROLE ?"),
        ("SET ROLE a_x; SELECT b FROM t", "SET ROLE ?; SELECT b FROM t"),
        (
            "SELECT 1; ALTER ROLE r SET search_path TO s_x",
            "SELECT ?; ALTER ROLE r SET search_path TO ?",
        ),
        ("SELECT 1; PRAGMA key = k_x; SELECT 2", "SELECT ?; PRAGMA key = ?; SELECT ?"),
        ("SELECT 1; not_a_verb secret_x", "SELECT ?; ?"),
    ],
)
def test_setting_values_are_sanitized_in_every_statement_of_a_string(
    statement: str, expected: str
) -> None:
    assert normalize(statement) == expected
    assert normalize(statement, dialect="sqlite") == expected


class _CountedTokens(list[Token]):
    """A token list that counts the tokens read from it: one per index, a slice's length."""

    reads = 0

    def __getitem__(self, key: Any) -> Any:
        found = super().__getitem__(key)
        self.reads += len(found) if isinstance(key, slice) else 1
        return found


def _token_reads(statement: str, dialect: str, monkeypatch: pytest.MonkeyPatch) -> int:
    lexed: list[_CountedTokens] = []

    def counted(text: str, **options: bool) -> list[Token]:
        lexed.append(_CountedTokens(lex(text, **options)))
        return lexed[-1]

    with monkeypatch.context() as patch:
        patch.setattr(_sql, "lex", counted)
        classify(statement, dialect=dialect)
    return lexed[0].reads


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite", "mysql"])
@pytest.mark.parametrize(
    "statement",
    [
        "SELECT 1; ",
        "SET LOCAL app.x TO y; ",
        "PRAGMA key = k; ",
        "ALTER TABLE t ADD COLUMN c INT; ",  # no SET: scanned to the statement's end
        "ALTER ROLE r SET search_path TO s; ",
        'WITH x AS (SELECT 1) SELECT "a" FROM x; ',
        "SELECT 1; not_a_verb x; ",  # a later statement not understood: hidden whole
    ],
)
def test_a_string_of_many_statements_is_read_in_linear_time(
    statement: str, dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four times the statements, (about) four times the tokens read, never sixteen: counted,
    not timed (a quadratic reading of 32,000 statements took seconds on a request thread)."""
    few = _token_reads(statement * 200, dialect, monkeypatch)
    many = _token_reads(statement * 800, dialect, monkeypatch)
    assert many < 5 * few


@pytest.mark.parametrize(
    ("statement", "operation"),
    [
        ("/* a */ SELECT 1", "SELECT"),  # nested comments: test_sql_dialects
        ("secretword FROM t", None),
        ("alice@example.com", None),
        ("sk_live_123 SELECT 1", None),
        ("explain analyze select 1", "EXPLAIN"),
        ("values (1), (2)", "VALUES"),
        ("COPY t FROM STDIN", "COPY"),
        ("CALL refresh_all()", "CALL"),
        ("WITH x AS (SELECT 1) UPDATE t SET a = 1", "UPDATE"),
        ("WITH x AS (SELECT 1) secret", None),
        ("PRAGMA foreign_keys = ON", "PRAGMA"),
        ("SAVEPOINT sa_savepoint_1", "SAVEPOINT"),
        ("START TRANSACTION", "START"),
        ('"SELECT" FROM t', None),
    ],
)
def test_operation_name_comes_only_from_sql_keywords(statement: str, operation: str | None) -> None:
    for dialect in ("postgresql", "sqlite", "mysql"):
        found = classify(statement, dialect=dialect)
        assert found.operation == operation
        if operation is None:
            assert found.text == "?"


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
    if "\\" in secret:  # with standard_conforming_strings off \' escapes: the rest may be one ?
        assert text.startswith("SELECT a FROM t WHERE s = ?")
    else:
        assert text == "SELECT a FROM t WHERE s = ? AND n = ? AND e = ? AND d = ?"


_DOLLAR_TAG = st.text(
    # PostgreSQL's tags: an identifier without "$"; any non-ASCII character is a letter to it
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)).filter(
        lambda c: c.isascii() is False or c.isalnum() or c == "_"
    ),
    min_size=1,
    max_size=8,
).filter(lambda tag: not tag[0].isascii() or not tag[0].isdigit())


@settings(max_examples=300, deadline=None)
@given(secret=_SECRET, tag=_DOLLAR_TAG)
def test_no_dollar_quoted_literal_survives_whatever_its_tag(secret: str, tag: str) -> None:
    body = secret.replace("$", "")
    text = normalize(f"SELECT ${tag}${body}${tag}$ AS k, a FROM t")
    assert "zq" not in text
    assert text == "SELECT ? AS k, a FROM t"


@pytest.mark.parametrize("tag", ["é", "€", "😀", "a€", "\uff11", "_1", "tägé"])
def test_a_dollar_quote_with_a_non_ascii_tag_is_a_literal(tag: str) -> None:
    # PostgreSQL reads every one of these as a dollar-quoted string (checked with psql)
    assert normalize(f"SELECT ${tag}$api key hunter2${tag}$") == "SELECT ?"


@settings(max_examples=200, deadline=None)
@given(secret=_SECRET)
def test_no_literal_survives_mysql_escaping(secret: str) -> None:
    # quotes doubled, not escaped by a backslash: see test_sql_dialects for \'
    escaped = secret.replace("\\", "\\\\").replace("'", "''").replace('"', '""')
    text = normalize(f"SELECT a FROM t WHERE s = '{escaped}' OR d = \"{escaped}\"", dialect="mysql")
    assert text == "SELECT a FROM t WHERE s = ? OR d = ?"


_WORD_SECRET = st.from_regex(r"[a-z0-9_]{1,20}", fullmatch=True).map(lambda s: "zq" + s)


def _shapes(secret: str, word: str, number: int, dialect: str) -> list[str]:
    """Statements embedding ``secret`` (any text), ``word`` and ``number`` as literal values."""
    quoted = secret.replace("'", "''")
    tag = "t" + "x" * len(secret)  # longer than the secret: never inside it
    no_comment = secret.replace("*", "").replace("/", "").replace("\n", " ")
    shapes = [
        f"SELECT a FROM t WHERE s = '{quoted}'",
        f"INSERT INTO t (a, b) VALUES ('{quoted}', {number}), ('{quoted}', {number})",
        f"UPDATE t SET a = '{quoted}', b = {number} WHERE id = {number}",
        f"SELECT a FROM t WHERE s IN ('{quoted}', '{quoted}') AND n > {number}",
        f"SELECT a FROM t WHERE s LIKE '%{quoted}%' -- {no_comment}\nAND n = -{number}.5e3",
        f"/* {no_comment} /* {no_comment} */ {no_comment} */ SELECT a FROM t",
        f"SELECT a /* {no_comment} */ FROM t",
        f"SELECT 0x{number:x}, X'{number:x}', 0b{number:b}, {number:_}",
        f"SET application_name TO {word}",
        f"SET app.value = {word}",
        f"SET ROLE {word}",
        f"ALTER ROLE r SET search_path TO {word}",
        f"PRAGMA key = {word}",
        f"SELECT * FROM t WHERE s = '{quoted}",  # unterminated
    ]
    if dialect == "postgresql":
        e_quoted = quoted.replace("\\", "\\\\")
        shapes += [
            f"SELECT E'{e_quoted}', $${secret.replace('$', '')}$$, ${tag}${secret}${tag}$",
            f"DO ${tag}$BEGIN PERFORM '{quoted}'; END${tag}$",
        ]
    if dialect == "sqlite":
        dquoted = secret.replace('"', '""')
        shapes += [
            f'SELECT id FROM users WHERE email = "{dquoted}"',
            f'INSERT INTO "t" ("a") VALUES ("{dquoted}")',
            f'UPDATE t SET a = "{dquoted}" WHERE b IN ("{dquoted}", "{dquoted}")',
            f'SELECT "{dquoted}" FROM t WHERE a <> "{dquoted}" OR b BETWEEN "{dquoted}" AND 1',
            f'SELECT lower("{dquoted}") || "{dquoted}" FROM t WHERE a = "{dquoted}',
            f'SELECT * FROM a JOIN b ON "{dquoted}" = b.x ORDER BY "{dquoted}"',
            f'SELECT a, rank() OVER (PARTITION BY "{dquoted}") FROM t GROUP BY "{dquoted}"',
            f'SELECT * FROM (SELECT a FROM t ORDER BY "{dquoted}") '
            f'WHERE a IS DISTINCT FROM "{dquoted}"',
        ]
    return shapes


@settings(max_examples=300, deadline=None)
@given(
    secret=_SECRET,
    word=_WORD_SECRET,
    number=st.integers(min_value=10_000, max_value=10**15),
    dialect=st.sampled_from(["postgresql", "sqlite"]),
)
def test_no_secret_survives_in_any_statement_shape(
    secret: str, word: str, number: int, dialect: str
) -> None:
    for statement in _shapes(secret, word, number, dialect):
        found = classify(statement, dialect=dialect)
        exported = f"{found.text}|{found.operation}|{found.collection}"
        assert "zq" not in exported, statement
        for digits in (str(number), f"{number:x}", f"{number:b}", f"{number:_}"):
            assert digits not in exported, statement


_SETTINGS = [
    "SET LOCAL app.token TO {0}",
    "SET app.token = {0}",
    "SET SESSION AUTHORIZATION {0}",
    "SET ROLE {0}",
    "SET TIME ZONE {0}",
    "SET search_path TO {0}, public",
    "ALTER ROLE r SET search_path TO {0}",
    "PRAGMA key = {0}",
]
_BEFORE = ["SELECT set_config('a', 'b', true)", "SELECT ?", "LOCK TABLE t", "BEGIN", "SELECT 1;"]


@settings(max_examples=300, deadline=None)
@given(
    word=_WORD_SECRET,
    before=st.lists(st.sampled_from(_BEFORE), min_size=1, max_size=3),
    setting=st.sampled_from(_SETTINGS),
    after=st.sampled_from(["", "; SELECT a FROM t", ";"]),
    dialect=st.sampled_from(["postgresql", "sqlite", "mysql"]),
)
def test_no_planted_setting_value_survives_in_a_later_statement(
    word: str, before: list[str], setting: str, after: str, dialect: str
) -> None:
    statement = "; ".join([*before, setting.format(word)]) + after
    found = classify(statement, dialect=dialect)
    assert word not in f"{found.text}|{found.operation}|{found.collection}", statement
