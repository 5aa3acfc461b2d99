"""The one gate every value passes before it becomes telemetry.

Counts, sizes and names reach syncperf from handlers, extractors, adapters (client payloads),
URL paths and SQL. Whatever they are, what leaves this module is something every exporter
encodes exactly and every backend accepts:

- a count is an ``int`` with ``0 <= n < 2**53`` (exact in a double, so in OTLP, Prometheus
  and every JSON backend alike);
- a name (a metric attribute value: entity, resolution, error type) is a plain ``str`` of
  1 to ``MAX_NAME`` printable characters: no control characters, no lone surrogates (which
  cannot be encoded as UTF-8 and would break the Prometheus exposition for good);
- a span attribute is what the OpenTelemetry SDK accepts, made encodable: strings valid UTF-8
  and at most ``MAX_TEXT`` characters, ints within int64.

Nothing here calls a method of a user object (``__repr__``, ``__hash__``, ``__eq__``,
``__len__``, ``__str__``) except ``str.__str__`` of a ``str`` subclass, so a hostile object can
be rejected but cannot raise through. ``describe()`` tells what a rejected value was by type
and size only: log lines never quote content.
"""

from __future__ import annotations

import math
import re
import traceback
from collections.abc import Callable
from itertools import islice
from types import TracebackType
from typing import Any

from syncperf.exceptions import ConfigError

__all__ = [
    "MAX_COUNT",
    "MAX_FRAMES",
    "MAX_NAME",
    "MAX_TEXT",
    "OPERATION_RULE",
    "REJECT",
    "NotQuoted",
    "attribute",
    "check_entity",
    "check_operation",
    "describe",
    "error_type",
    "exception_event",
    "full_stack_trace",
    "is_operation",
    "is_count",
    "made_name",
    "name",
    "operation_name",
    "raised_at",
    "stack_trace",
]

MAX_COUNT = 2**53
"""Counts and sizes are ints in ``[0, MAX_COUNT)``."""
MAX_NAME = 128
"""Characters in a name that becomes a metric attribute value."""
MAX_TEXT = 1024
"""Characters kept of a string span attribute (longer ones are truncated)."""
MAX_SEQUENCE = 128
"""Elements kept of a sequence span attribute."""
MAX_FRAMES = 32
"""Frames formatted of a stack trace (the outermost; see ``_redact``): an exception instance
raised again and again keeps every raise's frames, so its traceback has no bound."""
MAX_WALK = 1000
"""Traceback entries ``raised_at`` walks to find the innermost frame (Python's default
recursion limit: one raise's own traceback is about that long at most)."""
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_CUT = (
    f"  [... more frames not shown: syncperf keeps the outermost {MAX_FRAMES} frames of a "
    "stack trace]\n"
)
_INT64 = 2**63
REJECT: Any = object()
"""What ``attribute()`` returns for a value that cannot be a span attribute."""


def is_count(value: object) -> bool:
    """Whether ``value`` is an acceptable count (an ``int``, not a ``bool``, in range)."""
    return type(value) is int and 0 <= value < MAX_COUNT


def name(value: object) -> str | None:
    """``value`` as a metric attribute value, or None when it is not acceptable.

    A ``str`` subclass (a ``StrEnum`` member, say) is normalised to a plain ``str``.
    """
    if type(value) is not str:
        try:
            if not isinstance(value, str):
                return None
            value = str.__str__(value)
        except Exception:  # a hostile __class__
            return None
    if 0 < len(value) <= MAX_NAME and value.isprintable():
        return value
    return None


def made_name(value: str) -> str | None:
    """A name made of a configured string (a URL, a logging name), or None when none is left.

    Characters that are not printable (controls, lone surrogates) are dropped and a result
    longer than ``MAX_NAME`` is cut to end in ``...``.
    """
    value = name(value) or "".join(c for c in str.__str__(value) if c.isprintable())
    if len(value) > MAX_NAME:
        value = value[: MAX_NAME - 3] + "..."
    return value or None


OPERATION_RULE = "[a-z][a-z0-9_]{0,31}"
"""What an operation name matches, as error messages state it."""
_OPERATION_RE = re.compile(OPERATION_RULE)
_valid_operations: set[str] = {"pull", "push"}
MAX_OPERATIONS = 64
"""Distinct operation names accepted per process (they are metric attributes)."""


