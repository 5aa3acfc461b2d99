"""The comments around a statement: what ``syncperf.sqlalchemy`` caches a commented one by.

sqlcommenter (OpenTelemetry's ``enable_commenter=True``, Django's and Rails' commenters)
appends a comment with per-request IDs (``/*traceparent='00-...'*/``) to every statement, and
some tools prepend one: every statement string is new. ``bare()`` removes the comments before
and after the SQL with a few ``str`` methods from both ends (the statement's body is not read),
and ``clean_tokens()`` tells whether the rest ends where a token ends (not in a literal or a
comment that would swallow what follows): then the statement classifies as the rest does
(``syncperf._sql.classify``, which drops comments anyway), and a cache keyed by the rest holds
one entry for all its comments.

Only what every dialect's lexer (``syncperf._sql_lex``) reads as a comment is removed:
``/* ... */`` holding no ``/*`` (PostgreSQL's nest, SQLite's and MySQL's do not) that is not
MySQL's ``/*!``, ``/*M!`` or ``/*+``, and ``--`` followed by a space or a tab (MySQL's rule), up
to a newline with no carriage return (PostgreSQL ends one there), with the ASCII whitespace
around them. A statement holding a ``;`` (where several statements begin depends on every
reading) or longer than ``MAX_LEXED`` (read in part only) keeps its comments.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Generic, TypeVar

from syncperf._evicting import Evicting
from syncperf._sql import MAX_LEXED
from syncperf._sql_lex import Token, lex

__all__ = ["Bare", "bare", "clean_tokens"]

T = TypeVar("T")


class _Unknown(Enum):
    UNKNOWN = 0


_PIECES = 8
"""Most comments removed from each end (more: the statement keeps them all)."""
_SPACE = " \t\n\r\f\v"
"""Whitespace removed around comments: ASCII only (the lexer reads ``\xa0`` as a letter, unless
whitespace is before it)."""
_END = "syncperf_end"
"""The word ``clean_tokens()`` appends (a statement holding it keeps its comments)."""
_RUN = ("!", "M!", "+")
"""Comment bodies MySQL reads as SQL (``/*!50100 ...*/``) or an optimizer hint."""


def bare(statement: str) -> str | None:
    """``statement`` without the comments (and whitespace) before and after its SQL, or None
    when it has none or they are not removed (see the module). Not yet checked with
    ``clean_tokens()``."""
    if len(statement) > MAX_LEXED or ";" in statement:
        return None
    text = statement
    for _ in range(_PIECES + 1):
        text = text.lstrip(_SPACE)
        if text[:1].isspace():  # ``\xa0``: a letter, but whitespace after whitespace
            return None
        if text.startswith("/*"):
            end = text.find("*/", 2)
            if end < 0 or not _block(text[2 : end + 1]):
                return None
            text = text[end + 2 :]
        elif text.startswith(("-- ", "--\t")):
            end = text.find("\n")
            if end < 0 or "\r" in text[:end]:
                return None
            text = text[end + 1 :]
        else:
            break
    else:
        return None
    whole, text = text, text.rstrip(_SPACE)
    for _ in range(_PIECES + 1):
        if text.endswith("*/"):
            start = text.rfind("/*", 0, len(text) - 2)
            if start < 0 or text.find("*/", start + 2) != len(text) - 2:
                return None
            if not _block(text[start + 2 : len(text) - 1]):
                return None
            text = text[:start].rstrip(_SPACE)
            continue
        dash = text.find("--", text.rfind("\n") + 1)
        if dash < 0:
            return None if text == statement else text
        after = whole[dash + 2 : dash + 3]  # MySQL: a comment before whitespace only
        if after not in ("", " ", "\t", "\n", "\r") or not _line(whole, dash, len(text)):
            return None
        text = text[:dash].rstrip(_SPACE)
    return None


def _line(whole: str, dash: int, end: int) -> bool:
    """Whether the ``--`` comment at ``dash`` in ``whole`` (its text up to ``end``) ends, on
    every dialect, in the whitespace after it or with ``whole``: PostgreSQL ends one at a
    carriage return or a newline, SQLite and MySQL at a newline (the comments after it are
    removed already: one a newline starts in would be read as SQL)."""
    for stop in ("\n", "\r"):
        at = whole.find(stop, dash)
        if at >= 0 and (at < end or whole[end:at].strip(_SPACE)):
            return False
    return True


def _block(body: str) -> bool:
    """Whether a ``/*`` comment whose text (with the ``*`` of its ``*/``) is ``body`` is one
    comment to every dialect."""
    return "/*" not in body and not body.startswith(_RUN)


def clean_tokens(statement: str, *, mysql: bool, sqlite: bool) -> list[Token] | None:
    """The tokens of ``statement`` (a ``bare()`` result) lexed as the dialect (``mysql``,
    ``sqlite``; else PostgreSQL) when it ends where a token ends, else None.

    Ending there, a comment appended to it is one, and it lexes as it does followed by one
    (a comment before it always is one: the lexer starts there). Lexed once, with a word
    appended: a word the statement does not hold is its own last token only where the
    statement ends clean (otherwise a literal or a comment swallowed it)."""
    if _END in statement:
        return None
    tokens = lex(f"{statement} {_END}", mysql=mysql, sqlite=sqlite)
    if not tokens or tokens[-1] != ("word", _END, True):
        return None
    del tokens[-1]
    return tokens


class Bare(Generic[T]):
    """What one engine knows of statements by their bare text (``bare()``), at most ``most``
    (past them the oldest half is set aside, as in the engine's statement cache: see
    ``syncperf._evicting``): an entry is the bare statement's classification, or None when it
    does not end clean (its statements are classified whole)."""

    __slots__ = ("cache", "known", "mysql", "sqlite")

    def __init__(self, dialect: str, most: int) -> None:
        self.cache: Evicting[str, T | None] = Evicting(most)
        self.known = self.cache.hot
        self.mysql = dialect in ("mysql", "mariadb")
        self.sqlite = dialect == "sqlite"

    def find(self, statement: str, classify: Callable[..., T]) -> T | None:
        """The classification of ``statement`` without its comments (``classify(bare text,
        tokens=its tokens)``, once), or None when it has none or keeps them. The commented
        statement is never kept: only its bare text."""
        text = bare(statement)
        if text is None:
            return None
        try:
            return self.known[text]
        except KeyError:  # new, or set aside
            pass
        found = self.cache.recall(text, _Unknown.UNKNOWN)
        if found is not _Unknown.UNKNOWN:
            return found
        tokens = clean_tokens(text, mysql=self.mysql, sqlite=self.sqlite)
        found = None if tokens is None else classify(text, tokens=tokens)
        self.cache.put(text, found)
        return found
