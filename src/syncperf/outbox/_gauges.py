"""``outbox.depth`` and ``outbox.oldest_age``: one stats call per collection, with a timeout.

A stats source (the user's callback or the built-in SQLAlchemy probe) answers both gauges with
one call. The registry observes ``outbox.depth`` and then ``outbox.oldest_age`` (or the other
way round) in one collection pass: the first gauge runs the call, the second reuses its answer.
The call runs on a helper thread; the collecting thread waits at most ``timeout`` seconds. A
call that raises, returns nonsense or times out drops both gauges for that collection, is
counted on ``outbox.probe.failures`` and logged once; it never raises into the collector. While
a timed-out call is still running no second one is started (the next collection fails fast).
A forked child starts afresh: the parent's call, and the lock its collection held, are not its.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from syncperf import _gate as gate
from syncperf._gate import MAX_COUNT, error_type
from syncperf._metrics.catalogue import (
    OUTBOX_ATTEMPTS,
    OUTBOX_DEPTH,
    OUTBOX_OLDEST_AGE,
    OUTBOX_ROWS,
)
from syncperf._staleness import MAX_SKEW

if TYPE_CHECKING:
    from syncperf._runtime import Runtime

MAX_STATUSES = 20
"""At most this many statuses are reported on ``outbox.rows`` (status values are code): the
largest counts (ties by name); the rest are summed as ``OTHER``."""
OTHER = "_other"
_REUSE_S = 10.0
"""How long the first gauge's answer may be reused by the second one of the same pass."""


class OutboxStats(NamedTuple):
    """What a stats source returns: pending messages and the age of the oldest one, and
    optionally the table's totals (which survive a relay crash, unlike in-memory counters).

    Attributes:
        depth: Messages written and not yet published or dead-lettered (a count: an
            ``int`` in [0, 2**53), as ``rows`` and ``attempts``).
        oldest_age: Seconds since the oldest of them was written (0 when empty); ``None``
            when unknown (then only ``outbox.depth`` is reported).
        rows: Messages in the table by status, or None.
        attempts: The sum of the rows' attempt counters, or None.
    """

    depth: int
    oldest_age: float | None = None
    rows: Mapping[str, int] | None = None
    """Messages in the table by status (``outbox.rows``), when the source counts them."""
    attempts: int | None = None
    """The sum of the rows' attempt counters (``outbox.attempts``), when known."""


class ProbeTimeout(Exception):
    """The stats source did not answer within its timeout."""


class ProbeBusy(Exception):
    """The previous, timed-out stats call is still running."""


class InvalidCreatedAt(ValueError):
    """A created-at more than ``MAX_SKEW`` seconds in the future: no time a message already
    written can have, but one in the wrong unit (epoch milliseconds) or from a wrong clock.

    Its message is syncperf's own: it never quotes the value.
    """

    def __init__(self) -> None:
        super().__init__(
            f"more than {MAX_SKEW:g} s in the future: a time in milliseconds, or a wrong clock"
        )


class InvalidStatus(Exception):
    """The stats named a status no exporter can carry; that status was left out.

    Its argument describes the status by type and size only (``gate.describe``).
    """


class StatsRunner:
    """Runs one stats source at most once per collection pass, off the collecting thread."""

    def __init__(self, fn: Callable[[], Any], timeout: float) -> None:
        self._fn = fn
        self._timeout = timeout
        self._lock = threading.Lock()
        self._running: threading.Event | None = None
        self._last: tuple[float, OutboxStats | BaseException, set[str]] | None = None
        _live.add(self)

    def after_fork_in_child(self) -> None:
        """Forget the parent's call: a worker forked while it ran (gunicorn --preload, the
        master exporting) inherited the lock held by a thread it does not have (its every
        collection hung) or the call "still running" (busy for ever)."""
        self._lock = threading.Lock()
        self._running = None
        self._last = None

    def observe(self, gauge: str) -> tuple[OutboxStats | BaseException, BaseException | None]:
        """The current stats (or the failure), and what to report as a probe failure: None
        unless this call ran the source and it failed, or named a status left out."""
        with self._lock:
            last = self._last
            now = time.monotonic()
            if last is not None and gauge not in last[2] and now - last[0] < _REUSE_S:
                last[2].add(gauge)
                return last[1], None
            result, failure = self._call()
            self._last = (time.monotonic(), result, {gauge})
            return result, failure

    def _call(self) -> tuple[OutboxStats | BaseException, BaseException | None]:
        running = self._running
        if running is not None and not running.is_set():
            busy = ProbeBusy("the previous stats call has not returned yet")
            return busy, busy
        done = threading.Event()
        box: list[tuple[OutboxStats | BaseException, BaseException | None]] = []

        def run() -> None:
            try:
                box.append(_checked(self._fn()))
            except BaseException as error:  # reported, never raised
                box.append((error, error))
            finally:
                done.set()

        self._running = done
        threading.Thread(target=run, name="syncperf-outbox-probe", daemon=True).start()
        if not done.wait(self._timeout):
            timeout = ProbeTimeout(f"no answer within {self._timeout:g} s")
            return timeout, timeout
        return box[0]


