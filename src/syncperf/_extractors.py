"""Extractors and adapters of ``instrument_sync``, resolved once at decoration time.

Extractors are plain callables whose *parameter names* say what they read: a name of the
handler's parameters gets that argument (resolved to a position once, at decoration time,
like FastAPI dependencies); ``result`` gets the return value. A protocol adapter becomes two
extractors: ``on_request`` fed the request parameter, ``on_response`` the return value.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from syncperf import _runtime
from syncperf._accel import speedups
from syncperf._client_header import read as read_client_header
from syncperf._gate import MAX_COUNT
from syncperf._operation import SyncOperation, hold
from syncperf.exceptions import ConfigError

__all__ = [
    "Adapter",
    "Apply",
    "Extractor",
    "Run",
    "check_adapter",
    "guard",
    "phase",
    "plan",
    "specs",
]

Apply = Callable[[SyncOperation, Any], None]
"""What an extractor's value is given to, with the operation."""


class Adapter(Protocol):
    """Reads a sync protocol's parsed request and response into an operation.

    ``syncperf.adapters`` ships one per protocol; any object with these two methods works.
    """

    def on_request(self, op: SyncOperation, request: Any) -> None:
        """Record what the request tells (batch size, items, entity, duplicates)."""

    def on_response(self, op: SyncOperation, response: Any) -> None:
        """Record what a 2xx response tells (conflicts, rejected items, pulled items);
        ``response`` is None when the answer had no body to read (a 204, text)."""


def check_adapter(option: str, adapter: object) -> None:
    """Raise ``ConfigError`` unless ``adapter`` has callable ``on_request``/``on_response``
    and is not a class (``adapter=zero.Push``, the ``()`` left out)."""
    if isinstance(adapter, type):
        what = adapter.__name__
        raise ConfigError(option, adapter, f"an adapter instance ({what}(), not the class {what})")
    if not (
        callable(getattr(adapter, "on_request", None))
        and callable(getattr(adapter, "on_response", None))
    ):
        raise ConfigError(option, adapter, "an object with on_request() and on_response()")


def guard(op: SyncOperation) -> _runtime.Runtime:
    """Where a failure during ``op`` is counted: its runtime (the current one for the no-op)."""
    return op.runtime or _runtime.current()


@dataclass(frozen=True)
class _Arg:
    name: str
    position: int | None
    default: Any


Run = Callable[[SyncOperation, tuple[Any, ...], dict[str, Any], Any], None]
"""An extractor compiled for one handler: ``run(op, args, kwargs, result)``."""


@dataclass(frozen=True)
class Extractor:
    apply: Apply
    fn: Callable[..., Any]
    args: tuple[_Arg, ...]
    wants_result: bool
    counts: bool = True
    """Whether it feeds counts (an adapter; ``batch_size``, ``items``, ``conflicts``), which
    a decorated handler joining an operation already fed skips; ``entity`` and
    ``idempotency_hit`` only fill in, never count twice."""

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
            guard(op).extractor_failed(error)

    def compiled(self) -> Run:
        """``run`` specialized at decoration time for the usual one-value extractor."""
        fn, apply = self.fn, self.apply
        if self.wants_result and not self.args:

            def on_result(op: SyncOperation, args: Any, kwargs: Any, result: Any) -> None:
                try:
                    apply(op, fn(result))
                except Exception as error:
                    guard(op).extractor_failed(error)

            return on_result
        if self.wants_result or len(self.args) != 1:
            return self.run
        (arg,) = self.args
        name, default, position = arg.name, arg.default, arg.position
        if position is None:  # a keyword-only parameter
            return self.run

        def on_argument(op: SyncOperation, args: Any, kwargs: Any, result: Any) -> None:
            try:
                apply(op, fn(args[position] if position < len(args) else kwargs.get(name, default)))
            except Exception as error:
                guard(op).extractor_failed(error)

        return on_argument


