"""syncperf's spans: built without the SDK's per-span machinery, delivered to its processors.

The SDK's ``Span`` validates every attribute through ``BoundedAttributes``, takes a lock per
change and copies itself into a ``ReadableSpan`` when it ends: about 20 µs per span on the
project's machine, more than everything else syncperf does per operation. syncperf builds
its spans from attributes it made itself (known-valid types), so its ``Span`` is both the
live API span and the ``ReadableSpan`` that processors receive: plain dicts inside, the
provider's ``span_processor`` called with ``on_start`` and ``on_end`` as the SDK calls it,
the provider's resource and id generator, and the SDK's own rules (``BoundedAttributes``,
``SpanLimits``) for whatever the application sets on it.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceState
from opentelemetry.util.types import Attributes, AttributeValue

from syncperf import _gate as gate

FLAGS = tuple(map(TraceFlags, range(4)))
"""Trace flags by value: 1 sampled, 2 W3C level 2's random trace id (the SDK's rule: a root's
when its id generator's ids are random, a child's its parent's)."""
_UNSET = Status(StatusCode.UNSET)
_PLAIN = frozenset({str, bool, int, float})
_ROOT = trace.set_span_in_context(trace.INVALID_SPAN)
"""A context whose span is invalid: spans started in it are roots."""
_INVALID = trace.INVALID_SPAN_CONTEXT


def _encodable(attributes: Attributes) -> Attributes:
    """Event attributes every OTLP encoder accepts (see ``_gate.attribute``)."""
    if not attributes:
        return attributes
    cleaned = {}
    for key, value in attributes.items():
        value = gate.attribute(value)
        if value is not gate.REJECT:
            cleaned[key] = value
    return cleaned


"""Attribute value types stored as they are (anything else is cleaned by the SDK's rules)."""


class Newest(deque[Any]):
    """The SDK's ``BoundedList`` without its lock: keeps the newest ``maxlen`` items and
    counts the ones it drops (``deque.append`` is atomic: no lock a fork could inherit held;
    two threads adding at once may miscount a drop, never lose an item kept)."""

    dropped = 0

    @classmethod
    def of(cls, maxlen: int | None, items: Iterable[Any] = ()) -> Newest:
        bounded = cls((), maxlen)
        for item in items:
            bounded.add(item)
        return bounded

    def add(self, item: Any) -> None:
        if len(self) == self.maxlen:
            self.dropped += 1
        self.append(item)


def _name(name: str) -> str:
    """A span or event name as a string attribute value is kept: valid UTF-8 (lone
    surrogates replaced; the OTLP encoder rejects the whole batch otherwise), at most
    ``MAX_TEXT`` characters."""
    if type(name) is str and len(name) <= gate.MAX_TEXT and name.isascii():
        return name
    return gate.text(name if isinstance(name, str) else str(name))


_get_current_span = trace.get_current_span
_getrandbits = random.getrandbits
_time_ns = time.time_ns


class Sampled(int):
    """What ``Tracing.ask`` returns for a span its sampler sampled: the new root span's trace
    id (1 for a child), carrying the ``SamplingResult``'s attributes and trace state."""

    attributes: Mapping[str, Any]
    trace_state: TraceState | None


def _default_limits() -> SpanLimits:
    """The SDK's limits from the environment, or its defaults when one is malformed (the SDK
    raises, quoting the value)."""
    try:
        return SpanLimits()
    except ValueError:
        unset = SpanLimits.UNSET
        return SpanLimits(128, 128, 128, 128, 128, 128, unset, unset)


