"""``syncperf bench``: syncperf's per-operation cost against a hand-written "naive OTel" one.

Both record the same measurements with the same attributes for one push of 10 items:
duration (operation, entity, outcome), batch size (operation, entity), items (operation,
entity, change), active operations (+1/-1), and one span. The naive version is what a user
would write: a ``wrapt`` decorator, ``start_as_current_span`` and the SDK's synchronous
instruments. Variants run round-robin in one process, interleaved so that a noisy machine
slows them alike; the cost reported is the time *added* to an empty handler, and the ratio
is syncperf / naive.
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler

TARGETS = {"metrics only": 0.10, "span sampled out": 0.15, "span recording": 0.50}
"""The issue's targets: syncperf's added cost as a share of the naive-OTel added cost."""


class _NullSpanExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@dataclass
class Row:
    """One measured case."""

    case: str
    syncperf_us: float
    naive_us: float

    @property
    def ratio(self) -> float:
        """syncperf's added cost divided by the naive version's."""
        return self.syncperf_us / self.naive_us if self.naive_us > 0 else float("inf")


_clock = time.process_time_ns
"""CPU time of the whole process: what the code under test costs, including work it hands
to background threads (span ends, batch processors), without the time the noisy, shared
machine spent running other processes."""


def interleaved(
    variants: Mapping[str, Callable[[], object]],
    *,
    loops: int = 2000,
    rounds: int = 15,
    warmup: int = 200,
    clock: Callable[[], int] = _clock,
) -> dict[str, float]:
    """Median microseconds (of ``clock``, ns: by default process CPU time) per call of each
    variant.

    Each round runs every variant ``loops`` times in turn (order rotated per round), so slow
    phases of the machine hit all variants alike. ``time.thread_time_ns`` measures the
    calling thread alone: work a variant hands to a background thread is then left out,
    wherever the thread happens to do it (in another variant's turn as often as its own).
    """
    names = list(variants)
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for index in range(rounds):
            for name in names[index % len(names) :] + names[: index % len(names)]:
                fn = variants[name]
                start = clock()
                for _ in range(loops):
                    fn()
                samples[name].append((clock() - start) / loops / 1000)
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


def _naive(tracer_provider: TracerProvider | None) -> Callable[[], object]:
    """The hand-written equivalent: wrapper + span + five SDK instrument calls."""
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("naive")
    duration = meter.create_histogram(
        "sync.operation.duration", "s", explicit_bucket_boundaries_advisory=[0.2, 2.0, 5.0]
    )
    batch = meter.create_histogram("sync.batch.size", "{item}")
    items = meter.create_counter("sync.items", "{item}")
    active = meter.create_up_down_counter("sync.operations.active", "{operation}")
    tracer = tracer_provider.get_tracer("naive") if tracer_provider else None
    base = {"sync.operation": "push"}
    attrs = {"sync.operation": "push", "sync.entity": "todo"}

    def measure(wrapped: Callable[[], int], instance: Any, args: Any, kwargs: Any) -> int:
        start = time.perf_counter()
        active.add(1, base)
        if tracer is None:
            result = wrapped(*args, **kwargs)
        else:
            with tracer.start_as_current_span("sync push", attributes=attrs):
                result = wrapped(*args, **kwargs)
        batch.record(result, attrs)
        items.add(result, {**attrs, "sync.change": "created"})
        duration.record(time.perf_counter() - start, {**attrs, "sync.outcome": "success"})
        active.add(-1, base)
        return result

    try:  # the usual hand-written reference wraps with wrapt
        import wrapt

        return wrapt.decorator(measure)(_handler)
    except ImportError:  # pragma: no cover - wrapt is in the test extra
        return functools.wraps(_handler)(lambda: measure(_handler, None, (), {}))


def _handler() -> int:
    return 10


def _syncperf(tracer_provider: TracerProvider | None) -> tuple[Callable[[], object], Any]:
    import syncperf
    from syncperf import _runtime
    from syncperf._config import Config

    runtime = _runtime.Runtime(Config(tracer_provider=tracer_provider))

    @syncperf.instrument_sync("push", entity="todo")
    def push() -> int:
        op = syncperf.current_operation()
        op.set_batch_size(10)
        op.record_items(10, change="created")
        return 10

    if tracer_provider is None:  # no spans: nothing for the finisher to do
        return push, runtime
    flush = runtime.finisher.flush

    def measured() -> object:
        result = push()
        flush()  # span ends are counted here, not hidden on the finisher thread
        return result

    return measured, runtime


def _provider(sampler: Sampler) -> TracerProvider:
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(_NullSpanExporter()))
    return provider


def measure(*, loops: int = 2000, rounds: int = 15) -> list[Row]:
    """Measure the three cases; returns added µs per operation for syncperf and naive OTel."""
    from syncperf import _runtime

    cases: list[tuple[str, TracerProvider | None]] = [
        ("metrics only", None),
        ("span sampled out", _provider(ParentBased(ALWAYS_OFF))),
        ("span recording", _provider(ParentBased(ALWAYS_ON))),
    ]
    rows = []
    for case, provider in cases:
        ours, runtime = _syncperf(provider)
        previous = _runtime.replace(runtime)
        try:
            medians = interleaved(
                {"baseline": _handler, "syncperf": ours, "naive": _naive(provider)},
                loops=loops,
                rounds=rounds,
            )
        finally:
            _runtime.replace(previous)
            runtime.shutdown()
            if provider is not None:
                provider.shutdown()
        base = medians["baseline"]
        rows.append(Row(case, medians["syncperf"] - base, medians["naive"] - base))
    return rows


def render(rows: Sequence[Row]) -> str:
    """A markdown table of rows with the targets."""
    lines = [
        "| case | syncperf added µs/op | naive OTel added µs/op | ratio | target |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        target = TARGETS.get(row.case)
        lines.append(
            f"| {row.case} | {row.syncperf_us:.1f} | {row.naive_us:.1f} | {row.ratio:.3f} | "
            + (f"<= {target:.2f}" if target else "")
            + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """Run the comparison and print the table."""
    from syncperf.cli import Parser, positive

    parser = Parser(
        prog="syncperf bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--loops", type=positive(int), default=2000, help="calls per variant per round"
    )
    parser.add_argument("--rounds", type=positive(int), default=15, help="interleaved rounds")
    args = parser.parse_args(argv)
    rows = measure(loops=args.loops, rounds=args.rounds)
    text = render(rows)
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):  # LC_ALL=C, PYTHONIOENCODING=ascii
        text = text.replace("\N{MICRO SIGN}", "u")
    print(text)
    return 0
