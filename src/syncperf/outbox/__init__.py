"""Transactional-outbox instrumentation: enqueue, publish, retries, dead letters, depth, age.

A push writes its changes and an outbox row in one transaction; a relay publishes the rows
later. ``Outbox`` measures both sides and the backlog between them::

    from syncperf.outbox import Outbox, sqlalchemy_probe

    orders = Outbox("orders", stats=sqlalchemy_probe(engine, "outbox", status="status"))

    # in the push, inside the transaction that writes the row:
    row.traceparent = orders.enqueue(session=session)

    # in the relay:
    with orders.publish(count=len(rows)) as batch:
        for row in rows:
            try:
                broker.send(row.payload)
            except BrokerError as error:
                batch.failed(error, attempt=row.attempts, dead_letter=row.attempts >= 5)
            else:
                batch.published(row.created_at, traceparent=row.traceparent,
                                attempt=row.attempts)
        session.commit()

Metrics (``outbox.name`` on every point; never a message or aggregate ID):
``outbox.messages`` (``outbox.event`` = ``enqueued``, ``published``, ``failed`` (with
``error.type``), ``retried``, ``dead_lettered``), ``outbox.publish.duration``, ``outbox.lag``
(enqueue to publish), ``outbox.batch.size``, and the gauges ``outbox.depth`` and
``outbox.oldest_age`` from a stats source, with ``outbox.probe.failures``.

Spans follow the messaging conventions: ``create <name>`` (PRODUCER) per enqueue, whose context
is the message's creation context stored in the row as a W3C ``traceparent``; ``send <name>``
(CLIENT) per relay batch with ``messaging.batch.message_count`` and a link to each message's
creation context (link attribute ``outbox.attempt``).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from syncperf import _runtime
from syncperf._gate import is_count, raised_at
from syncperf._gate import name as gate_name
from syncperf._metrics.aggregates import HistogramSeries, SumSeries, freeze
from syncperf._operation import error_type
from syncperf._redact import record_exception
from syncperf._runtime import BATCH_BOUNDS, DURATION_BOUNDS, Bounded, Runtime
from syncperf._tracing.span import attach, detach
from syncperf.exceptions import ConfigError
from syncperf.outbox._gauges import (
    GaugeSource,
    OutboxStats,
    StatsRunner,
    age_of,
    failure_type,
    register,
    unregister,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = [
    "LAG_BOUNDS",
    "Outbox",
    "OutboxStats",
    "PublishBatch",
    "current_batch",
    "current_traceparent",
    "parse_traceparent",
    "sqlalchemy_probe",
]

F = TypeVar("F", bound=Callable[..., Any])

LAG_BOUNDS = (
    0.01,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    43200.0,
    86400.0,
)
"""``outbox.lag`` boundaries: 10 ms to a day (0.2 s, 2 s and 5 s exact, as for durations)."""
MAX_LINKS = 128
"""Links per ``send`` span (the SDK's default link limit)."""
MAX_NAMES = 100
"""Distinct ``outbox.name`` values per runtime; later names are reported as ``_other``."""

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
_TRACEPARENT_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_perf = time.perf_counter_ns
_PRODUCER, _CLIENT = SpanKind.PRODUCER, SpanKind.CLIENT  # an enum member lookup costs ~70 ns
_serials = itertools.count(1)
_BATCH: ContextVar[PublishBatch | None] = ContextVar("syncperf_outbox_batch", default=None)
_live: weakref.WeakSet[Outbox] = weakref.WeakSet()
_live_lock = threading.Lock()


# --- creation context in the row -----------------------------------------------------------


def format_traceparent(context: SpanContext) -> str | None:
    """The W3C ``traceparent`` of ``context``, or None if it is invalid."""
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None without a valid current span."""
    return format_traceparent(trace.get_current_span().get_span_context())


def parse_traceparent(value: object) -> SpanContext | None:
    """The remote ``SpanContext`` a stored ``traceparent`` names, or None if it names none.

    Args:
        value: What ``Outbox.enqueue()`` returned (read back from the outbox row).
    """
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT_RE.fullmatch(value.strip())
    if match is None:
        return None
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match[3], 16) & 0x01)
    )


# --- pre-bound series of one outbox on one runtime -----------------------------------------


class _Bound:
    """The series one outbox records into on one runtime (cached in ``rt.cache``)."""

    __slots__ = (
        "batch_size",
        "dead_lettered",
        "duration",
        "enqueued",
        "lag",
        "name",
        "overhead",
        "published",
        "retried",
        "_base",
        "_duration",
        "_errors",
        "_failed",
        "_messages",
        "_probe",
        "_probe_failures",
    )

    def __init__(self, rt: Runtime, name: str) -> None:
        registry, limit = rt.registry, rt.config.max_series
        names = rt.cache.get("outbox.names")
        if names is None:
            names = rt.cache.setdefault("outbox.names", Bounded(MAX_NAMES))
        self.name = names(name)
        self._base = {"outbox.name": self.name}
        self._messages = registry.instrument(
            "outbox.messages",
            "counter",
            "{message}",
            "Outbox messages by event: enqueued, published, failed, retried, dead_lettered.",
            max_series=limit,
        )
        self.enqueued = self._event("enqueued")
        self.published = self._event("published")
        self.retried = self._event("retried")
        self.dead_lettered = self._event("dead_lettered")
        self._failed: dict[str, SumSeries] = {}
        self._duration = registry.instrument(
            "outbox.publish.duration",
            "histogram",
            "s",
            "Duration of outbox relay batches.",
            bounds=DURATION_BOUNDS,
            max_series=limit,
        )
        self.duration = self._duration.histogram(freeze(self._base))
        self._errors: dict[str, HistogramSeries] = {}
        self.lag = registry.instrument(
            "outbox.lag",
            "histogram",
            "s",
            "Time from enqueueing an outbox message to publishing it.",
            bounds=LAG_BOUNDS,
            max_series=limit,
        ).histogram(freeze(self._base))
        self.batch_size = registry.instrument(
            "outbox.batch.size",
            "histogram",
            "{message}",
            "Messages per outbox relay batch.",
            bounds=BATCH_BOUNDS,
            max_series=limit,
        ).histogram(freeze(self._base))
        self._probe_failures = registry.instrument(
            "outbox.probe.failures",
            "counter",
            "{failure}",
            "Outbox stats calls (depth, oldest age) that failed or timed out.",
            max_series=limit,
        )
        self._probe: dict[str, SumSeries] = {}
        self.overhead: HistogramSeries | None = None

    def _event(self, event: str) -> SumSeries:
        return self._messages.sum(freeze({**self._base, "outbox.event": event}))

    def failed(self, etype: str) -> SumSeries:
        """``outbox.messages{outbox.event=failed, error.type}`` (call under ``rt.lock``)."""
        series = self._failed.get(etype)
        if series is None:
            attrs = {**self._base, "outbox.event": "failed", "error.type": etype}
            series = self._failed[etype] = self._messages.sum(freeze(attrs))
        return series

    def duration_error(self, etype: str) -> HistogramSeries:
        """``outbox.publish.duration{error.type}`` (call under ``rt.lock``)."""
        series = self._errors.get(etype)
        if series is None:
            series = self._errors[etype] = self._duration.histogram(
                freeze({**self._base, "error.type": etype})
            )
        return series

    def probe_failure(self, etype: str) -> SumSeries:
        """``outbox.probe.failures{error.type}`` (call under ``rt.lock``)."""
        series = self._probe.get(etype)
        if series is None:
            series = self._probe[etype] = self._probe_failures.sum(
                freeze({**self._base, "error.type": etype})
            )
        return series


# --- the outbox ------------------------------------------------------------------------------


class Outbox:
    """Instruments one transactional outbox (a table and the relay that drains it).

    Create one per outbox at start-up and share it; every method is cheap and none raises into
    your code (outside strict mode). Works across ``syncperf.configure()`` calls: series and
    gauges follow the current runtime.

    Args:
        name: The outbox's ``outbox.name``: a fixed, low-cardinality name such as ``"orders"``
            (letters, digits, ``_ . -``; at most 64 characters). Never an ID.
        stats: A callable returning ``(depth, oldest_age_seconds)`` (an ``OutboxStats``), run
            once per metric collection for the ``outbox.depth`` and ``outbox.oldest_age``
            gauges; e.g. ``sqlalchemy_probe(engine, ...)``. None: no gauges.
        stats_timeout: Seconds a collection waits for ``stats``; a slower call drops the gauges
            for that collection and counts an ``outbox.probe.failures`` with
            ``error.type=timeout``.
        destination: ``messaging.destination.name`` on spans (the topic or queue published to).
        system: ``messaging.system`` on spans (e.g. ``"kafka"``, ``"rabbitmq"``).

    Raises:
        ConfigError: an argument is not accepted.
    """

    def __init__(
        self,
        name: str,
        *,
        stats: Callable[[], Any] | None = None,
        stats_timeout: float = 2.0,
        destination: str | None = None,
        system: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ConfigError(
                "name",
                name,
                "a low-cardinality name matching [A-Za-z][A-Za-z0-9_.-]{0,63}, e.g. 'orders'",
            )
        if stats is not None and not callable(stats):
            raise ConfigError("stats", stats, "a callable returning (depth, oldest_age) or None")
        if (
            isinstance(stats_timeout, bool)
            or not isinstance(stats_timeout, (int, float))
            or not 0 < stats_timeout < float("inf")
        ):
            raise ConfigError("stats_timeout", stats_timeout, "seconds > 0")
        for option, value in (("destination", destination), ("system", system)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(option, value, "a non-empty string or None")
        self.name = name
        self._serial = next(_serials)
        self._key = ("outbox", self._serial)
        self._runner = None if stats is None else StatsRunner(stats, float(stats_timeout))
        self._closed = False
        attrs: dict[str, Any] = {"outbox.name": name}
        if system is not None:
            attrs["messaging.system"] = system
        if destination is not None:
            attrs["messaging.destination.name"] = destination
        self._create_name = "create " + (destination or name)
        self._send_name = "send " + (destination or name)
        self._create_attrs = {
            **attrs,
            "messaging.operation.type": "create",
            "messaging.operation.name": "create",
        }
        self._send_attrs = {
            **attrs,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
        }
        if self._runner is not None:
            with _live_lock:
                if any(other.name == name for other in _live):
                    raise ConfigError(
                        "name",
                        name,
                        "a name no other open Outbox with stats uses (their gauges would hide "
                        "each other); close() the other one first",
                    )
                _live.add(self)
            rt = _runtime._current
            if rt is not None:
                self._register(rt)

    def __repr__(self) -> str:
        return f"<Outbox {self.name!r}>"

    # --- runtime binding -------------------------------------------------------------------

    def _bound(self, rt: Runtime) -> _Bound:
        bound: _Bound | None = rt.cache.get(self._key)
        if bound is None:
            overhead = rt.overhead_for("outbox")
            with rt.lock:
                bound = rt.cache.get(self._key)
                if bound is None:
                    bound = _Bound(rt, self.name)
                    bound.overhead = overhead
                    rt.cache[self._key] = bound
            if self._runner is not None and not self._closed:
                self._register(rt)
        return bound

    def _register(self, rt: Runtime) -> None:
        ref = weakref.ref(self)

        def source() -> GaugeSource | None:
            outbox = ref()
            if outbox is None or outbox._closed or outbox._runner is None:
                return None
            bound = outbox._bound(rt)
            return GaugeSource(
                outbox._runner, bound.name, lambda error: outbox._probe_failed(rt, bound, error)
            )

        register(rt, self, self._serial, source)

    def _probe_failed(self, rt: Runtime, bound: _Bound, error: BaseException) -> None:
        etype = failure_type(error)
        with rt.lock:
            bound.probe_failure(rt.error_types(etype)).add(1)
        rt.log_once(
            "outbox_probe:" + self.name,
            "syncperf: the stats of outbox %s failed (%s); its gauges are skipped "
            "for this collection",
            self.name,
            raised_at(error),
        )

    def close(self) -> None:
        """Stop observing this outbox's stats (its gauges disappear from later collections)."""
        self._closed = True
        with _live_lock:
            _live.discard(self)
        rt = _runtime._current
        if rt is not None:
            unregister(rt, self._serial)

    # --- enqueue ---------------------------------------------------------------------------

    def enqueue(self, count: int = 1, *, session: Any = None) -> str | None:
        """Record ``count`` messages written to the outbox; return their creation context.

        Call it where the push writes the outbox row(s), inside the push's transaction. When
        tracing, it starts and ends a ``create <name>`` span (a child of the push's span) and
        returns that span's W3C ``traceparent``; store it in the row and hand it back to
        ``PublishBatch.published()`` so the ``send`` span links to it. Without a span it returns
        the current span's ``traceparent``, or None.

        Args:
            count: Messages written (an int >= 0); one ``create`` span covers them all.
            session: A SQLAlchemy ``Session`` or ``AsyncSession``: count the messages when its
                transaction commits and never if it rolls back. Without it they count now.

        Returns:
            The ``traceparent`` to store with the message(s), or None.
        """
        t0 = _perf()
        rt = _runtime._current or _runtime.current()
        if not rt.enabled:
            return current_traceparent()
        if not is_count(count):
            rt.reject("invalid_count", "an outbox message count: an int in [0, 2**53)", count)
            return current_traceparent()
        bound = rt.cache.get(self._key) or self._bound(rt)
        traceparent = None
        trace_id = rt.tracing.decide(self._create_name, _PRODUCER, t0)
        if trace_id and rt.shed_until >= t0:  # syncperf is shedding: not made, but counted
            rt.span_shed()
        elif trace_id:
            attrs = self._create_attrs
            if count != 1:
                attrs = {**attrs, "messaging.batch.message_count": count}
            try:
                span = rt.tracing.tracer.start_span(  # type: ignore[union-attr]
                    self._create_name, kind=_PRODUCER, attributes=attrs, trace_id=trace_id
                )
            except Exception as error:
                rt.internal_error("span_start_failed", error)
            else:
                traceparent = format_traceparent(span.get_span_context())
                rt.finisher.end(span, time.time_ns())
        if traceparent is None:
            traceparent = current_traceparent()
        now = session is None or not self._defer(rt, session, count)
        with rt.lock:
            if now:
                bound.enqueued.add(count)
            own = _perf() - t0
            bound.overhead.record(own / 1e9)  # type: ignore[union-attr]
        if own > rt.budget_ns:
            rt.over_budget("outbox")
        return traceparent

    def _defer(self, rt: Runtime, session: Any, count: int) -> bool:
        try:
            from syncperf.outbox._sqlalchemy import defer_enqueue
        except ImportError:  # pragma: no cover - sqlalchemy not installed
            deferred = False
        else:
            deferred = defer_enqueue(session, self._key, self._count_enqueued, count)
        if not deferred:
            rt.reject("invalid_session", "a SQLAlchemy Session or AsyncSession", session)
        return deferred

    def _count_enqueued(self, count: int) -> None:
        rt = _runtime._current or _runtime.current()
        if rt.enabled:
            bound = rt.cache.get(self._key) or self._bound(rt)
            with rt.lock:
                bound.enqueued.add(count)

    # --- publish ---------------------------------------------------------------------------

    def publish(self, fn: F | None = None, *, count: int | None = None) -> Any:
        """Measure one relay batch: a context manager (``with`` / ``async with``) or decorator.

        The block (or each call of the decorated function) is one ``send <name>`` span and one
        ``outbox.publish.duration``; report each message in it on the yielded ``PublishBatch``
        (inside a decorated function: ``current_batch()``). Counts are recorded when the block
        ends. Commit the relay's transaction inside the block: if the block raises, syncperf
        takes it as rolled back (see ``PublishBatch``).

        Args:
            fn: The function to decorate (``@outbox.publish`` without parentheses).
            count: The batch's size when known up front (``len(rows)``): sets
                ``messaging.batch.message_count`` and, if the block raises, counts the messages
                never reported as failed.

        Returns:
            A context manager yielding a ``PublishBatch``, or the decorated function.
        """
        scope = _PublishScope(self, count)
        return scope if fn is None else scope(fn)

    def _begin(self, count: int | None) -> PublishBatch:
        t0 = _perf()
        rt = _runtime._current or _runtime.current()
        if not rt.enabled:
            return _NOOP_BATCH
        if count is not None and not is_count(count):
            rt.reject("invalid_count", "an outbox batch count: an int in [0, 2**53)", count)
            count = None
        bound = rt.cache.get(self._key) or self._bound(rt)
        batch = PublishBatch(rt, bound, self, count, t0)
        trace_id = rt.tracing.decide(self._send_name, _CLIENT, t0)
        if trace_id and rt.shed_until >= t0:  # syncperf is shedding: not made, but counted
            rt.span_shed()
        elif trace_id:
            attrs = self._send_attrs
            if count is not None and count != 1:
                attrs = {**attrs, "messaging.batch.message_count": count}
            try:
                span = rt.tracing.tracer.start_span(  # type: ignore[union-attr]
                    self._send_name, kind=_CLIENT, attributes=attrs, trace_id=trace_id
                )
            except Exception as error:
                rt.internal_error("span_start_failed", error)
            else:
                batch._span = span
                batch._span_token = attach(span)
        elif rt.tracing.active:
            batch._rescuable = True
        batch._token = _BATCH.set(batch)
        batch._own_ns = _perf() - t0
        return batch


class _PublishScope:
    """What ``Outbox.publish()`` returns: ``with``, ``async with`` or a decorator."""

    __slots__ = ("_batch", "_count", "_outbox")

    def __init__(self, outbox: Outbox, count: int | None) -> None:
        self._outbox = outbox
        self._count = count
        self._batch: PublishBatch | None = None

    def __enter__(self) -> PublishBatch:
        self._batch = batch = self._outbox._begin(self._count)
        return batch

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        batch, self._batch = self._batch, None
        if batch is not None:
            batch._end(exc)

    async def __aenter__(self) -> PublishBatch:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: F) -> F:
        if not callable(fn):
            raise ConfigError("fn", fn, "a function or coroutine function to decorate")
        outbox, count = self._outbox, self._count
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with _PublishScope(outbox, count):
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _PublishScope(outbox, count):
                return fn(*args, **kwargs)

        return cast(F, wrapper)


