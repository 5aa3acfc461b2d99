"""SQL statement sanitizing and classification for ``syncperf.sqlalchemy``.

``normalize()`` turns a statement as sent to the driver into text safe to export: every
literal (strings, dollar-quoted, numbers, hex and bit strings, SQLite's double-quoted strings),
every placeholder and a setting's value (``SET name TO value``, ``PRAGMA key = value``; in
every statement of a string of several) become ``?``, comments are dropped (a sqlcommenter
comment carries per-request IDs), whitespace collapses, and lists collapse to one
(``syncperf._sql_collapse``: ``IN (?, ?)``, ``IN (-?, lower(?))`` and ``IN (?)`` alike, a 3-row
and a 50-row ``VALUES (?, now())``). The result is the ``db.query.text`` of spans and the
identity of a statement for N+1 detection.

``classify()`` reads ``db.operation.name`` (the verb, from an allow-list of SQL keywords; the
main verb after ``WITH``) and ``db.collection.name`` (the first table the verb acts on). A
statement that does not start with one of those keywords is not understood: its text is ``?``.

Lexing follows the dialect (``syncperf._sql_lex``); SQLite's ``"..."`` is a string wherever
SQLite could not read it as a name (``syncperf._sql_sqlite``). When in doubt a token is a value:
over-redacting costs readability, under-redacting would leak. Both run once per distinct
statement (callers cache the result), on the request thread: only the first ``MAX_LEXED``
characters of a statement are read, so one costs at most about 15 ms. Bound parameter
*values* never reach this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from syncperf._gate import name as gate_name
from syncperf._sql_collapse import collapse as _collapse
from syncperf._sql_cut import counted
from syncperf._sql_lex import Lexed, Token, lex, several
from syncperf._sql_sqlite import SqliteNames

__all__ = ["MAX_LEXED", "MAX_TEXT", "OPERATIONS", "Classified", "classify", "normalize"]

MAX_TEXT = 2048
"""Longest ``db.query.text`` exported; longer normalized statements are cut and end in ``...``."""

MAX_LEXED = 4096
"""Longest prefix of a statement read (lexed, sanitized, classified): the work per distinct
statement is bounded (about 15 ms at worst in pure Python, a statement of one-character
tokens; up to twice that on a loaded 2-core machine). A longer statement is read up to here
(back to its last comma): its text ends in ``...``, it counts as ``several`` (what was not
read is never explained), a token the cut ends is a value, and of the rest only an ``IN``
list's or ``VALUES``' size is counted (``Classified.batch``)."""

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

_MYSQL = frozenset({"mysql", "mariadb"})
_QUOTED_NAME = re.compile(r'"(?:[^"]|"")*"', re.S)
_BQUOTED_NAME = re.compile(r"`(?:[^`]|``)*`|\[[^\]]*\]", re.S)
_QUOTES = re.compile("['\"]")  # in a `name` or [name] (or ' in "name"): a value (_render)
_BACK_OFF = 256
_SANITIZED = frozenset({"string", "dollar", "param", "number", "rest"})

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
_SKIP_BEFORE_NAME = frozenset({
    "ONLY", "IF", "NOT", "EXISTS", "TABLE", "OR", "REPLACE", "IGNORE", "ABORT", "FAIL",
    "ROLLBACK", "LOW_PRIORITY", "CONCURRENTLY", "LATERAL",
})  # fmt: skip
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
    batch: int = 0
    """The most values one ``IN`` list, or rows one multi-row ``VALUES``, holds (0: none)."""
    several: bool = False
    """More than one statement: a ``;`` followed by another token (``syncperf._sql_lex``), or
    a statement longer than ``MAX_LEXED`` (not read whole)."""


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


def classify(statement: str, *, dialect: str = "postgresql", tokens: Lexed = None) -> Classified:
    """Normalize ``statement`` and read its operation and collection names.

    Args:
        statement: SQL as sent to the driver (``tokens``: lexed already, if not cut).
        dialect: SQLAlchemy's dialect name (see ``normalize``).
    """
    mysql = dialect in _MYSQL
    cut = len(statement) > MAX_LEXED
    rest = ""
    if cut:  # at the last comma before the cut: an item of a list is read whole or not at all
        end = statement.rfind(",", MAX_LEXED - _BACK_OFF, MAX_LEXED) + 1 or MAX_LEXED
        statement, rest, tokens = statement[:end], statement[end:], None
    tokens = lex(statement, mysql=mysql, sqlite=dialect == "sqlite") if tokens is None else tokens
    if tokens and _unterminated(tokens[-1], mysql):  # only the last runs to the end
        tokens[-1] = ("rest", tokens[-1][1], tokens[-1][2])
    operation, index = _verb(tokens)
    # A statement that does not start with a known keyword is not read: nothing of it is kept.
    text, batch = (
        _render(tokens, dialect, operation, index) if operation or not tokens else ("?", 0)
    )
    if cut and text != "?" and not text.endswith("..."):
        text = text[: MAX_TEXT - 3] + "..."
    if cut and operation is not None:
        batch = max(batch, counted(tokens, rest))
    collection = None
    if operation is not None:
        # a table name is a metric attribute: the value gate's bound (a name built from
        # request data, say a table per tenant, can be anything)
        collection = gate_name(_collection(tokens, operation, index, mysql))
    many = cut or several(statement, tokens, mysql=mysql)
    return Classified(text, operation, collection, batch, many)


def _unterminated(token: Token, mysql: bool) -> bool:
    """Whether ``token`` is a quoted name (or SQLite string) without its closing quote: it ran
    to the end of the statement (or of the prefix read), swallowing what follows, and so it
    is a value, as an unterminated literal is."""
    kind, value, _ = token
    if kind == "bquote":  # `a``b` is a`b; SQLite's [name] escapes nothing
        return _BQUOTED_NAME.fullmatch(value) is None
    return kind == "dquote" and not mysql and _QUOTED_NAME.fullmatch(value) is None


def _render(tokens: list[Token], dialect: str, verb: str | None, index: int) -> tuple[str, int]:
    """The normalized text, cut at ``MAX_TEXT``, and its batch (see ``_collapse``)."""
    hidden = _hidden(tokens, verb, index)
    dquote_values = dialect in _MYSQL
    sqlite = SqliteNames(tokens, verb, index) if dialect == "sqlite" else None
    out: list[str] = []
    position, size = 0, len(tokens)
    while position < size:
        if position in hidden:
            out.append(" ?")
            position = hidden[position]
            continue
        kind, value, spaced = tokens[position]
        if (
            kind in _SANITIZED
            or (
                kind == "dquote"
                and (dquote_values or (sqlite is not None and not sqlite.is_name(position)))
            )
            # a name never needs a quote; PostgreSQL has no `name`: where one would swallow
            # a string, PostgreSQL reads the string
            or (kind == "bquote" and _QUOTES.search(value))
            or (kind == "dquote" and "'" in value)
        ):
            value = "?"
        if spaced and out:
            out.append(" ")
        out.append(value)
        position += 1
    text, batch = _collapse("".join(out))
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 3] + "..."
    return text, batch


def _hidden(tokens: list[Token], verb: str | None, index: int) -> dict[int, int]:
    """Token ranges (start: end) each exported as one ``?``: a setting's value to the end of
    its statement, in every statement of the string, and the whole of a later statement that
    does not start with a known keyword (not understood, as a first one would not be)."""
    hidden: dict[int, int] = {}
    start, size = 0, len(tokens)
    while start < size:
        stop = next((at for at in range(start, size) if tokens[at][1] == ";"), size)
        if start:
            verb, index = _verb(tokens[start:stop])
            index += start
            if verb is None and stop > start:
                hidden[start] = stop
        if verb is not None:
            cut = _setting_value(tokens, verb, index, stop)
            if cut is not None and cut < stop:
                hidden[cut] = stop
        start = stop + 1
    return hidden


def _setting_value(tokens: list[Token], verb: str | None, index: int, end: int) -> int | None:
    """Where the value of a setting in ``tokens[:end]`` starts (everything from there to ``end``
    is one ``?``), or None. Bounds, not a slice: a string of many statements stays linear."""
    if verb == "SET" or verb == "PRAGMA":
        position = index + 1
        if verb == "SET":
            while position + 1 < end:
                pair = (tokens[position][1].upper(), tokens[position + 1][1].upper())
                if pair in _SET_TWO_WORDS:
                    return position + 2
                if pair[0] not in _SET_SCOPES or tokens[position + 1][0] != "word":
                    break
                position += 1
        return _after_name(tokens, position, end)
    if verb == "ALTER":
        depth = 0
        for position in range(index + 1, end):
            kind, value, _ = tokens[position]
            depth += (value == "(") - (value == ")")
            if depth == 0 and kind == "word" and value.upper() == "SET":
                start = _after_name(tokens, position + 1, end)
                if start > position + 2 and tokens[start - 1][1].upper() in ("TO", "="):
                    return start
                return None
    return None


def _after_name(tokens: list[Token], position: int, size: int) -> int:
    """Skip a (dotted) setting name and a following ``TO`` / ``=`` (``tokens[:size]``)."""
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
        elif (kind == "bquote" and not _QUOTES.search(value)) or (
            kind == "dquote" and not mysql and "'" not in value
        ):
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
