"""What every protocol adapter shares: payload access, the tally, the request-time guard.

An adapter reads a payload the handler already has (a ``dict`` from ``json.loads``, or a
pydantic model, or any object with attributes) and never parses JSON itself. It first
*tallies* the whole payload into locals and only then commits the tally to the operation,
so a payload that turns out malformed halfway records nothing rather than half a message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from syncperf._gate import describe, raised_at
from syncperf._guard import OTHER
from syncperf._operation import CHANGES, HELD, SyncOperation

MISSING: Any = object()
"""Sentinel: the payload has no such field."""


class Malformed(Exception):
    """The payload does not have the protocol's shape."""


class CallbackFailed(Exception):
    """A user callback raised; ``error`` is what it raised."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(type(error).__name__)
        self.error = error


# --- payload access ---------------------------------------------------------------------

_ALIASES: dict[type, dict[str, str]] = {}
_SNAKE_RE = re.compile(r"(?<=[a-z0-9])([A-Z])")
_SCALARS = (str, bytes, bytearray, int, float, list, tuple, type(None))


def _alias_table(cls: type) -> dict[str, str]:
    """Wire name -> attribute name of a pydantic model class (empty for other classes)."""
    table: dict[str, str] = {}
    fields = getattr(cls, "model_fields", None)
    if isinstance(fields, Mapping):
        for name, info in fields.items():
            table[name] = name
            for alias_attr in ("alias", "validation_alias", "serialization_alias"):
                alias = getattr(info, alias_attr, None)
                if isinstance(alias, str):
                    table[alias] = name
    if len(_ALIASES) < 1000:
        _ALIASES[cls] = table
    return table


def field(obj: Any, key: str) -> Any:
    """``obj[key]`` of a mapping, or the attribute behind wire name ``key`` of a model.

    Pydantic models are read by alias (``clientGroupID``) or by field name; other objects
    by ``key`` and then its snake_case form. Returns ``MISSING`` when there is no such field.
    """
    if type(obj) is dict:
        return obj.get(key, MISSING)
    if isinstance(obj, Mapping):
        return obj.get(key, MISSING)
    if isinstance(obj, _SCALARS):
        return MISSING
    cls = type(obj)
    table = _ALIASES.get(cls)
    if table is None:
        table = _alias_table(cls)
    name = table.get(key)
    if name is not None:
        return getattr(obj, name, MISSING)
    value = getattr(obj, key, MISSING)
    if value is MISSING:
        snake = snake_case(key)
        if snake != key:
            value = getattr(obj, snake, MISSING)
    if callable(value):  # a method, not a field
        return MISSING
    return value


def snake_case(key: str) -> str:
    """``lastPulledAt`` -> ``last_pulled_at``."""
    return _SNAKE_RE.sub(r"_\1", key).lower()


def is_mapping(obj: Any) -> bool:
    """Whether ``obj`` is a JSON object: a mapping or a model with fields."""
    if type(obj) is dict or isinstance(obj, Mapping):
        return True
    if isinstance(obj, _SCALARS):
        return False
    return isinstance(getattr(type(obj), "model_fields", None), Mapping)


def seq(obj: Any, what: str) -> list[Any] | tuple[Any, ...]:
    """``obj`` as a JSON array (a list, a tuple or a pydantic ``RootModel`` of one)."""
    if type(obj) is list or isinstance(obj, (list, tuple)):
        return obj
    if not isinstance(obj, _SCALARS) and not isinstance(obj, Mapping):
        fields = getattr(type(obj), "model_fields", None)
        if isinstance(fields, Mapping) and "root" in fields:
            return seq(obj.root, what)
    raise Malformed(f"{what} is not an array but {type(obj).__name__}")


def entries(obj: Any, what: str) -> Iterable[tuple[Any, Any]]:
    """``(key, value)`` pairs of a JSON object: a mapping, or what a model serialises to
    (``model_dump(by_alias=True)``, as FastAPI answers with it): every field, set or left
    at its default (a default table filled in afterwards is on the wire), by its
    serialization alias, but not one marked ``exclude=True``; computed fields; extras."""
    if type(obj) is dict or isinstance(obj, Mapping):
        return obj.items()
    if not isinstance(obj, _SCALARS):
        cls = type(obj)
        fields = getattr(cls, "model_fields", None)
        if isinstance(fields, Mapping):
            if "root" in fields:
                return entries(obj.root, what)
            pairs = []
            for name, info in fields.items():
                if getattr(info, "exclude", None) is not True:
                    pairs.append((_wire_name(name, info), getattr(obj, name)))
            computed = getattr(cls, "model_computed_fields", None)
            if isinstance(computed, Mapping):
                for name, info in computed.items():
                    pairs.append((_wire_name(name, info), getattr(obj, name)))
            extra = getattr(obj, "model_extra", None)
            if extra:
                pairs.extend(extra.items())
            return pairs
    raise Malformed(f"{what} is not an object but {type(obj).__name__}")


def _wire_name(name: str, info: Any) -> str:
    """A model field's key in its serialised JSON (by alias, as FastAPI writes it)."""
    for alias_attr in ("serialization_alias", "alias"):
        alias = getattr(info, alias_attr, None)
        if isinstance(alias, str):
            return alias
    return name


