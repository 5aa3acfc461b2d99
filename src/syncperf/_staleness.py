"""How far behind a client is: the age of a pull's checkpoint and of a push's oldest change.

A pull carries the client's checkpoint (WatermelonDB's ``lastPulledAt``, RxDB's checkpoint
``updatedAt``...): ``sync.pull.staleness`` is now minus the checkpoint's time. A push whose
protocol carries client timestamps (Replicache and Zero mutations) gives
``sync.push.change_age``: the age of the oldest change in the batch. Both are measured when
the value arrives and recorded when the operation ends, under its final entity.

Clients have wrong clocks and send junk. A time before the epoch or of zero means "never
synced" and records nothing; a time up to ``MAX_SKEW`` seconds ahead of the server's clock is
clock skew and counts as age 0; further ahead, or more than ``MAX_AGE`` in the past, the value
is dropped and counted (``syncperf.dropped``, reasons ``checkpoint_in_future`` and
``checkpoint_too_old``). Ages are never negative.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TypeGuard

if TYPE_CHECKING:
    from syncperf._runtime import Runtime

__all__ = ["MAX_AGE", "MAX_SKEW", "age_of", "from_millis"]

MAX_AGE = 366 * 86400.0
"""An age beyond a year is not a client that is behind but a wrong clock or a bad value."""
MAX_SKEW = 300.0
"""Seconds a client time may be ahead of the server's clock and still count (as age 0)."""
_FAR = 2**62
"""An int time beyond this is treated as infinitely far ahead (a float cannot hold it all)."""
_DIGITS = 19
"""Integer digits past which a decimal string is beyond any clock (``_FAR`` has 19)."""
_EXPECTED = "a time: a datetime or seconds since the epoch (an int or a finite float)"


def age_of(rt: Runtime, at: object, now: float | None = None) -> float | None:
    """Seconds from ``at`` to ``now`` (default: the current time), or None.

    None when ``at`` is zero or earlier (never synced: nothing to record), and when it is
    not a time or outside the bounds (dropped and counted; a value of the wrong type is
    request-time misuse, so strict mode raises).
    """
    kind = type(at)
    if kind is float or kind is int:
        seconds: float = at  # type: ignore[assignment]
        if kind is int and seconds > _FAR:  # no clock reads that: far in the future
            seconds = math.inf
        elif kind is float and not math.isfinite(seconds):
            rt.reject("invalid_checkpoint", _EXPECTED, at)
            return None
    elif _is_datetime(at):
        try:
            seconds = (at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)).timestamp()
        except Exception:  # a hostile tzinfo
            rt.reject("invalid_checkpoint", _EXPECTED, at)
            return None
    else:
        rt.reject("invalid_checkpoint", _EXPECTED, at)
        return None
    if seconds <= 0:
        return None
    age = (time.time() if now is None else now) - seconds
    if age < 0:
        if age < -MAX_SKEW:
            rt.drop(
                "checkpoint_in_future",
                "syncperf dropped a client time more than %d s ahead of the server's clock "
                "(the client's clock is wrong); such values are counted, not recorded",
                int(MAX_SKEW),
            )
            return None
        return 0.0
    if age > MAX_AGE:
        rt.drop(
            "checkpoint_too_old",
            "syncperf dropped a client time more than %d days old (a wrong clock or a value "
            "in the wrong unit); such values are counted, not recorded",
            int(MAX_AGE // 86400),
        )
        return None
    return age


def _is_datetime(value: object) -> TypeGuard[datetime]:
    """``isinstance(value, datetime)``, never raising: it reads ``__class__``, which an
    object (a lazy proxy not loaded) may make raise."""
    try:
        return isinstance(value, datetime)
    except Exception:
        return False


def from_millis(value: object) -> float | None:
    """Milliseconds since the epoch (an int, a finite float, or a decimal string from a
    query) as seconds.

    A string counts as the same number sent as JSON would: ASCII digits with an optional
    leading ``-`` and fractional part (no exponent, ``nan`` or other digits). An int beyond
    any clock (more than 19 digits) is returned as is: ``age_of`` takes it as far future
    (or, negative, as "never synced") on both paths.

    None when ``value`` is absent or not such a number (the caller decides whether that is
    malformed).
    """
    if type(value) is str:
        value = _decimal(value)
    if type(value) is int:
        return value / 1000 if -_FAR <= value <= _FAR else value
    if type(value) is float and math.isfinite(value):
        return value / 1000
    return None


def _decimal(text: str) -> float | None:
    """``text`` as the int or float it spells in plain decimals, else None. Linear in its
    length and never raising: a megabyte of digits is a number far ahead."""
    negative = text[:1] == "-"
    whole, dot, fraction = (text[1:] if negative else text).partition(".")
    if not (whole.isascii() and whole.isdigit()):
        return None
    if dot and not (fraction.isascii() and fraction.isdigit()):
        return None
    if len(whole.lstrip("0")) > _DIGITS:  # beyond any clock: as an int past _FAR
        return -_FAR - 1 if negative else _FAR + 1
    if dot:
        return float(text)
    number = int(whole[-_DIGITS:])  # what is cut off is leading zeros
    return -number if negative else number
