"""The arguments of ``Outbox``, checked once when it is made."""

from __future__ import annotations

import re

from syncperf._config import MAX_SECONDS, check_float
from syncperf._gate import not_quoted
from syncperf.exceptions import ConfigError

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")


def check_args(
    name: object, stats: object, stats_timeout: object, destination: object, system: object
) -> tuple[str, float, str | None, str | None]:
    """The names as plain ``str`` and the timeout as a plain ``float``: no method of a
    subclass is called later (series, spans, collections)."""
    name, destination, system = (
        str.__str__(v) if isinstance(v, str) else v for v in (name, destination, system)
    )
    if type(name) is not str or not _NAME_RE.fullmatch(name):
        raise ConfigError(
            "name",
            name,
            "a low-cardinality name matching [A-Za-z][A-Za-z0-9_.-]{0,63}, e.g. 'orders'",
        )
    if stats is not None and not callable(stats):
        raise ConfigError("stats", not_quoted(stats), "a callable returning (depth, age) or None")
    stats_timeout = check_float(
        "stats_timeout", stats_timeout, low=0.0, high=MAX_SECONDS, open_low=True
    )
    for option, value in (("destination", destination), ("system", system)):
        if value is not None and (type(value) is not str or not value):
            raise ConfigError(option, not_quoted(value), "a non-empty string or None")
    return name, stats_timeout, destination, system  # type: ignore[return-value]