def operation_name(value: object) -> str | None:
    """``value`` as an operation name (a plain ``str``), or None when no operation can be
    named so; nothing is declared (``check_operation`` does that)."""
    found = name(value)
    return found if found is not None and _OPERATION_RE.fullmatch(found) else None


def check_operation(operation: object, option: str = "operation") -> str:
    """Validate an operation name once (decoration / construction time)."""
    if type(operation) is str and operation in _valid_operations:
        return operation
    found = name(operation)
    if found in _valid_operations:
        return found
    if found is None or not _OPERATION_RE.fullmatch(found):
        raise ConfigError(
            option, operation, f'"pull", "push" or another lowercase name matching {OPERATION_RULE}'
        )
    if len(_valid_operations) >= MAX_OPERATIONS:
        raise ConfigError(
            option, operation, f"one of at most {MAX_OPERATIONS} low-cardinality operation names"
        )
    _valid_operations.add(found)
    return found


def is_operation(value: str) -> bool:
    """Whether ``value`` is an operation the application declared (so client data may name it
    without adding one)."""
    return value in _valid_operations


def check_entity(entity: object, option: str = "entity") -> str | None:
    """Validate a static entity name (decoration / construction time)."""
    if entity is None:
        return None
    found = name(entity)
    if found is None:
        raise ConfigError(
            option, entity, f"None or a string of 1 to {MAX_NAME} printable characters"
        )
    return found


def text(value: str) -> str:
    """A string span attribute: at most ``MAX_TEXT`` characters, valid UTF-8."""
    if type(value) is not str:
        value = str.__str__(value)
    if len(value) > MAX_TEXT:
        value = value[:MAX_TEXT]
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def attribute(value: object) -> Any:
    """``value`` as a bounded span attribute value every OTLP encoder accepts, or ``REJECT``.

    The SDK's attribute values (str, bytes, bool, int, float, None, and sequences and
    mappings of them) pass, bounded: a str or bytes is cut at ``MAX_TEXT`` characters or
    bytes (lone surrogates replaced), an int beyond int64 is rejected, and sequences and
    mappings keep ``MAX_SEQUENCE`` elements in all, nested at most four deep (one value
    stays within a few hundred KB, whatever it was).
    """
    return _bounded(value, [MAX_SEQUENCE], 0)


def _bounded(value: object, left: list[int], depth: int) -> Any:
    """``attribute``; ``left``: elements the whole value may still keep."""
    kind = type(value)
    if kind is str:
        return text(value)  # type: ignore[arg-type]
    if kind is bool or kind is float or value is None:
        return value
    if kind is int:
        return value if -_INT64 <= value < _INT64 else REJECT  # type: ignore[operator]
    if kind is bytes:
        return value[:MAX_TEXT]  # type: ignore[index]
    if depth >= 4:
        return REJECT
    try:
        if isinstance(value, str):
            return text(value)
        if isinstance(value, (list, tuple)):
            items = []
            for item in islice(value, max(left[0], 0)):
                left[0] -= 1
                items.append(_bounded(item, left, depth + 1))
            return REJECT if any(item is REJECT for item in items) else tuple(items)
        if isinstance(value, dict):
            pairs = {}
            for key, item in islice(dict.items(value), max(left[0], 0)):
                left[0] -= 1
                pairs[text(key)] = _bounded(item, left, depth + 1)
            return REJECT if any(item is REJECT for item in pairs.values()) else pairs
    except Exception:  # a hostile subclass, a non-string key
        return REJECT
    return REJECT


def error_type(exc: BaseException) -> str:
    """``error.type`` of an exception: its fully qualified class name (builtins unqualified)."""
    cls = type(exc)
    try:
        found = _error_names.get(cls)
        if found is None:
            found = _class_name(cls)
            if len(_error_names) < 1000:
                _error_names[cls] = found
        return found
    except Exception:  # an unhashable class (its metaclass defines __eq__), a raising __hash__
        return _class_name(cls)


def _class_name(cls: type) -> str:
    try:
        module, qualname = cls.__module__, cls.__qualname__
        full = qualname if module == "builtins" else f"{module}.{qualname}"
        return name(full[-MAX_NAME:]) or "_OTHER"
    except Exception:  # a class with a hostile __module__ or __qualname__
        return "_OTHER"


_error_names: dict[type, str] = {}


