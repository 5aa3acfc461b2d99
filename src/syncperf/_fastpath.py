"""The wrapper of a ``def`` handler on the compiled path (``_speedups.FastPath``): it starts
an operation (its span, or the sampler's decision left current, by ``_lifecycle.span_start``),
runs the extractor phases, calls the handler and ends the operation in C, and hands every
other case to the helpers here or to the Python wrapper (``_decorators``) as a whole: a
joined operation, a start to log, a returned response or awaitable, an exception, a span to
end, an operation with more to record than ``end_plain`` takes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from syncperf import _runtime
from syncperf._accel import speedups
from syncperf._ending import after_phase, completion, finish, future, leave, settles
from syncperf._extractors import Run, guard
from syncperf._http_status import PLAIN, awaitable
from syncperf._lifecycle import end, series
from syncperf._operation import SyncOperation
from syncperf._runtime import Runtime
from syncperf._series import OperationSeries

__all__ = ["compiled"]


def compiled(
    fn: Callable[..., Any],
    slow: Callable[..., Any],
    operation: str,
    entity: str | None,
    phases: tuple[Run | None, Run | None, bool] = (None, None, False),
    plain: frozenset[type] = PLAIN,
) -> Callable[..., Any] | None:
    """``fn``'s wrapper on the compiled path, ``slow`` (the Python wrapper) behind it; None
    without the compiled path. ``phases``: the extractor phases of an operation it owns
    (before, after) and whether they feed counts (see ``_decorators._joins``). A result
    whose type is not in ``plain`` ends in Python (``_settle``): a response, an awaitable,
    any result of a handler whose adapter holds its tallies until ``finish`` settles them."""
    if speedups is None:
        return None

    def bind(rt: Runtime) -> OperationSeries | None:
        return series(rt, operation, entity) if rt.enabled else None

    before, after, fed = phases
    fast = speedups.FastPath(
        fn,
        slow,
        bind,
        _settle,
        finish,
        _end,
        _failed,
        vars(_runtime),
        SyncOperation,
        plain,
        before=before,
        after=after,
        fed=fed,
    )

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fast(args, kwargs)

    return wrapper


def _settle(
    op: SyncOperation,
    result: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None,
    after: Run | None,
) -> Any:
    """A result that is not a plain value: an awaitable followed to its end, a response
    whose status decides the outcome (as the Python wrapper does); any result when the
    adapter holds its tallies (``finish`` settles them)."""
    kwargs = {} if kwargs is None else kwargs
    try:
        if awaitable(result):
            if future(result):
                return settles(result, op, leave(op), after, args, kwargs)
            return completion(result, op, leave(op), after, args, kwargs, None)
        if after is not None:
            after_phase(after, op, op, args, kwargs, result)
    except BaseException as exc:
        finish(op, exc)
        raise
    finish(op, None, result)
    return result


def _end(op: SyncOperation, now: int) -> None:
    """``end`` of an operation the compiled ``end`` left (``now``: the end time it read)."""
    try:
        end(op, None, now=now)
    except Exception as error:
        guard(op).internal_error("operation_end_failed", error)


def _failed(op: SyncOperation, error: Exception) -> None:
    guard(op).internal_error("operation_end_failed", error)
