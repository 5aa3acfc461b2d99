"""The compiled hot path (``_speedups``) counts what the pure-Python path counts.

CI runs the unit tests twice: with the compiled path, and with ``SYNCPERF_NO_EXTENSIONS=1``;
so every test here (and every other) holds for both. These tests record without a tracer
provider; ``test_speedups_traced.py`` has the compiled wrapper with spans.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry.trace import NoOpTracerProvider

import syncperf
from syncperf import _accel
from syncperf.testing import Capture, capture

ON = os.environ.get("SYNCPERF_NO_EXTENSIONS", "").strip() in ("", "0")


@pytest.fixture
def metrics_only() -> Iterator[Capture]:
    with capture(tracer_provider=NoOpTracerProvider()) as cap:
        yield cap


def outcomes(cap: Capture) -> dict[str, int]:
    found: dict[str, int] = {}
    for point in cap.points("sync.operation.duration"):
        outcome = point.attributes["sync.outcome"]
        found[outcome] = found.get(outcome, 0) + point.count
    return found


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="a build without a compiler is legal")
def test_ci_builds_and_loads_the_compiled_path_unless_told_not_to() -> None:
    assert (_accel.speedups is not None) == ON


@pytest.mark.skipif(_accel.speedups is None, reason="the compiled path is not built")
def test_a_plain_def_handler_gets_the_compiled_wrapper() -> None:
    @syncperf.instrument_sync("push", entity="todo")
    def push() -> int:
        return 1

    closure = [cell.cell_contents for cell in push.__closure__ or ()]  # type: ignore[attr-defined]
    assert any(type(value).__name__ == "FastPath" for value in closure)


class Boom(Exception):
    pass


def behave(action: str) -> Any:
    op = syncperf.current_operation()
    if action == "raise":
        raise Boom
    if action == "conflict":
        op.record_conflict(count=2)
    elif action == "items":
        op.record_items(3, change="created")
    elif action == "error":
        op.set_error("rejected")
    elif action == "entity":
        op.set_entity("note")
    elif action == "other":
        op.record_items(1, entity="note")
    elif action == "idempotent":
        op.record_idempotency_hit()
    elif action == "batch":
        op.set_batch_size(7)
    return {"ok": True}


ACTIONS = ["plain", "raise", "conflict", "items", "error", "entity", "other", "idempotent", "batch"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=200))
def test_every_call_is_counted_with_its_outcome_and_counts(actions: list[str]) -> None:
    with capture(tracer_provider=NoOpTracerProvider()) as cap:

        @syncperf.instrument_sync("push", entity="todo")
        def push(action: str) -> Any:
            return behave(action)

        for action in actions:
            if action == "raise":
                with pytest.raises(Boom):
                    push(action)
            else:
                assert push(action) == {"ok": True}
        expected = {
            "error": actions.count("raise") + actions.count("error"),
            "conflict": actions.count("conflict"),
        }
        expected["success"] = len(actions) - expected["error"] - expected["conflict"]
        assert outcomes(cap) == {k: v for k, v in expected.items() if v}
        assert cap.total("sync.items", {"sync.entity": "todo"}) == 3 * actions.count("items")
        assert cap.total("sync.items", {"sync.entity": "note"}) == actions.count("other")
        assert cap.total("sync.idempotency.hits") == actions.count("idempotent")
        assert cap.total("sync.conflicts") == 2 * actions.count("conflict")
        batches = cap.points("sync.batch.size")
        assert sum(p.count for p in batches) == actions.count("batch")
        assert sum(p.count for p in cap.points("syncperf.overhead")) >= len(actions)
        assert cap.total("sync.operations.active") == 0


def test_the_handlers_exception_passes_through_unchanged(metrics_only: Capture) -> None:
    error = Boom("the handler's")

    @syncperf.instrument_sync("push", entity="todo")
    def push() -> None:
        raise error

    with pytest.raises(Boom) as raised:
        push()
    assert raised.value is error
    assert raised.traceback[-1].name == "push"  # the handler's own frame is where it was raised
    assert outcomes(metrics_only) == {"error": 1}


@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_a_base_exception_passes_through_and_counts_as_an_error(
    metrics_only: Capture, kind: type[BaseException]
) -> None:
    @syncperf.instrument_sync("push", entity="todo")
    def push() -> None:
        raise kind

    with pytest.raises(kind):
        push()
    assert outcomes(metrics_only) == {"error": 1}
    assert syncperf.current_operation().recording is False  # nothing left current


def test_calls_from_eight_threads_are_all_counted(metrics_only: Capture) -> None:
    @syncperf.instrument_sync("push", entity="todo")
    def push(n: int) -> int:
        syncperf.current_operation().record_items(1)
        return n

    def run() -> None:
        for n in range(2_000):
            push(n)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes(metrics_only) == {"success": 16_000}
    assert metrics_only.total("sync.items") == 16_000


def test_configure_inside_a_handler_loses_no_call() -> None:
    from syncperf import _runtime

    before = _runtime.installed
    try:
        _configure_inside_a_handler()
    finally:  # the runtime this test put in force is not left to the tests after it
        _runtime.replace(before)


def _configure_inside_a_handler() -> None:
    with capture(tracer_provider=NoOpTracerProvider()) as cap:

        @syncperf.instrument_sync("push", entity="todo")
        def push(swap: bool) -> None:
            if swap:  # the runtime in force changes while this call runs
                from syncperf import _runtime

                _runtime.replace(_runtime.Runtime(cap.runtime.config, shared_outputs=False))

        push(False)
        push(True)
        push(False)
        from syncperf import _runtime

        now = _runtime.current()
        assert now is not cap.runtime
        with capture(tracer_provider=NoOpTracerProvider()) as later:
            push(False)
            assert outcomes(later) == {"success": 1}


def test_a_long_run_of_calls_holds_no_memory(metrics_only: Capture) -> None:
    @syncperf.instrument_sync("push", entity="todo")
    def push(body: dict[str, Any]) -> dict[str, Any]:
        return body

    body = {"changes": list(range(10))}
    for _ in range(2_000):
        push(body)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(50_000):
            push(body)
        metrics_only.points("sync.operation.duration")  # folds what is queued
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 200_000, grown  # a leaked reference per call would hold megabytes
    assert outcomes(metrics_only) == {"success": 52_000}


def test_a_handler_result_whose_class_cannot_be_hashed_is_returned(metrics_only: Capture) -> None:
    class Meta(type):
        def __hash__(cls) -> int:
            raise RuntimeError("no hash")

    class Odd(metaclass=Meta):
        pass

    odd = Odd()

    @syncperf.instrument_sync("push", entity="todo")
    def push() -> Odd:
        return odd

    assert push() is odd
    assert outcomes(metrics_only) == {"success": 1}


async def test_an_awaitable_a_def_handler_returns_ends_its_operation_when_done(
    metrics_only: Capture,
) -> None:
    async def work() -> int:
        syncperf.current_operation().record_items(2)
        return 5

    @syncperf.instrument_sync("push", entity="todo")
    def push() -> Any:
        return work()

    pending = push()
    assert outcomes(metrics_only) == {}  # not done yet
    assert await pending == 5
    assert outcomes(metrics_only) == {"success": 1}
    assert metrics_only.total("sync.items") == 2


async def test_an_awaitable_with_extractors_is_extracted_when_done(
    metrics_only: Capture,
) -> None:
    async def work() -> dict[str, int]:
        return {"conflicts": 3}

    @syncperf.instrument_sync(
        "push", entity=lambda table: table, conflicts=lambda result: result["conflicts"]
    )
    def push(table: str) -> Any:
        return work()

    pending = push("note")
    assert await pending == {"conflicts": 3}
    assert outcomes(metrics_only) == {"conflict": 1}
    assert metrics_only.total("sync.conflicts", {"sync.entity": "note"}) == 3


class Answer:  # what a framework's response carries: an int status beside headers
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.headers: dict[str, str] = {}


@pytest.mark.parametrize(
    ("status", "outcome"), [(200, "success"), (409, "conflict"), (503, "error")]
)
def test_a_returned_response_decides_the_outcome(
    metrics_only: Capture, status: int, outcome: str
) -> None:
    @syncperf.instrument_sync("push", entity="todo")
    def push() -> Answer:
        return Answer(status)

    assert push().status_code == status
    assert outcomes(metrics_only) == {outcome: 1}


def test_a_returned_response_is_extracted_before_its_status_decides(
    metrics_only: Capture,
) -> None:
    @syncperf.instrument_sync("push", entity="todo", idempotency_hit=lambda result: True)
    def push() -> Answer:
        return Answer(200)

    assert push().status_code == 200
    assert outcomes(metrics_only) == {"success": 1}
    assert metrics_only.total("sync.idempotency.hits") == 1


def test_an_operation_whose_ended_field_was_deleted_still_ends(metrics_only: Capture) -> None:
    @syncperf.instrument_sync("push", entity="todo")
    def push() -> int:
        del syncperf.current_operation()._ended  # type: ignore[attr-defined]
        return 1

    assert push() == 1
    with syncperf.sync_operation("pull", entity="todo") as op:
        del op._ended  # type: ignore[attr-defined]
    assert sum(outcomes(metrics_only).values()) == 2
    assert syncperf.current_operation().recording is False


def test_a_keyboard_interrupt_while_syncperf_starts_reaches_the_caller(
    metrics_only: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncperf import _lifecycle

    @syncperf.instrument_sync("push", entity="todo")
    def push() -> int:
        return 1

    push()  # bound to the capture's runtime

    delivered = []

    def interrupted() -> int:  # Ctrl-C lands on syncperf's first clock read, once
        if not delivered:
            delivered.append(True)
            raise KeyboardInterrupt
        return time.perf_counter_ns()

    monkeypatch.setattr(_lifecycle, "_perf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        push()
    monkeypatch.undo()
    assert syncperf.current_operation().recording is False
    assert metrics_only.total("sync.operations.active") == 0


def test_times_past_two_to_the_63_are_counted_as_python_counts_them(
    metrics_only: Capture,
) -> None:
    @syncperf.instrument_sync("push", entity="todo")
    def push() -> int:
        syncperf.current_operation()._own_ns = 2**63  # type: ignore[attr-defined]
        return 1

    push()
    assert outcomes(metrics_only) == {"success": 1}
    assert metrics_only.total("syncperf.dropped") == 0
    assert syncperf.current_operation().recording is False


def test_the_end_time_is_read_once_when_the_python_end_takes_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    from syncperf import _lifecycle

    ticks = iter(range(0, 10**15, 100_000_000))  # 0.1 s a read
    monkeypatch.setattr(_lifecycle, "_perf", lambda: next(ticks))
    with capture(sampler=ALWAYS_OFF) as cap:
        with syncperf.sync_operation("push", entity="todo") as op:  # unsampled, rescued
            op.record_conflict()
        (point,) = cap.points("sync.operation.duration")
        assert point.sum == pytest.approx(0.2)  # start, its own time, end: three reads
        (span,) = cap.spans()
        assert (span.end_time - span.start_time) / 1e9 == pytest.approx(0.2)


def test_a_handler_raising_at_the_recursion_limit_leaves_no_operation_current() -> None:
    import sys

    with capture(tracer_provider=NoOpTracerProvider(), strict=False):

        @syncperf.instrument_sync("push", entity="todo")
        def push() -> None:
            raise ValueError("the handler's")

        def deep(depth: int) -> None:
            return push() if depth == 0 else deep(depth - 1)

        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(300)
        try:
            for depth in range(200, 300):
                with pytest.raises((ValueError, RecursionError)):
                    deep(depth)
                assert syncperf.current_operation().recording is False
        finally:
            sys.setrecursionlimit(limit)


@pytest.mark.skipif(_accel.speedups is None, reason="the compiled path is not built")
def test_the_compiled_wrapper_refuses_arguments_that_are_not_a_tuple() -> None:
    @syncperf.instrument_sync("push", entity="todo")
    def push() -> int:
        return 1

    closure = [cell.cell_contents for cell in push.__closure__ or ()]  # type: ignore[attr-defined]
    (fast,) = [value for value in closure if type(value).__name__ == "FastPath"]
    with pytest.raises(TypeError):
        fast([1, 2, 3], None)


Call = tuple[
    str | None, int | None, list[tuple[int, str | None]], list[tuple[int, str | None, str | None]]
]
CALLS = st.tuples(
    st.sampled_from([None, "todo", "note"]),  # the entity set in the handler, if any
    st.one_of(st.none(), st.integers(0, 2**40)),  # batch size (sums exact as floats)
    st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from([None, "created", "deleted"]))),
    st.lists(
        st.tuples(
            st.integers(0, 50),
            st.sampled_from([None, "todo", "list"]),
            st.sampled_from([None, "server_wins", "merged"]),
        )
    ),
)


def _exported(calls: list[Call]) -> list[tuple[Any, ...]]:
    """Every sync series' exported values after ``calls``, sorted."""
    with capture(tracer_provider=NoOpTracerProvider()) as cap:

        @syncperf.instrument_sync("push", entity="base")
        def push(call: Call) -> None:
            entity, batch, items, conflicts = call
            op = syncperf.current_operation()
            if entity is not None:
                op.set_entity(entity)
            if batch is not None:
                op.set_batch_size(batch)
            for n, change in items:
                op.record_items(n, change=change)
            for n, other, resolution in conflicts:
                op.record_conflict(count=n, entity=other, resolution=resolution)

        for call in calls:
            push(call)
        found = []
        for name in ("sync.items", "sync.conflicts", "sync.batch.size", "sync.operation.duration"):
            for p in cap.points(name):
                if name == "sync.batch.size":
                    values = (p.count, p.bucket_counts, p.sum, p.min, p.max)
                else:  # (a duration's buckets depend on the time it took)
                    values = (p.value,) if hasattr(p, "value") else (p.count,)
                found.append((name, sorted(p.attributes.items()), *values))
        return sorted(found, key=repr)