def describe(value: object) -> str:
    """What a rejected value was, by type and size only (never its content)."""
    try:
        kind = type(value)
        if kind is bool or value is None:
            return repr(value)
        if kind is int:
            assert isinstance(value, int)
            return f"an int of {value.bit_length()} bits" if value >= 0 else "a negative int"
        if kind is float:
            assert isinstance(value, float)
            return "a float" if math.isfinite(value) else "a non-finite float"
        if kind in (str, bytes, bytearray, list, tuple, dict, set, frozenset):
            return f"a {kind.__name__} of length {len(value)}"  # type: ignore[arg-type]
        return "an object of type " + _type_name(kind)
    except Exception:
        return "an object"


class NotQuoted(str):
    """Shown in a ``ConfigError`` instead of a value that may be a secret (a variable's, an
    unknown option's): what it was, by ``describe()``."""

    def __repr__(self) -> str:
        return f"<{self}, not quoted>"


def not_quoted(value: object) -> NotQuoted:
    """``value`` as a ``ConfigError`` may show it: described, never quoted."""
    return NotQuoted(describe(value))


def raised_at(exc: BaseException) -> str:
    """An exception's type and the innermost frame that raised it, never its message; the
    type alone if that frame is more than ``MAX_WALK`` entries down its traceback (an instance
    raised over and over: each raise adds its frames, and the walk must stay bounded)."""
    try:
        where = ""
        tb = exc.__traceback__
        for _ in range(MAX_WALK):
            if tb is None or tb.tb_next is None:
                break
            tb = tb.tb_next
        if tb is not None and tb.tb_next is None:
            code = tb.tb_frame.f_code
            where = f" at {code.co_filename}:{tb.tb_lineno} in {code.co_name}"
        cls = type(exc)
        return f"{cls.__module__}.{cls.__qualname__}{where}"
    except Exception:
        return "an exception"


def stack_trace(exc: BaseException, describe: Callable[[BaseException], str]) -> str:
    """``traceback.format_exception`` of ``exc``, each exception of its chain (at most 16)
    shown by ``describe``, at most ``MAX_FRAMES`` frames in all: the outermost of ``exc``
    first, then of its causes, a cut traceback saying so. Never more: an instance raised
    again and again keeps the frames of every raise, its traceback growing without bound."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    note = ""
    while current is not None and id(current) not in seen and len(chain) < 16:
        seen.add(id(current))
        chain.append((current, note))
        if current.__cause__ is not None:
            current, note = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, note = current.__context__, _CONTEXT
        else:
            current = None
    budget = MAX_FRAMES
    parts: list[list[str]] = []
    for error, after in chain:
        lines: list[str] = []
        tb = error.__traceback__
        if tb is not None:
            lines.append("Traceback (most recent call last):\n")
            frames = traceback.extract_tb(tb, limit=budget)
            budget -= len(frames)
            lines.extend(frames.format())
            if _longer(tb, len(frames)):
                lines.append(_CUT)
        lines.append(describe(error))
        lines.append(after)
        parts.append(lines)
    return "".join(line for lines in reversed(parts) for line in lines)


def exception_event(exc: BaseException, escaped: bool = False) -> dict[str, str]:
    """The OpenTelemetry SDK's ``exception`` event attributes of ``exc`` (message and every
    message of its chain included), its stack trace cut to ``MAX_FRAMES`` frames."""
    cls = type(exc)
    module = cls.__module__
    return {
        "exception.type": cls.__qualname__
        if module in (None, "builtins")
        else f"{module}.{cls.__qualname__}",
        "exception.message": str(exc),
        "exception.stacktrace": full_stack_trace(exc),
        "exception.escaped": str(escaped),
    }


def full_stack_trace(exc: BaseException) -> str:
    """``stack_trace`` with each exception as ``traceback.format_exception`` shows it."""
    return stack_trace(exc, lambda e: "".join(traceback.format_exception_only(type(e), e)))


def _longer(tb: TracebackType | None, entries: int) -> bool:
    """Whether the traceback ``tb`` has more than ``entries`` entries (walks that many)."""
    for _ in range(entries):
        if tb is None:
            return False
        tb = tb.tb_next
    return tb is not None


def _type_name(kind: type) -> str:
    qualname = type.__dict__["__qualname__"].__get__(kind)
    return str.__str__(qualname)[:MAX_NAME] if isinstance(qualname, str) else "?"
