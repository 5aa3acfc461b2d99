"""Who else instruments a request through ``SyncPerfMiddleware``: ``owners`` tells whether
another instrumentation already owns its server span or its HTTP metrics (contrib's
``OpenTelemetryMiddleware`` in the app's stack or wrapping it from outside, FastAPI's native
telemetry); ``contrib_in_stack`` finds contrib in a Starlette app's middleware stack.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any

from opentelemetry import trace

from syncperf._operation import active_operation

__all__ = ["contrib_in_stack", "owners"]

_CONTRIB = ("opentelemetry.instrumentation.asgi", "OpenTelemetryMiddleware")
_PROXY_METER = ("opentelemetry.metrics._internal", "_ProxyMeterProvider")


def contrib_in_stack(app: Any) -> bool:
    """Whether contrib's ``OpenTelemetryMiddleware`` is in a Starlette app's middleware stack.

    The same test FastAPI's native telemetry uses to switch itself off.
    """
    stack = getattr(app, "middleware_stack", None)
    seen: set[int] = set()
    while stack is not None and id(stack) not in seen and len(seen) < 64:
        seen.add(id(stack))
        cls = type(stack)
        if (cls.__module__, cls.__name__) == _CONTRIB:
            return True
        stack = getattr(stack, "app", None)
    return False


def _sdk_meter_provider(provider: Any) -> Any:
    """``provider`` (default: the global one) when it records anything, else None."""
    if provider is None:
        from opentelemetry import metrics

        provider = metrics.get_meter_provider()
        cls = type(provider)
        if (cls.__module__, cls.__name__) == _PROXY_METER:
            return None
    from opentelemetry.metrics import NoOpMeterProvider

    return None if isinstance(provider, NoOpMeterProvider) else provider


def _native_meters(scope: MutableMapping[str, Any]) -> Any:
    """The meter provider FastAPI's native telemetry records HTTP metrics into, or None.

    Mirrors FastAPI (>= 0.142): on unless ``telemetry={"metrics": False}``, and only with a
    configured meter provider (explicit, or a global one that is not the API's proxy).
    """
    if scope.get("type") != "http":
        return None
    config = getattr(scope.get("app"), "_telemetry", None)
    provider = None
    if isinstance(config, dict):
        if not config.get("metrics", True):
            return None
        provider = config.get("meter_provider")
    return _sdk_meter_provider(provider)


def owners(
    scope: MutableMapping[str, Any], contrib: bool, current: trace.Span
) -> tuple[trace.Span | None, bool, Any]:
    """Who else instruments this request (``current``: the span current when it arrived).

    Returns:
        ``(server_span, owns_span, metrics_provider)``: another instrumentation's recording
        server span to enrich (or None), whether another instrumentation owns the server
        span (even a sampled-out one), and the meter provider another instrumentation
        records ``http.server.*`` metrics into (or None).
    """
    telemetry = scope.get("fastapi.telemetry")
    if telemetry is not None:  # FastAPI's native telemetry is active for this request
        span = getattr(telemetry, "span", None)
        recording = span if span is not None and span.is_recording() else None
        provider = _sdk_meter_provider(None) if contrib else _native_meters(scope)
        return recording, span is not None, provider
    recording = current.is_recording()
    if recording and getattr(current, "kind", None) is trace.SpanKind.SERVER:
        return current, True, _sdk_meter_provider(None)
    if contrib or (not recording and _sampled_out_outside(current)):
        return None, current.get_span_context().is_valid, _sdk_meter_provider(None)
    return None, False, None


def _sampled_out_outside(current: trace.Span) -> bool:
    """Whether ``current``, not recording, is the server span of contrib wrapping the app from
    outside (an outer ASGI wrapper) that sampled the request out.

    At the ASGI entry the span current was started by what runs around the app: the server
    starts none, a propagation-only wrapper attaches a *remote* context (the parent, not an
    owner), and a syncperf middleware outside this one marks the scope instead. So a local,
    valid context that is not recording is taken for a sampled-out server span of contrib,
    provided contrib is loaded and no sync operation of syncperf's is current (one whose
    sampled-out span is current: a request served in-process inside it).
    """
    context = current.get_span_context()
    return (
        context.is_valid
        and not context.is_remote
        and _CONTRIB[0] in sys.modules
        and active_operation() is None
    )