def phase(extractors: tuple[Extractor, ...]) -> Run | None:
    """One callable running ``extractors`` in order (None when there are none): a compiled
    ``_speedups.Phase`` when built, else the Python ``Run`` of each in turn."""
    if speedups is not None and extractors:
        return speedups.Phase(tuple(map(_step, extractors)), _failed)  # type: ignore[no-any-return]
    runs = tuple(extractor.compiled() for extractor in extractors)
    if len(runs) <= 1:
        return runs[0] if runs else None

    def run_all(op: SyncOperation, args: Any, kwargs: Any, result: Any) -> None:
        for run in runs:
            run(op, args, kwargs, result)

    return run_all


def _step(extractor: Extractor) -> tuple[int, Any, Apply, int, str, Any]:
    """A ``_speedups.Phase`` step: ``(kind, fn, apply, position, name, default)``. The kind
    names the applier whose common case runs in C (0: none); position -1 reads the result;
    kind 4 runs the Python ``Run`` in ``fn`` (an extractor of several values)."""
    fn, apply, args = extractor.fn, extractor.apply, extractor.args
    kind = next((k for known, k in _KINDS if known is apply), 0)  # no hash: any callable
    if extractor.wants_result and not args:
        return kind, fn, apply, -1, "", None
    if not extractor.wants_result and len(args) == 1 and args[0].position is not None:
        return kind, fn, apply, args[0].position, args[0].name, args[0].default
    return 4, extractor.compiled(), apply, -1, "", None


def _failed(op: SyncOperation, error: Exception) -> None:
    guard(op).extractor_failed(error)


def _set_entity(op: SyncOperation, value: Any) -> None:
    if value is not None and op._entity is None:  # fills in; never replaces (nesting rule)
        if type(value) is str:  # a name seen before: its bounded series at once
            found = op._rt.op_series.get((op._series.operation, value))
            if found is not None:
                op._entity = found.entity
                op._series = found
                return
        op.set_entity(value)


def _set_batch(op: SyncOperation, value: Any) -> None:
    if type(value) is int and 0 <= value < MAX_COUNT:
        op._batch = value
    else:
        op.set_batch_size(value)


def _per_entity(record: Callable[..., None]) -> Apply:
    def apply(op: SyncOperation, value: Any) -> None:
        if isinstance(value, Mapping):
            for entity, n in value.items():
                record(op, n, entity)
        elif value is not None:
            record(op, value, None)

    return apply


def _add_items(op: SyncOperation, value: Any) -> None:
    if type(value) is int:
        op.record_items(value)
    else:
        _add_items_of(op, value)


_add_items_of = _per_entity(lambda op, n, entity: op.record_items(n, entity=entity))
_add_conflicts_of = _per_entity(lambda op, n, entity: op.record_conflict(entity=entity, count=n))
_ANY = (None, None)


def _add_conflicts(op: SyncOperation, value: Any) -> None:
    if type(value) is int and value > 0 and (total := op._conflicts + value) < MAX_COUNT:
        op._conflicts = total  # ``record_conflict(count=value)``, inlined
        detail = op._conflict_detail
        if detail is None:
            op._conflict_detail = {_ANY: value}
        else:
            detail[_ANY] = detail.get(_ANY, 0) + value
    elif type(value) is not int or value:
        _add_conflicts_of(op, value)


_KINDS: tuple[tuple[Apply, int], ...] = ((_set_entity, 1), (_set_batch, 2), (_add_conflicts, 3))
"""The appliers whose common case the compiled ``Phase`` runs itself."""


def _set_idempotent(op: SyncOperation, value: Any) -> None:
    if value is True:
        op.record_idempotency_hit()
    elif value is not False and value is not None:  # never truth-tested: "false", NaN, len()
        guard(op).reject(
            "invalid_idempotency_hit", "an idempotency hit: True, False or None", value
        )


def specs(
    entity: object, batch_size: Any, items: Any, conflicts: Any, idempotency_hit: Any
) -> list[tuple[str, Any, Apply]]:
    """The ``(option, extractor, apply)`` of each extractor option (checked later)."""
    found: list[tuple[str, Any, Apply]] = [
        ("batch_size", batch_size, _set_batch),
        ("items", items, _add_items),
        ("conflicts", conflicts, _add_conflicts),
        ("idempotency_hit", idempotency_hit, _set_idempotent),
    ]
    if callable(entity):
        found.insert(0, ("entity", entity, _set_entity))
    elif entity is not None and not isinstance(entity, str):
        raise ConfigError("entity", entity, "a string, a callable or None")
    return found


