"""The compiled ``start`` (``speedups.start``, what ``begin`` calls: the ASGI middleware's
operations, ``sync_operation()`` blocks, joined decorators) against the Python one
(``_lifecycle._start_py``): for any start time, span kind, attributes, sampler and start log,
the same operation, span decision, in-flight count, current operation and log records, and
the same exception when a span processor, a sampler or the log raises."""

from __future__ import annotations

import inspect
import itertools
import logging
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

import syncperf
from syncperf import _accel, _lifecycle
from syncperf._series import series
from syncperf.testing import capture

pytestmark = pytest.mark.skipif(_accel.speedups is None, reason="the compiled path is not built")

SAMPLERS = [ALWAYS_ON, ParentBased(ALWAYS_OFF), TraceIdRatioBased(0.5)]
NOWS = st.sampled_from([0, 1, 5_000, 2**62, 2**63 - 1, 2**63, 2**70, -1, True])
KINDS = st.sampled_from([SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CLIENT])
ATTRIBUTES = st.sampled_from([None, {}, {"url.path": "/sync/push"}])


class Hostile(NonRecordingSpan):
    """A span whose context a sampler's decision fails on (its trace id a str)."""

    def __repr__(self) -> str:  # (NonRecordingSpan's formats the id as hex)
        return "Hostile()"


HOSTILE = Hostile(tuple.__new__(SpanContext, ("abc", 1, True, TraceFlags(1), None, True)))
CURRENT = st.sampled_from(  # the parent a caller read (None: read in start), or a hostile one
    [
        None,
        *(NonRecordingSpan(SpanContext(0xABC, 0x123, True, TraceFlags(f))) for f in (0, 1)),
        NonRecordingSpan(
            tuple.__new__(SpanContext, ("abc", 0x123, True, TraceFlags(1), None, True))
        ),
    ]
)


class Boom(Exception):
    pass


def _outcome(start: Callable[..., Any], rt: Any, args: tuple[Any, ...], seed: int) -> Any:
    """What ``start`` leaves, on a clock that ticks by 7 from 1,000 and ``random`` seeded."""
    ticks = itertools.count(1_000, 7)
    saved = _lifecycle._perf
    _lifecycle._perf = lambda: next(ticks)
    random.seed(seed)
    bound = args[1]
    before = len(bound.inflight)
    try:
        op = start(rt, *args[1:])
    except Exception as error:
        raised = ("raised", type(error), len(bound.inflight) - before)
        while (left_current := syncperf.current_operation()).recording:
            _lifecycle.end(left_current, None)  # (what a raising start left current)
        return raised
    finally:
        _lifecycle._perf = saved
    span = op._span
    left = (
        op._start_ns,
        op._own_ns,
        op._kind,
        op._entity,
        None if span is None else (span.name, span.kind, dict(span.attributes or {})),
        None if span is None else span.parent is not None,
        None if op._unsampled is None else tuple(op._unsampled.get_span_context())[2:],
        op._span_attrs,
        syncperf.current_operation() is op,
        len(bound.inflight) - before,
        getattr(op, "_log_started", False),
        random.random(),
    )
    _lifecycle.end(op, None)
    return left


