"""Added cost per query of ``syncperf.sqlalchemy`` vs contrib's ``SQLAlchemyInstrumentor`` (#4).

Three SQLite in-memory engines (plain, contrib, syncperf) run ``session.execute(select(1))``
on a long-lived ``Session``, round-robin in one process (``interleaved``), so machine noise
hits them alike. Both instrumentations use one SDK ``TracerProvider`` with the default
sampler (``ParentBased(ALWAYS_ON)``) and a ``BatchSpanProcessor`` into a discarding exporter.
Contrib is instrumented with ``skip_dep_check=True`` (it declares ``sqlalchemy < 2.1``).

Cases: no current span (contrib makes a root span per query, syncperf records metrics only);
a sampled parent (both make a CLIENT span per query); a sampled-out parent; a sampled sync
operation (syncperf also does its per-operation accounting and N+1 counting). A fourth engine,
``plans``, is syncperf with ``plans=True`` (docs/plans.md): its statement's shape is explained
once (the first query of the operation, off the request thread), then each query only checks
that the shape is not due. The engines use one SQLite file, which plans need (an in-memory
database is a different database on the plan worker's own connection).

Target: syncperf's added cost <= 0.25x what contrib adds. Run::

    pytest benchmarks/bench_sqlalchemy.py -p no:cacheprovider -o python_files='bench_*.py' -s
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

import syncperf
from benchmarks._compare import added, interleaved, table
from syncperf.sqlalchemy import instrument_engine

RESULTS: list[tuple[str, float, float, float]] = []
CPU: list[tuple[str, float, float, float]] = []


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(BatchSpanProcessor(_Discard()))
    syncperf.configure(tracer_provider=provider)
    url = f"sqlite:///{tmp_path_factory.mktemp('bench') / 'bench.db'}"
    engines = {name: create_engine(url) for name in ("plain", "contrib", "syncperf", "plans")}
    contrib = SQLAlchemyInstrumentor()
    contrib.instrument(engine=engines["contrib"], tracer_provider=provider, skip_dep_check=True)
    handle = instrument_engine(engines["syncperf"], plans=False)
    planned = instrument_engine(engines["plans"], plans=True)
    sessions = {name: Session(engine) for name, engine in engines.items()}
    for session in sessions.values():
        session.execute(select(1))  # the session keeps its connection from here on
    yield {"provider": provider, "sessions": sessions, "plans": planned.plans}
    for session in sessions.values():
        session.close()
    handle.uninstrument()
    planned.uninstrument()
    contrib.uninstrument()
    provider.shutdown()
    if RESULTS:
        title = "SQLAlchemy: added µs per query (session.execute(select(1)), SQLite in memory)"
        print("\n" + table(RESULTS + CPU, title))


def _query(session: Session) -> Callable[[], object]:
    statement = select(1)

    def run() -> object:
        return session.execute(statement)

    return run


def _measure(setup: dict[str, Any], case: str) -> tuple[float, float, float]:
    """The request thread's CPU time added per query (interleaved medians), plus the CPU of
    all threads (``_cpu_per_query``)."""
    sessions: dict[str, Session] = setup["sessions"]
    results = interleaved(
        {name: _query(session) for name, session in sessions.items()},
        loops=300,
        rounds=15,
        clock=time.thread_time_ns,
    )
    extra = added(results, "plain")
    ours, ref = extra["syncperf"], extra["contrib"]
    ratio = ours / ref
    RESULTS.append((f"{case}: request thread (plain {results['plain']:.0f} µs)", ours, ref, ratio))
    planned = extra["plans"]
    RESULTS.append((f"{case}: request thread, plans=True", planned, ref, planned / ref))
    cpu = added(_cpu_per_query(setup), "plain")
    for name, label in (("syncperf", ""), ("plans", ", plans=True")):
        CPU.append(
            (
                f"{case}: CPU of all threads{label}",
                cpu[name],
                cpu["contrib"],
                cpu[name] / cpu["contrib"],
            )
        )
    return max(ours, planned), ref, max(ratio, planned / ref)


def _cpu_per_query(
    setup: dict[str, Any], queries: int = 2000, rounds: int = 15
) -> dict[str, float]:
    """Process CPU µs per query, background span work included (finisher and batch processor
    flushed inside the measured window), median over alternating rounds."""
    sessions: dict[str, Session] = setup["sessions"]
    provider: TracerProvider = setup["provider"]
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for index in range(rounds):
        names = list(sessions)
        names = names[index % len(names) :] + names[: index % len(names)]
        for name in names:
            run = _query(sessions[name])
            syncperf.force_flush()
            provider.force_flush()
            start = time.process_time()
            for _ in range(queries):
                run()
            syncperf.force_flush()
            provider.force_flush()
            samples[name].append((time.process_time() - start) / queries * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def _with_parent(span: trace.Span) -> object:
    return context_api.attach(trace.set_span_in_context(span))


def test_no_current_span(setup: dict[str, Any]) -> None:
    ours, ref, ratio = _measure(setup, "no current span")
    assert ratio < 0.5, (ours, ref)


def test_sampled_parent(setup: dict[str, Any]) -> None:
    tracer = setup["provider"].get_tracer("bench")
    parent = tracer.start_span("request")
    token = _with_parent(parent)
    try:
        ours, ref, ratio = _measure(setup, "sampled parent span (both make a span)")
    finally:
        context_api.detach(token)  # type: ignore[arg-type]
        parent.end()
    assert ratio < 0.5, (ours, ref)


def test_sampled_out_parent(setup: dict[str, Any]) -> None:
    unsampled = NonRecordingSpan(
        SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0))
    )
    token = _with_parent(unsampled)
    try:
        ours, ref, ratio = _measure(setup, "sampled-out parent")
    finally:
        context_api.detach(token)  # type: ignore[arg-type]
    assert ratio < 0.5, (ours, ref)


def test_inside_a_sync_operation(setup: dict[str, Any]) -> None:
    scope = syncperf.sync_operation("push", entity="todo")
    scope.__enter__()
    try:
        ours, ref, ratio = _measure(setup, "inside a sampled sync operation")
    finally:
        scope.__exit__(None, None, None)
    assert setup["plans"].wait()
    assert setup["plans"].explained == 1  # the shape was explained, once
    assert ratio < 0.5, (ours, ref)


def test_engines_are_the_ones_measured(setup: dict[str, Any]) -> None:
    sessions: dict[str, Session] = setup["sessions"]
    bind = sessions["syncperf"].get_bind()
    assert isinstance(bind, Engine)
    assert instrument_engine(bind, plans=False).active