@pytest.mark.skipif(_accel.speedups is None, reason="the compiled path is not built")
@settings(max_examples=60, deadline=None)
@given(st.lists(CALLS, min_size=1, max_size=150))
def test_the_compiled_fold_records_what_the_python_fold_records(calls: list[Call]) -> None:
    """Items, conflicts and batch sizes, which the compiled fold records itself while their
    series are bound, come out as the Python fold records them (series bound midway, several
    entities and resolutions, batch sizes up to 2**53)."""
    compiled = _exported(calls)
    from syncperf import _fold

    speedups, _fold.speedups = _fold.speedups, None
    try:
        pure = _exported(calls)
    finally:
        _fold.speedups = speedups
    assert compiled == pure


def test_an_extractor_decorated_def_handler_gets_the_compiled_wrapper() -> None:
    @syncperf.instrument_sync("push", entity=lambda table: table, batch_size=lambda n: n)
    def push(table: str, n: int) -> int:
        return n

    closure = [cell.cell_contents for cell in push.__closure__ or ()]  # type: ignore[attr-defined]
    assert any(type(value).__name__ == "FastPath" for value in closure) == (
        _accel.speedups is not None
    )


ODD = st.one_of(
    st.none(),
    st.integers(-3, 2**63),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.sampled_from([True, "todo", "note", "x" * 300, "\ud800", {"todo": 2, "note": -1}]),
)
Spec = tuple[Any, Any, Any, Any, str | None]
SPECS = st.tuples(ODD, ODD, ODD, ODD, st.sampled_from([None, "entity", "batch", "result", "fn"]))


