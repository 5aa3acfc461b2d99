"""Just enough PromQL lexing to list the metric names an expression selects (for tests).

Parsing proper is promtool's job (the tests run ``promtool check rules`` on every
expression); this finds the series names so tests can check they are all syncperf's.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      |(?P<number>\d[\w.]*)
      |(?P<ident>[A-Za-z_:][\w:]*)
      |(?P<punct>[{}()\[\],])
      |(?P<other>\S)""",
    re.VERBOSE,
)
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
    # aggregation operators, which may be followed by a by/without clause instead of "("
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
}
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}

GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$entity": ".*",
}
"""Values substituted for Grafana variables before an expression is parsed."""


def substitute(expr: str) -> str:
    """Replace Grafana variables with plain PromQL values."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names selected by ``expr`` (identifiers outside matchers, label lists, calls)."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr)]
    names: set[str] = set()
    brace = 0
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        if text == "{":
            brace += 1
        elif text == "}":
            brace -= 1
        elif brace == 0 and kind == "ident":
            if text in _LABEL_LISTS and following == "(":
                depth, index = 0, index + 1
                while index < len(tokens):
                    depth += {"(": 1, ")": -1}.get(tokens[index][1], 0)
                    if depth == 0:
                        break
                    index += 1
            elif text not in _KEYWORDS and following != "(":
                names.add(text)
        index += 1
    return names
