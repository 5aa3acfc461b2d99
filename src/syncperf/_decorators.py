"""``instrument_sync``: decide everything at decoration time, do little per call.

Extractors are plain callables whose *parameter names* say what they read: a name of the
handler's parameters gets that argument (resolved to a position once, at decoration time,
like FastAPI dependencies); ``result`` gets the return value. Example::

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
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from syncperf import _runtime
from syncperf._client_header import read as read_client_header
from syncperf._operation import (
    _CURRENT,
    SyncOperation,
    begin,
    check_entity,
    check_operation,
    end,
    start,
)
from syncperf.exceptions import ConfigError

__all__ = ["Adapter", "apply_http_status", "http_status", "instrument_sync"]

F = TypeVar("F", bound=Callable[..., Any])
_perf = time.perf_counter_ns


class Adapter(Protocol):
    """Reads a sync protocol's parsed request and response into an operation.

    ``syncperf.adapters`` ships one per protocol; any object with these two methods works.
    """

    def on_request(self, op: SyncOperation, request: Any) -> None:
        """Record what the request tells (batch size, items, entity, duplicates)."""

    def on_response(self, op: SyncOperation, response: Any) -> None:
        """Record what the response tells (conflicts, rejected items, pulled items)."""


@dataclass(frozen=True)
class _Arg:
    name: str
    position: int | None
    default: Any


@dataclass(frozen=True)
class _Extractor:
    apply: Callable[[SyncOperation, Any], None]
    fn: Callable[..., Any]
    args: tuple[_Arg, ...]
    wants_result: bool

    def run(
        self, op: SyncOperation, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any
    ) -> None:
        values = []
        for arg in self.args:
            if arg.position is not None and arg.position < len(args):
                values.append(args[arg.position])
            else:
                values.append(kwargs.get(arg.name, arg.default))
        if self.wants_result:
            values.append(result)
        try:
            self.apply(op, self.fn(*values))
        except Exception as error:
            op._rt.internal_error("extractor_failed", error)


def _set_entity(op: SyncOperation, value: Any) -> None:
    if value is not None and op._entity is None:  # fills in; never replaces (nesting rule)
        op.set_entity(value)


def _set_batch(op: SyncOperation, value: Any) -> None:
    op.set_batch_size(value)


def _per_entity(record: Callable[..., None]) -> Callable[[SyncOperation, Any], None]:
    def apply(op: SyncOperation, value: Any) -> None:
        if isinstance(value, Mapping):
            for entity, n in value.items():
                record(op, n, entity)
        elif value is not None:
            record(op, value, None)

    return apply


_add_items = _per_entity(lambda op, n, entity: op.record_items(n, entity=entity))
_add_conflicts = _per_entity(lambda op, n, entity: op.record_conflict(entity=entity, count=n))


def _set_idempotent(op: SyncOperation, value: Any) -> None:
    if value:
        op.record_idempotency_hit()


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
        idempotency_hit: Extractor returning True when the call was a duplicate.
        adapter: A protocol adapter (see ``syncperf.adapters``) fed the parsed request and
            the return value.
        request: The handler parameter holding the parsed request for ``adapter``
            (default: the handler's only parameter, or one named ``body``/``payload``/``request``;
            not needed when the adapter reads no request, e.g. a pull adapter on a GET).

    A returned ``Response`` or a raised ``HTTPException`` (anything with an int
    ``status_code``) decides the outcome as behind the ASGI middleware: 5xx and unconflicted
    4xx are errors; a 409, or a 4xx after ``record_conflict()``, is a conflict.

    An extractor's parameter names choose what it receives: a handler parameter name gets
    that argument, ``result`` gets the return value. Extractors run inside syncperf's guard:
    if one raises, the measurement is dropped and counted (strict mode re-raises).

    Raises:
        ConfigError: a name or extractor is not accepted (at decoration time).
    """
    check_operation(operation)
    static_entity = entity if isinstance(entity, str) or entity is None else None
    if static_entity is not None:
        check_entity(static_entity)
    specs: list[tuple[str, Any, Callable[[SyncOperation, Any], None]]] = [
        ("batch_size", batch_size, _set_batch),
        ("items", items, _add_items),
        ("conflicts", conflicts, _add_conflicts),
        ("idempotency_hit", idempotency_hit, _set_idempotent),
    ]
    if callable(entity):
        specs.insert(0, ("entity", entity, _set_entity))
    elif entity is not None and not isinstance(entity, str):
        raise ConfigError("entity", entity, "a string, a callable or None")
    if adapter is not None and not (
        callable(getattr(adapter, "on_request", None))
        and callable(getattr(adapter, "on_response", None))
    ):
        raise ConfigError("adapter", adapter, "an object with on_request() and on_response()")

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise ConfigError("instrument_sync target", fn, "a function")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise ConfigError(
                "instrument_sync target",
                fn,
                "a def or async def function returning a value (not a generator); "
                "use sync_operation() inside a streaming response instead",
            )
        params = _parameters(fn)
        before: list[_Extractor] = []
        after: list[_Extractor] = []
        for option, extractor, apply in specs:
            if extractor is None:
                continue
            if not callable(extractor):
                raise ConfigError(option, extractor, "a callable")
            built = _build(option, extractor, apply, params)
            (after if built.wants_result else before).append(built)
        client = _http_request_param(fn, params)
        if client is not None:  # the framework's request object: its Sync-Client header
            before.append(_Extractor(_read_client_header, _identity, (client,), False))
        if adapter is not None:
            name = _request_param(request, params, getattr(adapter, "reads_request", True))
            if name is not None:
                before.append(_Extractor(adapter.on_request, _identity, (params[name],), False))
            query = [params[n] for n in getattr(adapter, "query", ()) if n in params]
            if query:  # the query parameters the framework parsed into handler arguments
                on_query = adapter.on_query  # type: ignore[attr-defined]
                before.append(_Extractor(on_query, _named(query), tuple(query), False))
            after.append(_Extractor(_responder(adapter.on_response), _identity, (), True))
        elif request is not None:
            raise ConfigError("request", request, "only together with adapter=")
        return _wrap(fn, operation, static_entity, tuple(before), tuple(after))

    return decorate


