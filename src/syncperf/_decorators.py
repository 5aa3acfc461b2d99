"""``instrument_sync``: decide everything at decoration time, do little per call.

Extractors (see ``_extractors``) are callables whose parameter names say what they read::

    @syncperf.instrument_sync(
        "push",
        entity=lambda table: table,
        batch_size=lambda body: len(body["changes"]),
        conflicts=lambda result: len(result["conflicts"]),
    )
    async def push(table: str, body: dict) -> dict: ...
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Callable, Mapping
from contextvars import Token
from typing import Any, TypeVar, cast

from syncperf import _runtime
from syncperf._ending import (
    FEEDING,
    after_phase,
    answered_joined,
    completion,
    finish,
    future,
    leave,
    settles,
)
from syncperf._extractors import Adapter, Apply, Run, check_adapter, guard, phase, plan, specs
from syncperf._fastpath import compiled
from syncperf._gate import check_entity, check_operation
from syncperf._http_status import PLAIN, apply_http_status, awaitable, http_status
from syncperf._lifecycle import end, series, start
from syncperf._operation import SyncOperation, active_operation
from syncperf.exceptions import ConfigError

__all__ = ["Adapter", "apply_http_status", "http_status", "instrument_sync"]

F = TypeVar("F", bound=Callable[..., Any])
_perf = time.perf_counter_ns
HOLDING: frozenset[type] = frozenset()
"""The plain result types of a handler whose adapter holds its tallies: none."""


def instrument_sync(
    operation: str,
    *,
    entity: str | Callable[..., str | None] | None = None,
    batch_size: Callable[..., int] | None = None,
    items: Callable[..., int | Mapping[str, int]] | None = None,
    conflicts: Callable[..., int | Mapping[str, int]] | None = None,
    idempotency_hit: Callable[..., bool] | None = None,
    adapter: Adapter | None = None,
    request: str | None = None,
) -> Callable[[F], F]:
    """Measure every call of a ``def`` or ``async def`` handler as one sync operation.

    Args:
        operation: ``"pull"``, ``"push"`` or another low-cardinality name.
        entity: A fixed entity name, or an extractor returning one.
        batch_size: Extractor returning the number of items in the request or response.
        items: Extractor returning an item count, or a mapping entity -> count.
        conflicts: Extractor returning a conflict count, or a mapping entity -> count.
        idempotency_hit: Extractor returning True when the call was a duplicate (False or
            None otherwise).
        adapter: A protocol adapter (see ``syncperf.adapters``) fed the parsed request and
            the return value.
        request: The handler parameter holding the parsed request for ``adapter``
            (default: the handler's only parameter, or one named ``body``/``payload``/``request``;
            not needed when the adapter reads no request, e.g. a pull adapter on a GET).

    A returned ``Response`` or a raised ``HTTPException`` (anything with an int
    ``status_code``) decides the outcome as behind the ASGI middleware: 5xx and unconflicted
    4xx are errors; a 409, or a 4xx after ``record_conflict()``, is a conflict (also when
    the handler joins another operation). What ``adapter`` read of the request in an
    operation it owns counts only once that answer is known, and not at all when it refused
    the request (an unconflicted 4xx: nothing synced).

    Inside another sync operation (the middleware's, an outer decorated function's) the
    handler joins it; when an adapter or count extractors already feed that operation, this
    one's ``adapter``, ``batch_size``, ``items`` and ``conflicts`` are skipped (one source of
    counts; docs/core.md, "Nesting").

    An extractor's parameter names choose what it receives: a handler parameter name gets
    that argument, ``result`` gets the return value. Extractors run inside syncperf's guard:
    if one raises, the measurement is dropped and counted (strict mode re-raises).

    Raises:
        ConfigError: a name or extractor is not accepted (at decoration time).
    """
    operation = check_operation(operation)  # a ``str`` subclass counts as its plain value
    static_entity = entity if isinstance(entity, str) or entity is None else None
    if static_entity is not None:
        static_entity = check_entity(static_entity)
    options = specs(entity, batch_size, items, conflicts, idempotency_hit)
    if adapter is not None:
        check_adapter("adapter", adapter)

    def decorate(fn: F) -> F:
        if isinstance(fn, (staticmethod, classmethod)) or inspect.isclass(fn):
            # wrapped, a staticmethod would become an instance method and an endpoint class
            # would stop being one: refused, not silently broken
            raise ConfigError(
                "instrument_sync target",
                fn,
                "a function, not a class, staticmethod or classmethod: decorate the function "
                "(below @staticmethod or @classmethod), or the endpoint's methods",
            )
        if not callable(fn):
            raise ConfigError("instrument_sync target", fn, "a function")
        if stream_function(fn):
            raise ConfigError(
                "instrument_sync target",
                fn,
                "a def or async def function returning a value (not a generator); "
                "measure a stream with the ASGI middleware (docs/core.md)",
            )
        before, after = plan(fn, options, adapter, request, _responder)
        feeds = any(extractor.counts for extractor in (*before, *after))
        joined = (  # what runs inside an operation another layer already feeds
            phase(tuple(e for e in before if not e.counts)),
            phase(tuple(e for e in after if not e.counts)),
        )
        phases = (phase(before), phase(after), joined if feeds else None)
        # held tallies (an adapter's) are settled by ``finish``: every result goes there
        plain = PLAIN if adapter is None else HOLDING
        return _wrap(fn, operation, static_entity, phases, plain)

    return decorate


def stream_function(fn: Any) -> bool:
    """Whether calling ``fn`` makes a generator (or an async one), as far as decoration can
    tell for certain: a generator function, also behind partials or as an object's
    ``__call__``. Not behind a ``functools.wraps`` wrapper, which may consume the stream and
    return a value; a handler that returns a generator ends its operation as an error
    (``_ending.finish``)."""
    for _ in range(32):  # a chain that long, or a cycle: taken as no stream
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            return True
        try:
            if isinstance(fn, functools.partial):
                fn = fn.func
            elif inspect.isroutine(fn):
                return False
            else:  # an object: its class's ``__call__``
                fn = type(fn).__call__
        except Exception:  # an attribute that raises: nothing more to tell
            return False
    return False


def _responder(on_response: Apply) -> Apply:
    """``on_response`` fed a returned ``Response`` object's JSON body instead of the object,
    or None when it has none to read (a 204, text): a push adapter that counts its rows when
    it reads the answer still counts them, as behind the middleware. Only a 2xx answer is
    the protocol's: a 401, 404 or 503 JSON body is an error's (the framework's, CouchDB's
    ``{error, reason}``), not a malformed payload."""

    def feed(op: SyncOperation, result: Any) -> None:
        status = http_status(result)
        if status is not None:
            if not 200 <= status < 300:
                return
            body = getattr(result, "body", None)
            media = getattr(result, "media_type", None) or ""
            if not isinstance(body, (bytes, bytearray)) or "json" not in media or not body:
                result = None
            else:
                try:
                    result = json.loads(body)
                except (ValueError, RecursionError):  # RecursionError: nested ~1,000 deep
                    guard(op).reject("unparseable_payload", "a returned JSON response is not JSON")
                    return
        on_response(op, result)

    return feed


Phases = tuple[Run | None, Run | None, tuple[Run | None, Run | None] | None]
"""``(before, after, joined)``: ``joined`` is the pair that runs instead when the handler
joins an operation whose counts another layer feeds (a middleware route's adapter, an outer
decorator's adapter or extractors), without this decorator's adapter and count extractors,
so nothing is counted twice; None when this decorator feeds no counts."""


def _wrap(fn: F, operation: str, entity: str | None, phases: Phases, plain: frozenset[type]) -> F:
    """The two wrappers, one for ``def`` and one for ``async def`` handlers.

    ``bound`` caches ``(runtime, pre-bound series)`` for the current runtime (swapped by
    ``configure()`` and ``capture()``; one tuple, so a reader never sees a torn pair), so a
    call does no lookup at all. Extractors (compiled into one ``Run`` per phase) run on
    syncperf's behalf: their time is overhead, measured with one clock read per phase when
    the wrapper owns the operation (``start`` and ``end`` read the clock on either side).
    A result whose type is in ``plain`` ends the operation at once (``end``); any other goes
    through ``finish`` (its status, the adapter's held tallies).
    """
    wrap = _async_wrapper if coroutine_function(fn) else _sync_wrapper
    return wrap(fn, operation, entity, phases, plain)


def coroutine_function(fn: Any) -> bool:
    """Whether calling ``fn`` makes a coroutine: an ``async def`` function (or a partial or
    method of one), or an object whose class has an ``async def __call__``. Its operation
    then starts where the coroutine runs (the task awaiting it), not in the caller."""
    if inspect.iscoroutinefunction(fn):
        return True
    return inspect.iscoroutinefunction(type(fn).__call__)


def _joins(
    op: SyncOperation, entity: str | None, phases: Phases
) -> tuple[Run | None, Run | None, Token[SyncOperation | None] | None]:
    """Join ``op`` (another layer's operation): name its entity if it has none; the phases
    to run in it, and the token of ``FEEDING`` when this call feeds its counts: calls
    inside it must not feed them again, while sibling calls (another batch, before, after or
    at the same time in another task or thread) count their own. The wrapper resets it."""
    if entity is not None and op._entity is None:
        op.set_entity(entity)
    joined = phases[2]
    if joined is None:
        return phases[0], phases[1], None
    if op._fed or FEEDING.get() is op:  # an outer layer counts it: one source feeds it
        return (*joined, None)
    return phases[0], phases[1], FEEDING.set(op)


def _sync_wrapper(
    fn: F, operation: str, entity: str | None, phases: Phases, plain_types: frozenset[type]
) -> F:
    bound: list[tuple[Any, Any]] = [(None, None)]  # see ``_wrap``
    own_before, own_after, joined = phases

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        op = active_operation()
        owner = None
        if op is None or op._ended:
            rt = _runtime.installed or _runtime.current()
            cached = bound[0]
            if cached[0] is not rt:
                cached = bound[0] = (rt, series(rt, operation, entity) if rt.enabled else None)
            if cached[1] is None:
                return fn(*args, **kwargs)
            op = owner = start(rt, cached[1])
            if joined is not None:
                op._fed = True
            before, after, marked = own_before, own_after, None
        else:
            before, after, marked = _joins(op, entity, phases)
        try:
            if before is not None:
                t = _perf() if owner is None else op._start_ns + op._own_ns
                before(op, args, kwargs, None)
                op._own_ns += _perf() - t
            result = fn(*args, **kwargs)
            try:
                plain = type(result) in plain_types
            except Exception:  # a class its metaclass makes unhashable
                plain = False
            if not plain and awaitable(result):  # async after all
                if future(result):  # a Task: handed back as it is, ended when done
                    return settles(result, op, leave(owner), after, args, kwargs)
                return completion(result, op, leave(owner), after, args, kwargs, marked)
            if after is not None:
                after_phase(after, op, owner, args, kwargs, result)
        except BaseException as exc:
            if owner is not None:
                finish(owner, exc)
            raise
        finally:
            if marked is not None:
                FEEDING.reset(marked)
        if owner is None:
            if not plain:  # joined: a response's status decides the outcome all the same
                answered_joined(op, result)
            return result
        if not plain:  # maybe a response whose status decides the outcome
            finish(owner, None, result)
            return result
        try:
            end(owner, None)
        except Exception as error:
            guard(owner).internal_error("operation_end_failed", error)
        return result

    phased = (own_before, own_after, joined is not None)
    fast = compiled(fn, wrapper, operation, entity, phased, plain_types)
    return cast(F, fast or wrapper)


def _async_wrapper(
    fn: F, operation: str, entity: str | None, phases: Phases, plain_types: frozenset[type]
) -> F:
    bound: list[tuple[Any, Any]] = [(None, None)]  # see ``_wrap``
    own_before, own_after, joined = phases

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        op = active_operation()
        owner = None
        if op is None or op._ended:
            rt = _runtime.installed or _runtime.current()
            cached = bound[0]
            if cached[0] is not rt:
                cached = bound[0] = (rt, series(rt, operation, entity) if rt.enabled else None)
            if cached[1] is None:
                return await fn(*args, **kwargs)
            op = owner = start(rt, cached[1])
            if joined is not None:
                op._fed = True
            before, after, marked = own_before, own_after, None
        else:
            before, after, marked = _joins(op, entity, phases)
        try:
            if before is not None:
                t = _perf() if owner is None else op._start_ns + op._own_ns
                before(op, args, kwargs, None)
                op._own_ns += _perf() - t
            result = await fn(*args, **kwargs)
            if after is not None:
                after_phase(after, op, owner, args, kwargs, result)
        except BaseException as exc:
            if owner is not None:
                finish(owner, exc)
            raise
        finally:
            if marked is not None:
                FEEDING.reset(marked)
        if owner is None:  # joined: a response's status decides the outcome all the same
            answered_joined(op, result)
            return result
        try:
            plain = type(result) in plain_types
        except Exception:  # a class its metaclass makes unhashable
            plain = False
        if not plain:  # maybe a response whose status decides the outcome
            finish(owner, None, result)
            return result
        try:
            end(owner, None)
        except Exception as error:
            guard(owner).internal_error("operation_end_failed", error)
        return result

    return cast(F, wrapper)
