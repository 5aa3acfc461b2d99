"""Which double-quoted tokens SQLite reads as names (the SQLite lexing of ``syncperf._sql``).

SQLite takes ``"x"`` for a string literal when no column ``x`` exists, so a double-quoted
token is kept only where nothing but a name can stand; anywhere else it is a value (``?``).
"""

from __future__ import annotations

from syncperf._sql_lex import Token

__all__ = ["SqliteNames"]

# Where a double-quoted token can only be a name (not ``ON``, ``BY``: see ``is_name``).
_NAME_AFTER = frozenset({
    "FROM", "JOIN", "INTO", "UPDATE", "TABLE", "INDEX", "VIEW", "TRIGGER", "REFERENCES",
    "EXISTS", "AS", "SET", "TO", "COLUMN",
})  # fmt: skip
_TABLE_AFTER_ON = frozenset({"(", "FOR", "BEGIN", "WHEN"})
"""What follows the table of ``CREATE INDEX ... ON t (`` and ``CREATE TRIGGER ... ON t ...``."""
_SET_LIST_END = frozenset({"WHERE", "FROM", "RETURNING", "ORDER", "LIMIT", "ON", ";"})
"""What ends the assignments of ``UPDATE ... SET`` and ``DO UPDATE SET`` at their level."""
_NAMES = frozenset({"word", "dquote", "bquote"})
_COLUMN_LIST_AFTER_NAME = frozenset(
    {"INTO", "TABLE", "REFERENCES", "EXISTS", "VIEW", "WITH", "RECURSIVE"}
)
_COLUMN_LIST_AFTER = frozenset({"KEY", "UNIQUE", "CONFLICT"})


class SqliteNames:
    """Reads which double-quoted tokens of one SQLite statement are names.

    Args:
        tokens: The statement's tokens.
        verb: Its ``db.operation.name``.
        index: The position of the verb in ``tokens``.
    """

    def __init__(self, tokens: list[Token], verb: str | None, index: int) -> None:
        self._tokens = tokens
        self._create = verb == "CREATE"
        self._aliases: set[str] = set()  # ``AS "x"`` seen so far: exported already
        self._targets = _assignment_targets(tokens)
        # ``CREATE [UNIQUE] INDEX i ON t (``: a column list (elsewhere ``ON f(`` is a call)
        index_on = self._create and any(v.upper() == "INDEX" for _, v, _ in tokens[index:][:3])
        self._listed = _in_column_lists(tokens, index_on)

    def is_name(self, position: int) -> bool:
        """Whether SQLite reads the double-quoted token at ``position`` as a name.

        Called for each double-quoted token in order. A name: qualified (``t."c"``); after
        ``FROM`` (not ``IS DISTINCT FROM``), ``INTO``, ``UPDATE``, ``SET``, ``AS`` ...; the
        table of ``CREATE INDEX/TRIGGER ... ON "t"``; ``INDEXED BY "i"``; an element of a
        column list (``INSERT INTO t ("a", "b")``); the target of an assignment after a comma
        in ``UPDATE ... SET`` (not ``SELECT a, "x" = a``, a comparison); an alias declared
        earlier with ``AS "x"``. Never after ``ON`` or ``BY`` otherwise: an expression
        stands there.
        """
        tokens = self._tokens
        before = tokens[position - 1] if position else None
        after = tokens[position + 1] if position + 1 < len(tokens) else None
        if (before is not None and before[1] == ".") or (after is not None and after[1] == "."):
            return True
        if before is None:
            return False
        value = tokens[position][1]
        keyword = before[1].upper() if before[0] == "word" else ""
        if keyword == "AS":
            self._aliases.add(value)
            return True
        if value in self._aliases or position in self._targets:
            return True
        if keyword in _NAME_AFTER:
            distinct = position >= 2 and tokens[position - 2][1].upper() == "DISTINCT"
            return keyword != "FROM" or not distinct
        if keyword == "ON":
            return self._create and (after is None or after[1].upper() in _TABLE_AFTER_ON)
        if keyword == "BY":
            return position >= 2 and tokens[position - 2][1].upper() == "INDEXED"
        return before[1] in ("(", ",") and position in self._listed


def _assignment_targets(tokens: list[Token]) -> frozenset[int]:
    """Positions of ``"x"`` in ``SET a = ?, "x" = ?``: after a comma at the level of the
    ``SET``, followed by ``=``, before the assignments end."""
    targets: set[int] = set()
    depth, level = 0, None  # level: the depth of the SET being read, or None
    for position, (kind, value, _) in enumerate(tokens):
        word = value.upper() if kind == "word" else value
        if value == "(":
            depth += 1
        elif value == ")":
            depth -= 1
            level = None if level is not None and depth < level else level
        elif kind == "word" and word == "SET":
            level = depth
        elif level != depth:
            continue
        elif word in _SET_LIST_END and kind in ("word", "other"):
            level = None
        elif (
            kind == "dquote"
            and tokens[position - 1][1] == ","
            and position + 1 < len(tokens)
            and tokens[position + 1][1] == "="
        ):
            targets.add(position)
    return frozenset(targets)


def _in_column_lists(tokens: list[Token], index_on: bool) -> frozenset[int]:
    """Positions of the tokens directly inside a list of column names."""
    found: set[int] = set()
    lists: list[bool] = []  # per open parenthesis: does it hold a list of names?
    for position, (_, value, _) in enumerate(tokens):
        if value == "(":
            lists.append(_opens_column_list(tokens, position, index_on))
        elif value == ")":
            if lists:
                lists.pop()
        elif lists and lists[-1]:
            found.add(position)
    return frozenset(found)


def _opens_column_list(tokens: list[Token], position: int, index_on: bool) -> bool:
    """Whether the ``(`` at ``position`` opens a list of column names (``index_on``: the
    ``ON t (`` of ``CREATE INDEX`` does)."""
    before = position - 1
    if before < 0:
        return False
    if tokens[before][0] == "word" and tokens[before][1].upper() in _COLUMN_LIST_AFTER:
        return True
    if tokens[before][0] not in _NAMES:
        return False
    while before >= 2 and tokens[before - 1][1] == "." and tokens[before - 2][0] in _NAMES:
        before -= 2
    keyword = tokens[before - 1] if before >= 1 else None
    if keyword is None or keyword[0] != "word":
        return False
    word = keyword[1].upper()
    return word in _COLUMN_LIST_AFTER_NAME or (word == "ON" and index_on)
