"""Ended operations, recorded into their series in batches.

``_lifecycle.end`` appends what an operation recorded to ``rt.ended`` (a deque: appending is
atomic, so threads ending operations at once never wait on each other) and, every
``FOLD_AT`` operations, folds the queue under ``rt.lock`` if no other thread is folding
(at ``MAX_QUEUED`` it waits for the lock). The registry folds before every collection
(``Registry.folds``), so counts are exact whenever they are read; a forked child discards
its parent's queue (``Registry.pending``); what is queued is what the operation had at its
end (later recorder calls on it change nothing).

An operation open when ``configure()`` replaced its runtime ends in it: the old runtime, after
its last export, folds nothing more into its own series, which no export reads any more, but
forwards what is queued (``forward``) to the runtime in force, whose collections take it
(``adopt``), so nothing an operation records across a ``configure()`` is lost. An operation
that ends in a replaced runtime forwards its record itself (``_lifecycle.end`` folds at once:
``fold`` forwards), which covers one begun there after ``configure()`` by a thread that read
the runtime just before, where no collection looks any more.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from syncperf._accel import speedups
from syncperf._client_series import ClientSeries
from syncperf._client_series import record as record_observed
from syncperf._metrics.aggregates import HistogramSeries, SumSeries
from syncperf._metrics.batches import record_ns
from syncperf._runtime import RUNTIME_HOOKS
from syncperf._series import series

if TYPE_CHECKING:
    from syncperf._runtime import Runtime
    from syncperf._speedups import Values

__all__ = [
    "FOLD_AT",
    "FOLD_PAIRS_AT",
    "MAX_QUEUED",
    "adopt",
    "conflict_series",
    "fold",
    "forward",
    "record_in_force",
]

Attrs = dict[str, str | bool]
S = TypeVar("S")
T = TypeVar("T")
Queued = dict[HistogramSeries, Any]
"""Nanoseconds per series, recorded at the end of a fold: a list of ints (the Python fold)
or a ``_speedups.Values`` (the compiled one)."""


FOLD_AT = 64
"""Ended operations queued before the one ending folds them in (collection folds the rest)."""
MAX_QUEUED = 1024
"""Queued operations at which the one ending waits for the lock to fold them (another thread
holds it for long): the queue, which keeps each operation until it is folded, stays bounded."""
FOLD_PAIRS_AT = 256
"""Operations of one compiled wrapper ended since the last fold, each with nothing but its
duration and overhead to record, queued as a pair of C integers (``_speedups.fold``), at
which the one ending folds them in: more than ``FOLD_AT``, since a pair costs no object
and a fold's fixed cost is shared by more operations. ``MAX_QUEUED`` bounds them per
wrapper (16 KB), the records of all operations per runtime."""


def fold(rt: Runtime) -> None:
    """Record the operations queued by ``end`` into their series (the caller holds
    ``rt.lock``; collection calls it first, so every count is exact when read).

    ``end`` only appends to a deque (atomic): threads ending operations at once do not wait
    on each other, and one of them folds a whole batch under one lock acquisition. An
    operation that fails to record is counted (``operation_end_failed``) and the rest are
    recorded; strict mode then raises the first failure.
    """
    if rt.successor is not None:  # replaced: its series are exported no more
        forward(rt)
        return
    failures: list[Exception] = []
    queued: Queued = {}  # nanoseconds, recorded per series at the end
    counted: Queued = {}  # counts (batch sizes), the same way
    if speedups is not None:
        rest = functools.partial(_rest, rt)
        conflicts = rt.conflict_series
        speedups.fold(rt.ended, queued, counted, failures, rest, rt.db_instrumented, conflicts)
    else:
        _queue(rt, queued, failures)
    for histogram, values in queued.items():  # one C-level pass per series, not a call a value
        record_ns(histogram, values)
    for histogram, values in counted.items():
        record_ns(histogram, values, 1)
    for failure in failures:
        rt.internal_error("operation_end_failed", failure, held=True)


def _queue(rt: Runtime, queued: Queued, failures: list[Exception]) -> None:
    """Take what ``rt.ended`` holds now: each operation's duration and overhead queued per
    series, the rest of its record (``_rest``) recorded. ``_speedups.fold`` in C also records
    items, conflicts and batch sizes itself (batch sizes queued per series, as counts) when
    their series are bound, and hands only the other records to ``_rest``."""
    ended = rt.ended
    take = ended.popleft
    left = len(ended)  # what is there now: more may come while folding
    db = rt.db_instrumented
    while left:
        try:
            while left:
                left -= 1
                record = take()
                if len(record) == 2:  # a compiled end's marker: durations and overheads only
                    bound, pairs = record
                    values = pairs.take()
                    queued.setdefault(bound.success, []).extend(values[::2])
                    queued.setdefault(bound.overhead, []).extend(values[1::2])
                    continue
                (
                    bound,
                    etype,
                    outcome,
                    duration_ns,
                    others,
                    own_ns,
                    client,
                    _,
                    _,
                    batch,
                    idempotent,
                    items,
                    conflicts,
                    queries,
                    _,
                ) = record
                if etype is not None:
                    series = bound.error(etype)
                elif outcome == "conflict":
                    series = bound.conflicted()
                else:
                    series = bound.success
                queued.setdefault(series, []).append(duration_ns)
                extra = others or items or conflicts or queries or idempotent or db
                if extra or client is not None or batch is not None:
                    _rest(rt, record)
                queued.setdefault(bound.overhead, []).append(own_ns)
        except Exception as error:  # the rest of this operation is lost (counted), not others
            failures.append(error)


def _rest(rt: Runtime, record: tuple[Any, ...]) -> None:
    """An ended operation's counts other than its duration and overhead."""
    (
        bound,
        _,
        _,
        _,
        others,
        _,
        client,
        observed,
        entity,
        batch,
        idempotent,
        items,
        conflict_detail,
        db_queries,
        db_ns,
    ) = record
    if batch is not None:
        bound.batch.record(batch)
    if idempotent:
        bound.idempotency.add(1)
    if items:
        for change, n in items.items():
            counter = bound.items.get(change) or bound.items_of(change)
            counter.value += n
            counter.touched = True
    if others:
        for other, change, n in others:
            other.items_of(change).add(n)
    if conflict_detail:
        for (conflict_entity, resolution), n in conflict_detail.items():
            conflict_series(rt, conflict_entity or entity, resolution).add(n)
    if client is not None:
        record_observed(client, bound.operation, entity, observed)
    if db_queries or rt.db_instrumented:
        bound.db_queries.record(db_queries)
        bound.db_duration.record(db_ns / 1e9)


