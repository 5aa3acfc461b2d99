"""``outbox.depth`` and ``outbox.oldest_age``: one stats call per collection, with a timeout.

A stats source (the user's callback or the built-in SQLAlchemy probe) answers both gauges with
one call. The registry observes ``outbox.depth`` and then ``outbox.oldest_age`` (or the other
way round) in one collection pass: the first gauge runs the call, the second reuses its answer.
The call runs on a helper thread; the collecting thread waits at most ``timeout`` seconds. A
call that raises, returns nonsense or times out drops both gauges for that collection, is
counted on ``outbox.probe.failures`` and logged once; it never raises into the collector. While
a timed-out call is still running no second one is started (the next collection fails fast).
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from syncperf._gate import MAX_COUNT
from syncperf._operation import error_type

if TYPE_CHECKING:
    from syncperf._runtime import Runtime

_REUSE_S = 10.0
"""How long the first gauge's answer may be reused by the second one of the same pass."""


class OutboxStats(NamedTuple):
    """What a stats source returns: pending messages and the age of the oldest one.

    Attributes:
        depth: Messages written and not yet published or dead-lettered.
        oldest_age: Seconds since the oldest of them was written (0 when empty); ``None``
            when unknown (then only ``outbox.depth`` is reported).
    """

    depth: int
    oldest_age: float | None = None


class ProbeTimeout(Exception):
    """The stats source did not answer within its timeout."""


class ProbeBusy(Exception):
    """The previous, timed-out stats call is still running."""


class StatsRunner:
    """Runs one stats source at most once per collection pass, off the collecting thread."""

    def __init__(self, fn: Callable[[], Any], timeout: float) -> None:
        self._fn = fn
        self._timeout = timeout
        self._lock = threading.Lock()
        self._running: threading.Event | None = None
        self._last: tuple[float, OutboxStats | BaseException, set[str]] | None = None

    def observe(self, gauge: str) -> tuple[OutboxStats | BaseException, bool]:
        """The current stats (or the failure), and whether this call ran the source."""
        with self._lock:
            last = self._last
            now = time.monotonic()
            if last is not None and gauge not in last[2] and now - last[0] < _REUSE_S:
                last[2].add(gauge)
                return last[1], False
            result = self._call()
            self._last = (time.monotonic(), result, {gauge})
            return result, True

    def _call(self) -> OutboxStats | BaseException:
        running = self._running
        if running is not None and not running.is_set():
            return ProbeBusy("the previous stats call has not returned yet")
        done = threading.Event()
        box: list[OutboxStats | BaseException] = []

        def run() -> None:
            try:
                box.append(_validate(self._fn()))
            except BaseException as error:  # reported, never raised
                box.append(error)
            finally:
                done.set()

        self._running = done
        threading.Thread(target=run, name="syncperf-outbox-probe", daemon=True).start()
        if not done.wait(self._timeout):
            return ProbeTimeout(f"no answer within {self._timeout:g} s")
        return box[0]


def _validate(value: Any) -> OutboxStats:
    depth, age = value if isinstance(value, tuple) else (value, None)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise TypeError(f"stats depth must be an int >= 0, got {depth!r}")
    if depth == 0:
        return OutboxStats(0, 0.0)
    if age is None:
        return OutboxStats(depth, None)
    if isinstance(age, bool) or not isinstance(age, (int, float)) or math.isnan(age):
        raise TypeError(f"stats oldest_age must be seconds (a number) or None, got {age!r}")
    return OutboxStats(depth, max(0.0, float(age)))


def age_of(created_at: object, now: float | None = None) -> float:
    """Seconds from ``created_at`` to ``now`` (default: the current time), never negative.

    ``created_at`` is a ``datetime`` (a naive one is taken as UTC) or POSIX seconds.

    Raises:
        TypeError: ``created_at`` is neither.
    """
    if now is None:
        now = time.time()
    if isinstance(created_at, datetime):
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=timezone.utc)
        seconds = created_at.timestamp()
    elif (type(created_at) is int or type(created_at) is float) and abs(created_at) < MAX_COUNT:
        seconds = float(created_at)
    else:  # NaN fails the comparison above
        raise TypeError("created_at must be a datetime or finite POSIX seconds")
    age = now - seconds
    return age if age > 0.0 else 0.0


class GaugeSource(NamedTuple):
    """What the gauges need from an ``Outbox``: its runner and its name on one runtime."""

    runner: StatsRunner
    name: str
    on_failure: Callable[[BaseException], None]


def register(
    rt: Runtime, owner: object, token: int, source: Callable[[], GaugeSource | None]
) -> None:
    """Register the two gauges of ``owner`` (unique ``token``) on ``rt``, once per runtime.

    ``source`` is called at collection time; it returns None once the owner is gone or closed,
    and the gauges then report nothing (the callbacks hold the owner only weakly).
    """
    key = ("outbox.gauges", token)
    if rt.cache.get(key) is not None:
        return
    ref = weakref.ref(owner)

    def callback(gauge: str, pick: Callable[[OutboxStats], float | None]) -> Any:
        def observe() -> Iterable[tuple[dict[str, str | bool], float]]:
            if ref() is None:
                return ()
            try:
                found = source()
                if found is None:
                    return ()
                result, ran = found.runner.observe(gauge)
                if isinstance(result, BaseException):
                    if ran:
                        found.on_failure(result)
                    return ()
                value = pick(result)
                return () if value is None else (({"outbox.name": found.name}, value),)
            except Exception:  # never raise into the collector
                return ()

        return observe

    depth = callback("depth", lambda s: float(s.depth))
    age = callback("oldest_age", lambda s: s.oldest_age)
    rt.cache[key] = (ref, depth, age)
    rt.registry.gauge(
        "outbox.depth", "{message}", "Outbox messages waiting to be published.", depth
    )
    rt.registry.gauge(
        "outbox.oldest_age", "s", "Age of the oldest outbox message waiting to be published.", age
    )


def unregister(rt: Runtime, token: int) -> None:
    """Remove the gauges ``register`` added under ``token`` on ``rt``."""
    entry = rt.cache.pop(("outbox.gauges", token), None)
    if entry is not None:
        _, depth, age = entry
        rt.registry.remove_gauge_callback("outbox.depth", depth)
        rt.registry.remove_gauge_callback("outbox.oldest_age", age)


def failure_type(error: BaseException) -> str:
    """``error.type`` of a failed stats call."""
    if isinstance(error, ProbeTimeout):
        return "timeout"
    if isinstance(error, ProbeBusy):
        return "busy"
    return error_type(error)
