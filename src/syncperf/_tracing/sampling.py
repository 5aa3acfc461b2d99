"""Span decisions made in front of the SDK.

* ``Tracing.decide`` asks the tracer provider's own sampler (and syncperf's
  ``trace_sample_rate``) before any span exists, so a sampled-out operation builds no span;
  sampled operations start through ``Tracing.tracer``, syncperf's own span factory on the
  provider's processors, resource and id generator (see ``span``).
* With no SDK tracer provider installed, ``decide`` is a flag read: spans cost nothing.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace import sampling as sdk_sampling
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceState

from syncperf._accel import speedups
from syncperf._tracing import current
from syncperf._tracing.current import current_span
from syncperf._tracing.finisher import QueueFlusher, SpanFinisher
from syncperf._tracing.span import FLAGS, Sampled, Tracer
from syncperf._version import __version__

_logger = logging.getLogger("syncperf")
_RECHECK_NS = 1_000_000_000
_INVALID = trace.INVALID_SPAN_CONTEXT


class Dropped(int):
    """What ``Tracing.sample`` or ``ask`` returns when the sampler drops the span (false, as
    0 is): the trace id it decided on for a new root span (0: none drawn), for the unsampled
    span context the operation leaves current (``Tracing.unsampled``), so that a service
    downstream deciding on that id decides the same; an asked sampler's trace state (None:
    the parent's, as the standard samplers return it)."""

    trace_state: TraceState | None = None

    def __bool__(self) -> bool:
        return False


_DROPPED = Dropped(0)
"""Dropped by the sampler, with no trace id drawn for it."""
_tuple = tuple.__new__
_getrandbits = random.getrandbits
_NonRecording = trace.NonRecordingSpan


def _tuples() -> bool:
    """Whether a ``SpanContext`` is the tuple of its fields (and validity) that ``unsampled``
    builds directly (a third of ``SpanContext()``'s cost); checked, not assumed."""
    try:
        fields = (1, 2, False, FLAGS[2], DEFAULT_TRACE_STATE)
        return _tuple(SpanContext, (*fields, True)) == SpanContext(*fields)
    except Exception:
        return False


_TUPLES = _tuples()
decide_span: Callable[..., Any] | None = None
"""The compiled decision of a standard sampler (``Tracing.standard``), None without it: see
``_lifecycle._start_span``."""
if speedups is not None and _TUPLES:
    _CONTEXT = (current._VAR, Context, vars(context_api), current._RUNTIME, _SPAN_KEY)
    speedups.bind_spans(
        (SpanContext, _NonRecording, DEFAULT_TRACE_STATE, FLAGS),
        (*_CONTEXT, current.attach, current.detach),
    )
    decide_span = speedups.decide_span
Attrs = Mapping[str, Any]


