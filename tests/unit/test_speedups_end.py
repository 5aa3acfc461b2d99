"""The compiled end (``_speedups.end_plain``) of a sampled operation records what the Python
end records: the span (name, status, attributes, events) and every metric, with span
processors and the finisher failing, in strict mode and not."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler

import syncperf
from syncperf import _accel, _lifecycle
from syncperf.exceptions import ConfigError
from syncperf.testing import Capture, capture

pytestmark = pytest.mark.skipif(_accel.speedups is None, reason="the compiled path is not built")

SAMPLERS: dict[str, Sampler] = {"on": ALWAYS_ON, "off": ParentBased(ALWAYS_OFF)}


class Refused(Exception):
    pass


def summary(cap: Capture) -> dict[str, Any]:
    """What was recorded, without the times."""
    found: dict[str, Any] = {}
    for metric in cap.metrics():
        for point in metric.data.data_points:
            key = (metric.name, tuple(sorted(point.attributes.items())))
            if hasattr(point, "count"):
                times = metric.name.endswith("duration") or metric.name == "syncperf.overhead"
                found[key] = (point.count, None if times else point.sum)
            else:
                found[key] = point.value
    found["spans"] = sorted(
        repr(
            (
                span.name,
                str(span.status.status_code),
                span.status.description,
                sorted(dict(span.attributes or {}).items()),
                [event.name for event in span.events],
            )
        )
        for span in cap.spans()
    )
    return found


@contextmanager
def ended_by(compiled: bool) -> Iterator[None]:
    saved = _lifecycle._end_plain
    if not compiled:
        _lifecycle._end_plain = None
    try:
        yield
    finally:
        _lifecycle._end_plain = saved


def run(plan: dict[str, Any], compiled: bool) -> tuple[dict[str, Any], list[str]]:
    raised = []
    sampler = SAMPLERS[plan["sampler"]]
    with ended_by(compiled), capture(sampler=sampler, strict=plan["strict"]) as cap:
        if plan["finisher_fails"]:

            def refuse(span: Any, end_ns: int) -> None:
                raise Refused("the finisher refused")

            cap.runtime.finisher.end = refuse  # type: ignore[method-assign]
        for step in plan["ops"]:
            try:
                with syncperf.sync_operation("push", entity=step["entity"]) as op:
                    if step["batch"] is not None:
                        op.set_batch_size(step["batch"])
                    for n in step["items"]:
                        op.record_items(n, change="created")
                    for _ in range(step["conflicts"]):
                        op.record_conflict()
                    if step["idempotent"]:
                        op.record_idempotency_hit()
                    for key, value in step["attributes"]:
                        op.set_attribute(key, value)
                    if step["error"] is not None:
                        op.set_error(step["error"])
                    if step["raises"]:
                        raise ValueError("the handler failed")
            except (ValueError, Refused, ConfigError) as error:
                raised.append(type(error).__name__)
        cap.runtime.finisher.__dict__.pop("end", None)
        return summary(cap), raised


steps = st.fixed_dictionaries(
    {
        "entity": st.sampled_from([None, "todo", "list"]),
        "batch": st.none() | st.integers(0, 500),
        "items": st.lists(st.integers(0, 50), max_size=3),
        "conflicts": st.integers(0, 2),
        "idempotent": st.booleans(),
        "attributes": st.lists(
            st.tuples(
                st.sampled_from(["app.tenant", "app.size", "sync.outcome"]),
                st.one_of(st.text(max_size=5), st.integers(-5, 5), st.booleans()),
            ),
            max_size=2,
        ),
        "error": st.none() | st.sampled_from(["timeout", "422", "503"]),
        "raises": st.booleans(),
    }
)
plans = st.fixed_dictionaries(
    {
        "sampler": st.sampled_from(sorted(SAMPLERS)),
        "strict": st.booleans(),
        "finisher_fails": st.booleans(),
        "ops": st.lists(steps, min_size=1, max_size=4),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans)
def test_the_compiled_end_records_what_the_python_end_records(plan: dict[str, Any]) -> None:
    assert run(plan, compiled=True) == run(plan, compiled=False)


def test_a_sampled_operation_is_ended_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    returned, spans_ended = [], []
    compiled_end, end_span = _lifecycle._end_plain, _lifecycle._end_span

    def end_plain(*args: Any) -> Any:
        returned.append(compiled_end(*args))  # type: ignore[misc]
        return returned[-1]

    def counted_end_span(*args: Any) -> Any:
        spans_ended.append(args[2])
        return end_span(*args)

    monkeypatch.setattr(_lifecycle, "_end_plain", end_plain)
    monkeypatch.setattr(_lifecycle, "_end_span", counted_end_span)
    with capture() as cap:
        with syncperf.sync_operation("push", entity="todo") as op:
            op.record_conflict()
        (span,) = cap.spans()
    assert returned == [-1]  # ended there, the Python end's body skipped
    assert spans_ended == ["conflict"]  # the span ended by _end_span, looked up per call
    assert span.attributes["sync.outcome"] == "conflict"  # type: ignore[index]
