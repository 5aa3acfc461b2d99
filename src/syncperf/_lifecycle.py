"""An operation's life cycle: ``begin``/``end`` and its span (its pre-bound series: ``_series``).

``begin`` makes a ``SyncOperation`` current and maybe starts its span; the recorder collects;
``end`` queues its metrics for ``_fold`` (no lock), then ends the span, or *rescues* an error,
conflict or slow operation that head sampling dropped with a span of its own.

Callers start an operation only when none is active (``active_operation()`` is None); see
``_scope`` for the nesting rule.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from syncperf import _runtime
from syncperf._accel import speedups
from syncperf._client_series import ClientSeries
from syncperf._fold import FOLD_AT, FOLD_PAIRS_AT, MAX_QUEUED, fold
from syncperf._gate import error_type
from syncperf._metrics.resources import child_instance_ids, with_own_instance_id
from syncperf._operation import CURRENT, SyncOperation
from syncperf._redact import record_exception
from syncperf._replaced import REPLACED
from syncperf._runtime import Runtime
from syncperf._series import OperationSeries, series
from syncperf._tracing.current import attach, current_span, detach
from syncperf._tracing.sampling import Dropped, decide_span
from syncperf._tracing.span import Span, Tracer

__all__ = ["OperationSeries", "begin", "end", "series", "start"]

_perf = time.perf_counter_ns
_INTERNAL = SpanKind.INTERNAL  # an enum member lookup costs ~70 ns


def fold_now(rt: Runtime, wait: bool) -> None:
    """Fold what ended (``_fold``) if no other thread folds; with ``wait``, wait for it."""
    if rt.lock.acquire(wait):
        try:
            fold(rt)
        finally:
            rt.lock.release()


_end_plain = None
"""The compiled ``end`` (also of one complete before its end: ``end_ns``) of an operation
without an exception, entity change, other entities' items or client details, unsampled with
nothing to rescue or sampled (its span ended by ``_end_span``, called from there): returns -1;
for any other it changes nothing and returns the end time it read, for this ``end`` to use.
None without it."""
if speedups is not None:
    speedups.setup(globals(), fold_now, FOLD_AT, MAX_QUEUED, FOLD_PAIRS_AT)  # ``_perf``: clock
    _end_plain = speedups.end_plain


# --- begin --------------------------------------------------------------------------------


def begin(
    rt: Runtime,
    operation: str,
    entity: str | None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    now: int = 0,
    current: trace.Span | None = None,
) -> SyncOperation:
    """Start an operation (the caller checked that none is active) and make it current."""
    bound = rt.op_series.get((operation, entity)) or series(rt, operation, entity)
    return start(rt, bound, kind, attributes, now, current)


def start(
    rt: Runtime,
    bound: OperationSeries,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    now: int = 0,
    current: trace.Span | None = None,
) -> SyncOperation:
    """``begin`` with the operation's pre-bound series already at hand.

    For a caller that already read them (the ASGI middleware): ``now``, the
    ``time.perf_counter_ns()`` it began at (the operation starts then; the caller sets
    ``op._own_ns`` once its set-up is done; 0: read here), and ``current``, the current span
    (the parent; None: read here)."""
    t0 = now or _perf()
    op = SyncOperation(rt, bound, t0)
    if kind is not _INTERNAL:
        op._kind = kind
    tracing = rt.tracing
    if tracing.active or (t0 >= tracing.next_check and tracing.due(t0)):
        _start_span(rt, op, bound, kind, attributes, t0, current)
    bound.inflight.append(None)
    op._ctx_token = CURRENT.set(op)
    if bound.log.starts:
        bound.log.start(op)
    if not now:
        op._own_ns = _perf() - t0
    return op


_start_py = start
if speedups is not None:  # the same, compiled (with this module's names: ``_start_span``...)
    start = speedups.start


def span_start(rt: Runtime, op: SyncOperation, bound: OperationSeries, t0: int) -> None:
    """``start``'s span, for the compiled ``FastPath`` (before it makes ``op`` current)."""
    tracing = rt.tracing
    if tracing.active or (t0 >= tracing.next_check and tracing.due(t0)):
        _start_span(rt, op, bound, _INTERNAL, None, t0, None)