def forward(old: Runtime) -> None:
    """Queue what operations of ``old``, a runtime ``configure()`` replaced, queued when they
    ended into the runtime in force, bound to its series (the caller holds ``old.lock``)."""
    rt = old.in_force()
    ended, into = old.ended, rt.ended
    for _ in range(len(ended)):
        record = ended.popleft()
        try:
            records = _expanded(record) if len(record) == 2 else [record]
        except Exception as error:
            rt.internal_error("operation_end_failed", error)
            continue
        for each in records:
            try:
                into.append(_rebound(rt, each))
            except Exception as error:  # this operation is lost (counted), not the others
                rt.internal_error("operation_end_failed", error)
    if rt.successor is not None:  # replaced meanwhile, maybe after its last fold: on with them
        with rt.lock:
            fold(rt)


def _expanded(marker: tuple[Any, Values]) -> list[tuple[Any, ...]]:
    """The records of the operations whose (duration, overhead) pairs a compiled end queued
    behind ``marker`` (``(bound, pairs)``, see ``_speedups.fold``): each a plain success with
    nothing else recorded (no engine was instrumented when it ended), as ``_lifecycle.end``
    queues one. The first of a FastPath's markers takes every pair; the others find none."""
    bound, pairs = marker
    values = pairs.take()
    entity = bound.entity
    return [
        (bound, None, "success", d, None, own, None, None, entity, None, False, None, None, 0, 0)
        for d, own in zip(values[::2], values[1::2], strict=True)
    ]


def _rebound(rt: Runtime, record: tuple[Any, ...]) -> tuple[Any, ...]:
    """An ended operation's record with the series of ``rt`` in place of its runtime's."""
    bound, etype, outcome, duration_ns, others, own_ns, client, *rest = record
    return (
        series(rt, bound.operation, bound.entity),
        None if etype is None else rt.error_types(etype),
        outcome,
        duration_ns,
        others and [(series(rt, o.operation, o.entity), c, n) for o, c, n in others],
        own_ns,
        None if client is None else rt.state(ClientSeries),
        *rest,
    )


def record_in_force(
    rt: Runtime, bound: S, record: Callable[[Runtime, S], T], rebind: Callable[[Runtime, S], S]
) -> tuple[Runtime, T]:
    """``record(rt, bound)`` under the lock of ``rt`` if no runtime replaced it yet, else of
    the runtime in force, ``bound`` (its series) bound to it by ``rebind(rt, bound)`` first,
    outside the lock (binding series takes it). Returns the runtime and what ``record`` did.

    ``configure()`` sets ``successor`` under the old runtime's lock before its last export
    carries its counts: what is recorded under the lock of a runtime without one is exported.
    """
    while True:
        with rt.lock:
            if rt.successor is None:
                return rt, record(rt, bound)
        rt = rt.in_force()  # replaced since: on to the one in force
        bound = rebind(rt, bound)


def adopt(rt: Runtime) -> None:
    """Before a collection of ``rt`` (its lock not held yet): forward what the runtimes it
    replaced queued since, and forget those that have no open operation left.

    ``idle()`` first: an operation queues its record before it leaves the in-flight count, so
    once ``old`` is idle, what its open operations recorded is in ``old.ended``. One that
    begins later (its thread read the runtime before ``configure()``) forwards its record
    itself when it ends (``_lifecycle.end``: ``old.successor`` is set)."""
    for old in list(rt.retired):
        with old.lock:
            forward(old)
        if old.idle() and not old.ended:
            with contextlib.suppress(ValueError):  # another collection forgot it first
                rt.retired.remove(old)
            with old.lock:  # what was queued after the check: not left behind
                forward(old)


def _register(rt: Runtime) -> None:
    rt.registry.folds.append(lambda: fold(rt))
    rt.registry.adopts.append(lambda: adopt(rt))


RUNTIME_HOOKS.append(_register)


def conflict_series(rt: Runtime, entity: str | None, resolution: str | None) -> SumSeries:
    """The ``sync.conflicts`` series (entity and resolution already bounded)."""
    key = (entity, resolution)
    found = rt.conflict_series.get(key)
    if found is None:
        attrs: Attrs = {}
        if entity is not None:
            attrs["sync.entity"] = entity
        if resolution is not None:
            attrs["sync.conflict.resolution"] = resolution
        found = rt.conflict_series[key] = rt.conflicts.sum(tuple(sorted(attrs.items())))
    return found
