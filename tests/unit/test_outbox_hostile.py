"""Hostile objects through every public outbox entry point.

docs/security.md promises that syncperf calls no method of an object it is handed (only
``str.__str__`` of a ``str`` subclass, and a ``datetime``'s own ``replace()`` and
``timestamp()``, which read it through its ``tzinfo``'s ``utcoffset()``), so nothing such an
object does can raise into the application or leak through a log line. The spies below
record every other method called on them (and raise, quoting a secret); the tests check that
none is called, that nothing but ``MeasurementError`` (strict mode) escapes, and that the
secret appears in no log line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncperf.exceptions import MeasurementError
from syncperf.outbox import (
    Outbox,
    OutboxStats,
    PublishBatch,
    current_batch,
    current_traceparent,
    parse_traceparent,
)
from syncperf.testing import capture

SECRET = "sk_live_51OutboxHostileSecret"
CALLED: list[str] = []

_DUNDERS = {
    "__repr__", "__str__", "__format__", "__bytes__", "__hash__", "__eq__", "__ne__",
    "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__len__", "__iter__", "__reversed__",
    "__contains__", "__getitem__", "__index__", "__int__", "__float__", "__complex__",
    "__abs__", "__neg__", "__pos__", "__round__", "__trunc__", "__floor__", "__ceil__",
    "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
    "__mod__", "__rmod__", "__call__", "__enter__", "__exit__", "__getattr__", "__fspath__",
    "__copy__", "__deepcopy__", "__await__", "__aenter__", "__aexit__",
}  # fmt: skip


ARMED = [True]
"""Spies behave as their base while a test builds its values (a dict hashes its keys)."""


def _spied(base: type, name: str) -> Callable[..., Any]:
    def method(self: object, *args: Any, **kwargs: Any) -> Any:
        if not ARMED[0]:
            return getattr(base, name)(self, *args, **kwargs)
        CALLED.append(f"{type(self).__name__}.{name}")
        raise RuntimeError(f"{name}: password={SECRET}")

    return method


def spy(base: type, allowed: frozenset[str] = frozenset()) -> type:
    """A subclass of ``base`` whose every method and dunder but ``allowed`` is a spy."""
    names = _DUNDERS | {n for n in dir(base) if not n.startswith("_")}
    if base is object:
        names -= {"__eq__", "__ne__"}  # identity (``is``) needs no method
    spies = {n: _spied(base, n) for n in names - allowed}
    return type("Spy" + base.__name__.title(), (base,), spies)


SpyStr = spy(str)
SpyInt = spy(int)
SpyFloat = spy(float)
SpyObject = spy(object)
SpyList = spy(list)
SpyDict = spy(dict)
SpyTuple = spy(tuple)
SpyBytes = spy(bytes)
SpyError = spy(Exception)
SpyDatetime = spy(datetime, frozenset({"replace", "timestamp", "tzinfo", "utcoffset"}))


class SpyTz(spy(tzinfo)):  # type: ignore[misc]
    """A time zone: only ``utcoffset()`` (what ``timestamp()`` reads) is allowed."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


TRACEPARENT = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"


def hostile_values() -> list[Any]:
    """Made afresh inside each example: hypothesis only ever sees their indices."""
    return [
        SpyStr(TRACEPARENT),
        SpyStr(" " + TRACEPARENT + " "),
        SpyStr("orders"),
        SpyStr("TimeoutError"),
        SpyStr("x" * 10_000),
        SpyInt(3),
        SpyInt(1),
        SpyFloat(1.0e9),
        SpyFloat(math.nan),
        SpyObject(),
        SpyList([1]),
        SpyDict(a=1),
        SpyTuple((1, 2)),
        SpyBytes(b"x"),
        SpyError(),
        SpyDatetime(2024, 1, 1),
        SpyDatetime(2024, 1, 1, tzinfo=SpyTz()),
        datetime(2024, 1, 1, tzinfo=SpyTz()),
        SpyDatetime(9999, 12, 31),  # far in the future
    ]


N_VALUES = len(hostile_values())