def _value(spec: Spec, index: int, stage: str) -> Any:
    if spec[4] == stage:
        raise Boom
    return spec[index]


def _extracted(specs: list[Spec], strict: bool) -> list[Any]:
    """What calls of an extractor-decorated handler answer, and what it exports, after
    ``specs`` (every odd value, and extractors and handlers that raise)."""
    with capture(tracer_provider=NoOpTracerProvider(), strict=strict) as cap:

        @syncperf.instrument_sync(
            "push",
            entity=lambda spec: _value(spec, 0, "entity"),
            batch_size=lambda spec: _value(spec, 1, "batch"),
            conflicts=lambda result: _value(result, 2, "result"),
            items=lambda result: result[3],
            idempotency_hit=lambda spec, extra: extra or spec[0] == "todo",  # two values
        )
        def push(spec: Spec, extra: Any = None) -> Spec:
            _value(spec, 0, "fn")
            return spec

        found: list[Any] = []
        for index, spec in enumerate(specs):
            try:  # by position and by keyword, with the default and without
                result = push(spec) if index % 2 else push(spec=spec, extra=spec[1])
                found.append(result is spec)
            except Exception as error:  # strict mode: the same MeasurementError both ways
                found.append(repr(error))
        names = ("sync.items", "sync.conflicts", "sync.batch.size", "sync.idempotency.hits")
        for name in (*names, "syncperf.dropped"):
            for p in cap.points(name):
                values = (p.value,) if hasattr(p, "value") else (p.count, p.bucket_counts, p.sum)
                found.append((name, sorted(p.attributes.items()), *values))
        found.extend(
            ("duration", sorted(p.attributes.items()), p.count)
            for p in cap.points("sync.operation.duration")
        )
        assert cap.total("sync.operations.active") == 0
        return found[: len(specs)] + sorted(found[len(specs) :], key=repr)


