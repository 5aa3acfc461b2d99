"""What a cut statement's unread rest holds (``syncperf._sql``): the values of an ``IN`` list
(or ``ANY (ARRAY[...])``), or the rows of a ``VALUES``, open at the cut or after it, counted
by ``str`` methods and linear regular expressions, never lexed (about 1-10 ms a megabyte; 30
for an ``IN`` list of function calls, whose parentheses are cut out first), so
a selectinload page or a bulk insert longer than ``MAX_LEXED`` is still a batch."""

from __future__ import annotations

import re

from syncperf._sql_lex import Token

__all__ = ["counted"]

_ANY_ARRAY = re.compile(r"(?<![\w$])(?:ANY|ALL|SOME) ?\( ?ARRAY ?\[", re.I)
_ARRAY_END = re.compile(r"\](?<!\[\])")
_LIST_ENDS = (") ", "))", "),", ");", ")\n")  # never a ``%(name)s`` placeholder's ")s"
_GROUP = re.compile(r"\([^()]*\)")


def counted(tokens: list[Token], rest: str) -> int:
    """The batch of a statement cut into ``tokens`` (what was read) and ``rest``: the values
    or rows of the list open at the cut, or of the first one after it (0: none)."""
    return max(_across(tokens, rest), _after(rest))


def _across(tokens: list[Token], rest: str) -> int:
    """The values of an ``IN`` list (or ``ANY (ARRAY[``), or rows of a ``VALUES``, open where
    a statement was cut (0: none): those of ``tokens`` (what was read) and those of ``rest``
    (what was not), counted by ``str`` methods, not lexed: commas up to the list's ``)``
    (``]``), or ``), (`` between rows (about 1 ms a megabyte)."""
    depth = commas = rows = 0
    open_row = nested = False
    for position in range(len(tokens) - 1, -1, -1):
        kind, value, _ = tokens[position]
        if value == ")":
            depth, nested = depth + 1, True
        elif value == "(" and depth:
            depth -= 1
            rows += depth == 0
        elif value == "(":  # the list, or row, open at the cut
            before = tokens[position - 1][1].upper() if position else ""
            if before == "IN" and not open_row:
                return commas + _in_commas(rest, 0, nested) + 1
            if open_row or before not in (",", "VALUES"):
                return 0
            open_row, rows = True, rows + 1
        elif value == "[" and depth == 0 and not open_row and _any_array(tokens, position):
            return commas + rest.count(",", 0, _array_end(rest, 0)) + 1
        elif depth == 0 and kind == "word" and value.upper() == "VALUES":
            if not rows:
                return 0
            after = tokens[-1][1] == "," and not open_row  # a row starts after the cut
            return rows + after + _rows(rest)
        elif depth == 0 and value == ",":
            commas += 1
    return 0


def _after(rest: str) -> int:
    """The values of the first ``IN (`` list (or ``ANY (ARRAY[``), or the rows of a ``VALUES``,
    in ``rest`` (what was not read), counted as in ``_across``. A string holding commas may
    count too many: that statement is then not counted for N+1 detection."""
    batch = 0
    start = min((at for at in map(rest.find, ("IN (", "in (")) if at >= 0), default=-1)
    if start >= 0:
        comma = rest.find(",", start)
        nested = rest.find("(", start + 4, len(rest) if comma < 0 else comma) >= 0  # item 1
        batch = _in_commas(rest, start + 4, nested) + 1
    if "VALUES" in rest or "values" in rest:
        batch = max(batch, _rows(rest) + 1)
    found = [at for at in map(rest.find, ("ARRAY[", "ARRAY [", "array[", "array [")) if at >= 0]
    array = _ANY_ARRAY.search(rest[max(min(found) - 8, 0) : min(found) + 7]) if found else None
    if array is not None:  # (a case-insensitive search of a megabyte takes 100 ms)
        start = max(min(found) - 8, 0) + array.end()
        batch = max(batch, rest.count(",", start, _array_end(rest, start)) + 1)
    return batch


def _in_commas(rest: str, start: int, nested: bool) -> int:
    """The commas of the ``IN`` list in ``rest`` from ``start`` up to its ``)``; ``nested``:
    its items hold parentheses (``lower(?)``, ``f(?::NUMERIC(10, 2))``), cut out first."""
    if nested:
        rest, start = _GROUP.sub("", _GROUP.sub("", rest[start:])), 0
    return rest.count(",", start, _list_end(rest, start))


def _any_array(tokens: list[Token], at: int) -> bool:
    """Whether the ``[`` at ``at`` opens ``ANY (ARRAY[`` (or ``ALL``, ``SOME``)."""
    before = " ".join(value for _, value, _ in tokens[max(at - 3, 0) : at])
    return _ANY_ARRAY.fullmatch(before + " [") is not None


def _array_end(rest: str, start: int) -> int:
    """Where the array list in ``rest`` ends: its ``]`` (not a cast's ``[]``)."""
    return found.start() if (found := _ARRAY_END.search(rest, start)) else len(rest)


def _list_end(rest: str, start: int) -> int:
    """Where the list in ``rest`` ends: its ``)`` (not a ``%(name)s`` placeholder's)."""
    found = rest.find(")", start)
    if found < 0 or rest[found + 1 : found + 2] != "s":
        return len(rest) if found < 0 else found
    end = len(rest)
    for mark in _LIST_ENDS:  # each looked for up to the nearest end found so far
        at = rest.find(mark, found, end + len(mark))
        end = end if at < 0 else at
    return end


def _rows(rest: str) -> int:
    """``), (`` between rows in ``rest``, as SQLAlchemy and most code write them."""
    return rest.count("), (") + rest.count("),(") + rest.count("),\n")
