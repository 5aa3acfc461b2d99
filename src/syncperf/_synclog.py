"""Sync logs: one structured record per finished sync operation on ``syncperf.sync``.

The record's fields are set through ``extra=`` (or on the record once made, under a custom
log-record factory), so they are attributes of the stdlib ``LogRecord`` under their telemetry
names (``sync.operation``, ``dd.trace_id``...): what
python-json-logger, structlog's ``ExtraAdder`` and OpenTelemetry's ``LoggingHandler`` export.
Only syncperf's own, bounded values go in (names, counts, the error's type): never a message,
a payload or an identifier from the request.

Cost: an operation that is not logged costs a dict lookup and two comparisons. The logger's
levels are read when the runtime is built and again once a second (``logging`` has no hook
for level changes, and ``isEnabledFor`` per operation would cost more than the rest of the
decision); everything else runs only for a record that is written (see docs/logging.md).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import NonRecordingSpan, SpanContext

from syncperf._tracing.current import attach, current_span, detach

if TYPE_CHECKING:
    from syncperf._operation import SyncOperation
    from syncperf._runtime import Runtime

__all__ = ["LOGGER", "SyncLog", "correlation"]

LOGGER = logging.getLogger("syncperf.sync")
_LOW64 = (1 << 64) - 1
_random = random.random
_enabled = LOGGER.isEnabledFor
_RECHECK_NS = 1_000_000_000
"""How often the hot path's pre-check reads the logger's levels again."""
_perf = time.perf_counter_ns
_record_factory = logging.getLogRecordFactory
_PLAIN_RECORD = logging.LogRecord
"""The default record factory: under it, the fields go through ``extra=``."""


def correlation(context: SpanContext) -> dict[str, str]:
    """The fields that tie a record to its trace: W3C hex ids, and Datadog's decimal ones
    (the trace id's lower 64 bits, as ddtrace's log injection writes them)."""
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "dd.trace_id": str(context.trace_id & _LOW64),
        "dd.span_id": str(context.span_id),
    }


class _Bucket:
    """A token bucket: ``rate`` tokens a second, holding one second's worth (at least 1).

    No lock (nothing to reset after a fork): threads racing on it may admit a record or two
    more than the rate, never fewer.
    """

    __slots__ = ("_capacity", "_per_ns", "_stamp", "_tokens")

    def __init__(self, rate: float) -> None:
        self._per_ns = rate / 1e9
        self._capacity = self._tokens = max(rate, 1.0)
        self._stamp = _perf()

    def take(self) -> bool:
        now = _perf()
        tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._per_ns)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False


class SyncLog:
    """The sync-log settings of one runtime and its rate limiter: ``rt.state(SyncLog)``.

    Never raises: a logging filter or handler that fails is counted and logged once
    (``syncperf.dropped``, reason ``sync_log_failed``), as any hook of syncperf's.
    """

    __slots__ = (
        "_bucket",
        "_limit",
        "_rt",
        "levels",
        "next_check",
        "on",
        "sample_rate",
        "slow_levels",
        "slow_ns",
        "start_level",
        "starts",
    )

    def __init__(self, rt: Runtime) -> None:
        config = rt.config
        levels = config.sync_log_levels
        self.levels = {k: levels[k] for k in ("success", "conflict", "error")}
        slow = levels["slow"]
        self.slow_levels = {k: max(v, slow) for k, v in self.levels.items()}
        self.start_level = levels["start"]
        self.starts = config.sync_log_starts
        self.slow_ns = int(config.slow_threshold * 1e9)
        self.sample_rate = config.sync_log_sample_rate
        self._limit = config.sync_log_rate_limit
        self._bucket = _Bucket(config.sync_log_rate_limit)
        self._rt = rt
        self.on: dict[str, bool] = {}
        """By outcome: whether its level is enabled (or starts may be logged), as of the
        last ``refresh``: the hot path's pre-check."""
        self.next_check = 0
        self.refresh(_perf())

    def refresh(self, now: int) -> None:
        """Read the logger's levels (again): on construction, then once a second."""
        self.next_check = now + _RECHECK_NS
        enabled = LOGGER.isEnabledFor
        self.on = {kind: bool(self.starts) or enabled(lvl) for kind, lvl in self.levels.items()}

    def start(self, op: SyncOperation) -> None:
        """Log the start of ``op`` when its operation is one of ``sync_log_starts`` (the
        caller checked that the set is not empty); its end is then always logged."""
        level = self.start_level
        if op.operation not in self.starts or not _enabled(level) or not self._admit():
            return
        op._log_started = True
        fields: dict[str, Any] = {"sync.event": "start", "sync.operation": op.operation}
        entity = op._entity
        if entity is not None:
            fields["sync.entity"] = entity
        where = op.operation if entity is None else f"{op.operation} {entity}"
        self._write(level, _context(op), fields, "sync %s: started", (where,))

    def end(
        self, op: SyncOperation, outcome: str, error_type: str | None, duration_ns: int, now: int
    ) -> None:
        """Log the end of ``op`` if its level is enabled and it is kept.

        The caller calls it only when ``on[outcome]``, when the operation is slow, or when
        ``now`` is past ``next_check``: an operation that is not logged costs a dict lookup
        and two comparisons, and nothing is built for it.

        Args:
            op: The finished operation; its span, if any, is the one the record refers to
                (else the span it ran in).
            outcome: ``success``, ``conflict`` or ``error``.
            error_type: Its ``error.type`` (bounded), for errors.
            duration_ns: Its duration.
            now: ``time.perf_counter_ns()`` when it ended.
        """
        if now >= self.next_check:
            self.refresh(now)
        slow = duration_ns > self.slow_ns
        level = self.slow_levels[outcome] if slow else self.levels[outcome]
        if op._log_started:  # its start was logged: so is its end
            level = max(level, self.start_level)
        elif not _enabled(level):
            return
        elif outcome == "success" and not slow:
            if self.sample_rate < 1.0 and _random() >= self.sample_rate:
                return
        elif not self._admit():
            return
        fields = _fields(op, outcome, error_type, duration_ns)
        text = outcome if error_type is None else f"error ({error_type})"
        where = op.operation if op._entity is None else f"{op.operation} {op._entity}"
        self._write(
            level, _context(op), fields, "sync %s: %s in %.1f ms", (where, text, duration_ns / 1e6)
        )

    def _admit(self) -> bool:
        if self._bucket.take():
            return True
        self._rt.drop(
            "sync_log_limited",
            "syncperf.sync: more than %g records per second (sync_log_rate_limit); the excess "
            "is dropped and counted as syncperf.dropped{syncperf.reason=sync_log_limited}",
            self._limit,
        )
        return False

    def _write(
        self,
        level: int,
        context: SpanContext | None,
        fields: dict[str, Any],
        message: str,
        args: tuple[object, ...],
    ) -> None:
        """Emit one record with ``context`` current, so handlers that read the active span
        (OpenTelemetry's ``LoggingHandler``) see the operation's."""
        token = None
        if context is not None and context.is_valid:
            fields.update(correlation(context))
            if current_span().get_span_context() is not context:
                token = attach(NonRecordingSpan(context))
        try:
            if _record_factory() is _PLAIN_RECORD:
                LOGGER.log(level, message, *args, extra=fields)
            else:
                _log_over_factory(level, message, args, fields)
        except Exception as error:  # a logging filter or handler raised
            self._rt.internal_error("sync_log_failed", error)
        finally:
            if token is not None:
                detach(token)


