"""The current span, read and made current through OpenTelemetry's context.

On the default runtime context (``contextvars``) this goes to its ``ContextVar`` directly, as
``opentelemetry.context`` itself does, without the four to six Python calls of the API's
layers (``get_current_span`` → ``get_value`` → ``get_current`` → the runtime context); a
request pays those several times. Any other runtime context (``OTEL_PYTHON_CONTEXT``), or
one that replaced the default since, goes through the API.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.trace.propagation import _SPAN_KEY

__all__ = ["attach", "current_span", "detach"]

_INVALID = trace.INVALID_SPAN
_in_context = trace.set_span_in_context
_logger = logging.getLogger("opentelemetry.context")  # where the API's ``detach`` logs


def _default_var() -> tuple[object, ContextVar[Context] | None]:
    runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
    if type(runtime) is not ContextVarsRuntimeContext:
        return runtime, None
    var = getattr(runtime, "_current_context", None)
    return runtime, var if type(var) is ContextVar else None


_RUNTIME, _VAR = _default_var()


_SPANS: set[type] = set()
"""Classes found to be ``Span`` classes (``isinstance`` on an ABC, once per class; a few)."""


def current_span() -> trace.Span:
    """``trace.get_current_span()``: what is current under the span key when it is a
    ``Span`` (``set_span_in_context`` takes any object), otherwise ``INVALID_SPAN``."""
    if _VAR is not None and context_api._RUNTIME_CONTEXT is _RUNTIME:
        span: Any = _VAR.get().get(_SPAN_KEY)
        if span is None:
            return _INVALID
        if type(span) in _SPANS:
            return span  # type: ignore[no-any-return]
        if not isinstance(span, trace.Span):
            return _INVALID
        if len(_SPANS) < 64:
            _SPANS.add(type(span))
        return span
    return trace.get_current_span()


def attach(span: trace.Span) -> Any:
    """Make ``span`` current (``context.attach(trace.set_span_in_context(span))``); returns
    the token for ``detach``."""
    if _VAR is not None and context_api._RUNTIME_CONTEXT is _RUNTIME:
        values = _VAR.get().copy()
        values[_SPAN_KEY] = span
        return _VAR.set(Context(values))
    return context_api.attach(_in_context(span))


def detach(token: Any) -> None:
    """Undo ``attach`` (``context.detach``: a token that does not belong is logged as the API
    logs it, never raised)."""
    if _VAR is not None and type(token) is Token and context_api._RUNTIME_CONTEXT is _RUNTIME:
        try:
            _VAR.reset(token)
        except Exception:
            _logger.exception("Failed to detach context")
        return
    context_api.detach(token)