class Tracer:
    """Starts syncperf's spans for one SDK tracer provider (the sampling decision is taken
    before, by ``Tracing``: every span started here is sampled)."""

    def __init__(self, sdk_tracer: SdkTracer, scope: InstrumentationScope) -> None:
        self._sdk = sdk_tracer
        self.processor = sdk_tracer.span_processor
        ids = sdk_tracer.id_generator
        self.random_ids = type(ids) is RandomIdGenerator  # the default: drawn inline
        self.new_trace_id = ids.generate_trace_id
        self.new_span_id = ids.generate_span_id
        try:  # asked once (recent SDKs; an older generator has no such method)
            rand = 2 if ids.is_trace_id_random() else 0
        except Exception:
            rand = 0
        self.root_flags, self.root_unsampled = FLAGS[1 | rand], FLAGS[rand]
        self.scope = scope
        limits = getattr(sdk_tracer, "_span_limits", None)  # the provider's, read once
        self.limits = limits if isinstance(limits, SpanLimits) else _default_limits()

    @property
    def resource(self) -> Resource:
        """The SDK tracer's resource, read per span: the SDK renews it in a forked child
        (``process.pid``, with a process resource detector)."""
        return self._sdk.resource

    def trace_id(self) -> int:
        """A new trace id from the provider's id generator (never the invalid 0)."""
        return (_getrandbits(128) or 1) if self.random_ids else self.new_trace_id()

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        trace_id: int = 1,
    ) -> Span:
        """Start a sampled span, child of the span in ``context`` (default: the current one).

        ``attributes`` must already be valid attribute values: they are not checked.
        ``trace_id``: what ``Tracing.sample`` (the id of a new root span) or ``Tracing.ask``
        returned.
        """
        parent = _get_current_span(context).get_span_context()
        if type(trace_id) is Sampled:
            return self.start_sampled(
                name, parent, kind, attributes, trace_id, links, start_time, context
            )
        return self.start(name, parent, kind, attributes, links, start_time, context, trace_id)

    def start_rescued(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue],
        links: Sequence[Link],
        start_time: int,
        ids: SpanContext | None = None,
    ) -> Span:
        """A new root span (``syncperf.rescued``) for work whose span head sampling dropped
        but that is worth a trace after all (an error, a conflict, a slow operation); linked
        to the context the work ran in; with the trace and span ids of ``ids`` (the unsampled
        span that was current during the work), if given."""
        trace_id, span_id = (1, 0) if ids is None else (ids.trace_id, ids.span_id)
        attributes = {**attributes, "syncperf.rescued": True}
        return self.start(
            name, _INVALID, kind, attributes, links, start_time, _ROOT, trace_id, span_id
        )

    def start(
        self,
        name: str,
        parent: SpanContext,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue] | None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        context: Context | None = None,
        trace_id: int = 1,
        span_id: int = 0,
    ) -> Span:
        """``start_span`` with the parent's span context (current or from ``context``) at hand.

        A new root span gets ``trace_id`` when it is not 1 (the id its sampler decided on),
        and any span ``span_id`` when it is not 0 (a rescued one: ``_lifecycle._rescue``).
        """
        # What the SDK's RandomIdGenerator returns (never the invalid 0), without two calls.
        if not span_id:
            span_id = (_getrandbits(64) or 1) if self.random_ids else self.new_span_id()
        if parent.is_valid:
            flags = FLAGS[1 | parent.trace_flags & 2]
            span_context = SpanContext(parent.trace_id, span_id, False, flags, parent.trace_state)
            span = Span(self, name, span_context, parent, kind, attributes, start_time)
        else:
            if trace_id == 1:
                trace_id = self.trace_id()
            span_context = SpanContext(
                trace_id, span_id, False, self.root_flags, DEFAULT_TRACE_STATE
            )
            span = Span(self, name, span_context, None, kind, attributes, start_time)
        if links:
            span._links = Newest.of(self.limits.max_links, links)
        # Processors are typed for the SDK's Span; they get this one's (identical) API.
        self.processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
        return span

    def start_sampled(
        self,
        name: str,
        parent: SpanContext,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue] | None,
        sampled: Sampled,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        context: Context | None = None,
    ) -> Span:
        """``start`` for a span whose sampler was asked (``sampled``: what ``Tracing.ask``
        returned). As the SDK's ``Tracer.start_span`` does, the span gets the trace state the
        sampler returned and its attributes (added to ``attributes``, and checked as the
        application's are)."""
        span_id = (_getrandbits(64) or 1) if self.random_ids else self.new_span_id()
        child = parent if parent.is_valid else None
        if child is not None:
            trace_id, flags = parent.trace_id, FLAGS[1 | parent.trace_flags & 2]
        else:
            trace_id, flags = int(sampled), self.root_flags
        span_context = SpanContext(trace_id, span_id, False, flags, sampled.trace_state)
        span = Span(self, name, span_context, child, kind, attributes, start_time)
        if links:
            span._links = Newest.of(self.limits.max_links, links)
        if sampled.attributes:
            span.set_attributes(sampled.attributes)
        self.processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
        return span