Call = Callable[[Outbox, PublishBatch, Any], object]
REQUEST_TIME: list[Call] = [
    lambda outbox, batch, v: outbox.enqueue(v),
    lambda outbox, batch, v: outbox.enqueue(1, session=v),
    lambda outbox, batch, v: batch.published(v),
    lambda outbox, batch, v: batch.published(traceparent=v),
    lambda outbox, batch, v: batch.published(attempt=v),
    lambda outbox, batch, v: batch.failed(v),
    lambda outbox, batch, v: batch.failed("x", traceparent=v),
    lambda outbox, batch, v: batch.failed("x", attempt=v),
    lambda outbox, batch, v: batch.failed("x", dead_letter=v),
    lambda outbox, batch, v: batch.dead_lettered(v),
    lambda outbox, batch, v: parse_traceparent(v),
    lambda outbox, batch, v: current_batch().published(v, traceparent=v, attempt=v),
    lambda outbox, batch, v: current_traceparent(),
]


def _nested_publish(outbox: Outbox, batch: PublishBatch, v: Any) -> None:
    with outbox.publish(count=v) as inner:
        inner.published(traceparent=v)
        inner.failed(v, traceparent=v, dead_letter=v)


REQUEST_TIME.append(_nested_publish)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    calls=st.lists(
        st.tuples(st.integers(0, len(REQUEST_TIME) - 1), st.integers(0, N_VALUES - 1)),
        min_size=1,
        max_size=8,
    ),
    strict=st.booleans(),
)
def test_no_outbox_call_calls_a_method_of_a_hostile_value_or_raises_it(
    calls: list[tuple[int, int]], strict: bool
) -> None:
    CALLED.clear()
    values = hostile_values()
    escaped: list[str] = []
    with capture(strict=strict):
        outbox = Outbox("orders", destination="orders.events", system="kafka")
        with outbox.publish(count=len(calls)) as batch:
            for call, value in calls:
                try:
                    REQUEST_TIME[call](outbox, batch, values[value])
                except MeasurementError:
                    if not strict:
                        escaped.append(f"call {call}, value {value}: MeasurementError")
                except Exception as error:
                    escaped.append(f"call {call}, value {value}: {type(error).__name__}")
    assert (CALLED, escaped) == ([], [])


@pytest.mark.parametrize("value", range(N_VALUES))
def test_a_rejected_hostile_value_is_logged_by_type_never_by_content(
    value: int, caplog: pytest.LogCaptureFixture
) -> None:
    CALLED.clear()
    caplog.set_level(logging.DEBUG, logger="syncperf")
    hostile = hostile_values()[value]
    with capture(strict=False):
        outbox = Outbox("orders")
        for call in REQUEST_TIME:
            with outbox.publish() as batch:
                call(outbox, batch, hostile)
    assert CALLED == []
    assert SECRET not in caplog.text


@pytest.mark.parametrize("answer", range(7))
def test_stats_with_hostile_values_fail_the_probe_without_calling_them(
    answer: int, caplog: pytest.LogCaptureFixture
) -> None:
    CALLED.clear()
    ARMED[0] = False
    answers = [
        (SpyInt(3), 5.0),
        (3, SpyFloat(5.0)),
        (3, SpyInt(5)),
        OutboxStats(3, 5.0, {SpyStr("pending"): 3}, None),
        OutboxStats(3, 5.0, {"pending": SpyInt(3)}, None),
        OutboxStats(3, 5.0, None, SpyInt(3)),
        SpyObject(),
    ]
    ARMED[0] = True
    with capture() as cap:
        outbox = Outbox("orders", stats=lambda: answers[answer])
        try:
            cap.metrics()
            # a str subclass status is read as its plain value, and is valid
            assert cap.total("outbox.probe.failures") == (0 if answer == 3 else 1)
        finally:
            outbox.close()
    assert CALLED == []
    assert SECRET not in caplog.text


@pytest.mark.parametrize("option", ["name", "destination", "system"])
def test_a_str_subclass_given_at_construction_is_read_once_as_its_plain_value(
    option: str,
) -> None:
    """Names are kept as plain ``str``: later log lines, span names and series never call
    the subclass's methods."""
    CALLED.clear()
    kwargs: dict[str, Any] = {"name": "orders", option: SpyStr("orders")}
    with capture() as cap:
        outbox = Outbox(stats=lambda: (1, 1.0), **kwargs)
        outbox.enqueue()
        with outbox.publish() as batch:
            batch.failed("x")
        cap.metrics()
        outbox.close()
        assert {s.name for s in cap.spans()} == {"create orders", "send orders"}
    assert CALLED == []