def _log_over_factory(
    level: int, message: str, args: tuple[object, ...], fields: dict[str, Any]
) -> None:
    """``LOGGER.log(..., extra=fields)`` under a custom log-record factory: one that stamps
    ``trace_id``/``span_id`` on every record (a common correlation recipe) makes ``extra=``
    raise, so the fields are set on the record after it is made. They win over the
    factory's: the ids are the operation's span's (docs/logging.md)."""
    if not LOGGER.isEnabledFor(level):
        return
    where: tuple[str, int, str] = ("(unknown file)", 0, "(unknown function)")
    if logging._srcfile:
        with contextlib.suppress(ValueError):  # no frame to report, as in logging itself
            where = LOGGER.findCaller()[:3]
    filename, line, function = where
    record = LOGGER.makeRecord(LOGGER.name, level, filename, line, message, args, None, function)
    record.__dict__.update(fields)
    LOGGER.handle(record)


def _context(op: SyncOperation) -> SpanContext | None:
    span = op._span
    return op._parent_ctx if span is None else span.get_span_context()


def _fields(
    op: SyncOperation, outcome: str, error_type: str | None, duration_ns: int
) -> dict[str, Any]:
    """The end record's fields: syncperf's own bounded values only."""
    fields: dict[str, Any] = {
        "sync.event": "end",
        "sync.operation": op.operation,
        "sync.outcome": outcome,
        "sync.operation.duration": duration_ns / 1e9,
    }
    if op._entity is not None:
        fields["sync.entity"] = op._entity
    if error_type is not None:
        fields["error.type"] = error_type
    if op._batch is not None:
        fields["sync.batch.size"] = op._batch
    if op._items or op._entity_items:
        fields["sync.items"] = sum((op._items or {}).values()) + sum(
            (op._entity_items or {}).values()
        )
    fields["sync.conflicts"] = op._conflicts
    if op._conflict_detail:
        fields["sync.conflicts.detail"] = detail = []
        for (entity, resolution), n in op._conflict_detail.items():
            entry: dict[str, Any] = {}
            if entity := entity or op._entity:
                entry["sync.entity"] = entity
            if resolution is not None:
                entry["sync.conflict.resolution"] = resolution
            entry["count"] = n
            detail.append(entry)
    fields["sync.idempotency.hit"] = op._idempotent
    if op._db_queries or op._rt.db_instrumented:
        fields["sync.db.queries"] = op._db_queries
        fields["sync.db.duration"] = op._db_ns / 1e9
    return fields