@settings(max_examples=40, deadline=None)
@given(st.lists(SPECS, min_size=1, max_size=60), st.booleans())
def test_the_compiled_wrapper_extracts_what_the_python_wrapper_extracts(
    specs: list[Spec], strict: bool
) -> None:
    """The same calls through the compiled wrapper and the Python one (decorated without the
    compiled path) answer the same and export the same counts, outcomes and dropped values."""
    compiled = _extracted(specs, strict)
    from syncperf import _extractors, _fastpath

    speedups, _fastpath.speedups = _fastpath.speedups, None
    _extractors.speedups = None  # the Python phases (the compiled ones also run in Python's)
    try:
        pure = _extracted(specs, strict)
    finally:
        _fastpath.speedups = _extractors.speedups = speedups
    assert compiled == pure


class Named(str):
    pass


COUNTS = st.one_of(
    st.integers(-2, 2**53 + 2),
    st.sampled_from([True, 2**52, 2**53 - 1, 2**63, 1.0, float("nan"), "3", None]),
)
CHANGE = st.sampled_from(
    [None, "created", "updated", "deleted", "bogus", "\ud800", Named("created"), 5, b"created"]
)
ITEM_CALLS = st.lists(
    st.tuples(COUNTS, CHANGE, st.sampled_from([None, "todo", "note", "\ud800"]), st.integers(0, 3)),
    min_size=1,
    max_size=40,
)


