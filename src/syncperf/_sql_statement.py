"""SQL statement sanitizing and classification for ``syncperf.sqlalchemy``.

``normalize()`` turns a statement as sent to the driver into text that is safe to export:
every literal (strings, dollar-quoted strings, numbers, hex and bit strings) and every
placeholder becomes ``?``, comments are dropped (a sqlcommenter comment carries per-request
IDs), whitespace collapses, and lists of placeholders collapse to one, so ``IN (?, ?, ?)`` and
``IN (?)``, or a 3-row and a 50-row ``VALUES`` list, normalize alike. The result is both the
``db.query.text`` of spans and the identity of a statement for N+1 detection.

``classify()`` reads ``db.operation.name`` (the statement's verb; the main verb after a
``WITH`` clause) and ``db.collection.name`` (the first table the verb acts on) from the tokens.

Both run once per distinct statement string (callers cache the result): cost does not matter
here, correctness does. Bound parameter *values* never reach this module; only the statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_TEXT", "Classified", "classify", "normalize"]

MAX_TEXT = 2048
"""Longest ``db.query.text`` exported; longer normalized statements are cut and end in ``...``."""

_PATTERN = r"""
      (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z)HASH_COMMENT)
    | (?P<string>[Ee]'(?:[^'\\]|''|\\.)*(?:'|\Z)|(?:[BbXxNn]|[Uu]&)?'STRING_BODY(?:'|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*|)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<dquote>"DQUOTE_BODY(?:"|\Z))
    | (?P<bquote>`[^`]*(?:`|\Z))
    | (?P<param>%\([^)]*\)s|%s|\?|(?<![:\w]):[A-Za-z_]\w*|(?<![\w$])\$\d+|@@?\w+)
    | (?P<number>(?<![\w$])(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?
                              |\.\d+(?:[eE][-+]?\d+)?))
    | (?P<word>[A-Za-z_][\w$]*)
    | (?P<space>\s+)
    | (?P<other>.)
"""


def _compile(backslash: bool) -> re.Pattern[str]:
    if backslash:  # MySQL / MariaDB: backslash escapes everywhere, '#' starts a comment
        parts = {
            "STRING_BODY": r"(?:[^'\\]|''|\\.)*",
            "DQUOTE_BODY": r'(?:[^"\\]|""|\\.)*',
            "HASH_COMMENT": r"|\#[^\n]*",
        }
    else:
        parts = {"STRING_BODY": r"(?:[^']|'')*", "DQUOTE_BODY": r'(?:[^"]|"")*', "HASH_COMMENT": ""}
    pattern = _PATTERN
    for key, value in parts.items():
        pattern = pattern.replace(key, value)
    return re.compile(pattern, re.S | re.X)


_TOKEN = _compile(backslash=False)
_TOKEN_MYSQL = _compile(backslash=True)
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


@dataclass(frozen=True)
class Classified:
    """What a statement is: sanitized text, verb and first collection."""

    text: str
    """The normalized, sanitized statement (``db.query.text``), at most ``MAX_TEXT`` long."""
    operation: str | None
    """``db.operation.name``: the statement's verb in upper case, or None."""
    collection: str | None
    """``db.collection.name``: the first table the verb acts on, unquoted, or None."""


def normalize(statement: str, *, mysql: bool = False) -> str:
    """Sanitize ``statement``: literals and placeholders become ``?``; comments go.

    Args:
        statement: SQL as sent to the driver.
        mysql: MySQL / MariaDB lexing: ``"..."`` is a string literal (not a quoted
            identifier) and a backslash escapes the next character in every string.

    Returns:
        The normalized statement, whitespace collapsed, at most ``MAX_TEXT`` characters.
    """
    return _normalize(_tokens(statement, mysql), mysql)


def classify(statement: str, *, mysql: bool = False) -> Classified:
    """Normalize ``statement`` and read its operation and collection names.

    Args:
        statement: SQL as sent to the driver.
        mysql: MySQL / MariaDB lexing (see ``normalize``).
    """
    double_quoted_strings = mysql
    tokens = _tokens(statement, mysql)
    text = _normalize(tokens, double_quoted_strings)
    significant = [(kind, value) for kind, value in tokens if kind not in ("space", "comment")]
    operation, index = _verb(significant)
    collection = None
    if operation is not None:
        collection = _collection(significant, operation, index, double_quoted_strings)
    return Classified(text, operation, collection)


def _tokens(statement: str, mysql: bool = False) -> list[tuple[str, str]]:
    pattern = _TOKEN_MYSQL if mysql else _TOKEN
    return [(match.lastgroup or "other", match.group()) for match in pattern.finditer(statement)]


def _normalize(tokens: list[tuple[str, str]], double_quoted_strings: bool) -> str:
    out: list[str] = []
    pending_space = False
    for kind, value in tokens:
        if kind in ("space", "comment"):
            pending_space = bool(out)
            continue
        if kind in _SANITIZED or (double_quoted_strings and kind == "dquote"):
            value = "?"
        if pending_space:
            out.append(" ")
            pending_space = False
        out.append(value)
    text = _ROWS.sub("(?)", _LIST.sub("(?)", "".join(out)))
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 3] + "..."
    return text


def _verb(tokens: list[tuple[str, str]]) -> tuple[str | None, int]:
    """The statement's verb and its token index (the main verb after ``WITH ...``)."""
    for index, (kind, value) in enumerate(tokens):
        if kind == "word":
            verb = value.upper()
            if verb != "WITH":
                return verb, index
            depth = 0
            for later in range(index + 1, len(tokens)):
                later_kind, later_value = tokens[later]
                if later_value == "(":
                    depth += 1
                elif later_value == ")":
                    depth -= 1
                elif depth == 0 and later_kind == "word" and later_value.upper() in _MAIN_VERBS:
                    return later_value.upper(), later
            return verb, index
        if value != "(":
            return None, -1
    return None, -1


def _collection(
    tokens: list[tuple[str, str]], verb: str, index: int, double_quoted_strings: bool
) -> str | None:
    if verb == "UPDATE":
        return _name_at(tokens, index + 1, double_quoted_strings)
    markers = _TABLE_AFTER.get(verb)
    if markers is None:
        return None
    depth = 0
    for position in range(index + 1, len(tokens)):
        kind, value = tokens[position]
        if value == "(":
            depth += 1
        elif value == ")":
            depth -= 1
            if depth < 0:
                return None
        elif depth == 0 and kind == "word" and value.upper() in markers:
            return _name_at(tokens, position + 1, double_quoted_strings)
    if verb == "TRUNCATE":
        return _name_at(tokens, index + 1, double_quoted_strings)
    return None


def _name_at(
    tokens: list[tuple[str, str]], position: int, double_quoted_strings: bool
) -> str | None:
    """A possibly qualified name (``schema.table``, quotes removed) at ``position``."""
    while (
        position < len(tokens)
        and tokens[position][0] == "word"
        and tokens[position][1].upper() in _SKIP_BEFORE_NAME
    ):
        position += 1
    parts: list[str] = []
    while position < len(tokens):
        kind, value = tokens[position]
        if kind == "word":
            parts.append(value)
        elif kind == "bquote" or (kind == "dquote" and not double_quoted_strings):
            parts.append(value[1:-1].replace(value[0] * 2, value[0]))
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
