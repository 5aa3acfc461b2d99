"""How a decorated call's operation ends: its result read (``after``), its HTTP status
applied, and a ``def`` handler's awaitable result followed to its end (``_decorators``)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Callable, Coroutine, Generator
from contextvars import Context, ContextVar, Token
from functools import partial
from typing import Any

from syncperf._extractors import Run, guard
from syncperf._http_status import answered, apply_http_status, http_status, raised, settle
from syncperf._lifecycle import end
from syncperf._operation import CURRENT, SyncOperation
from syncperf._tracing.current import attach, detach

_perf = time.perf_counter_ns
FEEDING: ContextVar[SyncOperation | None] = ContextVar("syncperf_feeding", default=None)
"""The joined operation a decorated call in this context feeds counts into (see
``_decorators._joins``): a call inside it, and only inside it (its own context), skips its
counts."""


def leave(owner: SyncOperation | None) -> SyncOperation | None:
    """Undo in the caller's context what ``start`` made current there: the call returned an
    awaitable, which may be awaited elsewhere (a task of ``gather``, ``wait_for``) or later,
    and the caller's later calls must neither join the operation nor parent under its
    span. ``enter`` makes them current again where it ends."""
    if owner is not None:
        CURRENT.reset(owner._ctx_token)  # type: ignore[arg-type]
        if owner._token is not None:
            detach(owner._token)
            owner._token = None
    return owner


def enter(owner: SyncOperation) -> None:
    """Make ``owner`` (and its span) current in the context that ends it, which ``end``
    then resets: the tokens ``start`` made were used up in the caller's (``leave``)."""
    owner._ctx_token = CURRENT.set(owner)
    span = owner._span or owner._unsampled
    if span is not None:
        owner._token = attach(span)


def future(value: Any) -> bool:
    """``asyncio.isfuture``, never raising: it reads an attribute of the value, which may be
    a property that raises."""
    try:
        return asyncio.isfuture(value)
    except Exception:
        return False