def _items_recorded(calls: list[Any], strict: bool) -> list[Any]:
    """What ``record_items`` answers and exports for ``calls`` made inside one operation:
    by position, by keyword, through a ``**`` mapping, or with a name it does not take."""
    with capture(tracer_provider=NoOpTracerProvider(), strict=strict) as cap:
        answers: list[Any] = []

        @syncperf.instrument_sync("push", entity="todo")
        def push() -> None:
            record = syncperf.current_operation().record_items
            for n, change, entity, form in calls:
                try:
                    if form == 0:
                        record(n, change=change, entity=entity)
                    elif form == 1:
                        record(n=n, change=change)
                    elif form == 2:  # keyword names that are not interned
                        record(n, **{"".join(["cha", "nge"]): change})
                    else:
                        record(n, kind=change)  # type: ignore[call-arg]
                    answers.append(None)
                except Exception as error:
                    answers.append(repr(error))

        push()
        for name in ("sync.items", "syncperf.dropped", "sync.operation.duration"):
            for p in cap.points(name):
                value = p.value if hasattr(p, "value") else p.count
                answers.append((name, sorted(p.attributes.items()), value))
        return answers[: len(calls)] + sorted(answers[len(calls) :], key=repr)


@pytest.mark.skipif(_accel.speedups is None, reason="the compiled path is not built")
@settings(max_examples=80, deadline=None)
@given(ITEM_CALLS, st.booleans())
@example([(2**52, None, None, 0), (2**52, "created", None, 1)], False)  # a total of 2**53
def test_the_compiled_record_items_counts_and_drops_what_the_python_one_does(
    calls: list[Any], strict: bool
) -> None:
    """Hostile counts (bools, floats, 2**53, strings), change types (str subclasses, bytes,
    lone surrogates) and call shapes, in strict mode and not: the compiled method answers,
    counts and drops exactly as the Python method it hands every uncommon case to."""
    from syncperf import _operation

    compiled = _items_recorded(calls, strict)
    cls = _operation.SyncOperation
    cls.record_items = _operation.python_record_items  # type: ignore[method-assign]
    try:
        pure = _items_recorded(calls, strict)
    finally:
        del cls.record_items
    assert compiled == pure


@pytest.mark.skipif(_accel.speedups is None, reason="the compiled path is not built")
def test_current_operation_is_the_no_op_outside_and_after_an_operation() -> None:
    from syncperf._operation import NOOP

    assert syncperf.current_operation() is NOOP
    with syncperf.sync_operation("pull") as op:
        assert syncperf.current_operation() is op
        op._ended = True  # what a task that copied the context sees after the end
        assert syncperf.current_operation() is NOOP
        op._ended = False
    assert syncperf.current_operation() is NOOP