def count(obj: Any, what: str) -> int:
    """Length of a JSON array; a missing or null array counts 0."""
    if type(obj) is list:
        return len(obj)
    if obj is MISSING or obj is None:
        return 0
    return len(seq(obj, what))


def name(value: Any, what: str) -> str:
    """A non-empty string (an entity, a table, a mutator name)."""
    if type(value) is str and value:
        return value
    if isinstance(value, str) and value:
        return str(value)
    raise Malformed(f"{what} is not a non-empty string: {type(value).__name__}")


def token(value: Any, known: frozenset[str]) -> str:
    """An error string as exported: one of the protocol's tokens (``known``), else ``_other``.
    A server's error text can carry anything (a database message quoting a user's email)."""
    return value if type(value) is str and value in known else OTHER


def integer(value: Any) -> int | None:
    """An int (not a bool) or None."""
    return value if type(value) is int else None


def to_plain(obj: Any) -> Any:
    """A model as a plain dict by alias (only where a comparison needs it)."""
    dump = getattr(obj, "model_dump", None)
    if callable(dump) and not isinstance(obj, Mapping):
        return dump(by_alias=True)
    return obj


# --- callbacks ------------------------------------------------------------------------


def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a user callback; its exception becomes ``CallbackFailed``."""
    try:
        return fn(*args)
    except Exception as error:
        raise CallbackFailed(error) from error


def check_entity_name(value: Any, what: str) -> str | None:
    """A callback's entity answer: None or a non-empty string."""
    if value is None or (isinstance(value, str) and value):
        return value
    raise CallbackFailed(
        TypeError(f"{what} must return a non-empty string or None, got {describe(value)}")
    )


def check_change(value: Any, what: str) -> str | None:
    """A callback's change answer: None, created, updated or deleted."""
    if value is None or (type(value) is str and value in CHANGES):
        return value
    raise CallbackFailed(
        ValueError(
            f"{what} must return 'created', 'updated', 'deleted' or None, got {describe(value)}"
        )
    )


# --- the tally and the guard ------------------------------------------------------------


class Tally:
    """Everything one payload says, gathered before anything is recorded."""

    __slots__ = ("attributes", "batch", "conflicts", "duplicate", "error", "items")

    def __init__(self) -> None:
        self.batch: int | None = None
        self.items: dict[tuple[str | None, str | None], int] = {}
        self.conflicts: dict[tuple[str | None, str | None], int] = {}
        self.duplicate = False
        self.attributes: dict[str, Any] | None = None
        self.error: str | None = None

    def item(self, entity: str | None, change: str | None, n: int = 1) -> None:
        """Count ``n`` items of ``entity`` and ``change``."""
        key = (entity, change)
        items = self.items
        items[key] = items.get(key, 0) + n

    def conflict(self, entity: str | None, resolution: str | None = None, n: int = 1) -> None:
        """Count ``n`` conflicts of ``entity``."""
        key = (entity, resolution)
        conflicts = self.conflicts
        conflicts[key] = conflicts.get(key, 0) + n

    def attribute(self, key: str, value: Any) -> None:
        """Set a span attribute (only for the unusual: duplicates, rejections, turbo)."""
        if self.attributes is None:
            self.attributes = {}
        self.attributes[key] = value

    def refuse(self, attribute: str, kind: str) -> None:
        """The server refused the whole request in a 2xx answer (a push-level error): the
        outcome is ``error``, with ``kind`` (a protocol token from ``token``, or ``_other``)
        as ``error.type`` (``_OTHER``) and as the span attribute ``attribute``."""
        self.attribute(attribute, kind)
        self.error = "_OTHER" if kind == OTHER else kind

    def commit(self, op: SyncOperation, replayed: bool = False) -> None:
        """Record the tally on ``op``; ``replayed``: the answer was replayed from an
        idempotency store (nothing applied again), so only its outcome and attributes."""
        if replayed:
            self.batch, self.duplicate = None, False
            self.items.clear()
            self.conflicts.clear()
        rt = op.runtime
        if rt is not None and any(e is not None for e, _ in (*self.items, *self.conflicts)):
            rt.names_from_requests("a sync payload")
        if self.batch is not None:
            op.set_batch_size(self.batch)
        for (entity, change), n in self.items.items():
            if n:
                op.record_items(n, entity=entity, change=change)
        for (entity, resolution), n in self.conflicts.items():
            op.record_conflict(entity=entity, count=n, resolution=resolution)
        if self.duplicate:
            op.record_idempotency_hit()
        if self.attributes:
            for key, value in self.attributes.items():
                op.set_attribute(key, value)
        if self.error is not None:
            op.set_error(self.error)


