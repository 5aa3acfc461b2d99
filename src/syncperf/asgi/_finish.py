"""The end of one request through ``SyncPerfMiddleware`` (``Exchange.run`` calls ``finish``).

``finish`` is compiled (``_speedups.finish``) when the extension is built: it does
``finish_py``'s work for a request that ended as most do, calls ``finish_operation`` and
``record_http`` for the parts it does not do, and hands any other request to ``finish_py``
whole (``tests/unit/test_asgi_exchange.py`` compares them).

* ``finish_operation``: the sync operation's outcome from the response, the adapter fed the
  response body, what it read committed unless the answer refused the request (``settle``),
  then ``end()``;
* ``record_http``: the ``http.server.*`` metrics and syncperf's overhead; the active-requests
  gauge returns to zero whatever fails.

Neither ever replaces the application's exception (``_http.hook_failed``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from syncperf._accel import speedups
from syncperf._gate import error_type, raised_at
from syncperf._http_status import apply_http_status, settle
from syncperf._lifecycle import end
from syncperf._metrics.batches import FOLD_AT
from syncperf._operation import SyncOperation
from syncperf._tracing.current import detach
from syncperf.asgi._http import AsgiState, feed_body, hook_failed, key_hash
from syncperf.asgi._routes import framework_route
from syncperf.asgi._scope import VERSIONS, wrong_type

if TYPE_CHECKING:
    from opentelemetry import trace

    from syncperf.asgi._exchange import Exchange

__all__ = ["finish", "finish_py"]

_perf = time.perf_counter_ns


def finish_py(ex: Exchange, failure: BaseException | None) -> None:
    """End the operation, then record the HTTP metrics (both even in strict mode)."""
    t_end = _perf()
    if ex.rt.successor is not None:  # configure() replaced the runtime meanwhile
        _hand_over(ex)
    reason = None
    if ex.left_early or (ex.disconnected and not ex.complete_ns):
        # whatever the framework raised or answered then (FastAPI: a 400 the server dropped)
        reason, failure = "client_disconnected", None
    elif failure is None and not ex.complete_ns:
        reason = "incomplete_response"
    elif failure is not None and ex.complete_ns and (ex.status or 0) < 500:  # raised after
        # the client had its answer (a background task): the response decides the outcome; the
        # exception still propagates. After a 5xx it is the handler's failure (Starlette's
        # ServerErrorMiddleware sends the 500, then raises again)
        msg = "syncperf: the application raised after its response was complete (%s)"
        ex.rt.drop("background_task_failed", msg, raised_at(failure))
        failure = None
    matched: str | None = None
    try:
        if ex.op is not None:
            matched = finish_operation(ex, ex.op, failure, reason, t_end)
    finally:
        if ex.token is not None:  # attached before the operation began (even if it did not)
            detach(ex.token)
        record_http(ex, failure, reason, matched, t_end)


def finish_operation(
    ex: Exchange, op: SyncOperation, failure: BaseException | None, reason: str | None, t_end: int
) -> str | None:
    """Outcome from the response, adapter feeding, then ``end()``.

    Never raises, except in strict mode when the application itself did not raise.
    The operation's duration stops when the response was complete (0 when it never
    was): background tasks that run after it are not part of it.

    Returns:
        The route template the framework matched (``framework_route``), or None.
    """
    rt, status = ex.rt, ex.status
    matched = None
    try:
        whole = ex.complete_ns and status is not None and 200 <= status < 300
        if ex.adapter is not None and whole:  # only a whole 2xx: an answer
            hook, cap = ex.adapter.on_response, ex.mw._max_body
            chunks, encoded = ex.response_chunks, ex.answer_encoded
            feed_body(rt, op, hook, chunks, ex.sent, cap, answer=True, encoded=encoded)
        settle(op, status, ex.replayed)
        if ex.replayed:
            op.record_idempotency_hit()
        if failure is None:
            if reason is not None and (ex.left_early or status is None or status < 500):
                op.set_error(reason)  # gone before the response started: whatever it was
            elif status is not None:
                apply_http_status(op, status)
        matched = framework_route(ex.scope, ex.entry_root)
        span = op._span
        if span is None:  # sampled out: for the span ``end`` rescues, if it does (an error,
            # a conflict or a slow one: its test, on the duration ``end`` gets)
            if op._parent_ctx is not None and (
                failure is not None
                or op._error_type is not None
                or op._conflicts
                or (ex.complete_ns or t_end) - op._start_ns > op._rt.slow_ns
            ):
                describe_rescued(ex, op, failure, matched)
        elif not ex.owned:  # the server span is syncperf's
            span_outcome(ex, span, failure, matched)
    except Exception as error:
        hook_failed(rt, "asgi_outcome_failed", error, failure)
    finally:  # the operation ends even when strict mode raised just above
        held, ex.held_entity = ex.held_entity, None
        if held is not None:  # a rejected request (a junk URL answered 404) gives its path
            # entity back once no other request holds it (``Bounded.settle``), and is reported
            # without it unless it was confirmed meanwhile: junk cannot use up max_entities
            rejected = status is not None and 400 <= status < 500 and not op.conflicts
            if not op._rt.entities.settle(held, not rejected) and op._entity == held:
                op._entity = None
        try:
            end(op, failure, ex.complete_ns or None, t_end)
        except Exception as error:
            hook_failed(rt, "operation_end_failed", error, failure)
    return matched


def span_outcome(
    ex: Exchange, span: trace.Span, failure: BaseException | None, matched: str | None
) -> None:
    """What the response tells syncperf's server span: the status sent, and the route the
    framework matched where it is not the sync route's own template."""
    status = ex.status
    if (status is not None or failure is not None) and not ex.left_early:  # never sent
        span.set_attribute("http.response.status_code", 500 if status is None else status)
    if matched is not None and matched != ex.template:
        span.set_attribute("http.route", matched)