def test_a_response_after_plain_results_is_read_for_its_status(metrics_only: Capture) -> None:
    """The compiled wrapper remembers the last plain result type it saw: a response that
    follows plain results is still read for its status."""
    from starlette.responses import JSONResponse

    answers = iter([{"ok": 1}, {"ok": 2}, JSONResponse({"error": "busy"}, status_code=503)])

    @syncperf.instrument_sync("push", entity="todo")
    def push() -> Any:
        return next(answers)

    for _ in range(3):
        push()
    assert outcomes(metrics_only) == {"success": 2, "error": 1}


BIG_BATCHES = [1, 2**53 - 1, 2**53 - 1, 3]
"""Batch sizes whose sum is past 2**53: exact as an int, not as a float added up in steps."""


def _batch_point(compiled_fold: bool) -> tuple[Any, Any, Any]:
    from syncperf import _fold

    speedups = _fold.speedups
    if not compiled_fold:
        _fold.speedups = None
    try:
        with capture(tracer_provider=NoOpTracerProvider()) as cap:

            @syncperf.instrument_sync("push", batch_size=lambda body: body)
            def push(body: int) -> None:
                return None

            for size in BIG_BATCHES:
                push(size)
            (point,) = cap.points("sync.batch.size")
    finally:
        _fold.speedups = speedups
    return point.sum, point.min, point.max


@pytest.mark.parametrize("compiled_fold", [True, False])
def test_batch_sizes_past_two_to_the_53_export_the_same_sum_min_and_max_on_both_paths(
    compiled_fold: bool,
) -> None:
    """The compiled fold added its int total as a float and divided min and max into floats;
    the Python fold added each size to a float sum: the sum is now the exact int total, made
    a float once when drained, and min and max stay ints, whichever path recorded them."""
    total, low, high = _batch_point(compiled_fold)
    assert total == float(sum(BIG_BATCHES)) and type(total) is float
    assert (low, high) == (1, 2**53 - 1)
    assert type(low) is int and type(high) is int


@pytest.mark.parametrize("compiled", [True, False])
def test_record_ns_at_scale_one_keeps_ints_exact(compiled: bool) -> None:
    from syncperf._metrics import batches
    from syncperf._metrics.aggregates import HistogramSeries

    if compiled and batches._record is None:
        pytest.skip("the compiled path is not built")
    record, batches._record = batches._record, batches._record if compiled else None
    try:
        series = HistogramSeries((), (1.0, 10.0))
        batches.record_ns(series, [2**53 - 1, 1], 1)
        batches.record_ns(series, [2**53 - 1, 3, -1], 1)  # -1: a placeholder
    finally:
        batches._record = record
    assert series.sum == sum(BIG_BATCHES) and type(series.sum) is int
    assert (series.min, series.max) == (1, 2**53 - 1)
    assert type(series.min) is int and type(series.max) is int
    assert series.drain() and series.drained is not None
    assert series.drained.sum == float(sum(BIG_BATCHES)) and type(series.drained.sum) is float


def _histograms(cap: Capture) -> dict[str, list[tuple[int, float]]]:
    return {
        m.name: sorted((p.count, round(p.sum, 6)) for p in m.data.data_points)
        for m in cap.metrics()
        if hasattr(m.data.data_points[0], "bucket_counts")
    }


