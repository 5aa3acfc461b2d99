"""instrument_sync on def and async def handlers."""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import syncperf
from syncperf.exceptions import MeasurementError
from syncperf.testing import Capture, capture


def duration_count(cap: Capture, **attrs: str) -> int:
    return sum(p.count for p in cap.points("sync.operation.duration", attrs))


def test_sync_function_is_measured_once_per_call(syncperf_capture: Capture) -> None:
    @syncperf.instrument_sync("push", entity="todo")
    def push() -> str:
        return "ok"

    assert push() == "ok"
    assert push() == "ok"
    assert (
        duration_count(
            syncperf_capture,
            **{"sync.operation": "push", "sync.entity": "todo", "sync.outcome": "success"},
        )
        == 2
    )


async def test_async_function_is_measured(syncperf_capture: Capture) -> None:
    @syncperf.instrument_sync("pull", entity="note")
    async def pull() -> int:
        return 7

    assert await pull() == 7
    assert duration_count(syncperf_capture, **{"sync.operation": "pull"}) == 1
    (span,) = syncperf_capture.spans()
    assert span.name == "sync pull"


def test_decorator_preserves_name_doc_and_signature() -> None:
    def handler(table: str, body: dict[str, int], *, dry_run: bool = False) -> int:
        """Docstring."""
        return 1

    wrapped = syncperf.instrument_sync("push")(handler)
    assert wrapped.__name__ == "handler"
    assert wrapped.__doc__ == "Docstring."
    assert inspect.signature(wrapped) == inspect.signature(handler)
    assert wrapped.__wrapped__ is handler  # type: ignore[attr-defined]


def test_async_decorator_keeps_coroutine_function_identity() -> None:
    async def handler() -> None:
        return None

    assert inspect.iscoroutinefunction(syncperf.instrument_sync("pull")(handler))


def test_extractors_read_arguments_by_name_and_the_result(syncperf_capture: Capture) -> None:
    @syncperf.instrument_sync(
        "push",
        entity=lambda table: table,
        batch_size=lambda body: len(body["changes"]),
        items=lambda result: {"todo": result["applied"]},
        conflicts=lambda result: result["conflicts"],
        idempotency_hit=lambda replayed: replayed,
    )
    def push(table: str, body: dict[str, list[int]], replayed: bool = False) -> dict[str, int]:
        return {"applied": 2, "conflicts": 1}

    push("todo", body={"changes": [1, 2, 3]}, replayed=True)
    push("todo", {"changes": [1]})
    cap = syncperf_capture
    assert [p.count for p in cap.points("sync.batch.size", {"sync.entity": "todo"})] == [2]
    assert cap.total("sync.items", {"sync.entity": "todo"}) == 4
    assert cap.total("sync.conflicts", {"sync.entity": "todo"}) == 2
    assert cap.total("sync.idempotency.hits", {"sync.entity": "todo"}) == 1
    assert duration_count(cap, **{"sync.outcome": "conflict"}) == 2


def test_extractor_naming_an_unknown_parameter_is_a_config_error() -> None:
    with pytest.raises(syncperf.ConfigError, match="batch_size") as info:
        syncperf.instrument_sync("push", batch_size=lambda payload: 1)(lambda body: None)
    assert "'payload' is neither" in str(info.value)


@pytest.mark.parametrize(
    "extractor",
    [
        lambda *, body: len(body),
        lambda *body: len(body),
        lambda **body: len(body),
        lambda body, *, result: len(body),
        lambda body, **result: len(body),
    ],
    ids=["keyword-only", "*args", "**kwargs", "keyword-only result", "**result"],
)
def test_an_extractor_with_other_than_positional_parameters_is_a_config_error(
    extractor: Any,
) -> None:
    # it would be called positionally, and fail on every call
    with pytest.raises(syncperf.ConfigError, match="batch_size") as info:
        syncperf.instrument_sync("push", batch_size=extractor)(lambda body, result: None)
    assert "positional parameters" in str(info.value)


class _Endpoint:
    async def get(self) -> None:
        return None