def describe_rescued(
    ex: Exchange, op: SyncOperation, failure: BaseException | None, matched: str | None
) -> None:
    """What a sampled span has by now and a rescued one would lack, into the attributes
    ``end`` gives it (``op._span_attrs``): the idempotency key's hash and, when the server
    span is syncperf's, the status sent and the route the framework matched. Only for a
    span that is rescued: a sampled-out success pays nothing (the key is hashed here)."""
    attrs = op._span_attrs
    if attrs is None:
        attrs = op._span_attrs = {}
    if ex.idem_key is not None:
        attrs["sync.idempotency.key_hash"] = key_hash(ex.idem_key)
    if ex.owned:
        return
    status = ex.status
    if (status is not None or failure is not None) and not ex.left_early:
        attrs["http.response.status_code"] = 500 if status is None else status
    if matched is not None and matched != ex.template:
        attrs["http.route"] = matched


def record_http(
    ex: Exchange, failure: BaseException | None, reason: str | None, matched: str | None, t_end: int
) -> None:
    """The ``http.server.*`` metrics and syncperf's overhead; the active-requests gauge
    returns to zero whatever fails (never replacing the application's exception).

    Recorded under the lock of a runtime that has no successor yet: ``configure()`` sets it
    under that lock before the runtime's last export, which then carries them. A runtime
    replaced meanwhile (``finish_operation`` may decode a large body) hands the request over
    to the one in force, and they are recorded there."""
    http = ex.http
    left = False
    try:
        size = ex.received  # what arrived, never the Content-Length claimed (a body the
        # app did not read is unknown: not recorded, unless declared empty)
        while True:
            rt, http = ex.rt, ex.http
            overhead = rt.overhead_series.get("asgi") or rt.overhead_for("asgi")
            if http is not None:
                key = http_key(ex, failure, reason, matched)
                batch = http.series.get(key)
            with rt.lock:
                if rt.successor is None:
                    if http is None:
                        overhead.record((ex.prologue_ns + _perf() - t_end) / 1e9)
                        return
                    if ex.active:  # (a guard: never below zero)
                        ex.active.pop()
                    left = True
                    batch = batch or http.bound(overhead, *key)
                    batch.values += (  # queued (``Batch``), recorded in batches
                        -1 if ex.live else (ex.complete_ns or t_end) - ex.t0,  # -1: none
                        size if size > 0 or ex.content_length == 0 else -1,
                        0 if ex.method == "HEAD" else ex.sent,  # a HEAD's body is dropped
                        ex.prologue_ns + _perf() - t_end,
                    )
                    break
            _hand_over(ex)  # configure() replaced the runtime since ``finish``
        if len(batch.values) >= FOLD_AT:  # the lock is free again: ``fold_now`` may take it
            batch.fold_now()
    except Exception as error:
        hook_failed(ex.rt, "asgi_http_metrics_failed", error, failure)
    finally:
        if http is not None and not left and ex.active:  # (as above)
            ex.active.pop()


def http_key(
    ex: Exchange, failure: BaseException | None, reason: str | None, matched: str | None
) -> tuple[str, str, int | None, str | None, str | None, str | None]:
    """The attributes of the request's HTTP series (see ``HttpSeries.bound``)."""
    status: int | None = None if ex.left_early else ex.status  # only a status sent
    if failure is not None:
        etype: str | None = ex.rt.error_types(error_type(failure))
        status = 500 if status is None else status
    elif status is not None and status >= 500 and not ex.left_early:  # client gone before
        etype = str(status)  # the response started: client_disconnected, whatever it was
    else:
        etype = reason
    if ex.op is None:
        matched = framework_route(ex.scope, ex.entry_root)
    version = ex.scope.get("http_version")
    if type(version) is not str:
        version = None if version is None else wrong_type(ex.rt, "http_version", version, None)
    return (
        ex.method,
        ex.scheme,
        status,
        matched or ex.template,
        etype,
        version if version in VERSIONS else None,
    )


def _hand_over(ex: Exchange) -> None:
    """Move a request its runtime began to the one ``configure()`` replaced it with, whose
    exports carry what the request records when it ends (the old runtime's no longer run).
    It stays in the in-flight deque it entered, which the new runtime's
    ``http.server.active_requests`` counts (``HttpSeries._observe_active``), until it ends."""
    rt = ex.rt.in_force()
    ex.rt, ex.shared = rt, rt.state(AsgiState)
    if ex.http is not None:
        ex.http = ex.shared.http(ex.metered_into)


finish = finish_py
if speedups is not None:
    speedups.bind_finish(globals(), finish_py, VERSIONS, FOLD_AT)
    finish = speedups.finish
