"""``Outbox.publish()``: the scope (``with``, ``async with``, decorator) around one relay batch.

``begin`` starts a ``PublishBatch`` (and its ``send`` span) and makes it current; the scope
ends it when the block exits, with the block's exception if it raised.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from opentelemetry.trace import SpanKind

from syncperf import _runtime
from syncperf._decorators import coroutine_function
from syncperf._ending import Completion, future
from syncperf._gate import is_count, not_quoted
from syncperf._http_status import PLAIN, awaitable
from syncperf._scope import Entries, entry_frame
from syncperf._tracing.current import attach, detach
from syncperf._tracing.span import Span
from syncperf.exceptions import ConfigError
from syncperf.outbox._batch import BATCH, PublishBatch
from syncperf.outbox._spans import start_span

if TYPE_CHECKING:
    from syncperf.outbox import Outbox

F = TypeVar("F", bound=Callable[..., Any])

_perf = time.perf_counter_ns
_CLIENT = SpanKind.CLIENT  # an enum member lookup costs ~70 ns


class _NoopBatch(PublishBatch):
    """What ``current_batch()`` returns outside a publish block (and when disabled)."""

    __slots__ = ()

    @property
    def recording(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<PublishBatch none>"

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

    def _end(self, exc: BaseException | None, reason: str | None = None) -> None:
        pass


NOOP_BATCH = _NoopBatch(None, None, None, None, 0)  # type: ignore[arg-type]


def current_batch() -> PublishBatch:
    """The innermost active ``PublishBatch`` (e.g. inside ``@outbox.publish``), or a no-op."""
    batch = BATCH.get()
    return NOOP_BATCH if batch is None or batch._ended else batch


def begin(outbox: Outbox, count: int | None) -> PublishBatch:
    """Start one relay batch of ``outbox`` (``count``: its size, when known up front)."""
    t0 = _perf()
    rt = _runtime.installed or _runtime.current()
    if not rt.enabled:
        return NOOP_BATCH
    if count is not None and not is_count(count):
        rt.reject("invalid_count", "an outbox batch count: an int in [0, 2**53)", count)
        count = None
    batch = PublishBatch(rt, outbox.series(rt), outbox, count, t0)
    # its own trace: a relay batch mixes messages from many pushes (its links lead to them)
    span, sampled_out = start_span(
        rt, outbox.send_name, _CLIENT, outbox.send_attrs, t0, count, root=True
    )
    if isinstance(span, Span):
        batch._span = span
    elif sampled_out:  # (not when shed or failed: counted then, never rescued)
        batch._rescuable = True
        batch._unsampled = span  # the decision of a sampler that dropped it, or None
    if span is not None:
        batch._span_token = attach(span)
    batch._token = BATCH.set(batch)
    LIVE.add(batch)
    batch._own_ns = _perf() - t0
    return batch


LIVE: weakref.WeakSet[PublishBatch] = weakref.WeakSet()
"""The batches begun and still alive, ended ones too (``_after_fork_in_child``)."""


def _after_fork_in_child() -> None:
    """A batch open across ``fork()`` runs in the parent (which ends it, counts it and exports
    its span): in the child each is ended (not current, its reports and end count nothing),
    its lock made anew (a parent thread may have held it)."""
    for batch in list(LIVE):
        batch._ended = True
        batch._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class PublishScope:
    """What ``Outbox.publish()`` returns: ``with``, ``async with`` or a decorator.

    Shareable, also by concurrent tasks and threads, as ``sync_operation()`` scopes are: each
    entry's batch is noted under the frame of its ``with`` statement, and each exit ends the
    latest batch entered from its own frame (an exit from a frame that made no entry ends the
    scope's latest batch).
    """

    __slots__ = ("_count", "_open", "_outbox")

    def __init__(self, outbox: Outbox, count: int | None) -> None:
        self._outbox = outbox
        self._count = count
        self._open: Entries[PublishBatch] = Entries()

    def __enter__(self) -> PublishBatch:
        return self._enter(entry_frame())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(entry_frame(), exc)

    async def __aenter__(self) -> PublishBatch:
        return self._enter(entry_frame())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(entry_frame(), exc)

    def _enter(self, frame: int) -> PublishBatch:
        batch = begin(self._outbox, self._count)
        self._open.add(frame, batch)
        return batch

    def _exit(self, frame: int, exc: BaseException | None) -> None:
        batch = self._open.take(frame)
        if batch is not None:
            batch._end(exc)

    def __call__(self, fn: F) -> F:
        return decorate(self._outbox, self._count, fn)


def decorate(outbox: Outbox, count: int | None, fn: F) -> F:
    """``fn`` measured as one relay batch per call (``@outbox.publish``).

    As the core decorators decide (``instrument_sync``): an ``async def`` function, a partial
    of one, or an object with an ``async def __call__`` gets the async wrapper, its batch
    current in the task that awaits it; a plain ``def`` that returns an awaitable (an
    ``async def`` behind a decorator that does not say so) is measured until the awaitable
    completes, its batch current only where it is awaited (never awaited: ``Completion``);
    generators are refused.
    """
    if not callable(fn):
        raise ConfigError("fn", not_quoted(fn), "a function or coroutine function to decorate")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise ConfigError(
            "fn",
            fn,
            "a def or async def function returning a value (not a generator): report a "
            "stream's messages inside a publish() block",
        )
    if coroutine_function(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            batch = begin(outbox, count)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                batch._end(exc)
                raise
            batch._end(None)
            return result

        return cast(F, async_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        batch = begin(outbox, count)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            batch._end(exc)
            raise
        try:
            plain = type(result) in PLAIN
        except Exception:  # a class its metaclass makes unhashable
            plain = False
        if not plain and batch is not NOOP_BATCH and awaitable(result):  # async after all
            return _later(batch, result)
        batch._end(None)
        return result

    return cast(F, wrapper)


def _later(batch: PublishBatch, result: Any) -> Any:
    """The awaitable a plain ``def`` returned, its batch moved out of the caller's context:
    an asyncio ``Future`` (a ``Task``) as it is, the batch ending when it is done; any other
    awaitable as a coroutine that makes the batch current and ends it when it completes."""
    if batch._token is not None:
        try:
            BATCH.reset(batch._token)
        except ValueError:  # made current in another context: another batch here stays
            if BATCH.get() is batch:
                BATCH.set(None)
        batch._token = None
    if batch._span_token is not None:
        detach(batch._span_token)
        batch._span_token = None
    if not future(result):
        abandoned = functools.partial(batch._end, None, "not_awaited")
        return Completion(_completion(batch, result), result, abandoned)
    try:
        result.add_done_callback(lambda done: _settled(batch, done))
    except Exception as error:  # a Future that refuses callbacks: its batch ends now
        batch._end(error)
    return result


def _settled(batch: PublishBatch, done: Any) -> None:
    try:
        exc = done.exception()
    except BaseException as cancelled:  # CancelledError: the task was cancelled
        exc = cancelled
    batch._end(exc)


async def _completion(batch: PublishBatch, pending: Any) -> Any:
    batch._token = BATCH.set(batch)
    span = batch._span or batch._unsampled  # begin made it
    if span is not None:
        batch._span_token = attach(span)
    try:
        result = await pending
    except BaseException as exc:
        batch._end(exc)
        raise
    batch._end(None)
    return result
