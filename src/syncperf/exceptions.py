"""Exceptions raised by syncperf."""

from __future__ import annotations

__all__ = ["ConfigError", "MeasurementError", "SyncPerfError"]


class SyncPerfError(Exception):
    """Base class of every exception syncperf raises."""


class ConfigError(SyncPerfError, ValueError):
    """A configuration, construction or decoration-time value is not accepted.

    The message names the option, the value it got and what it accepts; a value that may be
    a secret (an environment variable's, an unknown option's, a header's) is described by
    type and size instead of quoted.
    """

    def __init__(self, option: str, value: object, accepted: str) -> None:
        self.option = option
        self.value = value
        self.accepted = accepted
        super().__init__(f"{option}={_bounded_repr(value)} is not accepted: expected {accepted}")


def _bounded_repr(value: object) -> str:
    """``repr(value)`` cut at 200 characters, or its type when ``__repr__`` raises."""
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"
    return text if len(text) <= 200 else text[:197] + "..."


class MeasurementError(SyncPerfError, ValueError):
    """A request-time measurement is invalid (raised only in strict mode).

    Outside strict mode the measurement is dropped, counted on ``syncperf.dropped``
    and logged once per reason.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")
