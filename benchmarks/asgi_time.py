"""The ASGI sync route's time in one fresh process: ``python -m benchmarks.asgi_time [MODE]``.

The plain app, the app behind prometheus-fastapi-instrumentator and the app behind
``SyncPerfMiddleware`` (``bench_asgi``'s app and client, syncperf's span ended inside the
measured call) run round-robin, 61 rounds of 200 requests each after 500 warm-up requests,
with the garbage collector off; the medians of the main thread's CPU time per request, and
what each instrumentation adds over the plain app, are printed with their ratio.

``MODE``: ``10`` (default; ``ParentBased(TraceIdRatioBased(0.1))``, issue 18's case), ``off``
(every span sampled out), ``on`` (every request traced) or ``none`` (no tracer provider:
metrics only). ``docs/performance.md`` reports several runs of it, alternating with the code
compared against, since one process's state moves the ratio by a few hundredths.
"""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, TraceIdRatioBased

from benchmarks.bench_asgi import _Discard, against_instrumentator

SAMPLERS = {
    "10": ParentBased(TraceIdRatioBased(0.1)),
    "off": ParentBased(ALWAYS_OFF),
    "on": ALWAYS_ON,
}
ROUNDS, PER_ROUND, WARM_UP = 61, 200, 500


def variants(mode: str) -> dict[str, Callable[[], object]]:
    """One call per request of each app, syncperf configured for ``mode``."""
    provider = None
    if mode != "none":
        provider = TracerProvider(sampler=SAMPLERS[mode])
        provider.add_span_processor(BatchSpanProcessor(_Discard()))
    return against_instrumentator(asyncio.new_event_loop(), provider)


def measure(calls: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median main-thread CPU µs per request of each variant, round-robin."""
    for call in calls.values():
        for _ in range(WARM_UP):
            call()
    gc.disable()
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for _ in range(ROUNDS):
        names = names[1:] + names[:1]  # each variant goes first in turn
        for name in names:
            call = calls[name]
            began = time.thread_time_ns()
            for _ in range(PER_ROUND):
                call()
            times[name].append((time.thread_time_ns() - began) / PER_ROUND / 1000)
    gc.enable()
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else "10"
    if mode not in (*SAMPLERS, "none"):
        print(f"asgi_time: MODE is one of 10, off, on, none, not {mode!r}", file=sys.stderr)
        return 2
    random.seed(1)
    medians = measure(variants(mode))
    theirs, ours = (medians[name] - medians["plain"] for name in ("instrumentator", "syncperf"))
    print(
        f"{mode}: plain {medians['plain']:.1f} µs, instrumentator +{theirs:.1f},"
        f" syncperf +{ours:.1f}, ratio {ours / theirs:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
