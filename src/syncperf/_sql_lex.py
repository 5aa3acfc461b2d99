"""The SQL lexer of ``syncperf._sql``: a statement as tokens, following the dialect.

By default as PostgreSQL (comments nest, a ``--`` comment ends at a carriage return or a
newline); with ``sqlite=True`` as SQLite (``[name]``, no
``E'...'`` or dollar quotes); with ``mysql=True`` as MySQL / MariaDB (``"..."`` is a string,
``#`` starts a comment, ``--`` only before a space, no ``E'...'`` or dollar quotes). All three
read a non-ASCII character as a letter: in names (``x€$t$`` is one name), and PostgreSQL in a
dollar quote's tag (``$é$...$é$``). SQLite and MySQL end a ``--`` comment at a newline only.
An unterminated literal or comment runs to the end.

Whether a backslash escapes a quote is a server setting (MySQL's ``NO_BACKSLASH_ESCAPES``,
PostgreSQL's ``standard_conforming_strings``): where the two readings end a string in
different places, the rest of the statement is one ``rest`` token (a value), and so it is
where a SQLite or MySQL comment holds a ``/*`` (those end at the first ``*/``; PostgreSQL's
nest). Whether a double-quoted token is a name or a string on SQLite is
``syncperf._sql_sqlite``'s decision.
"""

from __future__ import annotations

import re

__all__ = ["Token", "lex", "several"]

Token = tuple[str, str, bool]
"""``(kind, text, preceded by whitespace or a comment)``; whitespace and comments are dropped."""
Lexed = list[Token] | None
"""A statement's tokens, when lexed already (``syncperf._sql.classify``)."""

_PATTERN = r"""
      (?P<comment>--[^LINE_END]*|/\*HASH_COMMENT)
    | (?P<string>[Ee]'(?:[^'\\]|''|\\.)*(?:'|\Z)|(?:[BbXxNn]|[Uu]&)?'STRING_BODY(?:'|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_\x80-\U0010ffff][\w\x80-\U0010ffff]*|)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<dquote>"DQUOTE_BODY(?:"|\Z))
    | (?P<bquote>`(?:[^`]|``)*(?:`|\Z)BRACKET)
    | (?P<param>%\(\w+\)s|%s|\?\d*|(?<![:\w]):[A-Za-z_]\w*|(?<![\w$])\$\d+|@@?\w+)
    | (?P<number>(?<![\w$])(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+
                              |\d[\d_]*(?:\.[\d_]*)?(?:[eE][-+]?\d+)?
                              |\.\d[\d_]*(?:[eE][-+]?\d+)?))
    | (?P<word>[A-Za-z_\x80-\U0010ffff][\w$\x80-\U0010ffff]*)
    | (?P<space>\s+)
    | (?P<other>.)
"""


def _body(quote: str, backslash: bool) -> str:
    """A quoted text: a doubled quote, or with ``backslash`` a backslash and what follows it
    (a quote too), is part of it."""
    if backslash:
        return rf"(?:[^{quote}\\]|{quote}{quote}|\\.?)*"
    return rf"(?:[^{quote}]|{quote}{quote})*"


def _compile(backslash: bool = False, brackets: bool = False, cr: bool = False) -> re.Pattern[str]:
    """The lexer of MySQL / MariaDB (``backslash``: it escapes in every string, ``#`` starts
    a comment), SQLite (``brackets``: ``[name]``) or PostgreSQL (``cr``: a carriage return
    ends a ``--`` comment too)."""
    parts = {
        "LINE_END": r"\n\r" if cr else r"\n",
        "STRING_BODY": _body("'", backslash),
        "DQUOTE_BODY": _body('"', backslash),
        "HASH_COMMENT": r"|\#[^\n]*" if backslash else "",
        "BRACKET": r"|\[[^\]]*(?:\]|\Z)" if brackets else "",
    }
    pattern = _PATTERN
    for key, value in parts.items():
        pattern = pattern.replace(key, value)
    return re.compile(pattern, re.S | re.X)


_TOKEN = _compile(cr=True)
_TOKEN_MYSQL = _compile(backslash=True)
_TOKEN_SQLITE = _compile(brackets=True)
_TOKEN_LF = _compile()
"""PostgreSQL's tokens with MySQL's and SQLite's ``--`` comment (to a newline only)."""
_TOKEN_MYSQL_CR = _compile(backslash=True, cr=True)
"""MySQL's tokens with PostgreSQL's ``--`` comment (to a carriage return or a newline)."""
_READINGS = {
    quote: [re.compile(f"{quote}{_body(quote, b)}(?:{quote}|\\Z)", re.S) for b in (False, True)]
    for quote in "'\""
}
"""How a quoted text ends without and with backslash escapes."""
_COMMENT_MARK = re.compile(r"/\*|\*/")
_MAX_REREAD = 2048
"""Longest statement ``several`` lexes again (up to four more readings, on the request thread)."""


def lex(statement: str, *, mysql: bool = False, sqlite: bool = False) -> list[Token]:
    """``statement`` as tokens, whitespace and comments dropped (``mysql``: MySQL's lexing,
    ``sqlite``: SQLite's)."""
    return _lex(
        statement, _TOKEN_MYSQL if mysql else _TOKEN_SQLITE if sqlite else _TOKEN, mysql, sqlite
    )


def _lex(statement: str, pattern: re.Pattern[str], mysql: bool, sqlite: bool) -> list[Token]:
    match = pattern.match
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
            tokens.append(("rest", statement[position:], spaced or kind == "comment"))
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


def several(statement: str, tokens: list[Token], *, mysql: bool = False) -> bool:
    """Whether ``statement`` (lexed as ``tokens``) is more than one statement: a ``;`` followed
    by another token.

    Lexed both ways, whatever the dialect: MySQL's ``#`` comment is an operator elsewhere. A
    ``;`` seen by either lexing counts (a query plan must never run a second statement), and
    so does one in a ``rest`` token (where a string or comment ends is unclear). With a
    carriage return in it, both ways again with either end of a ``--`` comment (PostgreSQL's,
    at the carriage return, and SQLite's and MySQL's, at the next newline). Read again only up
    to ``_MAX_REREAD`` characters: in a longer statement any ``;`` followed by more than
    whitespace and ``;`` counts (never explained), whatever quotes it.
    """
    first = statement.find(";")
    if first < 0:
        return False
    if _several(tokens):
        return True
    if len(statement) > _MAX_REREAD:  # bounded work: a ``;`` with more after it counts
        return first < len(statement.rstrip(" \t\n\r\f\v;"))
    if _several(lex(statement, mysql=not mysql)):
        return True
    if "\r" not in statement:
        return False
    readings = ((_TOKEN, False), (_TOKEN_LF, False), (_TOKEN_MYSQL_CR, True))
    return any(_several(_lex(statement, p, m, False)) for p, m in readings)


def _several(tokens: list[Token]) -> bool:
    ended = False
    for kind, value, _ in tokens:
        if kind == "rest":
            return ended or ";" in value
        if value == ";":
            ended = True
        elif ended:
            return True
    return False
