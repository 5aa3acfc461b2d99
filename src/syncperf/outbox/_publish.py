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
    """What ``Outbox.publish()`` returns: ``with``, ``async with`` or a decorator."""

    __slots__ = ("_batch", "_count", "_outbox")

    def __init__(self, outbox: Outbox, count: int | None) -> None:
        self._outbox = outbox
        self._count = count
        self._batch: PublishBatch | None = None

    def __enter__(self) -> PublishBatch:
        self._batch = batch = begin(self._outbox, self._count)
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
                async with PublishScope(outbox, count):
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with PublishScope(outbox, count):
                return fn(*args, **kwargs)

        return cast(F, wrapper)
