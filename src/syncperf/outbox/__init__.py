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

import itertools
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from opentelemetry.trace import SpanKind

from syncperf import _runtime
from syncperf._fold import record_in_force
from syncperf._gate import MAX_NAME, is_count, raised_at
from syncperf._runtime import Runtime
from syncperf.outbox import _live
from syncperf.outbox._args import check_args
from syncperf.outbox._batch import MAX_LINKS, PublishBatch
from syncperf.outbox._gauges import (
    GaugeSource,
    InvalidCreatedAt,
    InvalidStatus,
    OutboxStats,
    StatsRunner,
    failure_type,
    register,
    unregister,
)
from syncperf.outbox._publish import PublishScope, current_batch
from syncperf.outbox._series import LAG_BOUNDS, MAX_NAMES, OutboxSeries, outbox_names
from syncperf.outbox._spans import (
    current_traceparent,
    format_traceparent,
    parse_traceparent,
    start_span,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = [
    "LAG_BOUNDS",
    "MAX_LINKS",
    "MAX_NAMES",
    "Outbox",
    "OutboxStats",
    "PublishBatch",
    "current_batch",
    "current_traceparent",
    "parse_traceparent",
    "sqlalchemy_probe",
]

F = TypeVar("F", bound=Callable[..., Any])

_perf = time.perf_counter_ns
_PRODUCER = SpanKind.PRODUCER  # an enum member lookup costs ~70 ns
_serials = itertools.count(1)


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
        name, stats_timeout, destination, system = check_args(
            name, stats, stats_timeout, destination, system
        )
        self.name = name
        self._serial = next(_serials)
        self._runner = None if stats is None else StatsRunner(stats, stats_timeout)
        self._closed = False
        rt = _runtime.installed
        self._scope = _live.scope_of(rt)
        """The ``testing.capture()`` scope it was made in (``outbox._live``)."""
        attrs: dict[str, Any] = {"outbox.name": name}
        if system is not None:
            attrs["messaging.system"] = system
        if destination is not None:
            attrs["messaging.destination.name"] = destination
        self._create_name = "create " + (destination or name)
        self.send_name = "send " + (destination or name)
        """The name of the relay's ``send`` spans."""
        self._create_attrs, self.send_attrs = (
            {**attrs, "messaging.operation.type": op, "messaging.operation.name": op}
            for op in ("create", "send")
        )
        if self._runner is not None:
            _live.claim(self)
            if rt is not None:
                self._register(rt)

    def __repr__(self) -> str:
        return f"<Outbox {self.name!r}>"

    # --- runtime binding -------------------------------------------------------------------

    def series(self, rt: Runtime) -> OutboxSeries:
        """This outbox's series on ``rt`` (bound once, kept by the runtime)."""
        return rt.state(self._new_series, self._serial)

    def _rebind(self, rt: Runtime, _: object) -> OutboxSeries:  # for ``record_in_force``
        return self.series(rt)

    def _new_series(self, rt: Runtime) -> OutboxSeries:
        name = rt.state(outbox_names)(self.name)
        overhead = rt.overhead_for("outbox")
        with rt.lock:
            series = OutboxSeries(rt, name, overhead)
        if self._runner is not None and _live.in_view(self, _live.scope_of(rt)):
            self._register(rt)
        return series

    def _register(self, rt: Runtime) -> None:
        ref = weakref.ref(self)

        def source() -> GaugeSource | None:
            outbox = ref()
            if outbox is None or outbox._closed or outbox._runner is None:
                return None
            series = outbox.series(rt)
            return GaugeSource(
                outbox._runner, series.name, lambda error: outbox._probe_failed(rt, series, error)
            )

        register(rt, self, self._serial, source)

    def _probe_failed(self, rt: Runtime, series: OutboxSeries, error: BaseException) -> None:
        etype = failure_type(error)  # in a replaced runtime's last collection: in the one in force
        rt, _ = record_in_force(
            rt, series, lambda rt, s: s.probe_failure(rt.error_types(etype)).add(1), self._rebind
        )
        if isinstance(error, InvalidStatus):
            rt.log_once(
                "outbox_status:" + self.name,
                "syncperf: the stats of outbox %s named a status that is not 1 to %d "
                "printable characters (%s); it is left out of outbox.rows",
                self.name,
                MAX_NAME,
                error,
            )
            return
        key, what = "outbox_probe:", raised_at(error)
        if isinstance(error, InvalidCreatedAt):  # the probe's own finding, told apart
            key, what = "outbox_created_at:", f"its oldest created_at is {error}"
        rt.log_once(
            key + self.name,
            "syncperf: the stats of outbox %s failed (%s); its gauges are skipped "
            "for this collection",
            self.name,
            what,
        )

    def close(self) -> None:
        """Stop observing this outbox's stats (its gauges disappear from later collections)."""
        self._closed = True
        _live.release(self)
        rt = _runtime.installed
        if rt is not None:
            unregister(rt, self._serial)

    # --- enqueue ---------------------------------------------------------------------------

    def enqueue(self, count: int = 1, *, session: Any = None) -> str | None:
        """Record ``count`` messages written to the outbox; return their creation context.

        Call it where the push writes the outbox row(s), inside the push's transaction. When
        tracing, it starts and ends a ``create <name>`` span (a child of the push's span) and
        returns that span's W3C ``traceparent``; store it in the row and hand it back to
        ``PublishBatch.published()`` so the ``send`` span links to it. When the sampler drops
        the span, it returns the ``traceparent`` of the unsampled span that passes the decision
        on (as an instrumented producer injects); without tracing, the current span's, or None.

        Args:
            count: Messages written (an int >= 0); one ``create`` span covers them all.
            session: A SQLAlchemy ``Session`` or ``AsyncSession`` (or a ``scoped_session``:
                its current session): count the messages when its transaction commits and
                never if it rolls back. Without it they count now.

        Returns:
            The ``traceparent`` to store with the message(s), or None.
        """
        t0 = _perf()
        rt = _runtime.installed or _runtime.current()
        if not rt.enabled:
            return current_traceparent()
        if not is_count(count):
            rt.reject("invalid_count", "an outbox message count: an int in [0, 2**53)", count)
            return current_traceparent()
        series = self.series(rt)
        traceparent = None
        span, _ = start_span(rt, self._create_name, _PRODUCER, self._create_attrs, t0, count)
        if span is not None:  # made, or the decision of a sampler that dropped it
            traceparent = format_traceparent(span.get_span_context())
            if span.is_recording():
                rt.finisher.end(span, time.time_ns())
        if traceparent is None:
            traceparent = current_traceparent()
        now = session is None or not self._defer(rt, session, count)

        def record(_: Runtime, series: OutboxSeries) -> int:
            if now:
                series.enqueued.add(count)
            own = _perf() - t0
            series.overhead.record(own / 1e9)
            return own

        rt, own = record_in_force(rt, series, record, self._rebind)
        if own > rt.budget_ns:
            rt.over_budget("outbox")
        elif rt.streaks:
            rt.within_budget("outbox")
        return traceparent

    def _defer(self, rt: Runtime, session: Any, count: int) -> bool:
        try:
            from syncperf.outbox._sqlalchemy import defer_enqueue
        except ImportError:  # pragma: no cover - sqlalchemy not installed
            deferred = False
        else:
            deferred = defer_enqueue(session, self._serial, self._count_enqueued, count)
        if not deferred:
            rt.reject(
                "invalid_session", "a SQLAlchemy Session, AsyncSession or scoped_session", session
            )
        return deferred

    def _count_enqueued(self, count: int) -> None:
        def record(rt: Runtime, series: OutboxSeries) -> None:
            if rt.enabled:  # a runtime in force since that is disabled counts nothing
                series.enqueued.add(count)

        rt = _runtime.installed or _runtime.current()
        if rt.enabled:
            record_in_force(rt, self.series(rt), record, self._rebind)

    # --- publish ---------------------------------------------------------------------------

    @overload
    def publish(self, fn: F, *, count: int | None = None) -> F: ...

    @overload
    def publish(self, fn: None = None, *, count: int | None = None) -> PublishScope: ...

    def publish(self, fn: F | None = None, *, count: int | None = None) -> F | PublishScope:
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
            A ``PublishScope``: a context manager yielding a ``PublishBatch`` and a decorator
            (``@outbox.publish(count=...)``); or, given ``fn``, the decorated function.
        """
        scope = PublishScope(self, count)
        return scope if fn is None else scope(fn)


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
        created_at: The column holding when a row was written (a timestamp or POSIX seconds,
            ``numeric`` included; epoch milliseconds fail the probe with
            ``error.type=invalid_created_at``).
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
    # ``rt`` is not current yet: a capture's runtime sees what the runtime around it sees
    for outbox in _live.visible(_live.scope_of(_runtime.installed)):
        outbox._register(rt)


_runtime.RUNTIME_HOOKS.append(_on_new_runtime)
