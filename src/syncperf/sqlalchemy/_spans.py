"""A query's CLIENT span, built by the span finisher thread after the query (``DeferredSpan``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

    from syncperf._tracing.span import Tracer
    from syncperf.sqlalchemy._queries import Query

__all__ = ["DeferredSpan"]

_CLIENT = SpanKind.CLIENT  # an enum member lookup costs ~70 ns


class DeferredSpan:
    """A finished query's CLIENT span, built by the span finisher thread, not the request.

    The request thread only notes what the span needs (a few hundred nanoseconds); the
    ``SpanFinisher`` calls ``end()``, which starts the span as a child of the recorded
    parent with the recorded start time and ends it at the recorded end time. Span processors
    therefore see ``on_start`` on the finisher thread, after the fact.
    """

    __slots__ = ("_code", "_etype", "_parent", "_query", "_start", "_tracer")

    def __init__(
        self,
        tracer: Tracer,
        query: Query,
        parent: SpanContext,
        start: int,
        etype: str | None,
        code: str | None,
    ) -> None:
        self._tracer = tracer
        self._query = query
        self._parent = parent
        self._start = start
        self._etype = etype
        self._code = code

    def end(self, end_time: int | None = None) -> None:
        query, etype = self._query, self._etype
        attrs = query.span_attrs
        if etype is not None:
            attrs = {**attrs, "error.type": etype}
            if self._code is not None:
                attrs["db.response.status_code"] = self._code
        span = self._tracer.start(
            query.span_name, self._parent, _CLIENT, attrs, start_time=self._start
        )
        if etype is not None:
            span.set_status(Status(StatusCode.ERROR, etype))
        span.end(end_time=end_time)