def _identity(value: Any) -> Any:
    return value


def _named(args: list[_Arg]) -> Callable[..., dict[str, Any]]:
    names = [arg.name for arg in args]
    return lambda *values: dict(zip(names, values, strict=True))


def _http_request_param(fn: Callable[..., Any], params: dict[str, _Arg]) -> _Arg | None:
    """The handler parameter the framework passes its request object in (annotated with a
    class that has ``headers``, e.g. Starlette's or FastAPI's ``Request``), or None."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: only the conventional name
        return params.get("request") if "request" in params else None
    for name, arg in params.items():
        hint = hints.get(name)
        if isinstance(hint, type) and isinstance(getattr(hint, "headers", None), property):
            return arg
    return None


def _read_client_header(op: SyncOperation, request: Any) -> None:
    """Read a request's ``Sync-Client`` header into ``op`` (when it has one)."""
    get = getattr(getattr(request, "headers", None), "get", None)
    if get is not None:
        raw = get("sync-client")
        if type(raw) is str:
            read_client_header(op._rt, raw, op.observed())


_PLAIN = frozenset({dict, list, tuple, str, bytes, int, type(None)})
"""Return types that are never a framework response object (checked before ``getattr``)."""


def http_status(value: Any) -> int | None:
    """The HTTP status a handler's return value or exception carries (a Starlette or FastAPI
    ``Response`` or ``HTTPException``: an int ``status_code`` beside ``headers``), or None."""
    if type(value) in _PLAIN:
        return None
    status = getattr(value, "status_code", None)
    if type(status) is not int or not 100 <= status <= 599 or not hasattr(value, "headers"):
        return None
    return status


