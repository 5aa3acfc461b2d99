"""Issue 18: CPU per operation with 8 threads recording at once, against one thread.

The push workload of ``benchmarks/_push.py`` (syncperf with extractors and prometheus_client
pre-bound, metrics only) runs ``CALLS`` times on one thread, then split over 8 threads that
start together; the cost added over the bare handler, in process CPU time per call, is
compared. With one runtime-wide lock per operation, 8 threads cost 2.3-2.7x one thread.
Run::

    pytest benchmarks/bench_threads.py -p no:cacheprovider -o python_files='bench_*.py' -s
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks._push import build

CALLS = 40_000
TARGET = 1.2


def cpu_per_call(call: Callable[[], object], threads: int) -> float:
    """Process CPU nanoseconds per call, ``CALLS`` calls split over ``threads`` threads."""
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(CALLS // threads):
            call()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start = time.process_time_ns()
    barrier.wait()
    for worker in workers:
        worker.join()
    return (time.process_time_ns() - start) / CALLS


def added(variant: str, threads: int, rounds: int = 5) -> float:
    handler, call = build("handler"), build(variant)
    return statistics.median(
        cpu_per_call(call, threads) - cpu_per_call(handler, threads) for _ in range(rounds)
    )


def test_eight_threads(benchmark: Any) -> None:
    print("\n| variant | 1 thread ns/op | 8 threads ns/op | ratio |")
    print("|---|---:|---:|---:|")
    ratios = {}
    for variant in ("extractors", "prometheus"):
        one, eight = added(variant, 1), added(variant, 8)
        ratios[variant] = eight / one
        print(f"| {variant} | {one:,.0f} | {eight:,.0f} | {eight / one:.2f} |")
    benchmark.extra_info.update(ratios)
    benchmark.pedantic(lambda: None, rounds=1)
    assert ratios["extractors"] <= 2 * TARGET  # CI smoke: time is noisy