def plan(
    fn: Callable[..., Any],
    options: list[tuple[str, Any, Apply]],
    adapter: Adapter | None,
    request: str | None,
    on_response: Callable[[Apply], Apply],
) -> tuple[tuple[Extractor, ...], tuple[Extractor, ...]]:
    """The extractors to run before and after ``fn`` (``on_response`` wraps the adapter's)."""
    params = _parameters(fn)
    before: list[Extractor] = []
    after: list[Extractor] = []
    for option, extractor, apply in options:
        if extractor is None:
            continue
        if not callable(extractor):
            raise ConfigError(option, extractor, "a callable")
        built = _build(option, extractor, apply, params)
        (after if built.wants_result else before).append(built)
    client = _http_request_param(fn, params)
    if client is not None:  # the framework's request object: its Sync-Client header
        before.append(Extractor(_read_client_header, _identity, (client,), False, False))
    if adapter is not None:
        name = _request_param(request, params, getattr(adapter, "reads_request", True))
        if name is not None:
            on_request = _holding(adapter.on_request)
            before.append(Extractor(on_request, _identity, (params[name],), False))
        query = [params[n] for n in getattr(adapter, "query", ()) if n in params]
        if query:  # the query parameters the framework parsed into handler arguments
            on_query = adapter.on_query  # type: ignore[attr-defined]
            before.append(Extractor(on_query, _named(query), tuple(query), False))
        after.append(Extractor(on_response(adapter.on_response), _identity, (), True))
    elif request is not None:
        raise ConfigError("request", request, "only together with adapter=")
    return tuple(before), tuple(after)


def _holding(on_request: Apply) -> Apply:
    """``on_request`` holding the adapter's payload tallies (``HELD``) in an operation the
    decorator owns (``_fed``: an operation another layer feeds runs no adapter of its own)
    until the handler's answer decides them (``_ending.finish``), as behind the middleware."""

    def holding(op: SyncOperation, request: Any) -> None:
        if op._fed:
            hold(op)
        on_request(op, request)

    return holding


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
        return params.get("request")
    for name, arg in params.items():
        hint = hints.get(name)
        if isinstance(hint, type) and isinstance(getattr(hint, "headers", None), property):
            return arg
    return None


def _read_client_header(op: SyncOperation, request: Any) -> None:
    """Read a request's ``Sync-Client`` header into ``op`` (when it has one); repeated lines
    are one list (RFC 9110), as behind the middleware. Not when a layer ``op`` belongs to
    (the middleware, an outer decorator) read it already: one bad member counts once."""
    observed = op._observed
    if observed is not None and observed.header:
        return
    headers = getattr(request, "headers", None)
    getlist = getattr(headers, "getlist", None)  # Starlette's and FastAPI's Headers
    if getlist is not None:
        lines = getlist("sync-client")
        raw = ",".join(lines) if lines and all(type(line) is str for line in lines) else None
    else:
        get = getattr(headers, "get", None)
        raw = None if get is None else get("sync-client")
    if type(raw) is str:
        read_client_header(guard(op), raw, op.observed())


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
    apply: Apply,
    params: dict[str, _Arg],
) -> Extractor:
    try:
        parameters = inspect.signature(extractor).parameters.values()
    except (TypeError, ValueError):
        raise ConfigError(option, extractor, "a callable with an inspectable signature") from None
    if any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters):
        # it is called with its values in order (``fn(*values)``): any other kind fails
        raise ConfigError(
            option, extractor, "a callable with positional parameters only (no *, *args, **kwargs)"
        )
    names = [p.name for p in parameters]
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
    counts = option not in ("entity", "idempotency_hit")
    return Extractor(apply, extractor, tuple(args), wants_result, counts)


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
