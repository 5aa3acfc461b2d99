"""The guard: syncperf's overhead budget and its policy toward misuse and its own failures.

Request time never raises into the application: a bad value or a failing hook is dropped,
counted (``syncperf.dropped`` by reason) and logged once per kind, naming types and places,
never content; strict mode (``testing.capture()``) raises instead, so tests see the bug. Three
over-budget operations in a row shed span work for a cool-down (``syncperf.shed``).
``Runtime`` is a ``Guard``: integrations call ``rt.reject``, ``rt.drop``, ``rt.internal_error``.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import nullcontext, suppress
from typing import TYPE_CHECKING, Any

from syncperf._forklocks import renew_in_child
from syncperf._gate import describe, raised_at
from syncperf.exceptions import MeasurementError

if TYPE_CHECKING:
    from syncperf._config import Config
    from syncperf._metrics.aggregates import Instrument

__all__ = ["BUDGET_STREAK", "OTHER", "Bounded", "Guard"]

_logger = logging.getLogger("syncperf")
_UNSET: Any = object()
BUDGET_STREAK = 3
"""Consecutive over-budget operations that make syncperf shed span work."""
OTHER = "_other"
"""The overflow name of a ``Bounded`` (the names past its limit)."""


class Bounded:
    """Admits the first ``limit`` names (or an allowlist); everything else is ``overflow``.

    ``hold`` admits a name provisionally (a path entity a request brought, for that request);
    ``settle`` confirms it, or gives its slot back once the last request holding it was
    rejected. A name admitted any other way, or confirmed, is never given back.
    """

    __slots__ = ("__weakref__", "_allow", "_limit", "_lock", "_held", "names", "overflow")

    def __init__(
        self, limit: int, allow: frozenset[str] | None = None, overflow: str = OTHER
    ) -> None:
        self._limit = limit
        self._allow = allow
        self._lock = threading.Lock()
        renew_in_child(self, "_lock")
        self._held: dict[str, int] = {}
        """Names admitted provisionally: how many requests hold each."""
        self.names: set[str] = set()
        self.overflow = overflow

    def __call__(self, name: str) -> str:
        if name in self.names or name == self.overflow:
            return name
        if self._allow is not None:
            return name if name in self._allow else self.overflow
        if len(self.names) >= self._limit:  # full: no lock needed to say "overflow"
            return self.overflow
        with self._lock:
            if len(self.names) < self._limit:
                self.names.add(name)
                return name
        return self.overflow

    def hold(self, name: str) -> tuple[str, bool]:
        """``name`` bounded, and whether the caller now holds it: admitted provisionally
        (by the caller, or by another holder still running); the caller must ``settle`` it."""
        if (name in self.names and name not in self._held) or self._allow is not None:
            return self(name), False  # confirmed (never given back), or an allowlist
        if len(self.names) >= self._limit and name not in self.names:
            return self.overflow, False  # full: no lock needed to say "overflow"
        with self._lock:
            held = self._held.get(name)
            if held is not None:
                self._held[name] = held + 1
                return name, True
            if name in self.names:
                return name, False
            if len(self.names) < self._limit and name != self.overflow:
                self._held[name] = 1
                self.names.add(name)
                return name, True
        return self.overflow, False

    def settle(self, name: str, keep: bool) -> bool:
        """End one ``hold`` of ``name``: ``keep`` confirms it for good; otherwise (the holder
        was rejected) its slot is given back when no other holder remains, unless it was
        confirmed meanwhile. Returns whether ``name`` is admitted for good now."""
        with self._lock:
            held = self._held.get(name)
            if held is None:  # confirmed meanwhile
                return True
            if keep:
                del self._held[name]
                return True
            if held > 1:
                self._held[name] = held - 1
            else:  # out of ``names`` first: ``hold`` reads both without the lock
                self.names.discard(name)
                del self._held[name]
        return False


class Guard:
    """The budget, shedding and drop policy of a ``Runtime`` (which sets these attributes)."""

    config: Config
    strict: bool
    lock: threading.Lock
    dropped: Instrument
    shed: Instrument
    export_failures: Instrument
    cooldown_ns: int
    shed_until: int
    streaks: dict[str, int]
    """Operations over budget in a row, per reason (span starts do not break span ends')."""
    _logged: set[str]

    def over_budget(self, reason: str) -> None:
        """One operation (or span end) exceeded the budget; shed after three in a row of the
        same ``reason``.

        Wall-clock time includes waits for the GIL caused by the application's other threads;
        one slow operation is noise, three in a row mean syncperf itself is slow.
        """
        streak = self.streaks.get(reason, 0) + 1
        if streak >= BUDGET_STREAK:
            self.streaks.pop(reason, None)
            self.shed_spans(reason)
        else:
            self.streaks[reason] = streak

    def within_budget(self, *reasons: str) -> None:
        """One operation of each of ``reasons`` kept to the budget: their streaks start over."""
        for reason in reasons:
            self.streaks.pop(reason, None)

    def _span_queue_full(self, stalled: bool) -> None:
        self.drop("span_queue_full", "syncperf dropped spans: the span queue is full")
        if stalled:
            self.shed_spans("span_export_stalled")

    def _span_end_failed(self, error: Exception) -> None:
        self.drop(
            "span_end_failed",
            "syncperf lost spans: a span processor's on_end raised %s",
            type(error).__name__,
        )

    def _spans_not_ended(self, count: int) -> None:
        """Count spans a replaced runtime's finisher could not end within the shutdown
        timeout (a span processor blocked); they are dropped."""
        with self.lock:
            self.dropped.sum((("syncperf.reason", "span_end_timeout"),)).add(count)
        self.log_once(
            "drop:span_end_timeout",
            "syncperf dropped %d spans: they were not ended within shutdown_timeout when the "
            "configuration changed (is the span exporter answering?)",
            count,
        )

    def span_shed(self) -> None:
        """Count one span not made because syncperf is shedding (logged when it started)."""
        with self.lock:
            self.dropped.sum((("syncperf.reason", "span_shed"),)).add(1)

    def shed_spans(self, reason: str) -> None:
        """Stop creating spans for the cool-down; count and log it."""
        self.shed_until = time.perf_counter_ns() + self.cooldown_ns
        with self.lock:
            self.shed.sum((("syncperf.reason", reason),)).add(1)
        self.log_once(
            "shed:" + reason,
            "syncperf exceeded its overhead budget (%s); spans are off for %.0f s, "
            "metrics continue",
            reason,
            self.cooldown_ns / 1e9,
        )

    def reject(self, reason: str, expected: str, value: object = _UNSET) -> None:
        """Request-time misuse: raise in strict mode, else drop, count and log once.

        Args:
            reason: The ``syncperf.reason`` the drop is counted under.
            expected: What was expected, e.g. ``"an item count: an int in [0, 2**53)"``.
                Must not quote request data.
            value: The rejected value: described by type and size only, and only when the
                message is logged, so a rejection costs what an accepted value costs.
        """
        if self.strict:
            raise MeasurementError(reason, _expected(expected, value))
        if (key := self._count(reason)) is not None:
            self.log_once(
                key, "syncperf dropped a measurement (%s): %s", reason, _expected(expected, value)
            )

    def internal_error(self, reason: str, exc: BaseException, *, held: bool = False) -> None:
        """A hook of syncperf's (or a callback it runs) failed: count and log once, naming
        the exception's type and where it was raised, never its message (which may quote
        request data). Strict mode re-raises. ``held``: the caller holds ``lock``."""
        if self.strict:
            raise exc
        if (key := self._count(reason, held=held)) is not None:
            self.log_once(key, "syncperf hook failed (%s): %s", reason, raised_at(exc))

    def extractor_failed(self, exc: Exception) -> None:
        """An extractor raised: ``internal_error("extractor_failed")``, except that strict mode
        raises ``MeasurementError`` from it (its own exception could pass for the handler's);
        a ``MeasurementError`` (a value strict mode refused) goes through as it is."""
        if self.strict and not isinstance(exc, MeasurementError):
            detail = f"an extractor raised {raised_at(exc)}"
            raise MeasurementError("extractor_failed", detail) from exc
        self.internal_error("extractor_failed", exc)

    def drop(self, reason: str, message: str, *args: object, key: str | None = None) -> None:
        """Count one ``syncperf.dropped`` by ``reason``; log ``message`` the first time for
        ``key`` (default: the reason). Never raises."""
        if (due := self._count(reason, key)) is not None:
            self.log_once(due, message, *args)

    def _count(self, reason: str, key: str | None = None, *, held: bool = False) -> str | None:
        """Count one drop; return its log key while its one log line is still due."""
        with nullcontext() if held else self.lock:
            self.dropped.sum((("syncperf.reason", reason),)).add(1)
        key = key or "drop:" + reason
        return None if key in self._logged else key

    def names_from_requests(self, source: str) -> None:
        """Entity names are about to come from request data (a path, a payload): warn once
        when no allow-list bounds them to the application's own names."""
        if self.config.entities is None and "unlisted" not in self._logged:
            self.log_once(
                "unlisted",
                "syncperf: sync.entity names come from requests (%s) and no entity allow-list "
                "is configured, so the first %d names any client sends become metric series; "
                "set configure(entities=[...]) or SYNCPERF_ENTITIES (see docs/core.md)",
                source,
                self.config.max_entities,
            )

    def log_once(self, key: str, message: str, *args: object) -> None:
        """Log ``message`` at WARNING the first time ``key`` is seen in this runtime. A
        logging handler or filter that raises (the application's, on the root logger) loses
        the line, never raises into the caller: what it reports is counted already."""
        if key not in self._logged:
            self._logged.add(key)
            with suppress(Exception):  # nowhere left to report it
                _logger.warning(message, *args)

    def _gauge_failed(self, name: str, error: BaseException) -> None:
        self.drop(
            "gauge_callback_failed",
            "syncperf: the callback of gauge %s raised %s",
            name,
            raised_at(error),
            key="gauge:" + name,
        )

    def _export_failed(self) -> None:
        with self.lock:
            self.export_failures.sum((("syncperf.signal", "metrics"),)).add(1)


def _expected(expected: str, value: object) -> str:
    return expected if value is _UNSET else f"expected {expected}, got {describe(value)}"