class Span(trace.Span, ReadableSpan):
    """A recording span whose data is plain dicts and lists; a ``ReadableSpan`` itself."""

    # Fields every span starts with, read from the class until the span changes them.
    _dropped_attributes = 0
    _events: Sequence[Event] = ()
    _links: Sequence[Link] = ()
    _status = _UNSET
    _end_time: int | None = None
    _instrumentation_info = None
    _attributes: dict[str, Any]
    """syncperf writes its own values here directly (valid by construction, not checked)."""
    _context: SpanContext

    def __init__(
        self,
        tracer: Tracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Mapping[str, Any] | None,
        start_time: int | None,
    ) -> None:
        # ReadableSpan's fields, set directly (its __init__ would only do the same).
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = dict(attributes) if attributes else {}
        self._start_time = start_time or _time_ns()
        self._resource = tracer.resource
        self._instrumentation_scope = tracer.scope

    # --- the OpenTelemetry Span API (the application's values are checked) -----------------

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self._end_time is not None:
            return
        limits = self._tracer.limits
        if type(value) not in _PLAIN or not key or type(key) is not str:
            cleaned = BoundedAttributes(
                attributes={key: value}, max_value_len=limits.max_span_attribute_length
            )
            if key not in cleaned:
                return
            value = cleaned[key]
        elif type(value) is str and limits.max_span_attribute_length is not None:
            value = value[: limits.max_span_attribute_length]
        value = gate.attribute(value)  # valid UTF-8, bounded, int64: what OTLP can encode
        if value is gate.REJECT:
            return
        attrs = self._attributes
        room = limits.max_span_attributes
        if key in attrs or room is None or len(attrs) < room:
            attrs[key] = value
        else:
            self._dropped_attributes += 1

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is not None:
            return
        limits = self._tracer.limits
        clean = BoundedAttributes(
            maxlen=limits.max_event_attributes,
            attributes=_encodable(attributes),
            max_value_len=limits.max_attribute_length,
        )
        # The newest events are kept (an error's exception event comes last), as the SDK does.
        events = self.__dict__.get("_events")
        if events is None:  # made once, even by two threads at once (setdefault is atomic)
            events = self.__dict__.setdefault("_events", Newest((), limits.max_events))
        events.add(Event(_name(name), clean, timestamp or _time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self._end_time is not None or not context.is_valid:
            return
        limits = self._tracer.limits
        clean = BoundedAttributes(
            maxlen=limits.max_link_attributes,
            attributes=_encodable(attributes),
            max_value_len=limits.max_attribute_length,
            immutable=True,
        )
        links = self.__dict__.get("_links")
        if links is None:
            links = self.__dict__.setdefault("_links", Newest((), limits.max_links))
        links.add(Link(context, clean))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = _name(name)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        event: dict[str, Any] = gate.exception_event(exception, escaped)
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        """End the span and hand it to the span processor (once)."""
        if self._end_time is not None:
            return
        self._end_time = end_time or _time_ns()
        self._tracer.processor.on_end(self)

    @property
    def dropped_attributes(self) -> int:
        return self._dropped_attributes

    @property
    def dropped_events(self) -> int:
        events = self._events
        return events.dropped if isinstance(events, Newest) else 0

    @property
    def dropped_links(self) -> int:
        links = self._links
        return links.dropped if isinstance(links, Newest) else 0

    def __repr__(self) -> str:
        return f'<syncperf Span "{self._name}" {self._context.span_id:016x}>'
