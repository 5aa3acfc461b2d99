"""A small, deterministic YAML emitter for the rule files (no PyYAML at run time).

Handles what the generators produce: mappings (insertion order kept), sequences, strings,
numbers, booleans and None. Strings that could be misread are double-quoted JSON-style
(a JSON string is a valid YAML double-quoted scalar); multi-line strings use ``|-`` blocks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./:-]*( [A-Za-z0-9_./:()-]+)*")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def dump(value: object) -> str:
    """Render ``value`` as a YAML document (ends with a newline)."""
    return "\n".join(_node(value, 0)) + "\n"


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED and ": " not in value:
            return value
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot render {type(value).__name__} as YAML")


def _is_block(value: object) -> bool:
    return isinstance(value, (Mapping, list, tuple)) and bool(value)


def _node(value: object, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, Mapping):
        if not value:
            return [pad + "{}"]
        lines: list[str] = []
        for key, item in value.items():
            lines.extend(_entry(pad + _scalar(str(key)) + ":", item, indent))
        return lines
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            return [pad + "[]"]
        lines = []
        for item in value:
            if isinstance(item, Mapping) and item:
                inner = _node(item, indent + 2)
                lines.append(pad + "- " + inner[0][indent + 2 :])
                lines.extend(inner[1:])
            else:
                lines.extend(_entry(pad + "-", item, indent))
        return lines
    return [pad + _scalar(value)]


def _entry(head: str, item: object, indent: int) -> list[str]:
    if _is_block(item):
        return [head, *_node(item, indent + 2)]
    if isinstance(item, str) and "\n" in item:
        body = [(" " * (indent + 2) + line).rstrip() for line in item.split("\n")]
        return [head + " |-", *body]
    if isinstance(item, (Mapping, list, tuple)):
        return [head + (" {}" if isinstance(item, Mapping) else " []")]
    return [head + " " + _scalar(item)]