def _start_span(
    rt: Runtime,
    op: SyncOperation,
    bound: OperationSeries,
    kind: SpanKind,
    attributes: Mapping[str, Any] | None,
    t0: int,
    current: trace.Span | None,
    decided: tuple[Any, Any] | None = None,
) -> None:
    """The span ``start`` makes, or the sampler's decision it leaves current; none when a sampler
    or span processor fails (``span_start_failed``). ``decided``: by the compiled ``start``."""
    tracing = rt.tracing
    try:
        if decided is None:
            parent = (current_span() if current is None else current).get_span_context()
            standard = tracing.standard  # a standard sampler, decided compiled (``decide_span``)
            trace_id = standard and decide_span(standard, op, parent, attributes)  # type: ignore[misc]
        else:  # by the compiled ``start``
            parent, trace_id = decided
        if trace_id is False:  # dropped, and its decision made current there
            return
        if trace_id is None and tracing.asks:  # None: not one decided there
            trace_id = tracing.ask(bound.span_name, kind, parent, bound.attrs, attributes, current)
        elif trace_id is None:
            trace_id = tracing.sample(bound.span_name, kind, parent)
        if trace_id and rt.shed_until >= t0:  # syncperf is shedding: not made, but counted
            rt.span_shed()
        elif trace_id:
            name, attrs = (
                bound.span_name,
                {**bound.attrs, **attributes} if attributes else bound.attrs,
            )
            tracer: Tracer = tracing.tracer  # type: ignore[assignment]
            if tracing.asks:  # ``ask`` returned a ``Sampled``
                span = tracer.start_sampled(name, parent, kind, attrs, trace_id)  # type: ignore[arg-type]
            else:
                span = tracer.start(name, parent, kind, attrs, trace_id=trace_id)
            op._span = span
            op._token = attach(span)
            _time_start(rt, t0)
        else:
            op._parent_ctx = parent
            if attributes:
                op._span_attrs = dict(attributes)
            if type(trace_id) is Dropped:  # by the sampler: its decision passes on, as the SDK's
                unsampled = tracing.unsampled(parent, trace_id)
                op._unsampled = unsampled
                op._token = attach(unsampled)
    except Exception as error:  # a sampler or span processor failed: no span, no harm
        rt.internal_error("span_start_failed", error)


def _time_start(rt: Runtime, t0: int) -> None:
    """Watch a span start begun at ``t0`` (``time.perf_counter_ns()``): a span processor's
    ``on_start`` that blocks sheds spans (``over_budget``), sampled or rescued alike."""
    if _perf() - t0 > rt.budget_ns:
        rt.over_budget("slow_span_start")
    elif rt.streaks:
        rt.within_budget("slow_span_start")


# --- end ----------------------------------------------------------------------------------


