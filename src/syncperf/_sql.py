"""SQL statement sanitizing and classification for ``syncperf.sqlalchemy``.

``normalize()`` turns a statement as sent to the driver into text safe to export: every
literal (strings, dollar-quoted, numbers, hex and bit strings, SQLite's double-quoted strings),
every placeholder and a setting's value (``SET name TO value``, ``PRAGMA key = value``) become
``?``, comments are dropped (a sqlcommenter comment carries per-request IDs), whitespace
collapses, and lists of placeholders collapse to one (``IN (?, ?, ?)`` and ``IN (?)``, a
3-row and a 50-row ``VALUES`` alike). The result is the ``db.query.text`` of spans and the
identity of a statement for N+1 detection.

``classify()`` reads ``db.operation.name`` (the verb, from an allow-list of SQL keywords; the
main verb after ``WITH``) and ``db.collection.name`` (the first table the verb acts on). A
statement that does not start with one of those keywords is not understood: its text is ``?``.

Lexing follows the dialect: PostgreSQL (comments nest), SQLite (``"..."`` is a string
wherever SQLite could not read it as a name, see ``syncperf._sql_sqlite``; ``[name]``; no
``E'...'`` or dollar quotes), MySQL / MariaDB (``"..."`` is a string; ``--`` starts a comment
only before a space; no ``E'...'`` or dollar quotes). Whether a backslash escapes a quote is
a server setting (MySQL's ``NO_BACKSLASH_ESCAPES``, PostgreSQL's
``standard_conforming_strings``): where the two readings end a string in different places,
the rest of the statement is one value, and so it is where a SQLite or MySQL comment holds a
``/*``. When in doubt a token is a value: over-redacting costs readability, under-redacting
would leak. Both run once per distinct statement (callers cache the result): correctness
matters here, not cost. Bound parameter *values* never reach this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from syncperf._gate import name as gate_name
from syncperf._sql_sqlite import SqliteNames, Token

__all__ = ["MAX_TEXT", "OPERATIONS", "Classified", "classify", "normalize"]

MAX_TEXT = 2048
"""Longest ``db.query.text`` exported; longer normalized statements are cut and end in ``...``."""

OPERATIONS = frozenset(
    {
        # data
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE", "VALUES",
        "TABLE", "COPY", "CALL", "DO", "EXECUTE", "PREPARE", "DEALLOCATE", "EXPLAIN",
        "DECLARE", "FETCH", "MOVE", "CLOSE", "LOCK",
        # transactions and sessions
        "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE",
        "SET", "RESET", "SHOW", "DISCARD", "USE", "PRAGMA", "LISTEN", "UNLISTEN", "NOTIFY",
        # schema and maintenance
        "CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME", "COMMENT", "GRANT", "REVOKE",
        "ANALYZE", "VACUUM", "REINDEX", "CLUSTER", "REFRESH", "CHECKPOINT", "ATTACH",
        "DETACH", "DESCRIBE", "OPTIMIZE",
    }
)  # fmt: skip
"""The only values ``db.operation.name`` takes (it is a metric attribute and the span name)."""

_PATTERN = r"""
      (?P<comment>--[^\n]*|/\*HASH_COMMENT)
    | (?P<string>[Ee]'(?:[^'\\]|''|\\.)*(?:'|\Z)|(?:[BbXxNn]|[Uu]&)?'STRING_BODY(?:'|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*|)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<dquote>"DQUOTE_BODY(?:"|\Z))
    | (?P<bquote>`[^`]*(?:`|\Z)BRACKET)
    | (?P<param>%\(\w+\)s|%s|\?\d*|(?<![:\w]):[A-Za-z_]\w*|(?<![\w$])\$\d+|@@?\w+)
    | (?P<number>(?<![\w$])(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+
                              |\d[\d_]*(?:\.[\d_]*)?(?:[eE][-+]?\d+)?
                              |\.\d[\d_]*(?:[eE][-+]?\d+)?))
    | (?P<word>[A-Za-z_][\w$]*)
    | (?P<space>\s+)
    | (?P<other>.)
"""


def _body(quote: str, backslash: bool) -> str:
    """A quoted text: a doubled quote, or with ``backslash`` a backslash and what follows it
    (a quote too), is part of it."""
    if backslash:
        return rf"(?:[^{quote}\\]|{quote}{quote}|\\.?)*"
    return rf"(?:[^{quote}]|{quote}{quote})*"


def _compile(backslash: bool = False, brackets: bool = False) -> re.Pattern[str]:
    """The lexer of MySQL / MariaDB (``backslash``: it escapes in every string, ``#`` starts
    a comment), SQLite (``brackets``: ``[name]``) or PostgreSQL."""
    parts = {
        "STRING_BODY": _body("'", backslash),
        "DQUOTE_BODY": _body('"', backslash),
        "HASH_COMMENT": r"|\#[^\n]*" if backslash else "",
        "BRACKET": r"|\[[^\]]*(?:\]|\Z)" if brackets else "",
    }
    pattern = _PATTERN
    for key, value in parts.items():
        pattern = pattern.replace(key, value)
    return re.compile(pattern, re.S | re.X)


_TOKEN_SQLITE = _compile(brackets=True)
_READINGS = {
    quote: [re.compile(f"{quote}{_body(quote, b)}(?:{quote}|\\Z)", re.S) for b in (False, True)]
    for quote in "'\""
}
"""How a quoted text ends without and with backslash escapes."""
_TOKEN = _compile(backslash=False)
_TOKEN_MYSQL = _compile(backslash=True)
_MYSQL = frozenset({"mysql", "mariadb"})
_COMMENT_MARK = re.compile(r"/\*|\*/")
_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_ROWS = re.compile(r"\(\?\)(?:\s*,\s*\(\?\))+")
_SANITIZED = frozenset({"string", "dollar", "param", "number"})

_MAIN_VERBS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"})
_TABLE_AFTER = {
    "SELECT": ("FROM",),
    "DELETE": ("FROM",),
    "INSERT": ("INTO",),
    "REPLACE": ("INTO",),
    "MERGE": ("INTO",),
    "CREATE": ("TABLE", "VIEW", "INDEX"),
    "DROP": ("TABLE", "VIEW", "INDEX"),
    "ALTER": ("TABLE",),
    "TRUNCATE": ("TABLE",),
}
_SKIP_BEFORE_NAME = frozenset(
    {
        "ONLY",
        "IF",
        "NOT",
        "EXISTS",
        "TABLE",
        "OR",
        "REPLACE",
        "IGNORE",
        "ABORT",
        "FAIL",
        "ROLLBACK",
        "LOW_PRIORITY",
        "CONCURRENTLY",
        "LATERAL",
    }
)
_MAX_NAME = 128

# Settings: ``SET [scope] name {TO | =} value``, ``PRAGMA name = value``, ``ALTER ... SET``.
_SET_SCOPES = frozenset({"SESSION", "LOCAL", "GLOBAL", "PERSIST", "PERSIST_ONLY"})
_SET_TWO_WORDS = frozenset({("TIME", "ZONE"), ("SESSION", "AUTHORIZATION")})


@dataclass(frozen=True)
class Classified:
    """What a statement is: sanitized text, verb and first collection."""

    text: str
    """The normalized, sanitized statement (``db.query.text``), at most ``MAX_TEXT`` long."""
    operation: str | None
    """``db.operation.name``: one of ``OPERATIONS``, or None."""
    collection: str | None
    """``db.collection.name``: the first table the verb acts on, unquoted, or None."""


def normalize(statement: str, *, dialect: str = "postgresql") -> str:
    """Sanitize ``statement``: literals, setting values and placeholders become ``?``.

    Args:
        statement: SQL as sent to the driver.
        dialect: SQLAlchemy's dialect name (``postgresql``, ``sqlite``, ``mysql``,
            ``mariadb``...); any other name lexes as standard SQL (``"..."`` is a name).

    Returns:
        The normalized statement, whitespace collapsed, at most ``MAX_TEXT`` characters.
    """
    return classify(statement, dialect=dialect).text


def classify(statement: str, *, dialect: str = "postgresql") -> Classified:
    """Normalize ``statement`` and read its operation and collection names.

    Args:
        statement: SQL as sent to the driver.
        dialect: SQLAlchemy's dialect name (see ``normalize``).
    """
    mysql = dialect in _MYSQL
    tokens = _tokens(statement, dialect)
    operation, index = _verb(tokens)
    # A statement that does not start with a known keyword is not read: nothing of it is kept.
    text = _render(tokens, dialect, operation, index) if operation or not tokens else "?"
    collection = None
    if operation is not None:
        # a table name is a metric attribute: the value gate's bound (a name built from
        # request data, say a table per tenant, can be anything)
        collection = gate_name(_collection(tokens, operation, index, mysql))
    return Classified(text, operation, collection)


def _tokens(statement: str, dialect: str) -> list[Token]:
    mysql, sqlite = dialect in _MYSQL, dialect == "sqlite"
    match = (_TOKEN_MYSQL if mysql else _TOKEN_SQLITE if sqlite else _TOKEN).match
    tokens: list[Token] = []
    spaced = False
    position, size = 0, len(statement)
    while position < size:
        found = match(statement, position)
        if found is None:  # unreachable: ``other`` matches any character
            break
        kind, text, end = found.lastgroup or "other", found.group(), found.end()
        if (mysql or sqlite) and _postgresql_only(kind, text, mysql):
            kind, text, end = "word" if text[0] in "Ee" else "other", text[0], position + 1
        if text == "/*":
            end = _comment_end(statement, position, mysql or sqlite, mysql)
        elif not sqlite and (kind == "string" or (kind == "dquote" and mysql)):
            end = _string_end(statement, position, text, end, mysql)
        if end < 0:  # where this token ends depends on the server: the rest is one value
            tokens.append(("string", statement[position:], spaced or kind == "comment"))
            break
        if kind == "comment" or kind == "space":
            spaced = True
        else:
            tokens.append((kind, text, spaced))
            spaced = False
        position = end
    return tokens


def _postgresql_only(kind: str, text: str, mysql: bool) -> bool:
    """Whether SQLite or MySQL reads the start of this token otherwise: ``E'...'`` is a name
    then a string, ``$tag$`` names or parameters, and MySQL's ``--x`` two minus signs."""
    if kind == "dollar":
        return True
    if kind == "string":
        return text[0] in "Ee"
    return mysql and text[:2] == "--" and not (text[2:3] <= " " or text[2:3] == "\x7f")


def _comment_end(statement: str, start: int, flat: bool, mysql: bool) -> int:
    """End of the ``/* ... */`` comment at ``start``, or -1 when it is unclear.

    PostgreSQL nests comments; SQLite and MySQL (``flat``) end one at the first ``*/``: one
    holding a ``/*`` (which would nest elsewhere) is unclear, and so is MySQL's ``/*!``,
    ``/*M!`` or ``/*+`` holding a quote (its text is SQL to MySQL: ``'*/'`` a string in it).
    """
    if flat:
        end = statement.find("*/", start + 2)
        if end < 0:
            return len(statement)  # unterminated: swallowed to the end
        body = statement[start + 2 : end + 1]  # with the "*" of "*/": "/*/" opens one
        if "/*" in body:
            return -1
        if mysql and body.startswith(("!", "M!", "+")) and any(q in body for q in "'\"`"):
            return -1
        return end + 2
    depth = 0
    for mark in _COMMENT_MARK.finditer(statement, start):
        depth += 1 if mark.group() == "/*" else -1
        if depth == 0:
            return mark.end()
    return len(statement)  # unterminated: swallowed to the end


def _string_end(statement: str, position: int, text: str, end: int, mysql: bool) -> int:
    """``end`` of the string ``text`` at ``position``, or -1 when it depends on whether a
    backslash escapes a quote: in MySQL unless ``NO_BACKSLASH_ESCAPES``, in PostgreSQL with
    ``standard_conforming_strings`` off (always in PostgreSQL's ``E'...'``)."""
    if "\\" not in text or (not mysql and text[0] in "Ee"):
        return end
    start = position + len(text) - len(text.lstrip("BbXxNnUu&"))  # the opening quote
    plain, escaped = (reading.match(statement, start) for reading in _READINGS[statement[start]])
    return end if plain and escaped and plain.end() == escaped.end() else -1


def _render(tokens: list[Token], dialect: str, verb: str | None, index: int) -> str:
    cut = _setting_value(tokens, verb, index)
    dquote_values = dialect in _MYSQL
    sqlite = SqliteNames(tokens, verb, index) if dialect == "sqlite" else None
    out: list[str] = []
    for position, (kind, value, spaced) in enumerate(tokens[:cut]):
        if kind in _SANITIZED or (
            kind == "dquote"
            and (dquote_values or (sqlite is not None and not sqlite.is_name(position)))
        ):
            value = "?"
        if spaced and out:
            out.append(" ")
        out.append(value)
    if cut is not None and cut < len(tokens):
        out.append(" ?")
    text = _ROWS.sub("(?)", _LIST.sub("(?)", "".join(out)))
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 3] + "..."
    return text


def _setting_value(tokens: list[Token], verb: str | None, index: int) -> int | None:
    """Where the value of a setting starts (everything from there is one ``?``), or None."""
    if verb == "SET" or verb == "PRAGMA":
        position = index + 1
        if verb == "SET":
            while position + 1 < len(tokens):
                pair = (tokens[position][1].upper(), tokens[position + 1][1].upper())
                if pair in _SET_TWO_WORDS:
                    return position + 2
                if pair[0] not in _SET_SCOPES or tokens[position + 1][0] != "word":
                    break
                position += 1
        return _after_name(tokens, position)
    if verb == "ALTER":
        depth = 0
        for position in range(index + 1, len(tokens)):
            kind, value, _ = tokens[position]
            depth += (value == "(") - (value == ")")
            if depth == 0 and kind == "word" and value.upper() == "SET":
                start = _after_name(tokens, position + 1)
                if start > position + 2 and tokens[start - 1][1].upper() in ("TO", "="):
                    return start
                return None
    return None


def _after_name(tokens: list[Token], position: int) -> int:
    """Skip a (dotted) setting name and a following ``TO`` / ``=``."""
    size = len(tokens)
    while position < size and tokens[position][0] in ("word", "dquote", "bquote", "param"):
        position += 1
        if position + 1 < size and tokens[position][1] == ".":
            position += 1
            continue
        break
    if position < size and tokens[position][1].upper() in ("TO", "="):
        position += 1
    return position


def _verb(tokens: list[Token]) -> tuple[str | None, int]:
    """The statement's verb and its token index (the main verb after ``WITH ...``)."""
    for index, (kind, value, _) in enumerate(tokens):
        if kind == "word":
            verb = value.upper()
            if verb != "WITH":
                return (verb, index) if verb in OPERATIONS else (None, -1)
            depth = 0
            for later in range(index + 1, len(tokens)):
                later_kind, later_value, _ = tokens[later]
                if later_value == "(":
                    depth += 1
                elif later_value == ")":
                    depth -= 1
                elif depth == 0 and later_kind == "word" and later_value.upper() in _MAIN_VERBS:
                    return later_value.upper(), later
            return None, -1
        if value != "(":
            return None, -1
    return None, -1


def _collection(tokens: list[Token], verb: str, index: int, mysql: bool) -> str | None:
    if verb == "UPDATE":
        return _name_at(tokens, index + 1, mysql)
    markers = _TABLE_AFTER.get(verb)
    if markers is None:
        return None
    depth = 0
    for position in range(index + 1, len(tokens)):
        kind, value, _ = tokens[position]
        if value == "(":
            depth += 1
        elif value == ")":
            depth -= 1
            if depth < 0:
                return None
        elif (
            depth == 0
            and kind == "word"
            and value.upper() in markers
            and tokens[position - 1][1].upper() != "DISTINCT"  # not IS DISTINCT FROM x
        ):
            return _name_at(tokens, position + 1, mysql)
    if verb == "TRUNCATE":
        return _name_at(tokens, index + 1, mysql)
    return None


def _name_at(tokens: list[Token], position: int, mysql: bool) -> str | None:
    """A possibly qualified name (``schema.table``, quotes removed) at ``position``."""
    while (
        position < len(tokens)
        and tokens[position][0] == "word"
        and tokens[position][1].upper() in _SKIP_BEFORE_NAME
    ):
        position += 1
    parts: list[str] = []
    while position < len(tokens):
        kind, value, _ = tokens[position]
        if kind == "word":
            parts.append(value)
        elif kind == "bquote" or (kind == "dquote" and not mysql):
            quote = value[0]  # in SQLite's [name] nothing is escaped
            parts.append(value[1:-1] if quote == "[" else value[1:-1].replace(quote * 2, quote))
        else:
            break
        if position + 1 < len(tokens) and tokens[position + 1][1] == ".":
            position += 2
            continue
        break
    if not parts:
        return None
    name = ".".join(parts)
    return name if 0 < len(name) <= _MAX_NAME else None