def apply_http_status(op: SyncOperation, status: int) -> None:
    """The outcome an HTTP status gives an operation (one rule for decorator and middleware).

    5xx: ``error`` (``error.type`` the status code). 4xx: ``conflict`` when the handler
    recorded conflicts, or for a 409 (which counts one conflict if none was recorded);
    any other 4xx is ``error`` with the status code as ``error.type`` (the request was
    refused: nothing synced, e.g. a 422 from validation before the handler ran).
    """
    if status >= 500:
        op.set_error(str(status))
    elif status >= 400 and not op.conflicts:
        if status == 409:
            op.record_conflict()
        else:
            op.set_error(str(status))


def _responder(on_response: Callable[[SyncOperation, Any], None]) -> Callable[..., None]:
    """``on_response`` fed a returned ``Response`` object's JSON body instead of the object
    (a body that is not JSON is not the protocol's response: nothing to read)."""

    def feed(op: SyncOperation, result: Any) -> None:
        if http_status(result) is not None:
            body = getattr(result, "body", None)
            media = getattr(result, "media_type", None) or ""
            if not isinstance(body, (bytes, bytearray)) or "json" not in media or not body:
                return
            try:
                result = json.loads(body)
            except ValueError:
                op._rt.reject("unparseable_payload", "a returned JSON response is not JSON")
                return
        on_response(op, result)

    return feed