def end(
    op: SyncOperation, exc: BaseException | None, end_ns: int | None = None, now: int = 0
) -> None:
    """Finish ``op``: queue its metrics (``_fold``), end or rescue its span.

    Args:
        op: The operation ``begin()`` returned (an ended one is only left: ``_leave_ended``).
        exc: The exception that ended it, or None.
        end_ns: When it ended (``time.perf_counter_ns()``), if before now (the ASGI
            middleware's: when the response was complete; tasks run after it are not in it).
        now: ``time.perf_counter_ns()`` when the caller's wrap-up began; 0: read here."""
    if getattr(op, "_ended", False):  # (a deleted field is set below)
        return _leave_ended(op)
    if exc is None and _end_plain and (now := _end_plain(op, now, end_ns)) < 0:
        return  # the compiled end ended it (else ``now``: the end time it read, or 0)
    t2 = now or _perf()
    rt = op._rt
    op._ended = True
    try:
        CURRENT.reset(op._ctx_token)  # type: ignore[arg-type]
    except ValueError:  # ended in another context (e.g. an abandoned async generator)
        _leave_foreign(op)
    op._ctx_token = None  # it holds the value before: ended ones would chain through it
    lag_ns = 0 if end_ns is None else min(max(t2 - end_ns, 0), t2 - op._start_ns)
    duration_ns = t2 - lag_ns - op._start_ns
    if exc is not None:
        outcome, etype = "error", rt.error_types(error_type(exc))
    elif op._error_type is not None:
        outcome, etype = "error", op._error_type
    elif op._conflicts:
        outcome, etype = "conflict", None
    else:
        outcome, etype = "success", None
    failure = None
    if op._span is not None or op._parent_ctx is not None:
        failure = _end_span(rt, op, outcome, etype, exc, duration_ns, lag_ns, t2)
    # The metrics: queued without a lock, folded in batches (``fold``); in-flight count left.
    try:
        bound, entity = op._series, op._entity
        if entity is not bound.entity:
            bound = series(rt, bound.operation, entity)
        others = op._entity_items and [
            (series(rt, bound.operation, item_entity), change, n)
            for (item_entity, change), n in op._entity_items.items()
        ]
        client = None if op._observed is None else rt.state(ClientSeries)  # before the fold
        ended = rt.ended
        ended.append(  # what the operation recorded, as of now (see the end of ``end``)
            (
                bound,
                etype,
                outcome,
                duration_ns,
                others,
                op._own_ns + _perf() - (op._resumed_ns or t2),
                client,
                op._observed,
                entity,
                op._batch,
                op._idempotent,
                op._items,
                op._conflict_detail,
                op._db_queries,
                op._db_ns,
            )
        )
        # Fold a batch if no other thread folds; wait when full or replaced (it forwards: _fold)
        wait = (queued := len(ended)) >= MAX_QUEUED or rt.successor is not None
        if wait or queued >= FOLD_AT:
            fold_now(rt, wait)
    finally:
        op._series.inflight.pop()
    if failure is not None:
        rt.internal_error("span_end_failed", failure)
    log = op._series.log  # a cheap pre-check: nothing is built for a record not written
    if log.on[outcome] or duration_ns > log.slow_ns or t2 >= log.next_check:
        log.end(op, outcome, etype, duration_ns, t2)
    # Queued, not yet folded: a task that kept the operation in its context must not change
    # what it recorded (its scalars were copied above, its collections are let go here).
    op._items = op._conflict_detail = op._observed = None


def _leave_foreign(op: SyncOperation) -> None:
    """``end`` in a context other than the one ``op`` began in: there ``op`` is no longer
    current if it was (a copy of its own, e.g. a task it spawned); another operation current
    there (that context's own) stays current."""
    if CURRENT.get() is op:
        CURRENT.set(None)
    op._token = None  # the span's context token was made there too: not detached here


def _leave_ended(op: SyncOperation) -> None:
    """``end`` of an ended operation counts nothing: in a forked child, the parent's (see
    ``_after_fork_in_child``) leaves the context here, its span ended by the parent only."""
    try:
        CURRENT.reset(op._ctx_token)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):  # ended here before, or elsewhere
        return
    if op._token is not None:
        detach(op._token)
        op._token = None


def _end_span(
    rt: Runtime,
    op: SyncOperation,
    outcome: str,
    etype: str | None,
    exc: BaseException | None,
    duration_ns: int,
    lag_ns: int,
    t2: int,
) -> Exception | None:
    """End the operation's span, or rescue it; what a span processor raised, if anything."""
    span = op._span
    try:
        if span is not None:
            _finish_span(op, span, outcome, etype, exc)
            rt.finisher.end(span, time.time_ns() - lag_ns)
        elif outcome != "success" or duration_ns > rt.slow_ns:
            if rt.shed_until < t2:
                _rescue(op, outcome, etype, exc, duration_ns, lag_ns)
            else:
                rt.span_shed()
    except Exception as error:  # a span processor failed; the metrics still count
        return error
    finally:
        if op._token is not None:  # the span's context, or the unsampled one
            detach(op._token)
    return None


