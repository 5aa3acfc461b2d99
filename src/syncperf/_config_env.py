"""The ``SYNCPERF_*`` variables' values as ``Config.from_env`` reads them, and the name-list
options' checks they share with the options given in code (``entities``,
``sync_log_starts``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from syncperf import _gate as gate
from syncperf.exceptions import ConfigError

__all__ = ["SYNCPERF_VARS", "check_names", "check_operations"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(var: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(var, gate.not_quoted(raw), "true or false")


def _parse_number(var: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(var, gate.not_quoted(raw), "a number") from None


def _parse_int(var: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(var, gate.not_quoted(raw), "an integer") from None


def _parse_entities(var: str, raw: str) -> frozenset[str]:
    accepted = (
        f"comma-separated entity names of 1 to {gate.MAX_NAME} printable characters, none empty"
    )
    return _parse_list(var, raw, check_names, accepted)


def _parse_operations(var: str, raw: str) -> frozenset[str]:
    accepted = f"comma-separated operation names matching {gate.OPERATION_RULE}, none empty"
    return _parse_list(var, raw, check_operations, accepted + " (e.g. pull,initial_pull)")


def _parse_list(
    var: str, raw: str, check: Callable[[str, object], frozenset[str]], accepted: str
) -> frozenset[str]:
    """The items of a comma-separated variable, each checked by ``check``: an empty item is
    an error (a stray comma must not make the list shorter, or empty), not skipped."""
    items = [item.strip() for item in raw.split(",")]
    try:
        if not all(items):
            raise ConfigError(var, gate.not_quoted(raw), accepted)
        return check(var, items)
    except ConfigError:
        raise ConfigError(var, gate.not_quoted(raw), accepted) from None


def _parse_levels(var: str, raw: str) -> dict[str, str | int]:
    accepted = "comma-separated kind=LEVEL pairs (e.g. error=ERROR), LEVEL a name or 1 to 50"
    levels: dict[str, str | int] = {}
    for part in raw.split(","):
        kind, sep, level = (text.strip() for text in part.partition("="))
        if not sep:  # an empty item too
            raise ConfigError(var, gate.not_quoted(raw), accepted)
        if level.isascii() and level.isdigit():
            if len(level) > 9:  # int() refuses past its digit limit; none is a level anyway
                raise ConfigError(var, gate.not_quoted(raw), accepted)
            levels[kind] = int(level)
        else:
            levels[kind] = level
    return levels


SYNCPERF_VARS = {
    "strict": _parse_bool,
    "max_entities": _parse_int,
    "entities": _parse_entities,
    "trace_sample_rate": _parse_number,
    "slow_threshold": _parse_number,
    "overhead_budget": _parse_number,
    "shed_cooldown": _parse_number,
    "max_series": _parse_int,
    "shutdown_timeout": _parse_number,
    "record_exception_messages": _parse_bool,
    "sync_log_levels": _parse_levels,
    "sync_log_sample_rate": _parse_number,
    "sync_log_rate_limit": _parse_number,
    "sync_log_starts": _parse_operations,
    "plans": _parse_bool,
}


def check_names(option: str, value: object) -> frozenset[str]:
    """An allow-list of entity names as a frozenset of plain strings."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(option, value, "an iterable of entity names or None")
    names = frozenset(gate.name(n) for n in value)
    if None in names:
        raise ConfigError(option, value, f"strings of 1 to {gate.MAX_NAME} printable characters")
    return names  # type: ignore[return-value]


def check_operations(option: str, value: object) -> frozenset[str]:
    """Operation names as a frozenset of plain strings, each one an operation could have
    (``gate.check_operation``'s rule; none is declared here)."""
    accepted = (
        'an iterable of operation names ("pull", "push" or other lowercase names matching '
        f"{gate.OPERATION_RULE})"
    )
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(option, value, accepted)
    names = frozenset(gate.operation_name(n) for n in value)
    if None in names:
        raise ConfigError(option, value, accepted)
    return names  # type: ignore[return-value]
