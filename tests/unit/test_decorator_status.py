"""The HTTP status a decorated handler (or a ``sync_operation()`` block) answers with decides
the outcome the same way whoever owns the operation: the decorator alone, an outer
``sync_operation()`` block, an outer decorated function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

import syncperf
from syncperf.testing import Capture


def _raise_409() -> Any:
    raise HTTPException(409)


def _raise_404_after_a_conflict() -> Any:
    syncperf.current_operation().record_conflict()
    raise HTTPException(404)


def _raise_503() -> Any:
    raise HTTPException(503)


def _return_503() -> Any:
    return JSONResponse({"error": "busy"}, status_code=503)


def _return_409() -> Any:
    return JSONResponse({"error": "changed"}, status_code=409)


ANSWERS: dict[str, tuple[Callable[[], Any], tuple[str, str | None]]] = {
    "raised 409": (_raise_409, ("conflict", None)),
    "raised 404 after a conflict": (_raise_404_after_a_conflict, ("conflict", None)),
    "raised 503": (_raise_503, ("error", "starlette.exceptions.HTTPException")),
    "returned 503": (_return_503, ("error", "503")),
    "returned 409": (_return_409, ("conflict", None)),
}


def _outcomes(cap: Capture) -> list[tuple[str, str | None]]:
    return [
        (p.attributes["sync.outcome"], p.attributes.get("error.type"))
        for p in cap.points("sync.operation.duration")
    ]


def _call(fn: Callable[[], Any], owner: str) -> None:
    try:
        if owner == "decorator":
            fn()
        elif owner == "sync_operation":
            with syncperf.sync_operation("push"):
                fn()
        else:
            syncperf.instrument_sync("push")(fn)()
    except HTTPException:
        pass


@pytest.mark.parametrize("answer", list(ANSWERS))
@pytest.mark.parametrize("owner", ["decorator", "sync_operation", "outer decorator"])
def test_the_status_decides_the_outcome_whoever_owns_the_operation(
    syncperf_capture: Capture, answer: str, owner: str
) -> None:
    handler, expected = ANSWERS[answer]
    _call(syncperf.instrument_sync("push")(handler), owner)
    assert _outcomes(syncperf_capture) == [expected]
    assert syncperf_capture.total("sync.conflicts") == (expected[0] == "conflict")


@pytest.mark.parametrize("answer", list(ANSWERS))
async def test_an_async_handler_joined_into_an_async_block(
    syncperf_capture: Capture, answer: str
) -> None:
    handler, expected = ANSWERS[answer]

    @syncperf.instrument_sync("push")
    async def push() -> Any:
        return handler()

    try:
        async with syncperf.sync_operation("push"):
            await push()
    except HTTPException:
        pass
    assert _outcomes(syncperf_capture) == [expected]


@pytest.mark.parametrize("answer", [a for a in ANSWERS if a.startswith("raised")])
def test_a_sync_operation_block_raising_an_http_exception(
    syncperf_capture: Capture, answer: str
) -> None:
    handler, expected = ANSWERS[answer]
    _call(handler, "sync_operation")
    assert _outcomes(syncperf_capture) == [expected]


class _Interrupting:
    """A response (or raised exception) whose status cannot be read: reading it raises."""

    def __init__(self, interrupt: type[BaseException]) -> None:
        self._interrupt = interrupt

    @property
    def status_code(self) -> int:
        raise self._interrupt()


class _InterruptingError(Exception):
    @property
    def status_code(self) -> int:
        raise KeyboardInterrupt()


def _ended_and_counted_after(cap: Capture, error_type: str) -> None:
    """The interrupted operation ended as an error, and a later one is its own."""
    assert not syncperf.current_operation().recording
    syncperf.instrument_sync("pull")(lambda: 1)()
    assert sorted(_outcomes(cap), key=str) == [("error", error_type), ("success", None)]
    assert cap.total("sync.operations.active") == 0


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_reading_the_status_ends_the_operation(
    syncperf_capture: Capture, interrupt: type[BaseException]
) -> None:
    answer = _Interrupting(interrupt)
    with pytest.raises(interrupt):
        syncperf.instrument_sync("push")(lambda: answer)()
    _ended_and_counted_after(syncperf_capture, interrupt.__name__)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
async def test_an_interrupt_reading_an_async_handlers_status_ends_the_operation(
    syncperf_capture: Capture, interrupt: type[BaseException]
) -> None:
    @syncperf.instrument_sync("push")
    async def push() -> Any:
        return _Interrupting(interrupt)

    with pytest.raises(interrupt):
        await push()
    _ended_and_counted_after(syncperf_capture, interrupt.__name__)


@pytest.mark.parametrize("owner", ["decorator", "sync_operation"])
def test_an_interrupt_reading_a_raised_status_ends_the_operation(
    syncperf_capture: Capture, owner: str
) -> None:
    def fail() -> Any:
        raise _InterruptingError()

    with pytest.raises(KeyboardInterrupt):
        if owner == "sync_operation":
            with syncperf.sync_operation("push"):
                fail()
        else:
            syncperf.instrument_sync("push")(fail)()
    # the handler's own error ends it
    _ended_and_counted_after(syncperf_capture, __name__ + "._InterruptingError")