_live: weakref.WeakSet[StatsRunner] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for runner in list(_live):
        runner.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _validate(value: Any) -> OutboxStats:
    """``value`` as ``OutboxStats``, statuses gated and bounded (see ``_checked``)."""
    return _checked(value)[0]


def _checked(value: Any) -> tuple[OutboxStats, InvalidStatus | None]:
    """``value`` as ``OutboxStats``, and an ``InvalidStatus`` when a status was left out.

    Raises:
        TypeError: ``value`` is nonsense (both gauges are dropped).
    """
    rows = attempts = None
    if isinstance(value, OutboxStats):
        depth, age, rows, attempts = value
    else:
        depth, age = value if isinstance(value, tuple) else (value, None)
    if not _count(depth):  # as rows and attempts: an int that no exporter rounds, exactly
        raise TypeError("stats depth must be an int in [0, 2**53)")
    invalid = None
    if rows is not None:
        rows, invalid = _statuses(rows)
    if attempts is not None and not _count(attempts):
        raise TypeError("stats attempts must be an int >= 0 or None")
    if depth == 0:
        age = 0.0
    elif age is not None:
        if not (type(age) is int or type(age) is float) or not _finite(age):  # no subclass
            raise TypeError("stats oldest_age must be finite seconds (a number) or None")
        if age < -MAX_SKEW:  # now minus a created-at in milliseconds, say
            raise InvalidCreatedAt
        age = max(0.0, float(age))
    return OutboxStats(depth, age, rows, attempts), invalid


def _statuses(rows: object) -> tuple[dict[str, int], InvalidStatus | None]:
    """Counts by status: a status that is no metric attribute value (``gate.name``) is left
    out; past ``MAX_STATUSES`` the smallest counts (ties: the later names) are summed as
    ``OTHER``, so the table's total is kept.

    Raises:
        TypeError: ``rows`` is not a mapping of statuses to counts.
    """
    if not isinstance(rows, Mapping):
        raise TypeError("stats rows must map statuses to counts")
    counts: dict[str, int] = {}
    invalid = None
    for key, n in rows.items():
        if not _count(n):
            raise TypeError("stats rows must map statuses to counts")
        status = gate.name(key)
        if status is None:
            invalid = invalid or InvalidStatus(gate.describe(key))
        else:
            counts[status] = counts.get(status, 0) + n
    if len(counts) > MAX_STATUSES:
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        counts = dict(ranked[:MAX_STATUSES])
        counts[OTHER] = counts.get(OTHER, 0) + sum(n for _, n in ranked[MAX_STATUSES:])
    return counts, invalid


def _count(n: object) -> bool:
    return gate.is_count(n)


def _finite(number: int | float) -> bool:
    """Whether ``number`` is a finite float (an int too large for one is not)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def age_of(created_at: object, now: float | None = None) -> float:
    """Seconds from ``created_at`` to ``now`` (default: the current time), never negative.

    ``created_at`` is a ``datetime`` (a naive one is taken as UTC; its own ``replace()`` and
    ``timestamp()`` read it) or POSIX seconds (an ``int``, ``float`` or ``Decimal``). Up to
    ``MAX_SKEW`` seconds ahead of ``now`` is clock skew between hosts and reads as age 0, as
    for clients' times (``_staleness``).

    Raises:
        TypeError: ``created_at`` is neither, or its ``timestamp()`` is no finite number.
        InvalidCreatedAt: ``created_at`` is further ahead (never a silent age 0).
    """
    if now is None:
        now = time.time()
    seconds = created_at
    if isinstance(created_at, datetime):
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=timezone.utc)
        seconds = created_at.timestamp()
    elif type(created_at) is Decimal and created_at.is_finite():  # PostgreSQL's numeric
        seconds = float(created_at)
    if not ((type(seconds) is int or type(seconds) is float) and abs(seconds) < MAX_COUNT):
        raise TypeError("created_at must be a datetime or finite POSIX seconds")  # NaN too
    age = now - seconds
    if age < -MAX_SKEW:
        raise InvalidCreatedAt
    return age if age > 0.0 else 0.0


class GaugeCallbacks:
    """The gauge callbacks registered on one runtime, by outbox (``rt.state(GaugeCallbacks)``).

    The registry observes each gauge through one callback per runtime (``observe``), which
    calls every outbox's: the outboxes past the name bound all report as ``outbox.name=_other``
    and are combined into one observation per collection (depth, rows and attempts summed,
    the oldest age the largest) instead of each replacing the one before.
    """

    def __init__(self, rt: Runtime) -> None:
        self.lock = threading.Lock()
        self.callbacks: dict[int, dict[str, Callable[[], Any]]] = {}
        self.observed = False
        """Whether ``observe``'s callbacks are registered on the runtime's registry."""

    def observe(self, gauge: str) -> Callable[[], list[tuple[dict[str, str | bool], float]]]:
        """The registry's callback of ``gauge``: every outbox's points, ``_other``'s combined."""
        combine: Callable[[float, float], float] = (
            max if gauge == OUTBOX_OLDEST_AGE.name else lambda a, b: a + b
        )

        def observe() -> list[tuple[dict[str, str | bool], float]]:
            with self.lock:
                outboxes = [gauges[gauge] for gauges in self.callbacks.values()]
            points: list[tuple[dict[str, str | bool], float]] = []
            other: dict[object, tuple[dict[str, str | bool], float]] = {}
            for callback in outboxes:
                for attrs, value in callback():
                    if attrs["outbox.name"] != OTHER:
                        points.append((attrs, value))
                        continue
                    key = attrs.get("outbox.status")
                    seen = other.get(key)
                    other[key] = (attrs, value if seen is None else combine(seen[1], value))
            return points + list(other.values())

        return observe