@pytest.mark.parametrize("sampled_out", [False, True])
@pytest.mark.parametrize("done_ms", [300, 700, -100, 0])
def test_an_operation_complete_before_its_end_counts_the_same_on_both_paths(
    monkeypatch: pytest.MonkeyPatch, sampled_out: bool, done_ms: int
) -> None:
    """The ASGI middleware ends an operation with the time its response was complete
    (``end_ns``): the compiled end counts what the Python end counts (done after the end
    or before the start: clamped)."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    from syncperf import _lifecycle

    found = []
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(_lifecycle, "_end_plain", None)
        ticks = iter(range(10**12, 10**15, 100_000_000))  # 0.1 s a read
        monkeypatch.setattr(_lifecycle, "_perf", ticks.__next__)
        options: dict[str, Any] = (
            {"sampler": ALWAYS_OFF} if sampled_out else {"tracer_provider": NoOpTracerProvider()}
        )
        with capture(**options) as cap:
            start = 10**11
            op = _lifecycle.begin(cap.runtime, "push", "todo", now=start)
            _lifecycle.end(op, None, start + done_ms * 10**6, start + 500 * 10**6)
            assert syncperf.current_operation().recording is False
            found.append(_histograms(cap))
    assert found[0] == found[1]
    expected = min(max(done_ms, 0), 500) / 1000
    assert found[0]["sync.operation.duration"] == [(1, expected)]


@pytest.mark.skipif(_accel.speedups is None, reason="the compiled path is not built")
def test_the_compiled_end_takes_an_operation_complete_before_its_end() -> None:
    from syncperf import _lifecycle

    with capture(tracer_provider=NoOpTracerProvider()) as cap:
        op = _lifecycle.begin(cap.runtime, "push", "todo")
        now = time.perf_counter_ns()
        assert _accel.speedups.end_plain(op, now, now - 1_000) == -1
        assert op._ended is True  # type: ignore[attr-defined]
        (point,) = cap.points("sync.operation.duration")
        assert point.count == 1


_FIELD_GONE = """
from syncperf._accel import speedups
from syncperf._operation import CURRENT


class Log:
    on = {"success": False, "error": False, "conflict": False}
    slow_ns = next_check = 10**18

    def end(self, *args):
        pass


class Series:
    entity, log = "e", Log()

    def __init__(self):
        self.inflight = [None]


class Runtime:
    successor, slow_ns = None, 10**18

    @property
    def ended(self):  # Python code the end runs: it deletes a field the end reads next
        del OP._series
        return []


OP = speedups.Operation(Runtime(), Series(), 1)
OP._ctx_token = CURRENT.set(OP)
try:
    speedups.end_plain(OP, 5)
except AttributeError as error:
    print("raised", error)
"""


@pytest.mark.skipif(_accel.speedups is None, reason="the compiled path is not built")
def test_a_field_deleted_by_code_the_compiled_end_runs_raises_not_crashes() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _FIELD_GONE], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]  # -11: the process crashed
    assert done.stdout.strip() == "raised an operation field is gone"


_INTERPRETERS = """
import sys

try:
    import _xxsubinterpreters as interpreters

    def run(code):
        sub = interpreters.create(isolated=False)  # mod_wsgi's kind: the GIL shared
        interpreters.run_string(sub, code)
        interpreters.destroy(sub)
except ImportError:  # Python 3.13
    import _interpreters as interpreters

    def run(code):
        sub = interpreters.create("legacy")
        interpreters.exec(sub, code)
        interpreters.destroy(sub)

COUNT = '''
import syncperf
from opentelemetry.trace import NoOpTracerProvider
from syncperf import _accel
from syncperf.testing import capture

with capture(tracer_provider=NoOpTracerProvider()) as cap:
    for _ in range(100):
        with syncperf.sync_operation("push", entity="todo"):
            syncperf.current_operation().record_items(2)
    ops = sum(p.count for p in cap.points("sync.operation.duration"))
    print(WHO, _accel.speedups is not None, ops, int(cap.total("sync.items")), flush=True)
'''
if sys.argv[1] == "main-first":
    exec("WHO = 'main'" + COUNT)
run("WHO = 'sub'" + COUNT)
exec("WHO = 'main-again'" + COUNT)
"""


@pytest.mark.skipif(not ON, reason="the pure-Python path has no process-wide state")
@pytest.mark.parametrize("first", ["main-first", "sub-first"])
def test_a_sub_interpreter_importing_syncperf_leaves_the_main_ones_counts_exact(
    first: str,
) -> None:
    """The compiled state is one per process: a sub-interpreter (mod_wsgi, uWSGI) takes the
    pure-Python path, and the main interpreter keeps counting, compiled if it came first."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _INTERPRETERS, first],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line.split() for line in done.stdout.splitlines()]
    if first == "main-first":  # the main interpreter set the compiled state up: it keeps it
        assert lines.pop(0) == ["main", "True", "100", "200"]
        assert lines[1] == ["main-again", "True", "100", "200"]
    assert lines[0] == ["sub", "False", "100", "200"]
    assert lines[1][0] == "main-again"
    assert lines[1][2:] == ["100", "200"]
