"""Span ends made behind the request.

* ``SpanFinisher`` ends spans on a daemon thread with the recorded end time, so a span
  processor that blocks (a ``SimpleSpanProcessor`` whose exporter hangs) never stalls the
  request; its queue is bounded and a slow ``end()`` trips the overhead guard. Once stopped
  (its runtime was replaced), spans of operations that were still open are ended on a
  short-lived daemon thread of their own, never on the request's.
* ``QueueFlusher`` puts that queue inside the provider's own flush and shutdown: it is the
  provider's first span processor, so ``TracerProvider.force_flush()`` / ``shutdown()`` hand
  syncperf's ended spans to the processors behind it before those flush. It waits at most the
  flush's timeout (shutdown: ``shutdown_timeout``): a processor stuck in export holds a
  daemon thread, never the provider's caller.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Protocol

from opentelemetry.sdk.trace import SpanProcessor, SynchronousMultiSpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

_logger = logging.getLogger("syncperf")
_LINGER_S = 0.1
"""How long the finisher gathers a batch after a wake-up (the ``BatchSpanProcessor`` behind it
waits 5 s by default): at a few hundred spans a second, one wake-up per ~0.1 s instead of one
per span or two. A quarter-full queue ends the wait at once."""
_live: weakref.WeakSet[SpanFinisher] = weakref.WeakSet()
_EXIT_END_S = 1.0
"""Seconds an end at interpreter exit spends ending the queue on the caller's thread."""


class QueueFlusher(SpanProcessor):
    """The first span processor of a provider: its ``force_flush`` and ``shutdown`` end the
    spans queued in syncperf's finishers, so the processors after it receive them in time.

    The SDK's ``SynchronousMultiSpanProcessor`` flushes and shuts its processors down in
    order; this one is put first in it. With a ``ConcurrentMultiSpanProcessor`` (no order) it
    is added last and flushes the others again once the queue is drained.
    """

    _lock = threading.Lock()

    def __init__(self, provider: SdkTracerProvider) -> None:
        self.finishers: weakref.WeakSet[SpanFinisher] = weakref.WeakSet()
        self._provider = weakref.ref(provider)
        self._first = False

    @classmethod
    def of(cls, provider: SdkTracerProvider) -> QueueFlusher:
        """The provider's flusher, registered on first use."""
        with cls._lock:
            found: QueueFlusher | None = provider.__dict__.get("_syncperf_flusher")
            if found is not None:
                return found
            found = cls(provider)
            provider.__dict__["_syncperf_flusher"] = found
            multi = getattr(provider, "_active_span_processor", None)
            if type(multi) is SynchronousMultiSpanProcessor:
                with multi._lock:
                    multi._span_processors = (found, *multi._span_processors)
                found._first = True
            else:
                provider.add_span_processor(found)
        return found

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """End every queued span within ``timeout_millis``."""
        deadline = time.monotonic() + timeout_millis / 1000
        done = end_queued(list(self.finishers), timeout_millis / 1000)
        provider = self._provider()
        if not self._first and provider is not None:  # the others flushed before us
            left = int(max(deadline - time.monotonic(), 0) * 1000)
            multi = getattr(provider, "_active_span_processor", None)
            for processor in getattr(multi, "_span_processors", ()):
                if processor is not self:
                    done = processor.force_flush(left) and done
        return done

    def shutdown(self) -> None:
        """End every queued span (the provider shuts down) within ``shutdown_timeout`` (the
        largest of the configurations whose spans are queued)."""
        finishers = list(self.finishers)
        end_queued(finishers, max((f.timeout for f in finishers), default=0.0))


def end_queued(finishers: list[SpanFinisher], timeout: float) -> bool:
    """End the spans queued in ``finishers`` within ``timeout`` seconds.

    They are ended on a daemon thread the caller waits for: a span processor stuck in export
    holds that thread, never the caller (what is not ended by then stays queued for the
    finisher's own thread). Where no thread may start (an exit hook on Python 3.12) they are
    ended on the caller's thread, the deadline checked between spans.

    Returns:
        True when every queued span was ended in time.
    """
    if not finishers:
        return True
    deadline = time.monotonic() + timeout
    ended: list[bool] = []

    def work() -> None:
        # every finisher tries (all() of a generator would stop at the first one late)
        flushed = [f.flush(timeout=max(deadline - time.monotonic(), 0)) for f in finishers]
        ended.append(all(flushed))

    try:
        thread = threading.Thread(target=work, name="syncperf-span-flush", daemon=True)
        thread.start()
    except RuntimeError:  # "can't create new thread at interpreter shutdown"
        work()
    else:
        thread.join(timeout)
    return ended == [True]


