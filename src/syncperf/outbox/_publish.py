"""``Outbox.publish()``: the scope (``with``, ``async with``, decorator) around one relay batch.

``begin`` starts a ``PublishBatch`` (and its ``send`` span) and makes it current; the scope
ends it when the block exits, with the block's exception if it raised.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from opentelemetry.trace import SpanKind

from syncperf import _runtime
from syncperf._gate import is_count
from syncperf._scope import entry_frame
from syncperf._tracing.span import attach
from syncperf.exceptions import ConfigError
from syncperf.outbox._batch import BATCH, NOOP_BATCH, PublishBatch
from syncperf.outbox._spans import start_span

if TYPE_CHECKING:
    from syncperf.outbox import Outbox

F = TypeVar("F", bound=Callable[..., Any])

_perf = time.perf_counter_ns
_CLIENT = SpanKind.CLIENT  # an enum member lookup costs ~70 ns


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
    span = start_span(rt, outbox.send_name, _CLIENT, outbox.send_attrs, t0, count)
    if span is not None:
        batch._span = span
        batch._span_token = attach(span)
    elif rt.tracing.active:
        batch._rescuable = True
    batch._token = BATCH.set(batch)
    batch._own_ns = _perf() - t0
    return batch


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
        self._open: dict[int, list[PublishBatch]] = {}
        """Open batches by ``id()`` of the frame that entered them, innermost last."""

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
        self._open.setdefault(frame, []).append(batch)
        return batch

    def _exit(self, frame: int, exc: BaseException | None) -> None:
        entries = self._open
        if frame not in entries:  # exited from elsewhere: the latest entry
            try:
                frame = next(reversed(entries))
            except (StopIteration, RuntimeError):  # none open, or one opened meanwhile
                return
        stack = entries.get(frame)
        try:
            batch = stack.pop()  # type: ignore[union-attr]
        except (AttributeError, IndexError):  # taken meanwhile by another thread's exit
            return
        if not stack:
            entries.pop(frame, None)
        batch._end(exc)

    def __call__(self, fn: F) -> F:
        if not callable(fn):
            raise ConfigError("fn", fn, "a function or coroutine function to decorate")
        outbox, count = self._outbox, self._count
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with PublishScope(outbox, count):
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with PublishScope(outbox, count):
                return fn(*args, **kwargs)

        return cast(F, wrapper)