@pytest.mark.parametrize(
    "target",
    [staticmethod(lambda body: None), classmethod(lambda cls, body: None), _Endpoint],
    ids=["staticmethod", "classmethod", "class"],
)
def test_a_staticmethod_classmethod_or_class_is_a_config_error(target: Any) -> None:
    # decorating them would silently break them (a staticmethod becomes an instance method,
    # an endpoint class stops being one)
    with pytest.raises(syncperf.ConfigError, match="instrument_sync target") as info:
        syncperf.instrument_sync("push")(target)
    assert "decorate the function" in str(info.value)


@pytest.mark.parametrize("operation", ["", "Push", "push now", "x" * 40, 3, None])
def test_invalid_operation_names_are_rejected_at_decoration(operation: object) -> None:
    with pytest.raises(syncperf.ConfigError, match="operation="):
        syncperf.instrument_sync(operation)  # type: ignore[arg-type]


def test_custom_low_cardinality_operation_names_are_allowed(syncperf_capture: Capture) -> None:
    @syncperf.instrument_sync("bootstrap")
    def bootstrap() -> None:
        return None

    bootstrap()
    assert duration_count(syncperf_capture, **{"sync.operation": "bootstrap"}) == 1


def test_generator_functions_are_rejected_with_a_clear_message() -> None:
    def stream():  # type: ignore[no-untyped-def]
        yield 1

    with pytest.raises(syncperf.ConfigError, match="not a generator"):
        syncperf.instrument_sync("pull")(stream)


