"""One relay batch: the ``PublishBatch`` ``Outbox.publish()`` yields, and its ``send`` span.

The batch counts its messages in plain attributes, under a lock of its own (a relay may report
from a thread pool), while the relay reports them, and records everything under the runtime's
lock when the block ends (``PublishBatch._end``). The ``send`` span is
started, or, when head sampling dropped it, rescued for a failed batch, as the core does for
sync operations.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from syncperf._fold import record_in_force
from syncperf._gate import error_type, is_count
from syncperf._gate import name as gate_name
from syncperf._redact import record_exception
from syncperf._staleness import MAX_SKEW
from syncperf._tracing.current import detach
from syncperf.outbox._gauges import age_of
from syncperf.outbox._lags import LAG_FOLD_AT, fold_lags, record_lags
from syncperf.outbox._series import rebound
from syncperf.outbox._spans import parse_traceparent

if TYPE_CHECKING:
    from syncperf._metrics.aggregates import HistogramSeries
    from syncperf._runtime import Runtime
    from syncperf.outbox import Outbox
    from syncperf.outbox._series import OutboxSeries

_CREATED_AT = (
    f"a datetime or POSIX seconds (not milliseconds): finite, at most {MAX_SKEW:g} s ahead"
)
MAX_LINKS = 128
"""Links per ``send`` span (the SDK's default link limit)."""

_perf = time.perf_counter_ns
_CLIENT = SpanKind.CLIENT  # an enum member lookup costs ~70 ns
BATCH: ContextVar[PublishBatch | None] = ContextVar("syncperf_outbox_batch", default=None)
"""The innermost active batch (``current_batch()``)."""


class PublishBatch:
    """Records one relay batch; yielded by ``Outbox.publish()``, or ``current_batch()``.

    Report every message the batch tried once: ``published()`` or ``failed()``; a message given
    up on without a new attempt with ``dead_lettered()``. ``attempt`` is the message's attempt
    number (1 on the first try; keep a counter in the row): attempts above 1 count as
    ``retried``. Threads may share a batch (a relay sending through a pool): its counts stay
    exact; report every message before the block ends (a report after it is lost).

    Everything is recorded when the block ends. If the block raises, its transaction is taken
    as rolled back: messages reported published in it count as ``failed`` (with the
    exception's ``error.type``) since the relay will see them again, dead letters are not
    counted, and with ``count=`` given the messages never reported count as ``failed`` too.
    """

    __slots__ = (
        "__weakref__",  # ``_publish.LIVE``
        "_count",
        "_dead",
        "_ended",
        "_failed",
        "_first_error",
        "_folded",
        "_lags",
        "_links",
        "_lock",
        "_max_attempt",
        "_outbox",
        "_own_ns",
        "_published",
        "_rescuable",
        "_retried",
        "_rt",
        "_series",
        "_span",
        "_span_token",
        "_start_ns",
        "_token",
        "_unsampled",
    )

    def __init__(
        self, rt: Runtime, series: OutboxSeries, outbox: Outbox, count: int | None, start_ns: int
    ) -> None:
        self._rt = rt
        self._series = series
        self._outbox = outbox
        self._count = count
        self._start_ns = start_ns
        self._published = 0
        self._lags: list[float] = []  # queued; folded into ``_folded`` (``fold_lags``)
        self._folded: HistogramSeries | None = None
        self._failed: dict[str, int] = {}
        self._first_error: str | None = None
        self._dead = 0
        self._retried = 0
        self._max_attempt = 0
        self._links: list[tuple[SpanContext, int]] | None = None
        self._span: trace.Span | None = None
        self._span_token: Any = None
        self._rescuable = False
        self._unsampled: trace.NonRecordingSpan | None = None  # what the sampler dropped
        self._token: Token[PublishBatch | None] | None = None
        self._own_ns = 0
        self._ended = False
        self._lock = threading.Lock()

    @property
    def recording(self) -> bool:
        """Whether reports go anywhere (False for the no-op batch)."""
        return True

    @property
    def span(self) -> trace.Span:
        """The batch's ``send`` span; when its sampler dropped it, the unsampled span current
        in the block (a ``traceparent`` injected from it passes the decision on, as
        ``SyncOperation.span``); otherwise an invalid non-recording span."""
        return self._span or self._unsampled or trace.INVALID_SPAN

    def published(
        self, created_at: object = None, *, traceparent: str | None = None, attempt: int = 1
    ) -> None:
        """Report one message published.

        Args:
            created_at: When the message was enqueued (the row's created-at): a ``datetime``
                (naive means UTC) or POSIX seconds (not milliseconds); gives ``outbox.lag``.
                None: no lag. Anything else is dropped and counted (``invalid_created_at``);
                the message still counts.
            traceparent: The value ``Outbox.enqueue()`` returned for it: the span links to it.
            attempt: This attempt's number (1 = first try). Anything but an ``int`` >= 1 is
                dropped and counted (``invalid_attempt``); the message still counts, without
                its attempt.
        """
        t0 = _perf()
        attempt = self._check_attempt(attempt)
        lag = None
        if created_at is not None:
            try:
                lag = age_of(created_at)
            except Exception:  # not a time, or a datetime whose timestamp() fails: a tzinfo
                # with an offset of a day or more, pandas' NaT (ValueError), a hostile tzinfo;
                # or a time far ahead, such as epoch milliseconds (InvalidCreatedAt)
                self._rt.reject("invalid_created_at", _CREATED_AT, created_at)
        link = self._link(traceparent)
        with self._lock:
            if self._ended:  # a report after the block ended is lost
                return
            self._attempted(attempt, link)
            if lag is not None:
                lags = self._lags
                lags.append(lag)
                if len(lags) >= LAG_FOLD_AT:
                    self._folded = fold_lags(lags, self._folded, self._series.lag.bounds)
            self._published += 1
            self._own_ns += _perf() - t0

    def failed(
        self,
        error: BaseException | str,
        *,
        traceparent: str | None = None,
        attempt: int = 1,
        dead_letter: bool = False,
    ) -> None:
        """Report one message whose publish attempt failed.

        Args:
            error: The exception, or an ``error.type`` string (low cardinality).
            traceparent: The value ``Outbox.enqueue()`` returned for it.
            attempt: This attempt's number (1 = first try). Anything but an ``int`` >= 1 is
                dropped and counted (``invalid_attempt``); the failure still counts.
            dead_letter: True if the message is given up on (moved to a dead-letter table or
                queue): also counts ``dead_lettered``. Anything but a ``bool`` (a
                ``numpy.bool_`` too) is dropped and counted (``invalid_dead_letter``); the
                failure still counts.
        """
        t0 = _perf()
        attempt = self._check_attempt(attempt)
        rt = self._rt
        if isinstance(error, BaseException):
            etype = rt.error_types(error_type(error))
        elif (name := gate_name(error)) is not None:
            etype = rt.error_types(name)
        else:
            rt.reject("invalid_error", "an exception or an error type string", error)
            etype = rt.error_types("_OTHER")
        if dead_letter is not False and dead_letter is not True:  # identity: no __bool__
            rt.reject("invalid_dead_letter", "dead_letter: True or False", dead_letter)
            dead_letter = False  # the failure counts; that it was given up on is unknown
        link = self._link(traceparent)
        with self._lock:
            if self._ended:
                return
            self._attempted(attempt, link)
            self._failed[etype] = self._failed.get(etype, 0) + 1
            if self._first_error is None:
                self._first_error = etype
            if dead_letter:
                self._dead += 1
            self._own_ns += _perf() - t0

    def dead_lettered(self, count: int = 1) -> None:
        """Report ``count`` messages given up on without a new attempt in this batch."""
        if not is_count(count):
            self._rt.reject("invalid_count", "a dead-letter count: an int in [0, 2**53)", count)
            return
        with self._lock:
            if not self._ended:
                self._dead += count

    def _check_attempt(self, attempt: object) -> int:
        """``attempt``, or 0 (unknown) when it is not an int >= 1 (dropped and counted)."""
        if is_count(attempt) and attempt:
            return attempt  # type: ignore[return-value]
        self._rt.reject("invalid_attempt", "an attempt: an int in [1, 2**53)", attempt)
        return 0

    def _link(self, traceparent: str | None) -> SpanContext | None:
        if traceparent is None or (self._span is None and not self._rescuable):
            return None
        return parse_traceparent(traceparent)

    def _attempted(self, attempt: int, link: SpanContext | None) -> None:
        """Count one attempt (0: unknown, neither retried nor a link attribute); holds
        ``_lock``."""
        if attempt > 1:
            self._retried += 1
        if attempt > self._max_attempt:
            self._max_attempt = attempt
        if link is not None:
            links = self._links
            if links is None:
                links = self._links = []
            if len(links) < MAX_LINKS:
                links.append((link, attempt))

    def _end(self, exc: BaseException | None, reason: str | None = None) -> None:
        """End the batch: as an error if the block raised ``exc`` or, without one, if
        ``reason`` says why it failed (``not_awaited``: ``_ending.Completion``)."""
        t1 = _perf()
        with self._lock:  # no report changes the counts from here on: read without the lock
            ended, self._ended = self._ended, True
        if ended:  # in a forked child, a batch of the parent's (``_publish``): counts nothing
            return self._leave_ended()
        rt, series = self._rt.in_force(), self._series
        if rt is not self._rt:  # configure() replaced its runtime: record into the one in force
            series, self._failed = self._outbox.series(rt), rebound(rt, self._failed)
        if self._token is not None:
            try:
                BATCH.reset(self._token)
            except ValueError:  # ended in another context: another batch current there stays
                if BATCH.get() is self:
                    BATCH.set(None)
                self._span_token = None  # made there too: not detached here
            self._token = None  # it holds the batch before: ended ones would chain through it
        failed = self._failed
        etype = reason if exc is None else error_type(exc)
        if etype is not None:
            etype = rt.error_types(etype)
            attempted = self._published + sum(failed.values())
            lost = self._published + max(0, (self._count or 0) - attempted)
            if lost:
                failed[etype] = failed.get(etype, 0) + lost
            self._published, self._dead = 0, 0
            self._lags.clear()
            self._folded = None
        n_failed = sum(failed.values())
        size = max(self._count or 0, self._published + n_failed)
        duration = (t1 - self._start_ns) / 1e9
        span = self._span
        if self._span_token is not None:  # None: moved out of the caller's context
            detach(self._span_token)
        if span is not None:
            self._finish_span(span, size, n_failed, exc, etype)
            rt.finisher.end(span, time.time_ns())
        elif self._rescuable and (etype or n_failed):
            if rt.shed_until < t1:
                self._rescue(size, n_failed, exc, etype, duration)
            else:
                rt.span_shed()
        raised = etype is not None

        def record(_: Runtime, bound: tuple[OutboxSeries, dict[str, int], str | None]) -> int:
            series, failed, etype = bound
            own = self._record(series, failed, size, etype, raised, duration) + _perf() - t1
            series.overhead.record(own / 1e9)
            return own

        rt, own = record_in_force(rt, (series, failed, etype), record, self._rebind)
        if own > rt.budget_ns:
            rt.over_budget("outbox")
        elif rt.streaks:
            rt.within_budget("outbox")

    def _rebind(
        self, rt: Runtime, bound: tuple[OutboxSeries, dict[str, int], str | None]
    ) -> tuple[OutboxSeries, dict[str, int], str | None]:
        """The batch's series, failures and error type on ``rt``, the runtime in force."""
        _, failed, etype = bound
        series, failed = self._outbox.series(rt), rebound(rt, failed)
        return series, failed, None if etype is None else rt.error_types(etype)

    def _record(
        self,
        series: OutboxSeries,
        failed: dict[str, int],
        size: int,
        etype: str | None,
        raised: bool,
        duration: float,
    ) -> int:
        """Record the batch into ``series`` (holds the runtime's lock); its own time so far."""
        if size or raised or self._dead:
            (series.duration if etype is None else series.duration_error(etype)).record(duration)
        if size:
            series.batch_size.record(size)
        if self._published:
            series.published.add(self._published)
            record_lags(series.lag, self._lags, self._folded)
        for kind, n in failed.items():
            series.failed(kind).add(n)
        if self._retried:
            series.retried.add(self._retried)
        if self._dead:
            series.dead_lettered.add(self._dead)
        return self._own_ns

    def _leave_ended(self) -> None:
        """Leave the context of a batch ended before (its span ended by the parent only)."""
        try:
            BATCH.reset(self._token)  # type: ignore[arg-type]
        except (TypeError, ValueError, RuntimeError):  # ended here before, or elsewhere
            return
        if self._span_token is not None:
            detach(self._span_token)
            self._span_token = None

    def _span_attributes(self, size: int, n_failed: int, etype: str | None) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "outbox.published": self._published,
            "outbox.failed": n_failed,
            "outbox.dead_lettered": self._dead,
            "outbox.retried": self._retried,
        }
        if size != 1:
            attrs["messaging.batch.message_count"] = size
        if self._max_attempt:
            attrs["outbox.attempt"] = self._max_attempt
        error = etype or self._first_error
        if error is not None:
            attrs["error.type"] = error
        return attrs

    def _finish_span(
        self,
        span: trace.Span,
        size: int,
        n_failed: int,
        exc: BaseException | None,
        etype: str | None,
    ) -> None:
        try:
            for context, attempt in self._links or ():
                span.add_link(context, _link_attributes(attempt))
            span.set_attributes(self._span_attributes(size, n_failed, etype))
            if exc is not None:
                record_exception(span, exc, self._rt.config.record_exception_messages)
            if etype is not None or n_failed:
                span.set_status(Status(StatusCode.ERROR, etype or self._first_error))
        except Exception as error:
            self._rt.internal_error("span_end_failed", error)

    def _rescue(
        self,
        size: int,
        n_failed: int,
        exc: BaseException | None,
        etype: str | None,
        duration: float,
    ) -> None:
        """Trace a failed batch that head sampling dropped: a root span, as for sync ops, with
        the ids of the unsampled span current during the batch (if its sampler left one)."""
        rt = self._rt
        tracer = rt.tracing.tracer
        if tracer is None:
            return
        now = time.time_ns()
        outbox = self._outbox
        ids = self._unsampled.get_span_context() if self._unsampled is not None else None
        try:
            span = tracer.start_rescued(
                outbox.send_name,
                _CLIENT,
                outbox.send_attrs,
                [Link(c, _link_attributes(a)) for c, a in self._links or ()],
                now - int(duration * 1e9),
                ids,
            )
        except Exception as error:
            rt.internal_error("span_start_failed", error)
            return
        self._links = None
        self._finish_span(span, size, n_failed, exc, etype)
        rt.finisher.end(span, now)

    def __repr__(self) -> str:
        return f"<PublishBatch {self._outbox.name!r} published={self._published}>"


def _link_attributes(attempt: int) -> dict[str, int] | None:
    return {"outbox.attempt": attempt} if attempt else None