def settles(
    fut: Any,
    op: SyncOperation,
    owner: SyncOperation | None,
    after: Run | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """What a ``def`` handler returned that is an asyncio ``Future`` (a ``Task``): handed back
    unchanged (``asyncio.wait`` takes it, it can be cancelled, awaited twice), the operation
    ending when it is done, from its outcome. The work ran, or runs, in the task's own
    context (copied while the call's operation was current there)."""
    try:
        fut.add_done_callback(lambda done: _settled(done, op, owner, after, args, kwargs))
    except Exception as error:  # a Future that refuses callbacks: its operation ends now
        if owner is not None:
            enter(owner)
            finish(owner, error)
    return fut


def _settled(
    fut: Any,
    op: SyncOperation,
    owner: SyncOperation | None,
    after: Run | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """The done callback of ``settles``, in a copy of the caller's context; it never raises
    (the event loop would report it as the application's error)."""
    try:
        if owner is not None:
            enter(owner)
        try:
            if fut.cancelled():  # never read: asyncio hands its CancelledError out only once
                raise asyncio.CancelledError()  # (anyio's scope needs its own, message and all)
            result = fut.result()  # its exception
            if after is not None:
                after_phase(after, op, owner, args, kwargs, result)
        except BaseException as exc:
            if owner is not None:
                finish(owner, exc)
            return
        if owner is not None:
            finish(owner, None, result)
        else:
            answered_joined(op, result)
    except Exception as error:
        guard(op).internal_error("operation_end_failed", error)


async def completed(
    awaitable: Any,
    op: SyncOperation,
    owner: SyncOperation | None,
    after: Run | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    marked: Token[SyncOperation | None] | None,
) -> Any:
    """What a ``def`` handler returned that is awaitable (a coroutine function behind a
    wrapper that does not say so): the operation lasts until it completes, as for an
    ``async def`` handler, and is current (with its span, and ``FEEDING`` when this call
    feeds a joined operation's counts) in the context that awaits it."""
    if owner is not None:
        enter(owner)
    feeding = None if marked is None else FEEDING.set(op)
    try:
        result = await awaitable
        if after is not None:
            after_phase(after, op, owner, args, kwargs, result)
    except BaseException as exc:
        if owner is not None:
            finish(owner, exc)
        raise
    finally:
        if feeding is not None:
            FEEDING.reset(feeding)
    if owner is not None:
        finish(owner, None, result)
    else:
        answered_joined(op, result)
    return result


class Completion(Coroutine[Any, Any, Any]):
    """The coroutine a ``def``'s awaitable result is handed back as: ``coro`` (which awaits
    it and ends what measures it) runs in it. If it never starts, ``abandoned()`` ends that
    work instead, as an error ``not_awaited``: a ``try`` in a coroutine that never ran
    cannot. Closed, cancelled before its first step (an exception thrown in), or collected
    unawaited. A coroutine, not just an awaitable, for ``asyncio.create_task``."""

    __slots__ = ("_abandoned", "_awaitable", "_coro")

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        awaitable: Any,
        abandoned: Callable[[], object] | None,
    ) -> None:
        self._coro = coro
        self._awaitable = awaitable  # None once started
        self._abandoned = abandoned

    def __await__(self) -> Generator[Any, None, Any]:
        self._awaitable = self._abandoned = None
        return self._coro.__await__()

    def send(self, value: Any) -> Any:
        self._awaitable = self._abandoned = None
        return self._coro.send(value)

    def throw(self, *exc: Any) -> Any:
        self._unstarted(True)
        return self._coro.throw(*exc)  # not started: raised as is, nothing run

    def close(self) -> None:
        self._unstarted(True)
        self._coro.close()

    def __del__(self) -> None:
        if self._unstarted(False):  # (once started, whoever awaits it holds ``_coro``)
            self._coro.close()  # closed without running, and without a warning of its own

    def _unstarted(self, stopped: bool) -> bool:
        """End the work if it never started (``stopped``: on purpose); whether so."""
        awaitable, abandoned = self._awaitable, self._abandoned
        if awaitable is None:  # started: ``coro`` ends the work
            return False
        self._awaitable = self._abandoned = None
        if stopped and inspect.iscoroutine(awaitable):
            awaitable.close()  # stopped on purpose; a dropped one warns as never awaited
        if abandoned is not None:
            Context().run(abandoned)  # wherever the collector runs: nothing left
        return True


def completion(
    awaitable: Any,
    op: SyncOperation,
    owner: SyncOperation | None,
    after: Run | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    marked: Token[SyncOperation | None] | None,
) -> Completion:
    """A ``def`` handler's awaitable result, ``completed`` when awaited (``Completion``)."""
    coro = completed(awaitable, op, owner, after, args, kwargs, marked)
    return Completion(coro, awaitable, None if owner is None else partial(_not_awaited, owner))


def _not_awaited(owner: SyncOperation) -> None:
    if owner._ended:
        return
    try:
        owner.set_error("not_awaited")
        enter(owner)
        finish(owner, None)
    except Exception as error:  # strict mode; never out of ``__del__``
        guard(owner).internal_error("operation_end_failed", error)


def after_phase(
    after: Run,
    op: SyncOperation,
    owner: SyncOperation | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    result: Any,
) -> None:
    t = _perf()
    after(op, args, kwargs, result)
    if owner is None:
        op._own_ns += _perf() - t
    else:  # ``end`` measures its own time from ``t``
        op._resumed_ns = t


def answered_joined(op: SyncOperation, result: Any) -> None:
    """In a joined operation, the status of a returned ``Response`` decides its outcome as
    when this wrapper owns it (a raised ``HTTPException`` reaches the owner, which reads it)."""
    try:
        answered(op, result)
    except Exception as error:
        guard(op).internal_error("operation_end_failed", error)


def finish(op: SyncOperation, exc: BaseException | None, result: Any = None) -> None:
    """End an operation this wrapper owns; an HTTP status the handler answered with (a
    returned ``Response``, a raised ``HTTPException``) decides the outcome as it would
    behind the middleware: a 4xx carrying recorded conflicts (or a 409) is a conflict, and
    the payload tallies the adapter held are committed unless it refused the request (``settle``).
    An interrupt while its status is read (a ``status_code`` property raising
    ``KeyboardInterrupt``, ``SystemExit``; strict mode's error) ends it all the same, as
    an error, and goes on unchanged: an operation left open would swallow every later one."""
    if exc is None and (inspect.isgenerator(result) or inspect.isasyncgen(result)):
        return _streamed(op)
    try:
        try:
            status = http_status(result if exc is None else exc)
            settle(op, status)  # before the status decides the outcome (a 409's one conflict)
            if exc is None:
                if status is not None:
                    apply_http_status(op, status)
            else:
                exc = raised(op, exc)
        except Exception as error:
            guard(op).internal_error("operation_end_failed", error)
    except BaseException as interrupt:
        try:
            end(op, interrupt if exc is None else exc)
        except Exception as error:  # counted; strict mode's raise would replace the interrupt
            with contextlib.suppress(Exception):
                guard(op).internal_error("operation_end_failed", error)
        raise
    try:  # (inline, not a helper: one frame less to fail in at the recursion limit)
        end(op, exc)
    except Exception as error:
        guard(op).internal_error("operation_end_failed", error)


def _streamed(op: SyncOperation) -> None:
    """A handler that returned a generator (one decoration could not see: ``stream_function``
    in ``_decorators``): over before its stream even starts, its operation ends as an
    error, ``unsupported_stream``, and the misuse is counted (strict mode raises)."""
    op.set_error("unsupported_stream")
    try:
        settle(op, None)  # what it read: the stream's work may have begun
    except Exception as error:
        guard(op).internal_error("operation_end_failed", error)
    try:
        end(op, None)
    except Exception as error:
        guard(op).internal_error("operation_end_failed", error)
    guard(op).reject(
        "unsupported_stream",
        "a handler returning a value, not a generator: measure a stream with the ASGI middleware",
    )
