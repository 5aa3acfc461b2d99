"""Lists of values collapse to one (``syncperf._sql``): a statement is the same statement
whatever the length of its ``IN`` lists, ``ARRAY[...]`` lists and ``VALUES`` rows.

This reads the sanitized text (every literal and placeholder already ``?``, whitespace
collapsed), with regular expressions whose every repetition is anchored by a ``,`` or a
closing bracket (no nested quantifier can backtrack on the same characters) and one pass
matching parentheses: the work is linear in the text.

* An ``IN`` list or ``ARRAY[...]`` of simple values is ``(?)`` / ``[?]``: a placeholder with
  a sign (``-?``, a negative number) or a bind cast (``?::INTEGER``, ``?::NUMERIC(?, ?)``),
  ``NULL``, ``DEFAULT``, ``TRUE``, ``FALSE``, or a function of those (``lower(?)``,
  ``CAST(? AS INTEGER)``, ``now()``). Any other parenthesised list of placeholders (a row, a
  tuple, a function's arguments) is ``(?)`` too (``set_config(?, ?, true)`` keeps its ``true``).
* After ``VALUES`` (and in ``IN ((...), (...))``), a run of identical rows is one row, whatever
  they hold: ``VALUES (?, ?, now()), (?, ?, now())`` is ``VALUES (?, ?, now())``.

The batch is the most values one ``IN`` list or ``ANY`` / ``ALL (ARRAY[...])`` holds, or rows
one ``VALUES`` (or tuple ``IN``) holds when it holds two or more.
"""

from __future__ import annotations

import re

__all__ = ["collapse"]

# A bind cast (psycopg, asyncpg): ``?::INTEGER``, ``?::NUMERIC(?, ?)``,
# ``?::TIMESTAMP WITH TIME ZONE``, ``?::INTEGER[]``, ``?::s."my enum"``.
_NAME = r'(?:\w+|"[^"]*")'
_CAST = rf"\s*::\s*{_NAME}(?:\.{_NAME})*(?: \w+)*(?:\s*\([^()]*\))?(?:\[\??\])*"
_PLACEHOLDER = rf"(?:[-+] ?)?\?(?:{_CAST})*"
_SIMPLE = rf"(?:{_PLACEHOLDER}|(?i:NULL|DEFAULT|TRUE|FALSE)(?!\w)(?:{_CAST})*)"
_ARGUMENT = rf"{_SIMPLE}(?: (?i:AS) {_NAME}(?: \w+)*(?:\s*\([^()]*\))?)?"
_CALL = rf"\w+(?:\.\w+)? ?\(\s*(?:{_ARGUMENT}(?:\s*,\s*{_ARGUMENT})*)?\s*\)(?:{_CAST})*"
_ITEM = rf"(?:{_SIMPLE}|{_CALL})"
_ITEMS = rf"\s*{_ITEM}(?:\s*,\s*{_ITEM})*\s*"

_LIST = re.compile(
    rf"\(\s*{_PLACEHOLDER}(?:\s*,\s*{_PLACEHOLDER})*\s*\)"
)  # one cast item too: (?::INT)
_IN_LIST = re.compile(rf"(?<![\w$])(IN ?)\({_ITEMS}\)", re.I)
_ARRAY = re.compile(rf"(?<![\w$])((?:ANY|SOME|ALL) ?\(\s*)?(ARRAY ?)\[{_ITEMS}\]", re.I)
_NESTED = re.compile(r'\([^()]*\)|\[[^\[\]]*\]|"[^"]*"')  # what holds commas inside an item

_ROWS_AFTER = re.compile(r"(?<![\w$])(?:VALUES ?|IN ?\(\s*)(?=\()", re.I)
_GROUPING = re.compile(r'"[^"]*"|`[^`]*`|[()]')  # a quoted name may hold a parenthesis
_BETWEEN = re.compile(r"\s*,\s*(?=\()")


def collapse(text: str) -> tuple[str, int]:
    """``text`` with its lists and rows collapsed, and its batch (see the module)."""
    counts = [0]

    def in_list(found: re.Match[str]) -> str:
        counts.append(_count(found.group()[len(found.group(1)) :]))
        return found.group(1) + "(?)"

    def array(found: re.Match[str]) -> str:
        start = found.group(1) or ""
        if start:
            counts.append(_count(found.group()[len(start) + len(found.group(2)) :]))
        return start + found.group(2) + "[?]"

    text = _IN_LIST.sub(in_list, text)
    text = _ARRAY.sub(array, text)
    text = _LIST.sub("(?)", text)
    text, rows = _rows(text)
    return text, max(rows, *counts)


def _count(bracketed: str) -> int:
    """The items of ``(item, item, ...)`` (or ``[...]``): its commas outside nested brackets.
    An item nests brackets twice at most (``f(?::NUMERIC(?, ?))``)."""
    inner = bracketed[1:-1]
    for _ in range(3):
        inner = _NESTED.sub("", inner)
    return inner.count(",") + 1


def _rows(text: str) -> tuple[str, int]:
    """``text`` with each run of identical rows after ``VALUES`` (or in a tuple ``IN``) cut to
    its first, and the most rows one of those lists held (0: fewer than two)."""
    starts = [found.end() for found in _ROWS_AFTER.finditer(text)]
    if not starts:
        return text, 0
    close = _closing(text)
    cuts: list[tuple[int, int]] = []
    batch = 0
    for position in starts:
        rows, last = 0, (0, 0)
        while position in close:
            end = close[position] + 1
            rows += 1
            size = end - position
            # lengths first: a slice only for rows as long (nested rows stay n log n)
            if size == last[1] - last[0] and text.startswith(text[last[0] : last[1]], position):
                cuts.append((last[1], end))  # ", (row)" after its twin
            else:
                last = (position, end)
            gap = _BETWEEN.match(text, end)
            if gap is None:
                break
            position = gap.end()
        batch = max(batch, rows if rows > 1 else 0)
    return _cut(text, cuts), batch


def _closing(text: str) -> dict[int, int]:
    """Where each ``(`` of ``text`` is closed (a quoted name's parentheses are not counted)."""
    close: dict[int, int] = {}
    opened: list[int] = []
    for found in _GROUPING.finditer(text):
        mark = found.group()
        if mark == "(":
            opened.append(found.start())
        elif mark == ")" and opened:
            close[opened.pop()] = found.start()
    return close


def _cut(text: str, cuts: list[tuple[int, int]]) -> str:
    """``text`` without the ranges ``cuts`` (each nested in another or apart from it)."""
    if not cuts:
        return text
    kept: list[str] = []
    done = 0
    for start, end in sorted(cuts):
        if start >= done:
            kept.append(text[done:start])
            done = end
        else:
            done = max(done, end)
    kept.append(text[done:])
    return "".join(kept)