class Endable(Protocol):
    """What the finisher ends: a span, or anything that builds and ends one (a query's)."""

    def end(self, end_time: int | None = None) -> None: ...


STALL_NS = 5_000_000_000
"""A finisher in one ``end()`` for this long (wall clock) is stalled on span export: far above
what waiting for the GIL behind the application's threads takes, even on a loaded machine."""
_thread_time_ns = time.thread_time_ns


class SpanFinisher:
    """Ends spans on a daemon thread; bounded; flushable.

    An ``end()`` is slow when it spends more than the budget of this thread's CPU time (a
    span processor doing heavy work on syncperf's spans): time spent waiting for the GIL
    while the application's threads run, or for a blocked exporter, is not syncperf's. A
    blocked exporter shows as a full queue while one ``end()`` has lasted ``STALL_NS``.
    """

    def __init__(
        self,
        on_slow_end: Callable[[], None],
        on_fast_end: Callable[[], None],
        on_overflow: Callable[[bool], None],
        budget_ns: int,
        max_queue: int = 2048,
        on_error: Callable[[Exception], None] | None = None,
        on_lost: Callable[[int], None] | None = None,
        timeout: float = 5.0,
    ) -> None:
        _live.add(self)
        self.timeout = timeout
        """Seconds a flush of the provider's own waits for this queue (``shutdown_timeout``)."""
        self._queue: deque[tuple[Endable, int]] = deque()
        self._max_queue = max_queue
        self._budget_ns = budget_ns
        self._on_slow_end = on_slow_end
        self._on_fast_end = on_fast_end
        self._on_overflow = on_overflow
        self._on_error = on_error
        self._on_lost = on_lost
        self.stall_ns = STALL_NS
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._ending_since = 0
        self._slow = False
        self._watching = False
        """The last end took longer than the budget in wall time: the CPU clock is read
        around the next (``_end_one``)."""
        self._pending = False
        """A wake-up is on its way (``Event.is_set()`` is a Python call per span)."""
        self._stopped = False
        self._late = threading.Lock()
        self._late_running = False
        """A thread ends the spans that reached the stopped finisher (``_end_late``)."""

    def end(self, span: Endable, end_ns: int) -> None:
        """Queue ``span`` to be ended at wall time ``end_ns``.

        With the queue full the span is dropped and counted, as ``BatchSpanProcessor`` does;
        a finisher stuck in one ``end()`` past the budget means span export is stalled, and
        syncperf sheds.
        """
        if len(self._queue) >= self._max_queue:
            since = self._ending_since
            self._on_overflow(bool(since) and time.perf_counter_ns() - since > self.stall_ns)
            return
        queue = self._queue
        queue.append((span, end_ns))
        if self._stopped:  # the runtime was replaced while this operation ran
            self._end_late()
        elif not self._pending:  # wake the finisher once per batch, not per span
            self._pending = True
            if self._thread is None or self._pid != os.getpid():
                self._start()
            self._wake.set()
        elif len(queue) == self._max_queue >> 2:  # a burst: end the linger now
            self._hurry.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = _spawn(self._run)
            if self._thread is not None:
                return
            self._pending = False
        self._end_here()

    def _end_late(self) -> None:
        """End what reaches the stopped finisher on a thread that lives while there is some."""
        with self._late:
            if self._late_running:
                return
            self._late_running = True
        if _spawn(self._run_late) is None:
            self._end_here()
            with self._late:
                self._late_running = False

    def _end_here(self) -> None:
        """Where no thread can start (interpreter exit: an operation left open in a generator
        ends when it is collected), end the queue on the caller's thread, for a bounded time
        (a finisher thread frozen by the exit may hold the lock); drop and count the rest."""
        if not self.flush(timeout=_EXIT_END_S):
            self._drop()

    def _run_late(self) -> None:
        while True:
            self.flush()
            with self._late:  # a span queued after this check starts a new thread
                if not self._queue:
                    self._late_running = False
                    return

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait()
            # Linger to gather a batch: one wake-up (one GIL hand-off) per batch, not per span.
            self._hurry.wait(_LINGER_S)
            self._hurry.clear()
            self._wake.clear()
            self._pending = False  # spans queued from here on wake the thread again
            self.flush()

    def after_fork_in_child(self) -> None:
        """Start afresh in a forked child: the parent ends what it had queued, and the
        parent's thread (and any wake-up it had pending) did not come along."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._queue.clear()
        self._thread = None
        self._pending = False
        self._ending_since = 0
        self._late = threading.Lock()
        self._late_running = False

    def shutdown(self, timeout: float = 5.0) -> bool:
        """End what is queued and stop the thread, within ``timeout`` seconds.

        Spans not ended by then (a span processor blocks) are dropped and counted
        (``on_lost``); the one being ended still ends when the processor returns.

        Returns:
            True when every queued span was ended in time.
        """
        deadline = time.monotonic() + timeout
        self._stopped = True
        self._wake.set()
        self._hurry.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(deadline - time.monotonic(), 0))
        if self.flush(timeout=max(deadline - time.monotonic(), 0)):
            return True
        self._drop()
        return False

    def _drop(self) -> None:
        """Drop what is queued and count it (``on_lost``)."""
        lost = 0
        while True:
            try:
                self._queue.popleft()
            except IndexError:
                break
            lost += 1
        if lost and self._on_lost is not None:
            self._on_lost(lost)

    def flush(self, timeout: float | None = None) -> bool:
        """End every queued span now, on the calling thread; False when ``timeout`` (seconds)
        ran out first (e.g. a span processor blocks)."""
        if timeout is None:
            deadline = None
            locked = self._lock.acquire()
        else:
            deadline = time.monotonic() + timeout
            locked = self._lock.acquire(timeout=timeout)
        if not locked:
            return False
        try:
            queue = self._queue
            cpu = _thread_time_ns() if queue and self._watching else None
            while queue:
                if deadline is not None and time.monotonic() > deadline:
                    return False
                try:
                    item = queue.popleft()
                except IndexError:  # ``shutdown`` dropped the rest meanwhile
                    break
                cpu = self._end_one(*item, cpu)
            return True
        finally:
            self._lock.release()

    def _end_one(self, span: Endable, end_ns: int, cpu: int | None) -> int | None:
        """End one span; ``cpu``: this thread's CPU time just before, if it was read.

        An end is slow when it spends more than the budget of this thread's CPU time. A
        thread's CPU time never exceeds the wall time it passed in, so an end that keeps to
        the budget in wall time (``perf_counter_ns``) is fast without reading the CPU clock (a
        system call: about 0.6 µs, a tenth to a fifth of a span's end). One past the
        budget in wall time is judged on its CPU time, which is read around every end from
        then on (``_watching``) until one keeps to the budget in wall time again; the first
        of such a run, with no CPU time read before it, is not judged.

        Returns:
            This thread's CPU time just after, when the next end is watched; else None.
        """
        began = self._ending_since = time.perf_counter_ns()
        try:
            span.end(end_time=end_ns)
        except Exception as error:  # a span processor's on_end failed: the span is lost
            if self._on_error is not None:
                self._on_error(error)
        ended = time.perf_counter_ns()
        self._ending_since = 0
        after = None
        if ended - began <= self._budget_ns:
            self._watching = slow = False
        else:
            self._watching = True
            after = _thread_time_ns()
            if cpu is None:  # the first past the budget in wall time: watched from here on
                return after
            slow = after - cpu > self._budget_ns
        if slow:
            self._slow = True
            self._on_slow_end()
        elif self._slow:  # the first fast end after slow ones breaks their streak
            self._slow = False
            self._on_fast_end()
        return after


def _spawn(target: Callable[[], None]) -> threading.Thread | None:
    """A started daemon finisher thread running ``target``, or None where no thread can
    start: during interpreter finalization Python 3.11's ``Thread.start()`` waits forever
    for a thread that never runs (3.12 raises ``RuntimeError``)."""
    if sys.is_finalizing():
        return None
    thread = threading.Thread(target=target, name="syncperf-span-finisher", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # "can't create new thread at interpreter shutdown"
        return None
    return thread


def _after_fork_in_child() -> None:
    for finisher in list(_live):
        finisher.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
