"""Span decisions made in front of the SDK, and span ends made behind the request.

* ``Tracing.decide`` asks the tracer provider's own sampler (and syncperf's
  ``trace_sample_rate``) before any span exists, so a sampled-out operation builds no span;
  sampled operations start through ``Tracing.tracer``, syncperf's own span factory on the
  provider's processors, resource and id generator (see ``_spans``).
* With no SDK tracer provider installed, ``decide`` is a flag read: spans cost nothing.
* ``SpanFinisher`` ends spans on a daemon thread with the recorded end time, so a span
  processor that blocks (a ``SimpleSpanProcessor`` whose exporter hangs) never stalls the
  request; its queue is bounded and a slow ``end()`` trips the overhead guard.
* ``QueueFlusher`` puts that queue inside the provider's own flush and shutdown: it is the
  provider's first span processor, so ``TracerProvider.force_flush()`` / ``shutdown()`` hand
  syncperf's ended spans to the processors behind it before those flush.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, SynchronousMultiSpanProcessor
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Span, SpanContext, SpanKind

from syncperf._spans import Tracer

_logger = logging.getLogger("syncperf")
_RECHECK_NS = 1_000_000_000
_LINGER_S = 0.01
_INVALID = trace.INVALID_SPAN_CONTEXT
_attach = context_api.attach
_in_context = trace.set_span_in_context


class Tracing:
    """Resolved tracing state for one runtime."""

    def __init__(
        self,
        provider: trace.TracerProvider | None,
        sample_rate: float,
        finisher: SpanFinisher | None = None,
    ) -> None:
        self._explicit = provider
        self._finisher = finisher
        self.sample_rate = sample_rate
        self.active = False
        self.tracer: Tracer | None = None
        self.provider: SdkTracerProvider | None = None
        """The SDK provider syncperf's spans go to, once resolved."""
        self._sampler: Any = None
        self._static: bool | None = None
        self._parent_based = False
        self.next_check = 0
        self.resolve(time.perf_counter_ns())

    def resolve(self, now: int) -> None:
        """Look at the provider; a proxy (no SDK yet) is looked at again a second later."""
        self.next_check = now + _RECHECK_NS
        provider = self._explicit or trace.get_tracer_provider()
        if not isinstance(provider, SdkTracerProvider):
            self.active = False
            return
        tracer = provider.get_tracer("syncperf", _version())
        if not isinstance(tracer, SdkTracer):  # e.g. a disabled tracer configurator
            self.active = False
            return
        if self._finisher is not None:
            QueueFlusher.of(provider).finishers.add(self._finisher)
        self._sampler = tracer.sampler
        self._static, self._parent_based = _classify(tracer.sampler)
        self.provider = provider
        self.tracer = Tracer(tracer, InstrumentationScope("syncperf", _version()))
        self.next_check = 1 << 62
        self.active = True

    def refresh(self, now: int) -> bool:
        """Look at the provider again (a proxy may have been replaced); True when active."""
        self.resolve(now)
        return self.active

    def decide(self, name: str, kind: SpanKind, now: int) -> int:
        """Whether an operation starting at ``now`` gets a span (parent: the current context);
        the value ``sample`` returns."""
        if not self.active and (now < self.next_check or not self.refresh(now)):
            return 0
        return self.sample(name, kind)

    def sample(self, name: str, kind: SpanKind, parent: SpanContext | None = None) -> int:
        """``decide`` once tracing is known to be active; ``parent``: the current span's
        context, when the caller has it at hand.

        Returns:
            0 (false) when no span is made; otherwise the trace id the sampler decided on for a
            new root span, which ``Tracer.start(trace_id=...)`` must give it, or 1 when the
            decision did not depend on one (the tracer draws the ids).
        """
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            return 0
        static = self._static
        if static is not None and not self._parent_based:
            return static  # a standard sampler, decided without building a SamplingResult
        if parent is None:
            parent = trace.get_current_span().get_span_context()
        if static is not None:
            return bool(parent.trace_flags.sampled) if parent.is_valid else static
        if parent.is_valid:
            trace_id, answer = parent.trace_id, 1
        else:  # a root: the id the span will get, drawn now for the sampler to decide on
            trace_id = answer = self.tracer.trace_id()  # type: ignore[union-attr]
        result = self._sampler.should_sample(None, trace_id, name, kind)
        return answer if result.decision.is_sampled() else 0


