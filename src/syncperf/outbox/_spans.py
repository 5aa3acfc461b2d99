"""The outbox's spans: the creation context a row carries, and how a span starts.

``Outbox.enqueue()`` returns the W3C ``traceparent`` of its ``create`` span (or of the current
span); the relay hands it back to ``PublishBatch.published()`` and the ``send`` span links to
it. Spans start as sync operations' do: the provider's sampler decides before any span exists.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from syncperf._tracing.current import current_span
from syncperf._tracing.sampling import Dropped

if TYPE_CHECKING:
    from syncperf._runtime import Runtime
    from syncperf._tracing.span import Span

_ROOT = trace.set_span_in_context(trace.INVALID_SPAN)
"""A context without a span: what a root span starts in."""
_TRACEPARENT_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def format_traceparent(context: SpanContext) -> str | None:
    """The W3C ``traceparent`` of ``context``, or None if it is invalid."""
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None without a valid current span."""
    return format_traceparent(current_span().get_span_context())


def parse_traceparent(value: object) -> SpanContext | None:
    """The remote ``SpanContext`` a stored ``traceparent`` names, or None if it names none.

    Args:
        value: What ``Outbox.enqueue()`` returned (read back from the outbox row).
    """
    if type(value) is not str:
        try:
            if not isinstance(value, str):
                return None
            value = str.__str__(value)  # a str subclass's own methods are never called
        except Exception:  # a hostile __class__
            return None
    match = _TRACEPARENT_RE.fullmatch(value.strip())
    if match is None:
        return None
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match[3], 16) & 0x03)
    )


def start_span(
    rt: Runtime,
    name: str,
    kind: SpanKind,
    attributes: dict[str, Any],
    t0: int,
    count: int | None = 1,
    root: bool = False,
) -> tuple[Span | trace.NonRecordingSpan | None, bool]:
    """The span of outbox work on ``count`` messages starting at ``t0``, or None: a child of
    the current span, or with ``root`` a new trace's root (the sampler sees no parent); and
    whether head sampling left it out (the sampler, or syncperf's ``trace_sample_rate``:
    work that fails is traced anyway, ``PublishBatch._rescue``).

    As for sync operations: the provider's sampler decides (``Tracing.decide``; a sampler
    that is asked sees ``attributes``), and a span it dropped is the non-recording span that
    passes its decision on (``Tracing.unsampled``, as the SDK's); while syncperf sheds span
    work the span is not made but counted; a sampler or span processor that fails is counted
    and logged, never raised (neither is left out by head sampling: no rescue follows).
    """
    if count is not None and count != 1:
        attributes = {**attributes, "messaging.batch.message_count": count}
    try:
        trace_id = rt.tracing.decide(name, kind, t0, attributes, root)
        if type(trace_id) is Dropped:
            current = trace.INVALID_SPAN if root else current_span()
            return rt.tracing.unsampled(current.get_span_context(), trace_id), True
        if not trace_id:  # tracing is off, or syncperf's own rate left the span out
            return None, rt.tracing.active
        if rt.shed_until >= t0:  # syncperf is shedding: not made, but counted
            rt.span_shed()
            return None, False
        span = rt.tracing.tracer.start_span(  # type: ignore[union-attr]
            name, _ROOT if root else None, kind, attributes, trace_id=trace_id
        )
        return span, False
    except Exception as error:
        rt.internal_error("span_start_failed", error)
        return None, False