def _logged(fn: Any) -> Any:
    """An ordinary pass-through decorator."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return call


class _Stream:
    def __call__(self) -> Iterator[int]:
        yield 1


class _AsyncStream:
    async def __call__(self) -> AsyncIterator[int]:
        yield 1


async def _rows() -> AsyncIterator[int]:
    yield 1


def _lines() -> Iterator[int]:
    yield 1


@pytest.mark.parametrize(
    "stream",
    [_Stream(), _AsyncStream(), functools.partial(_lines), functools.partial(_rows)],
    ids=["__call__", "async __call__", "partial", "async partial"],
)
def test_a_generator_behind_a_partial_or_a_call_method_is_rejected_too(stream: Any) -> None:
    with pytest.raises(syncperf.ConfigError, match="not a generator"):
        syncperf.instrument_sync("pull")(stream)


def test_a_wrapper_that_consumes_a_generator_is_a_handler_like_any_other() -> None:
    """Behind ``functools.wraps`` the generator may be consumed (a ``@listify``): decoration
    cannot tell, so it accepts the wrapper, and its value is an ordinary result."""

    def listify(fn: Callable[[], Iterator[int]]) -> Callable[[], list[int]]:
        @functools.wraps(fn)
        def call() -> list[int]:
            return list(fn())

        return call

    with capture() as cap:
        assert syncperf.instrument_sync("pull")(listify(_lines))() == [1]
        (point,) = cap.points("sync.operation.duration")
        assert point.attributes["sync.outcome"] == "success"


@pytest.mark.parametrize(
    "handler",
    [lambda: _lines(), _logged(_lines)],
    ids=["lambda", "wrapped generator"],
)
@pytest.mark.parametrize("lenient", [False, True])
def test_a_handler_returning_a_generator_ends_its_operation_as_an_error(
    lenient: bool, handler: Any
) -> None:
    """What decoration cannot see (a wrapper that hides its generator): the operation, over
    when the stream has not even started, ends as an error, and the misuse is counted."""
    with capture(strict=not lenient) as cap:
        measured = syncperf.instrument_sync("pull")(handler)
        if lenient:
            assert list(measured()) == [1]
        else:
            with pytest.raises(MeasurementError, match="unsupported_stream"):
                measured()
        (point,) = cap.points("sync.operation.duration")
        assert point.attributes["error.type"] == "unsupported_stream"
        assert cap.total("syncperf.dropped", {"syncperf.reason": "unsupported_stream"}) == lenient
        assert cap.total("sync.operations.active") == 0
        assert not syncperf.current_operation().recording


def test_user_exception_propagates_as_the_same_object_with_its_traceback(
    syncperf_capture: Capture,
) -> None:
    error = ValueError("bad change")

    @syncperf.instrument_sync("push")
    def push() -> None:
        raise error

    with pytest.raises(ValueError, match="bad change") as info:
        push()
    assert info.value is error
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-1] == "push"
    assert duration_count(syncperf_capture, **{"error.type": "ValueError"}) == 1


async def test_async_user_exception_propagates_unchanged(syncperf_capture: Capture) -> None:
    class SyncRejected(Exception):
        pass

    @syncperf.instrument_sync("push")
    async def push() -> None:
        raise SyncRejected

    with pytest.raises(SyncRejected):
        await push()
    (point,) = syncperf_capture.points("sync.operation.duration", {"sync.outcome": "error"})
    assert point.attributes["error.type"] == (
        f"{__name__}.test_async_user_exception_propagates_unchanged.<locals>.SyncRejected"
    )


def test_a_failing_extractor_never_breaks_the_handler_in_lenient_mode() -> None:
    from syncperf.testing import capture

    with capture(strict=False) as cap:

        @syncperf.instrument_sync("push", batch_size=lambda body: body["missing"])
        def push(body: dict[str, int]) -> str:
            return "applied"

        assert push({}) == "applied"
        assert cap.total("syncperf.dropped", {"syncperf.reason": "extractor_failed"}) == 1
        assert duration_count(cap, **{"sync.outcome": "success"}) == 1


def test_a_failing_extractor_raises_a_measurement_error_from_its_own_in_strict_mode(
    syncperf_capture: Capture,
) -> None:
    """Not the extractor's own exception: a test could take that for the handler's."""

    @syncperf.instrument_sync("push", batch_size=lambda body: body["missing"])
    def push(body: dict[str, int]) -> str:
        return "applied"

    with pytest.raises(MeasurementError, match="extractor_failed") as raised:
        push({})
    assert isinstance(raised.value.__cause__, KeyError)
    assert "missing" not in str(raised.value)  # the type and where, never the message
    assert syncperf_capture.total("sync.operations.active") == 0


@pytest.mark.parametrize("source", ["argument", "result", "arguments"])
async def test_every_kind_of_extractor_raises_a_measurement_error_in_strict_mode(
    syncperf_capture: Capture, source: str
) -> None:
    def broken(*values: Any) -> int:
        raise KeyError("missing")

    extractors: dict[str, Any] = {
        "argument": {"batch_size": lambda body: broken(body)},
        "result": {"batch_size": lambda result: broken(result)},
        "arguments": {"batch_size": lambda body, client: broken(body, client)},
    }

    @syncperf.instrument_sync("push", **extractors[source])
    async def push(body: dict[str, int], client: str = "c") -> str:
        return "applied"

    with pytest.raises(MeasurementError) as raised:
        await push({})
    assert isinstance(raised.value.__cause__, KeyError)


def test_an_adapter_whose_method_is_an_unhashable_callable_is_fed(
    syncperf_capture: Capture,
) -> None:
    """Any object with the two methods is an adapter: its ``on_request`` may be a callable
    instance that cannot be hashed (a dataclass with ``__call__``)."""

    @dataclasses.dataclass
    class Reader:
        field: str

        def __call__(self, op: Any, request: Any) -> None:
            op.set_batch_size(len(request[self.field]))

    class Adapter:
        on_request = Reader("changes")

        def on_response(self, op: Any, response: Any) -> None:
            pass

    @syncperf.instrument_sync("push", adapter=Adapter())
    def push(body: dict[str, Any]) -> dict[str, Any]:
        return {}

    push({"changes": [1, 2, 3]})
    (point,) = syncperf_capture.points("sync.batch.size")
    assert point.sum == 3


@pytest.mark.parametrize("option", ["entity", "batch_size", "conflicts"])
def test_an_interrupt_in_an_extractor_reaches_the_caller_and_ends_the_operation(
    syncperf_capture: Capture, option: str
) -> None:
    """A ``KeyboardInterrupt`` is no extractor failure to count: it goes on up, unchanged."""

    def interrupt(body: Any = None, result: Any = None) -> Any:
        raise KeyboardInterrupt

    extractor = (lambda result: interrupt()) if option == "conflicts" else lambda body: interrupt()

    @syncperf.instrument_sync("push", **{option: extractor})
    def push(body: dict[str, int]) -> str:
        return "applied"

    with pytest.raises(KeyboardInterrupt):
        push({})
    assert syncperf_capture.total("syncperf.dropped") == 0
    assert syncperf_capture.total("sync.operations.active") == 0
    assert duration_count(syncperf_capture, **{"sync.outcome": "error"}) == 1


def test_an_extractors_value_strict_mode_refuses_raises_its_own_measurement_error(
    syncperf_capture: Capture,
) -> None:
    @syncperf.instrument_sync("push", batch_size=lambda body: -1)
    def push(body: dict[str, int]) -> str:
        return "applied"

    with pytest.raises(MeasurementError, match="invalid_batch_size"):
        push({})


def test_disabled_syncperf_calls_straight_through() -> None:
    from syncperf.testing import capture

    with capture(enabled=False) as cap:

        @syncperf.instrument_sync("push")
        def push() -> int:
            return 1

        assert push() == 1
        assert cap.metrics() == []


@pytest.mark.parametrize("shape", ["wrapped coroutine function", "async __call__"])
async def test_a_handler_returning_an_awaitable_is_measured_until_it_completes(
    syncperf_capture: Capture, shape: str
) -> None:
    import asyncio

    async def handler() -> None:
        await asyncio.sleep(0.05)
        syncperf.current_operation().record_items(3)
        raise ValueError("failed after the await")

    if shape == "async __call__":

        class Handler:
            async def __call__(self) -> None:
                await handler()

        plain: Any = Handler()
    else:

        def plain() -> Any:  # a decorator that does not mark its wrapper as a coroutine
            return handler()

    measured = syncperf.instrument_sync("push", entity="todo")(plain)
    with pytest.raises(ValueError):
        await measured()
    cap = syncperf_capture
    (point,) = cap.points("sync.operation.duration")
    assert point.attributes["sync.outcome"] == "error"
    assert point.sum >= 0.05
    assert cap.total("sync.items") == 3
    assert cap.total("sync.operations.active") == 0


class _Entity(str, enum.Enum):
    TODO = "todo"


class _Operation(str, enum.Enum):
    PUSH = "push"


def test_str_subclass_operation_and_entity_count_as_their_plain_values(
    syncperf_capture: Capture,
) -> None:
    @syncperf.instrument_sync(_Operation.PUSH, entity=_Entity.TODO)
    def push() -> dict[str, int]:
        return {}

    push()
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert point.attributes == {
        "sync.operation": "push",
        "sync.entity": "todo",
        "sync.outcome": "success",
    }
    assert all(type(value) is str for value in point.attributes.values())


class _Rows:
    """A lazy result set whose ``len()`` hits a closed connection."""

    def __len__(self) -> int:
        raise RuntimeError("connection closed")


@pytest.mark.parametrize("value", [True, False, None], ids=repr)
def test_idempotency_hit_counts_true_only(syncperf_capture: Capture, value: Any) -> None:
    push = syncperf.instrument_sync("push", idempotency_hit=lambda result: result)(lambda v: v)
    push(value)
    assert syncperf_capture.total("sync.idempotency.hits") == (value is True)
    assert syncperf_capture.total("syncperf.dropped") == 0


@pytest.mark.parametrize("value", ["false", "", -1, 1, 0, float("nan"), _Rows()], ids=repr)
def test_an_idempotency_hit_that_is_not_a_bool_is_rejected(value: Any) -> None:
    from syncperf.testing import capture

    push = syncperf.instrument_sync("push", idempotency_hit=lambda result: result)(lambda v: v)
    with capture(strict=False) as cap:
        assert push(value) is value
        assert cap.total("sync.idempotency.hits") == 0
        assert cap.points("syncperf.dropped")[0].attributes == {
            "syncperf.reason": "invalid_idempotency_hit"
        }
    with capture(strict=True), pytest.raises(syncperf.MeasurementError):
        push(value)
