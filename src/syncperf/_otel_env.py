"""The standard ``OTEL_*`` variables syncperf reads, read one way everywhere.

``Config.from_env`` and ``syncperf.export`` both read them from here, as the OpenTelemetry
specification says: an empty value is the same as unset; only a case-insensitive ``true`` is
true (any other value is false, with a warning unless it is ``false``); an invalid value is
warned about and ignored, as if unset. Warnings never quote the value (a misplaced token may
sit in any variable): they describe it by type and size.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from syncperf import _gate as gate

_logger = logging.getLogger("syncperf")


def value(env: Mapping[str, str], var: str) -> str | None:
    """The variable's value without surrounding blanks; None when unset or empty."""
    raw = env.get(var)
    if raw is None:
        return None
    raw = raw.strip()
    return raw or None


def sdk_disabled(env: Mapping[str, str]) -> bool:
    """``OTEL_SDK_DISABLED``: only ``true`` (any case) disables."""
    raw = value(env, "OTEL_SDK_DISABLED")
    if raw is None:
        return False
    lowered = raw.lower()
    if lowered not in ("true", "false"):
        warn("OTEL_SDK_DISABLED", raw, "true or false (anything but true means false)")
    return lowered == "true"


def number(env: Mapping[str, str], var: str) -> float | None:
    """A numeric variable; None when unset, empty or not a number (warned about)."""
    raw = value(env, var)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        warn(var, raw, "a number")
        return None


def integer(env: Mapping[str, str], var: str) -> int | None:
    """An integer variable; None when unset, empty or not an integer (warned about)."""
    raw = value(env, var)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        warn(var, raw, "an integer")
        return None


def first(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """``(variable, value)`` of the first of ``names`` that is set and not empty (a per-signal
    variable before the general one)."""
    for var in names:
        raw = value(env, var)
        if raw is not None:
            return var, raw
    return None


def warn(var: str, raw: str, accepted: str) -> None:
    """Log that ``var`` is ignored, without quoting its value (read once per configuration:
    at ``configure()``, or at the first use without it)."""
    _logger.warning(
        "syncperf: ignoring %s (%s, not quoted): expected %s", var, gate.describe(raw), accepted
    )


def import_sdk_trace() -> None:
    """Import ``opentelemetry.sdk.trace``, which reads ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` as it
    loads and raises, quoting the value, on one that is not an integer >= 0 (empty: none):
    such a value is warned about and left out of the environment while it loads (put back
    after), so ``import syncperf`` never fails over it (``SpanLimits`` are read by syncperf
    when it builds a provider: setup_otlp)."""
    var = "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"
    raw = os.environ.get(var)
    if "opentelemetry.sdk.trace" in sys.modules or raw is None:
        return
    try:
        if not raw.strip() or int(raw) >= 0:
            return
    except ValueError:
        pass
    warn(var, raw, "an integer >= 0")
    del os.environ[var]
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    finally:
        os.environ[var] = raw
