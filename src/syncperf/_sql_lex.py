"""The SQL lexer of ``syncperf._sql``: a statement as tokens, following the dialect.

By default as PostgreSQL (``standard_conforming_strings`` on: a backslash escapes only in
``E'...'``) and SQLite; with ``mysql=True`` as MySQL / MariaDB (``"..."`` is a string, a
backslash escapes in every string, ``#`` starts a comment). All three read a non-ASCII
character as a letter: in names (``x€$t$`` is one name), and PostgreSQL in a dollar quote's
tag (``$é$...$é$``). Comments nest, as in PostgreSQL; an unterminated literal or comment runs to
the end. Whether a double-quoted token is a name or a string on SQLite is ``syncperf._sql``'s
decision.
"""

from __future__ import annotations

import re

__all__ = ["Token", "lex", "several"]

Token = tuple[str, str, bool]
"""``(kind, text, preceded by whitespace or a comment)``; whitespace and comments are dropped."""

_PATTERN = r"""
      (?P<comment>--[^\n]*|/\*HASH_COMMENT)
    | (?P<string>[Ee]'(?:[^'\\]|''|\\.)*(?:'|\Z)|(?:[BbXxNn]|[Uu]&)?'STRING_BODY(?:'|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_\x80-\U0010ffff][\w\x80-\U0010ffff]*|)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<dquote>"DQUOTE_BODY(?:"|\Z))
    | (?P<bquote>`[^`]*(?:`|\Z))
    | (?P<param>%\([^)]*\)s|%s|\?\d*|(?<![:\w]):[A-Za-z_]\w*|(?<![\w$])\$\d+|@@?\w+)
    | (?P<number>(?<![\w$])(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+
                              |\d[\d_]*(?:\.[\d_]*)?(?:[eE][-+]?\d+)?
                              |\.\d[\d_]*(?:[eE][-+]?\d+)?))
    | (?P<word>[A-Za-z_\x80-\U0010ffff][\w$\x80-\U0010ffff]*)
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
_COMMENT_MARK = re.compile(r"/\*|\*/")


def lex(statement: str, *, mysql: bool = False) -> list[Token]:
    """``statement`` as tokens, whitespace and comments dropped (``mysql``: MySQL's lexing)."""
    lexer = _TOKEN_MYSQL if mysql else _TOKEN
    tokens: list[Token] = []
    spaced = False
    position, size = 0, len(statement)
    match = lexer.match
    while position < size:
        found = match(statement, position)
        if found is None:  # unreachable: ``other`` matches any character
            break
        kind = found.lastgroup or "other"
        end = found.end()
        if kind == "comment" or kind == "space":
            if found.group() == "/*":
                end = _comment_end(statement, position)
            spaced = True
        else:
            tokens.append((kind, found.group(), spaced))
            spaced = False
        position = end
    return tokens


def _comment_end(statement: str, start: int) -> int:
    """End of the ``/* ... */`` comment at ``start``; comments nest (as in PostgreSQL)."""
    depth = 0
    for mark in _COMMENT_MARK.finditer(statement, start):
        depth += 1 if mark.group() == "/*" else -1
        if depth == 0:
            return mark.end()
    return len(statement)  # unterminated: swallowed to the end


def several(statement: str, tokens: list[Token], *, mysql: bool = False) -> bool:
    """Whether ``statement`` (lexed as ``tokens``) is more than one statement: a ``;`` followed
    by another token.

    Lexed both ways, whatever the dialect: PostgreSQL with ``standard_conforming_strings`` off
    escapes with backslashes as MySQL does, and MySQL's ``#`` comment is an operator elsewhere.
    A ``;`` seen by either lexing counts (a query plan must never run a second statement).
    """
    if ";" not in statement:
        return False
    return _several(tokens) or _several(lex(statement, mysql=not mysql))


def _several(tokens: list[Token]) -> bool:
    ended = False
    for _, value, _ in tokens:
        if value == ";":
            ended = True
        elif ended:
            return True
    return False