class GaugeSource(NamedTuple):
    """What the gauges need from an ``Outbox``: its runner and its name on one runtime."""

    runner: StatsRunner
    name: str
    on_failure: Callable[[BaseException], None]


def register(
    rt: Runtime, owner: object, token: int, source: Callable[[], GaugeSource | None]
) -> None:
    """Register the gauges of ``owner`` (unique ``token``) on ``rt``, once per runtime.

    ``source`` is called at collection time; it returns None once the owner is gone or closed,
    and the gauges then report nothing (the callbacks hold the owner only weakly).
    """
    registered = rt.state(GaugeCallbacks)
    with registered.lock:
        if token in registered.callbacks:
            return
        registered.callbacks[token] = _callbacks(owner, source)
        first, registered.observed = not registered.observed, True
    if first:
        for spec in (OUTBOX_DEPTH, OUTBOX_OLDEST_AGE, OUTBOX_ROWS, OUTBOX_ATTEMPTS):
            # a query: not every second
            spec.observe(rt.registry, registered.observe(spec.name), probe=True)


def _callbacks(
    owner: object, source: Callable[[], GaugeSource | None]
) -> dict[str, Callable[[], Iterable[tuple[dict[str, str | bool], float]]]]:
    """The four gauges' callbacks, by gauge name."""
    ref = weakref.ref(owner)

    def callback(gauge: str, pick: Callable[[OutboxStats], Iterable[tuple[str, float]]]) -> Any:
        def observe() -> Iterable[tuple[dict[str, str | bool], float]]:
            if ref() is None:
                return ()
            try:
                found = source()
                if found is None:
                    return ()
                result, failure = found.runner.observe(gauge)
                if failure is not None:
                    found.on_failure(failure)
                if isinstance(result, BaseException):
                    return ()
                return [
                    ({"outbox.name": found.name, "outbox.status": status}
                     if status else {"outbox.name": found.name}, value)
                    for status, value in pick(result)
                ]  # fmt: skip
            except Exception:  # never raise into the collector
                return ()

        return observe

    return {
        "outbox.depth": callback("depth", lambda s: (("", float(s.depth)),)),
        "outbox.oldest_age": callback(
            "oldest_age", lambda s: () if s.oldest_age is None else (("", s.oldest_age),)
        ),
        "outbox.rows": callback(
            "rows", lambda s: [(k, float(n)) for k, n in sorted((s.rows or {}).items())]
        ),
        "outbox.attempts": callback(
            "attempts", lambda s: () if s.attempts is None else (("", float(s.attempts)),)
        ),
    }


def unregister(rt: Runtime, token: int) -> None:
    """Remove the gauges ``register`` added under ``token`` on ``rt``."""
    registered = rt.state(GaugeCallbacks)
    with registered.lock:
        registered.callbacks.pop(token, None)


def failure_type(error: BaseException) -> str:
    """``error.type`` of a failed stats call: ``timeout`` also for a statement the database
    cancelled for its timeout (the SQLAlchemy probe's ``statement_timeout``)."""
    if isinstance(error, ProbeTimeout) or _query_canceled(error):
        return "timeout"
    if isinstance(error, ProbeBusy):
        return "busy"
    if isinstance(error, InvalidStatus):
        return "invalid_status"
    if isinstance(error, InvalidCreatedAt):
        return "invalid_created_at"
    return error_type(error)


_QUERY_CANCELED = "57014"
"""PostgreSQL's SQLSTATE for a statement cancelled by ``statement_timeout`` (or by request)."""


def _query_canceled(error: BaseException) -> bool:
    """Whether ``error`` (or the DBAPI error SQLAlchemy wraps in it, ``orig``) carries SQLSTATE
    57014: ``sqlstate`` on psycopg 3's and asyncpg's errors, ``pgcode`` on psycopg2's."""
    try:
        for candidate in (error, getattr(error, "orig", None)):
            for attribute in ("sqlstate", "pgcode"):
                code = getattr(candidate, attribute, None)
                if isinstance(code, str) and code == _QUERY_CANCELED:
                    return True
    except Exception:  # a hostile error's attribute: its class name, as any other
        return False
    return False