def _parameters(fn: Callable[..., Any]) -> dict[str, _Arg]:
    params: dict[str, _Arg] = {}
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return params
    for index, param in enumerate(signature.parameters.values()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        position = index if param.kind != param.KEYWORD_ONLY else None
        default = None if param.default is param.empty else param.default
        params[param.name] = _Arg(param.name, position, default)
    return params


def _build(
    option: str,
    extractor: Callable[..., Any],
    apply: Callable[[SyncOperation, Any], None],
    params: dict[str, _Arg],
) -> _Extractor:
    try:
        names = list(inspect.signature(extractor).parameters)
    except (TypeError, ValueError):
        raise ConfigError(option, extractor, "a callable with an inspectable signature") from None
    wants_result = "result" in names and "result" not in params
    args = []
    for name in names:
        if name == "result" and wants_result:
            continue
        if name not in params:
            raise ConfigError(
                option,
                extractor,
                f"a callable whose parameters are 'result' or parameters of the handler "
                f"({', '.join(params) or 'none'}); '{name}' is neither",
            )
        args.append(params[name])
    if wants_result and names[-1] != "result":
        raise ConfigError(option, extractor, "'result' as the last parameter")
    return _Extractor(apply, extractor, tuple(args), wants_result)


def _request_param(request: str | None, params: dict[str, _Arg], required: bool) -> str | None:
    if request is not None:
        if request not in params:
            raise ConfigError(
                "request", request, "a parameter of the handler: " + ", ".join(params)
            )
        return request
    if len(params) == 1:
        return next(iter(params))
    for name in ("body", "payload", "request"):
        if name in params:
            return name
    if not required:  # the adapter never reads the request (a pull's GET parameters)
        return None
    raise ConfigError("request", None, "the name of the handler parameter holding the request")


def _wrap(
    fn: F,
    operation: str,
    entity: str | None,
    before: tuple[_Extractor, ...],
    after: tuple[_Extractor, ...],
) -> F:
    if not before and not after:
        return _wrap_plain(fn, operation, entity)
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            op = _CURRENT.get()
            owner = None
            if op is None:
                rt = _runtime._current or _runtime.current()
                if not rt.enabled:
                    return await fn(*args, **kwargs)
                op = owner = begin(rt, operation, entity)
            elif entity is not None and op._entity is None:
                op.set_entity(entity)
            try:
                t = _perf()  # extractors run on syncperf's behalf: their time is overhead
                for extractor in before:
                    extractor.run(op, args, kwargs, None)
                t1 = _perf()
                result = await fn(*args, **kwargs)
                t2 = _perf()
                for extractor in after:
                    extractor.run(op, args, kwargs, result)
                op._own_ns += t1 - t + _perf() - t2
            except BaseException as exc:
                if owner is not None:
                    _end(owner, exc)
                raise
            if owner is not None:
                _end(owner, None, result)
            return result

        return cast(F, async_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        op = _CURRENT.get()
        owner = None
        if op is None:
            rt = _runtime._current or _runtime.current()
            if not rt.enabled:
                return fn(*args, **kwargs)
            op = owner = begin(rt, operation, entity)
        elif entity is not None and op._entity is None:
            op.set_entity(entity)
        try:
            t = _perf()  # extractors run on syncperf's behalf: their time is overhead
            for extractor in before:
                extractor.run(op, args, kwargs, None)
            t1 = _perf()
            result = fn(*args, **kwargs)
            t2 = _perf()
            for extractor in after:
                extractor.run(op, args, kwargs, result)
            op._own_ns += t1 - t + _perf() - t2
        except BaseException as exc:
            if owner is not None:
                _end(owner, exc)
            raise
        if owner is not None:
            _end(owner, None, result)
        return result

    return cast(F, wrapper)


def _wrap_plain(fn: F, operation: str, entity: str | None) -> F:
    """The wrappers without extractors (the common, fastest case).

    ``bound`` caches ``(runtime, pre-bound series)`` for the current runtime (swapped by
    ``configure()`` and ``capture()``; one tuple, so a reader never sees a torn pair), so a
    call does no lookup at all.
    """
    bound: list[tuple[Any, Any]] = [(None, None)]
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            outer = _CURRENT.get()
            if outer is not None:
                if entity is not None and outer._entity is None:
                    outer.set_entity(entity)
                return await fn(*args, **kwargs)
            rt = _runtime._current or _runtime.current()
            cached = bound[0]
            if cached[0] is not rt:
                cached = bound[0] = (rt, rt.series(operation, entity) if rt.enabled else None)
            series = cached[1]
            if series is None:
                return await fn(*args, **kwargs)
            op = start(rt, series)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                _end(op, exc)
                raise
            if type(result) not in _PLAIN:
                _end(op, None, result)
                return result
            try:
                end(op, None)
            except Exception as error:
                rt.internal_error("operation_end_failed", error)
            return result

        return cast(F, async_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        outer = _CURRENT.get()
        if outer is not None:
            if entity is not None and outer._entity is None:
                outer.set_entity(entity)
            return fn(*args, **kwargs)
        rt = _runtime._current or _runtime.current()
        cached = bound[0]
        if cached[0] is not rt:
            cached = bound[0] = (rt, rt.series(operation, entity) if rt.enabled else None)
        series = cached[1]
        if series is None:
            return fn(*args, **kwargs)
        op = start(rt, series)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _end(op, exc)
            raise
        if type(result) not in _PLAIN:
            _end(op, None, result)
            return result
        try:
            end(op, None)
        except Exception as error:
            rt.internal_error("operation_end_failed", error)
        return result

    return cast(F, wrapper)


def _end(op: SyncOperation, exc: BaseException | None, result: Any = None) -> None:
    """End an operation this wrapper owns; an HTTP status the handler answered with (a
    returned ``Response``, a raised ``HTTPException``) decides the outcome as it would
    behind the middleware: a 4xx carrying recorded conflicts (or a 409) is a conflict."""
    try:
        status = http_status(result if exc is None else exc)
        if status is not None:
            if exc is None:
                apply_http_status(op, status)
            elif status < 500 and (op.conflicts or status == 409):
                apply_http_status(op, status)
                exc = None  # the exception is the conflict's answer, not a failure
        end(op, exc)
    except Exception as error:
        op._rt.internal_error("operation_end_failed", error)