class Tracing:
    """Resolved tracing state for one runtime."""

    __slots__ = (  # the compiled path reads ``active`` and ``next_check`` straight from them
        "_explicit",
        "_failed",
        "_finisher",
        "_parent_based",
        "_ratio",
        "_sampler",
        "_static",
        "active",
        "asks",
        "next_check",
        "provider",
        "sample_rate",
        "standard",
        "tracer",
    )

    def __init__(
        self,
        provider: trace.TracerProvider | None,
        sample_rate: float,
        finisher: SpanFinisher | None = None,
        failed: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self._explicit = provider
        self._finisher = finisher
        self._failed = failed
        """Told (``Guard.internal_error``) when looking at the provider raised."""
        self.sample_rate = sample_rate
        self.active = False
        self.tracer: Tracer | None = None
        self.provider: SdkTracerProvider | None = None
        """The SDK provider syncperf's spans go to, once resolved."""
        self._sampler: Any = None
        self._static: bool | None = None
        self._ratio: int | None = None
        self._parent_based = False
        self.asks = False
        """Whether the sampler is asked (one of the application's, not a standard one): then
        spans are decided by ``ask``, with their attributes, and started by
        ``Tracer.start_sampled``."""
        self.standard: tuple[bool | None, int | None, bool, Any, Any] | None = None
        """For ``decide_span``: a standard sampler's ``(static, ratio, parent_based,
        root_unsampled flags, getrandbits)``, with ``sample_rate`` 1 and random ids."""
        self.next_check = 0
        self.resolve(time.perf_counter_ns())

    def resolve(self, now: int) -> None:
        """Look at the provider; a proxy (no SDK yet) is looked at again a second later.

        Never raises: a provider or sampler that fails to be looked at (a ``get_tracer`` that
        raises) leaves tracing off, is counted (``tracing_resolve_failed``) and looked at
        again a second later; strict mode raises, as for any internal error."""
        try:
            self._resolve(now)
        except Exception as error:
            self.active = False
            self.next_check = now + _RECHECK_NS
            if self._failed is None:
                raise
            self._failed("tracing_resolve_failed", error)

    def _resolve(self, now: int) -> None:
        self.next_check = now + _RECHECK_NS
        self.standard = None  # first: read with no lock, never paired with another sampler
        provider = self._explicit or trace.get_tracer_provider()
        if not isinstance(provider, SdkTracerProvider):
            self.active = False
            return
        tracer = provider.get_tracer("syncperf", __version__)
        if not isinstance(tracer, SdkTracer) or not _enabled(tracer):  # a tracer configurator
            self.active = False  # disabled syncperf's scope: looked at again a second later
            return
        if self._finisher is not None:
            QueueFlusher.of(provider).finishers.add(self._finisher)
        self._sampler = tracer.sampler
        self._static, self._ratio, self._parent_based = _classify(tracer.sampler)
        self.asks = self._static is None and self._ratio is None
        self.provider = provider
        self.tracer = Tracer(tracer, InstrumentationScope("syncperf", __version__))
        if decide_span and not self.asks and self.sample_rate >= 1.0 and self.tracer.random_ids:
            decided = self._static, self._ratio, self._parent_based, self.tracer.root_unsampled
            self.standard = (*decided, _getrandbits)
        self.next_check = 1 << 62
        self.active = True

    def due(self, now: int) -> bool:
        """Whether tracing turned on by ``now``: while it is off, the provider is looked at
        again once a second (a proxy may have been replaced by an SDK provider).

        The one way to ask "can spans be made now": ``tracing.active or tracing.due(now)``,
        a flag read while tracing is on."""
        if now < self.next_check:
            return False
        self.resolve(now)
        return self.active

    def decide(
        self,
        name: str,
        kind: SpanKind,
        now: int,
        attributes: Attrs | None = None,
        root: bool = False,
    ) -> int:
        """Whether an operation starting at ``now`` gets a span (parent: the current context,
        or none when ``root``; ``attributes``: the span's initial ones); the value ``sample``
        or ``ask`` returns."""
        if self.active or self.due(now):
            if root:
                parent: SpanContext | None = trace.INVALID_SPAN_CONTEXT
                if self.asks:
                    return self.ask(name, kind, parent, attributes, current=trace.INVALID_SPAN)
                return self.sample(name, kind, parent)
            return self.ask(name, kind, None, attributes) if self.asks else self.sample(name, kind)
        return 0

    def sample(self, name: str, kind: SpanKind, parent: SpanContext | None = None) -> int:
        """``decide`` once tracing is known to be active; ``parent``: the current span's
        context, when the caller has it at hand.

        Returns:
            False when no span is made: 0 when syncperf's ``sample_rate`` dropped it (its
            span only: the context is left as it is), a ``Dropped`` when the sampler did (its
            decision passes on: ``unsampled``); otherwise the trace id the sampler
            decided on for a new root span, which ``Tracer.start(trace_id=...)`` must give it,
            or 1 when the decision did not depend on one (the tracer draws the ids). For a
            sampler that is asked (``asks``), what ``ask`` returns, decided without the span's
            attributes.
        """
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            return 0
        static, ratio = self._static, self._ratio
        if static is not None or ratio is not None:  # a standard sampler: no SamplingResult
            if self._parent_based:
                if parent is None:
                    parent = current_span().get_span_context()
                if parent.is_valid:  # the default delegates follow the parent
                    return 1 if parent.trace_flags.sampled else _DROPPED
            if static is not None:
                return static or _DROPPED
            if parent is None:
                parent = current_span().get_span_context()
            if parent.is_valid:  # a child: decided on its trace's id, as the SDK decides it
                return 1 if parent.trace_id & _TRACE_ID_LIMIT < ratio else _DROPPED  # type: ignore[operator]
            trace_id = self.tracer.trace_id()  # type: ignore[union-attr]
            return trace_id if trace_id & _TRACE_ID_LIMIT < ratio else Dropped(trace_id)  # type: ignore[operator]
        return self._asked(name, kind, parent, None, None, None)

    def unsampled(self, parent: SpanContext, dropped: Dropped) -> trace.NonRecordingSpan:
        """The non-recording span an operation its sampler dropped (``dropped``: what
        ``sample`` or ``ask`` returned) leaves current, as the SDK's ``Tracer.start_span``
        makes it: a new span id, unsampled flags (the random-trace-id flag as a sampled span's:
        ``Tracer``), in the parent's trace, or for a root in the trace whose id the sampler
        dropped (or a new one); with the sampler's trace state (the parent's, standard ones)."""
        tracer: Tracer = self.tracer  # type: ignore[assignment]
        rand = tracer.random_ids  # then ids are in range: a valid context, built directly
        span_id = (_getrandbits(64) or 1) if rand else tracer.new_span_id()
        state = dropped.trace_state
        if parent.is_valid:
            trace_id, flags = parent.trace_id, FLAGS[parent.trace_flags & 2]
            if state is None:
                state = parent.trace_state
        else:
            trace_id, flags = int(dropped), tracer.root_unsampled
            if not trace_id:
                trace_id = tracer.trace_id()
            if state is None:
                state = DEFAULT_TRACE_STATE
        if rand and _TUPLES:
            fields = (trace_id, span_id, False, flags, state, True)
            return _NonRecording(_tuple(SpanContext, fields))
        return _NonRecording(SpanContext(trace_id, span_id, False, flags, state))

    def ask(
        self,
        name: str,
        kind: SpanKind,
        parent: SpanContext | None = None,
        attributes: Attrs | None = None,
        extra: Attrs | None = None,
        current: trace.Span | None = None,
    ) -> int:
        """``sample`` for a sampler that is asked (``asks``): asked as the SDK's
        ``Tracer.start_span`` asks it, with the parent context (``current``: the parent span
        when it may not be the current context's), the span's initial attributes
        (``attributes`` and ``extra``, merged here) and its links (none).

        Returns:
            0 or a ``Dropped`` (both false: see ``sample``) when no span is made; otherwise a
            ``Sampled`` for ``Tracer.start_sampled``: the new root span's trace id (1 for a
            child) with the sampler's attributes and trace state for the span.
        """
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            return 0
        return self._asked(name, kind, parent, attributes, extra, current)

    def _asked(
        self,
        name: str,
        kind: SpanKind,
        parent: SpanContext | None,
        attributes: Attrs | None,
        extra: Attrs | None,
        current: trace.Span | None,
    ) -> int:
        if parent is None:
            parent = current_span().get_span_context()
        if parent.is_valid:
            trace_id, answer = parent.trace_id, 1
        else:  # a root: the id the span will get, drawn now for the sampler to decide on
            trace_id = answer = self.tracer.trace_id()  # type: ignore[union-attr]
        context = None if current is None else trace.set_span_in_context(current)
        asked = {**(attributes or {}), **(extra or {})} or None  # the sampler's own copy
        result = self._sampler.should_sample(context, trace_id, name, kind, asked, ())
        if not result.decision.is_sampled():
            dropped = Dropped(trace_id if answer != 1 else 0)
            dropped.trace_state = result.trace_state or DEFAULT_TRACE_STATE  # as the SDK's
            return dropped
        sampled = Sampled(answer)
        sampled.attributes, sampled.trace_state = result.attributes, result.trace_state
        return sampled


_PARENT_DEFAULTS = (
    ",remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler"
    ",localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}"
)
_STATIC = {"AlwaysOnSampler": True, "AlwaysOffSampler": False}
_RATIO = re.compile(r"TraceIdRatioBased\{([0-9.e+-]+)\}")
_TRACE_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT
_SDK_CLASSES = frozenset(
    getattr(sdk_sampling, name, ParentBased)  # the private ones: OTEL_TRACES_SAMPLER's
    for name in ("StaticSampler", "TraceIdRatioBased", "ParentBased", "ParentBasedTraceIdRatio",
                 "_AlwaysOn", "_AlwaysOff", "_ParentBasedAlwaysOn", "_ParentBasedAlwaysOff")
)  # fmt: skip
"""The SDK's own standard sampler classes, none of which overrides ``should_sample``."""
_DECIDED = (sdk_sampling.Decision.DROP, sdk_sampling.Decision.RECORD_AND_SAMPLE)
"""The decisions a ``StaticSampler`` classified by its description makes."""
_DELEGATES = (
    "_root",
    "_remote_parent_sampled",
    "_remote_parent_not_sampled",
    "_local_parent_sampled",
    "_local_parent_not_sampled",
)


def _enabled(tracer: SdkTracer) -> bool:
    """Whether the SDK makes spans for ``tracer`` (a tracer configurator, SDK 1.45 and later,
    may disable its scope: the SDK's own spans are then non-recording, and none of syncperf's
    are made)."""
    check = getattr(tracer, "_is_enabled", None)
    return check is None or bool(check())


def _sdk_own(sampler: Any) -> bool:
    """Whether ``sampler`` is exactly one of the SDK's classes, a ``ParentBased``'s delegates
    too: a subclass (of the application's) may override ``should_sample``, so is asked."""
    if type(sampler) not in _SDK_CLASSES:
        return False
    if isinstance(sampler, sdk_sampling.StaticSampler):  # RECORD_ONLY describes itself as
        return getattr(sampler, "_decision", None) in _DECIDED  # "AlwaysOnSampler": asked
    if isinstance(sampler, ParentBased):
        return all(_sdk_own(getattr(sampler, name, None)) for name in _DELEGATES)
    return True


def _classify(sampler: Any) -> tuple[bool | None, int | None, bool]:
    """(constant root decision, ``TraceIdRatioBased`` bound, parent-based) for the SDK's
    standard samplers (``OTEL_TRACES_SAMPLER``'s): instances of the SDK's own classes,
    recognised by their public description; ``(None, None, False)`` for any other sampler,
    a subclass of a standard one included (asked every time)."""
    if not _sdk_own(sampler):
        return None, None, False
    try:
        description = sampler.get_description()
    except Exception:
        return None, None, False
    if not isinstance(description, str):  # a misbehaving sampler: asked, as any other
        return None, None, False
    root, parent_based = description, False
    if description.startswith("ParentBased{root:") and description.endswith(_PARENT_DEFAULTS):
        root, parent_based = description[len("ParentBased{root:") : -len(_PARENT_DEFAULTS)], True
    if root in _STATIC:
        return _STATIC[root], None, parent_based
    ratio = _RATIO.fullmatch(root)
    if ratio is not None:
        try:
            rate = float(ratio.group(1))
        except ValueError:
            return None, None, False
        if 0.0 <= rate <= 1.0:
            return None, TraceIdRatioBased.get_bound_for_rate(rate), parent_based
    return None, None, False
