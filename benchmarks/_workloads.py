"""Workloads for ``bench_instructions.py``: ``python -m benchmarks._workloads NAME WARM CALLS``.

Each builds one variant exactly as the timed benchmarks do and calls it ``WARM + CALLS`` times, so
the instructions it executes can be counted from the outside (valgrind) without the noise of
a clock. Span work that syncperf leaves to its finisher thread is flushed inline.
"""

from __future__ import annotations

import os
import random
import select
import sys
from collections import deque
from collections.abc import Callable, Iterator
from itertools import repeat, starmap
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

READY = "syncperf-bench: ready"


def _core(name: str) -> Callable[[], object]:
    from syncperf import _runtime
    from syncperf._tools import bench as _bench

    case, _, who = name.partition(":")
    provider = None
    if case != "metrics":
        sampler = ParentBased(ALWAYS_ON if case == "recording" else ALWAYS_OFF)
        provider = _bench._provider(sampler)
    if who == "handler":
        return _bench._handler
    if who == "naive":
        return _bench._naive(provider)
    ours, runtime = _bench._syncperf(provider)
    _runtime.replace(runtime)
    return ours


def _asgi(name: str, fixture_name: str = "variants") -> Iterator[Callable[[], object]]:
    import benchmarks.bench_asgi as bench

    fixture: Any = getattr(bench, fixture_name)
    variants = getattr(fixture, "__pytest_wrapped__", None)
    make = variants.obj if variants is not None else fixture.__wrapped__
    yield from (calls[name] for calls in make())


def _sqlalchemy(name: str, in_operation: bool = False) -> Callable[[], object]:
    """``session.execute(select(1))`` under a sampled parent span (both make a CLIENT span).

    ``in_operation``: inside one sampled sync operation, on a SQLite file (``plans`` needs
    one), with a fourth variant ``plans``: syncperf with ``plans=True``.
    """
    import tempfile

    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    import syncperf
    from benchmarks.bench_asgi import _Discard

    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(BatchSpanProcessor(_Discard()))
    syncperf.configure(tracer_provider=provider)
    url = "sqlite://"
    if in_operation:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='syncperf-bench-')}/bench.db"
    engine = create_engine(url)
    if name == "contrib":
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(
            engine=engine, tracer_provider=provider, skip_dep_check=True
        )
    elif name in ("syncperf", "plans"):
        from syncperf.sqlalchemy import instrument_engine

        instrument_engine(engine, plans=name == "plans")
    session = Session(engine)
    statement = select(1)
    parent = provider.get_tracer("bench").start_span("parent")
    context_api.attach(trace.set_span_in_context(parent))
    if in_operation:
        syncperf.sync_operation("push", entity="todo").__enter__()
    session.execute(statement)  # the plan of its shape, if any, is read here
    flush = syncperf.force_flush

    def query() -> object:
        result = session.execute(statement)
        flush()
        return result

    return query


def _sql_metrics(name: str) -> Callable[[], object]:
    """Metrics only (no tracer provider, no current span): ``sqlm/<plain|query|pool|nopool>``.

    ``query``: ``session.execute(select(1))`` in one open session, instrumented without pool
    metrics; ``pool`` / ``nopool``: one whole session (check-out, query, check-in) with and
    without pool metrics, so their difference is the pool metrics of one session.
    """
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    import syncperf
    from syncperf.sqlalchemy import instrument_engine

    syncperf.configure()
    engine = create_engine("sqlite://")
    if name != "plain":
        instrument_engine(engine, pool_metrics=name == "pool")
    statement = select(1)
    if name in ("plain", "query"):
        session = Session(engine)
        session.execute(statement)
        return lambda: session.execute(statement)

    def one_session() -> object:
        with Session(engine) as session:
            return session.execute(statement)

    one_session()
    return one_session


def main() -> None:
    """Run one workload: ``<suite>/<variant> <warm-up calls> <measured calls>``, or a pair,
    ``<suite>/<variant>+<variant>``, measured one after the other in one process.

    The measured calls run inside ``itertools.starmap``, which nothing else on these paths
    uses: callgrind counts only inside it (``--toggle-collect=starmap_next``), so start-up,
    set-up and warm-up are left out without a second run to subtract.
    """
    workload, warm, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    random.seed(0)  # the same trace ids, so the same requests sampled, in every run
    suite, _, names = workload.partition("/")
    built = [_build(suite, name) for name in names.split("+")]
    for _ in range(warm):
        for call in built:
            call()
    for call in built:  # a pair (``A+B``): measured one after the other, in one process
        if os.environ.get("SYNCPERF_BENCH_HANDSHAKE"):
            _handshake()
        deque(starmap(call, repeat((), calls)), maxlen=0)


def _build(suite: str, name: str) -> Callable[[], object]:
    if suite == "core":
        return _core(name)
    if suite == "asgi":
        return next(_asgi(name))
    if suite == "asgi10":  # 10 % of requests traced, against prometheus-fastapi-instrumentator
        return next(_asgi(name, "sampled_variants"))
    if suite == "push":
        from benchmarks._push import build

        return build(name)
    if suite == "sqlm":
        return _sql_metrics(name)
    if suite == "collect":
        from benchmarks._collect import round_of

        return round_of(name)
    return _sqlalchemy(name, in_operation=suite == "sqlop")


def _handshake() -> None:
    """Say ``ready`` and wait for a line on stdin, polling: the caller switches callgrind's
    instrumentation on meanwhile (``callgrind_control -i on``), so start-up and warm-up run
    at near-native speed, and a process blocked in a system call would not hear it."""
    print(READY, flush=True)
    while not select.select([sys.stdin], [], [], 0.01)[0]:
        pass
    sys.stdin.readline()


if __name__ == "__main__":
    main()