# --- one relay batch -----------------------------------------------------------------------


class PublishBatch:
    """Records one relay batch; yielded by ``Outbox.publish()``, or ``current_batch()``.

    Report every message the batch tried once: ``published()`` or ``failed()``; a message given
    up on without a new attempt with ``dead_lettered()``. ``attempt`` is the message's attempt
    number (1 on the first try; keep a counter in the row): attempts above 1 count as
    ``retried``.

    Everything is recorded when the block ends. If the block raises, its transaction is taken
    as rolled back: messages reported published in it count as ``failed`` (with the
    exception's ``error.type``) since the relay will see them again, dead letters are not
    counted, and with ``count=`` given the messages never reported count as ``failed`` too.
    """

    __slots__ = (
        "_count",
        "_dead",
        "_failed",
        "_first_error",
        "_lags",
        "_links",
        "_max_attempt",
        "_outbox",
        "_own_ns",
        "_published",
        "_rescuable",
        "_retried",
        "_rt",
        "_bound",
        "_span",
        "_span_token",
        "_start_ns",
        "_token",
    )

    def __init__(
        self, rt: Runtime, bound: _Bound, outbox: Outbox, count: int | None, start_ns: int
    ) -> None:
        self._rt = rt
        self._bound = bound
        self._outbox = outbox
        self._count = count
        self._start_ns = start_ns
        self._published = 0
        self._lags: list[float] = []
        self._failed: dict[str, int] = {}
        self._first_error: str | None = None
        self._dead = 0
        self._retried = 0
        self._max_attempt = 0
        self._links: list[tuple[SpanContext, int]] | None = None
        self._span: trace.Span | None = None
        self._span_token: Any = None
        self._rescuable = False
        self._token: Token[PublishBatch | None] | None = None
        self._own_ns = 0

    @property
    def recording(self) -> bool:
        """Whether reports go anywhere (False for the no-op batch)."""
        return True

    @property
    def span(self) -> trace.Span:
        """The batch's ``send`` span, or an invalid non-recording span when it has none."""
        return self._span or trace.INVALID_SPAN

    def published(
        self, created_at: object = None, *, traceparent: str | None = None, attempt: int = 1
    ) -> None:
        """Report one message published.

        Args:
            created_at: When the message was enqueued (the row's created-at): a ``datetime``
                (naive means UTC) or POSIX seconds; gives ``outbox.lag``. None: no lag.
            traceparent: The value ``Outbox.enqueue()`` returned for it: the span links to it.
            attempt: This attempt's number (1 = first try).
        """
        t0 = _perf()
        if not self._attempt(attempt, traceparent):
            return
        if created_at is not None:
            try:
                self._lags.append(age_of(created_at))
            except TypeError:
                self._rt.reject(
                    "invalid_created_at", "a datetime or finite POSIX seconds", created_at
                )
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
            attempt: This attempt's number (1 = first try).
            dead_letter: True if the message is given up on (moved to a dead-letter table or
                queue): also counts ``dead_lettered``.
        """
        t0 = _perf()
        if not self._attempt(attempt, traceparent):
            return
        rt = self._rt
        if isinstance(error, BaseException):
            etype = rt.error_types(error_type(error))
        elif (name := gate_name(error)) is not None:
            etype = rt.error_types(name)
        else:
            rt.reject("invalid_error", "an exception or an error type string", error)
            etype = rt.error_types("_OTHER")
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
        self._dead += count

    def _attempt(self, attempt: int, traceparent: str | None) -> bool:
        if not is_count(attempt) or attempt < 1:
            self._rt.reject("invalid_attempt", "an attempt: an int in [1, 2**53)", attempt)
            return False
        if attempt > 1:
            self._retried += 1
        if attempt > self._max_attempt:
            self._max_attempt = attempt
        if traceparent is not None and (self._span is not None or self._rescuable):
            links = self._links
            if links is None:
                links = self._links = []
            if len(links) < MAX_LINKS:
                context = parse_traceparent(traceparent)
                if context is not None:
                    links.append((context, attempt))
        return True

    def _end(self, exc: BaseException | None) -> None:
        t1 = _perf()
        rt, bound = self._rt, self._bound
        if self._token is not None:
            try:
                _BATCH.reset(self._token)
            except ValueError:  # ended in another context
                _BATCH.set(None)
        failed = self._failed
        etype = None
        if exc is not None:
            etype = rt.error_types(error_type(exc))
            attempted = self._published + sum(failed.values())
            lost = self._published + max(0, (self._count or 0) - attempted)
            if lost:
                failed[etype] = failed.get(etype, 0) + lost
            self._published, self._dead = 0, 0
            self._lags.clear()
        n_failed = sum(failed.values())
        size = max(self._count or 0, self._published + n_failed)
        duration = (t1 - self._start_ns) / 1e9
        span = self._span
        if span is not None:
            detach(self._span_token)
            self._finish_span(span, size, n_failed, exc, etype)
            rt.finisher.end(span, time.time_ns())
        elif self._rescuable and (etype or n_failed):
            if rt.shed_until < t1:
                self._rescue(size, n_failed, exc, etype, duration)
            else:
                rt.span_shed()
        lags = self._lags
        with rt.lock:
            if size or exc is not None or self._dead:
                (bound.duration if etype is None else bound.duration_error(etype)).record(duration)
            if size:
                bound.batch_size.record(size)
            if self._published:
                bound.published.add(self._published)
                for lag in lags:
                    bound.lag.record(lag)
            for kind, n in failed.items():
                bound.failed(kind).add(n)
            if self._retried:
                bound.retried.add(self._retried)
            if self._dead:
                bound.dead_lettered.add(self._dead)
            own = self._own_ns + _perf() - t1
            bound.overhead.record(own / 1e9)  # type: ignore[union-attr]
        if own > rt.budget_ns:
            rt.over_budget("outbox")

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
                span.add_link(context, {"outbox.attempt": attempt})
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
        """Trace a failed batch that head sampling dropped (a root span, as for sync ops)."""
        rt = self._rt
        tracer = rt.tracing.tracer
        if tracer is None:
            return
        now = time.time_ns()
        outbox = self._outbox
        try:
            span = tracer.start_span(
                outbox._send_name,
                context=trace.set_span_in_context(trace.INVALID_SPAN),
                kind=SpanKind.CLIENT,
                attributes={**outbox._send_attrs, "syncperf.rescued": True},
                links=[Link(c, {"outbox.attempt": a}) for c, a in self._links or ()],
                start_time=now - int(duration * 1e9),
            )
        except Exception as error:
            rt.internal_error("span_start_failed", error)
            return
        self._links = None
        self._finish_span(span, size, n_failed, exc, etype)
        rt.finisher.end(span, now)

    def __repr__(self) -> str:
        return f"<PublishBatch {self._outbox.name!r} published={self._published}>"


class _NoopBatch(PublishBatch):
    """What ``current_batch()`` returns outside a publish block (and when disabled)."""

    __slots__ = ()

    @property
    def recording(self) -> bool:
        return False

    def published(
        self, created_at: object = None, *, traceparent: str | None = None, attempt: int = 1
    ) -> None:
        pass

    def failed(
        self,
        error: BaseException | str,
        *,
        traceparent: str | None = None,
        attempt: int = 1,
        dead_letter: bool = False,
    ) -> None:
        pass

    def dead_lettered(self, count: int = 1) -> None:
        pass

    def _end(self, exc: BaseException | None) -> None:
        pass


_NOOP_BATCH = _NoopBatch(None, None, None, None, 0)  # type: ignore[arg-type]


def current_batch() -> PublishBatch:
    """The innermost active ``PublishBatch`` (e.g. inside ``@outbox.publish``), or a no-op."""
    return _BATCH.get() or _NOOP_BATCH


# --- stats sources -----------------------------------------------------------------------------


def sqlalchemy_probe(
    engine: Engine,
    table: str = "outbox",
    *,
    schema: str | None = None,
    created_at: str = "created_at",
    status: str | None = None,
    pending: Sequence[Any] = ("pending",),
    timeout: float = 1.0,
    totals: bool = False,
    attempts: str | None = None,
) -> Callable[[], OutboxStats]:
    """A stats source for ``Outbox(stats=...)`` over an outbox table (extra ``[sqlalchemy]``).

    Runs ``SELECT count(*), min(<created_at>) FROM <table> [WHERE <status> IN <pending>]``
    once per metric collection. The defaults fit Debezium's outbox shape (table ``outbox``;
    every row is pending until the relay deletes it) plus a created-at column; a relay that
    marks rows instead names its ``status`` column and the ``pending`` values. Index the
    filter (e.g. a partial index on ``created_at WHERE status = 'pending'``) so the query stays
    cheap. On PostgreSQL the server cancels the query after ``timeout`` seconds.

    Args:
        engine: A synchronous ``sqlalchemy.Engine`` (the probe runs off the request path).
        table: The outbox table.
        schema: Its schema, if not the default.
        created_at: The column holding when a row was written (timestamp or POSIX seconds).
        status: The status column, or None when every row in the table is pending.
        pending: The ``status`` values that mean "not yet published or dead-lettered".
        timeout: Server-side statement timeout in seconds (PostgreSQL).
        totals: Also count every row by status (``outbox.rows``) in the same query
            (``SELECT status, count(*), min(created_at)[, sum(attempts)] ... GROUP BY
            status``): the relay's outcomes as the table holds them, which a relay crash
            cannot lose. Needs ``status``; reads the whole table each collection.
        attempts: With ``totals``, the attempt-counter column: its sum is reported as
            ``outbox.attempts`` (publish attempts, crashed ones included).

    Returns:
        A callable returning ``OutboxStats``.

    Raises:
        ConfigError: an argument is not accepted.
    """
    from syncperf.outbox._sqlalchemy import SQLAlchemyProbe

    return SQLAlchemyProbe(
        engine,
        table,
        schema=schema,
        created_at=created_at,
        status=status,
        pending=pending,
        timeout=timeout,
        totals=totals,
        attempts=attempts,
    )


def _on_new_runtime(rt: Runtime) -> None:
    with _live_lock:
        outboxes = list(_live)
    for outbox in outboxes:
        if not outbox._closed:
            outbox._register(rt)


_runtime.RUNTIME_HOOKS.append(_on_new_runtime)