class ProtocolAdapter:
    """Base of the shipped adapters: ``on_request`` / ``on_response`` never raise into the
    handler. A malformed payload is counted as ``unparseable_payload``, a failing callback
    as ``adapter_callback_failed`` (``syncperf.dropped``); strict mode raises instead.

    Subclasses implement ``_request(op, payload)`` and ``_response(op, payload)`` returning a
    ``Tally`` (or None for nothing to record) and raising ``Malformed`` on a bad shape.
    """

    __slots__ = ()
    protocol = "adapter"
    """Names the adapter in drop messages, e.g. ``replicache push``."""
    reads_request = False
    """Whether ``on_request`` reads anything (a pull adapter reads only the response, so a
    decorated GET handler needs no ``request=`` parameter for it)."""
    query: tuple[str, ...] = ()
    """Query parameters ``on_query`` reads (e.g. WatermelonDB's ``last_pulled_at``): the
    middleware reads them from the URL, the decorator from the handler's parameters of the
    same names."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "reads_request" not in cls.__dict__:  # unless the class decides it per instance
            cls.reads_request = cls._request is not ProtocolAdapter._request

    def on_request(self, op: SyncOperation, request: Any) -> None:
        """Read the parsed request into ``op`` (batch size, items, duplicates)."""
        try:
            tally = self._request(op, request)
        except CallbackFailed as failed:
            _failed(op, failed.error)
            return
        except Exception as error:
            _unparseable(op, self.protocol + " request", error)
            return
        if tally is not None:
            _commit(op, tally)

    def on_response(self, op: SyncOperation, response: Any) -> None:
        """Read the handler's return value into ``op`` (conflicts, pulled items)."""
        try:
            tally = self._response(op, response)
        except CallbackFailed as failed:
            _failed(op, failed.error)
            return
        except Exception as error:
            _unparseable(op, self.protocol + " response", error)
            return
        if tally is not None:
            _commit(op, tally)

    def on_query(self, op: SyncOperation, params: Mapping[str, Any]) -> None:
        """Read the request's query parameters named in ``query`` (strings from a URL, or
        the values a framework parsed them into); absent ones are missing or None."""
        try:
            self._query(op, params)
        except Exception as error:
            _unparseable(op, self.protocol + " query", error)

    def _query(self, op: SyncOperation, params: Mapping[str, Any]) -> None:
        return None

    def _request(self, op: SyncOperation, payload: Any) -> Tally | None:
        return None

    def _response(self, op: SyncOperation, payload: Any) -> Tally | None:
        return None

    def __repr__(self) -> str:
        return f"<syncperf adapter {self.protocol}>"


def _commit(op: SyncOperation, tally: Tally) -> None:
    """Commit ``tally``, or add it to the operation's held tallies (``HELD``)."""
    scratch = op.scratch
    held = None if scratch is None else scratch.get(HELD)
    if held is None:
        tally.commit(op)
    else:
        held.append(tally)


def _unparseable(op: SyncOperation, what: str, error: Exception) -> None:
    rt = op.runtime
    if rt is None:  # the no-op operation
        return
    detail = f"{what}: {error}" if isinstance(error, Malformed) else f"{what}: {raised_at(error)}"
    rt.reject("unparseable_payload", detail[:300])


def _failed(op: SyncOperation, error: BaseException) -> None:
    rt = op.runtime
    if rt is not None:
        rt.internal_error("adapter_callback_failed", error)


def stash(op: SyncOperation, key: str, value: Any) -> None:
    """Keep per-request state for ``on_response`` on the operation."""
    scratch = op.scratch
    if scratch is None:
        scratch = op.scratch = {}
    scratch[key] = value


def defer(op: SyncOperation, key: str, tally: Tally) -> Tally:
    """Keep all of ``tally`` but its batch size for ``on_response`` (``unstash``): a push's
    items count once its answer says the server took them (not when it refused the push, or
    the handler raised). Returns what the request records now: the batch size."""
    now = Tally()
    now.batch, tally.batch = tally.batch, None
    stash(op, key, tally)
    return now


def unstash(op: SyncOperation, key: str) -> Any:
    """Take back what ``stash`` kept (None when the request was not seen)."""
    scratch = op.scratch
    if scratch is None:
        return None
    return scratch.pop(key, None)