_PARENT_DEFAULTS = (
    ",remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler"
    ",localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}"
)
_STATIC = {"AlwaysOnSampler": True, "AlwaysOffSampler": False}


def _classify(sampler: Any) -> tuple[bool | None, bool]:
    """(constant root decision, parent-based) for the SDK's standard samplers, by their
    public description; ``(None, False)`` for any other sampler (asked every time)."""
    try:
        description = sampler.get_description()
    except Exception:
        return None, False
    if description in _STATIC:
        return _STATIC[description], False
    for root, decision in _STATIC.items():
        if description == f"ParentBased{{root:{root}{_PARENT_DEFAULTS}":
            return decision, True
    return None, False


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
        done = all(
            f.flush(timeout=max(deadline - time.monotonic(), 0)) for f in list(self.finishers)
        )
        provider = self._provider()
        if not self._first and provider is not None:  # the others flushed before us
            left = int(max(deadline - time.monotonic(), 0) * 1000)
            multi = getattr(provider, "_active_span_processor", None)
            for processor in getattr(multi, "_span_processors", ()):
                if processor is not self:
                    done = processor.force_flush(left) and done
        return done

    def shutdown(self) -> None:
        """End every queued span (the provider shuts down)."""
        for finisher in list(self.finishers):
            finisher.flush()


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
    ) -> None:
        self._queue: deque[tuple[Endable, int]] = deque()
        self._max_queue = max_queue
        self._budget_ns = budget_ns
        self._on_slow_end = on_slow_end
        self._on_fast_end = on_fast_end
        self._on_overflow = on_overflow
        self._on_error = on_error
        self.stall_ns = STALL_NS
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._ending_since = 0
        self._slow = False
        self._pending = False
        """A wake-up is on its way (``Event.is_set()`` is a Python call per span)."""
        self._stopped = False

    def end(self, span: Endable, end_ns: int) -> None:
        """Queue ``span`` to be ended at wall time ``end_ns``.

        With the queue full the span is dropped and counted, as ``BatchSpanProcessor`` does;
        a finisher stuck in one ``end()`` past the budget means span export is stalled, and
        syncperf sheds.
        """
        if self._stopped:  # the runtime was replaced while this operation ran
            self._end_one(span, end_ns)
            return
        if len(self._queue) >= self._max_queue:
            since = self._ending_since
            self._on_overflow(bool(since) and time.perf_counter_ns() - since > self.stall_ns)
            return
        self._queue.append((span, end_ns))
        if not self._pending:  # wake the finisher once per batch, not per span
            self._pending = True
            if self._thread is None or self._pid != os.getpid():
                self._start()
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name="syncperf-span-finisher", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait()
            # Linger to gather a batch: one wake-up (one GIL hand-off) per batch, not per span.
            time.sleep(_LINGER_S)
            self._wake.clear()
            self._pending = False  # spans queued from here on wake the thread again
            self.flush()

    def after_fork_in_child(self) -> None:
        """Start afresh in a forked child: the parent ends what it had queued, and the
        parent's thread (and any wake-up it had pending) did not come along."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._queue.clear()
        self._thread = None
        self._pending = False
        self._ending_since = 0

    def shutdown(self) -> None:
        """End what is queued and stop the thread."""
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        self.flush()

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
            while queue:
                if deadline is not None and time.monotonic() > deadline:
                    return False
                self._end_one(*queue.popleft())
            return True
        finally:
            self._lock.release()

    def _end_one(self, span: Endable, end_ns: int) -> None:
        self._ending_since = time.perf_counter_ns()
        cpu = _thread_time_ns()
        try:
            span.end(end_time=end_ns)
        except Exception as error:  # a span processor's on_end failed: the span is lost
            if self._on_error is not None:
                self._on_error(error)
        self._ending_since = 0
        if _thread_time_ns() - cpu > self._budget_ns:
            self._slow = True
            self._on_slow_end()
        elif self._slow:  # the first fast end after slow ones breaks their streak
            self._slow = False
            self._on_fast_end()


def attach(span: Span) -> Any:
    """Make ``span`` current; returns the token for ``detach``."""
    return _attach(_in_context(span))


detach = context_api.detach
"""Undo ``attach``."""


def _version() -> str:
    from syncperf import __version__

    return __version__