def _finish_span(
    op: SyncOperation,
    span: Span,
    outcome: str,
    etype: str | None,
    exc: BaseException | None,
) -> None:
    attrs = span._attributes  # syncperf's own values: valid by construction
    attrs["sync.outcome"] = outcome
    attrs["sync.conflicts"] = op._conflicts
    attrs["sync.idempotency.hit"] = op._idempotent
    if op._entity is not None:
        attrs["sync.entity"] = op._entity
    if op._batch is not None:
        attrs["sync.batch.size"] = op._batch
    if op._db_queries or op._rt.db_instrumented:
        attrs["sync.db.queries"] = op._db_queries
        attrs["sync.db.duration"] = op._db_ns / 1e9
    if op._items or op._entity_items:
        attrs["sync.items"] = sum((op._items or {}).values()) + sum(
            (op._entity_items or {}).values()
        )
    if etype is not None:
        attrs["error.type"] = etype
        if exc is not None:
            record_exception(span, exc, op._rt.config.record_exception_messages)
        if op._kind is not SpanKind.SERVER or not _refused(etype):  # HTTP conventions: a
            span.set_status(Status(StatusCode.ERROR, etype))  # 4xx leaves a SERVER span unset
    if op._span_attrs:  # the application's, checked
        span.set_attributes(op._span_attrs)


def _refused(etype: str) -> bool:
    """Whether ``etype`` is a 4xx status code (``apply_http_status``'s error type)."""
    return len(etype) == 3 and etype[0] == "4" and etype.isdigit()


def _rescue(
    op: SyncOperation,
    outcome: str,
    etype: str | None,
    exc: BaseException | None,
    duration_ns: int,
    lag_ns: int = 0,
) -> None:
    """Trace an error, conflict or slow operation that head sampling dropped.

    A new root span with the operation's real start time and a link to the context it ran in;
    it ends ``lag_ns`` before now (see ``end()``), and becomes the operation's span. A root
    operation's takes the trace and span ids of the unsampled span that was current during it
    (those its traceparent told the services it called); one under a parent, a new trace."""
    rt = op._rt
    tracer = rt.tracing.tracer
    if tracer is None:
        return
    now = time.time_ns() - lag_ns
    parent = op._parent_ctx
    links = [Link(parent)] if parent is not None and parent.is_valid else []
    unsampled = op._unsampled
    ids = unsampled.get_span_context() if unsampled is not None and not links else None
    t0 = _perf()
    span = tracer.start_rescued(
        "sync " + op.operation,
        op._kind,
        {"sync.operation": op.operation},
        links,
        now - duration_ns,
        ids,
    )
    _time_start(rt, t0)
    _finish_span(op, span, outcome, etype, exc)
    rt.finisher.end(span, now)
    op._span = span


# --- fork ---------------------------------------------------------------------------------


def _after_fork_in_child() -> None:
    """An operation open across ``fork()`` runs in the parent (which ends it, counts it and
    exports its span): in the child, the one current where it forked is ended (joined no
    more, not current, its ``end`` a no-op) and the in-flight counts are emptied (the
    child's ``sync.operations.active`` counts its own operations only). A runtime's state
    lock a parent thread held at ``fork`` is made anew (``_forklocks`` for the others). The
    runtime's resource takes the child's own ``service.instance.id``, as its readers do: the
    exporters a set-up in the child adds (gunicorn's ``post_fork``) export under it."""
    op = CURRENT.get()
    if op is not None:
        op._ended = True
    rt = _runtime.installed
    if rt is None:
        return
    if "service.instance.id" in getattr(rt.resource, "attributes", {}):
        rt.resource = with_own_instance_id(rt.resource, child_instance_ids())
    for each in {rt, *rt.retired, *REPLACED}:
        each._state_lock = threading.RLock()
        for inflight in list(each.inflight.values()):
            inflight.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