@given(
    sampler=st.sampled_from(SAMPLERS),
    now=NOWS,
    kind=KINDS,
    attributes=ATTRIBUTES,
    logged=st.booleans(),
    strict=st.booleans(),
    current=CURRENT,
    arity=st.integers(2, 6),
    seed=st.integers(0, 2**32),
)
@example(  # a parent the decision fails on: counted once (the compiled start decides it)
    sampler=SAMPLERS[2],
    now=5_000,
    kind=SpanKind.SERVER,
    attributes=None,
    logged=False,
    strict=False,
    current=HOSTILE,
    arity=6,
    seed=1,
)
@settings(max_examples=300, deadline=None)
def test_the_compiled_start_is_the_python_one(
    sampler: Sampler,
    now: int,
    kind: SpanKind,
    attributes: Any,
    logged: bool,
    strict: bool,
    current: Any,
    arity: int,
    seed: int,
) -> None:
    starts = frozenset({"push"}) if logged else frozenset()
    logger = logging.getLogger("syncperf.sync")
    level = logger.level
    logger.setLevel(logging.INFO)  # (read when the runtime is made: starts are logged)
    try:
        options = {"sync_log_starts": starts, "slow_threshold": 3600.0, "strict": strict}
        outcomes = []
        for start in (_accel.speedups.start, _lifecycle._start_py):  # type: ignore[union-attr]
            with capture(sampler=sampler, **options) as cap:  # (one each: what it counts)
                rt = cap.runtime
                bound = series(rt, "push", "todo")
                args = (rt, bound, kind, attributes, now, current)[:arity]
                outcome = _outcome(start, rt, args, seed)
                failed = cap.total("syncperf.dropped", {"syncperf.reason": "span_start_failed"})
                outcomes.append((outcome, failed))
    finally:
        logger.setLevel(level)
    (compiled, compiled_failed), (python, python_failed) = outcomes
    assert compiled == python
    assert compiled_failed == python_failed
    if logged and compiled[0] != "raised":
        assert compiled[-2] is True  # the start was logged


def test_tracing_turning_on_is_looked_at_as_python_looks_at_it() -> None:
    """Tracing off and due to be looked at again: ``tracing.due`` turns it on, and the
    operation gets its span decision."""
    outcomes = []
    for start in (_accel.speedups.start, _lifecycle._start_py):  # type: ignore[union-attr]
        with capture(sampler=ALWAYS_ON) as cap:
            rt = cap.runtime
            rt.tracing.active, rt.tracing.next_check = False, 0
            outcomes.append(_outcome(start, rt, (rt, series(rt, "push", None)), 1))
            assert rt.tracing.active
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][4] is not None  # a span


def test_keyword_arguments_are_taken_as_python_takes_them() -> None:
    with capture() as cap:
        rt = cap.runtime
        bound = series(rt, "push", None)
        op = _lifecycle.start(rt, bound, now=5_000, kind=SpanKind.SERVER)
        assert (op._start_ns, op._kind) == (5_000, SpanKind.SERVER)
        _lifecycle.end(op, None)
    assert str(inspect.signature(_lifecycle.start)).startswith("(rt, bound, kind=")


def test_begin_is_the_compiled_start() -> None:
    assert _lifecycle.start is _accel.speedups.start  # type: ignore[union-attr]


class _Raising(Sampler):
    def should_sample(self, *args: Any, **kwargs: Any) -> Any:
        raise Boom("sampler")

    def get_description(self) -> str:
        return "Raising"


@pytest.mark.parametrize("strict", [True, False])
def test_a_sampler_that_raises_is_raised_in_strict_mode_and_counted_otherwise(
    strict: bool,
) -> None:
    with capture(sampler=_Raising(), strict=strict) as cap:
        rt = cap.runtime
        bound = series(rt, "push", None)
        starts = (_accel.speedups.start, _lifecycle._start_py)  # type: ignore[union-attr]
        outcomes = [_outcome(start, rt, (rt, bound), 1) for start in starts]
    assert outcomes[0] == outcomes[1]
    assert (outcomes[0][0] == "raised") is strict


def test_a_start_log_that_raises_is_raised_as_python_raises_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with capture(sync_log_starts=frozenset({"push"})) as cap:
        rt = cap.runtime
        bound = series(rt, "push", None)

        def boom(log: Any, op: Any) -> None:
            raise Boom("log")

        monkeypatch.setattr(type(bound.log), "start", boom)
        with caplog.at_level(logging.INFO, logger="syncperf.sync"):
            compiled = _outcome(_accel.speedups.start, rt, (rt, bound), 1)  # type: ignore[union-attr]
            python = _outcome(_lifecycle._start_py, rt, (rt, bound), 1)
    assert compiled == python == ("raised", Boom, 1)  # counted in flight, as Python leaves it
