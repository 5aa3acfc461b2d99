"""Collection at 10,000 series: CPU instructions per series and garbage-collector runs.

Each workload (``benchmarks/_collect.py``) touches every series once per round and then
collects: a Prometheus scrape (text format and OpenMetrics, as ``setup_prometheus`` serves
it), the old path (syncperf's collector through ``prometheus_client.generate_latest``), an
OTLP collection (``MetricsData``), and as references ``generate_latest`` of
prometheus_client's own histogram and the OpenTelemetry SDK reader's ``collect``. Counted
with valgrind like ``bench_instructions.py`` (one and two rounds; the touch-only round is
subtracted). Run::

    pytest benchmarks/bench_collect.py -p no:cacheprovider -o python_files='bench_*.py' -s
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from benchmarks._collect import SERIES, build
from benchmarks.bench_instructions import per_call

CASES = {
    "Prometheus scrape, text format": ("syncperf", "text", "prometheus_client"),
    "Prometheus scrape, OpenMetrics": ("syncperf", "openmetrics", "prometheus_client"),
    "syncperf collector + generate_latest (a user's own registry)": (
        "syncperf",
        "families",
        "prometheus_client",
    ),
    "OTLP collection (MetricsData)": ("syncperf", "otlp", "sdk"),
}
TARGETS = {"text": 0.07, "openmetrics": 0.07, "otlp": 1.0}
CI_BOUNDS = {"text": 0.3, "openmetrics": 0.3, "otlp": 1.5}
"""What CI holds: far above the targets, far below the old path (~0.75 of prometheus_client's
cost per scraped series), so a return to it fails while machines may differ."""
"""Ratio to the reference: 50,000 instructions per series against prometheus_client's ~729,000
(measured: ~69,700, 0.096); an OTLP collection no dearer than the SDK reader's (the issue's
20,000 is not reached: building the SDK's ``HistogramDataPoint`` alone costs ~22,900)."""


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_collection_instructions(benchmark: Any) -> None:
    names = [
        f"{who}:{what}"
        for who in ("syncperf", "prometheus_client", "sdk")
        for what in ("touch", "collect")
    ]
    names += ["syncperf:text", "syncperf:openmetrics", "syncperf:families", "syncperf:otlp"]
    names.remove("syncperf:collect")
    counts = per_call([f"collect/{n}" for n in names], 1, 2)

    def series(who: str, what: str) -> float:
        return (counts[f"collect/{who}:{what}"] - counts[f"collect/{who}:touch"]) / SERIES

    print("\n### Collection: instructions per series (10,000 series, every one touched)\n")
    print("| case | syncperf | reference | ratio |")
    print("|---|---:|---:|---:|")
    for case, (who, what, ref) in CASES.items():
        ours, theirs = series(who, what), series(ref, "collect")
        print(f"| {case} | {ours:,.0f} | {theirs:,.0f} ({ref}) | {ours / theirs:.3f} |")
        benchmark.extra_info[what] = round(ours / theirs, 3)
    benchmark.pedantic(lambda: None, rounds=1)
    for what, bound in CI_BOUNDS.items():  # deterministic, but machines differ: a loose bound
        assert benchmark.extra_info[what] <= bound


def _gc_runs(collect: Callable[[], object]) -> int:
    runs = 0

    def count(phase: str, info: dict[str, int]) -> None:
        nonlocal runs
        runs += phase == "start"

    gc.collect()
    gc.callbacks.append(count)
    try:
        collect()
    finally:
        gc.callbacks.remove(count)
    return runs


def test_collection_garbage_collector_runs(benchmark: Any) -> None:
    """One collection of 10,000 touched series wakes the collector no more than the SDK's."""
    runs = {}
    for workload in ("syncperf:text", "syncperf:openmetrics", "syncperf:otlp", "sdk:collect"):
        touch, collect = build(workload)
        touch()
        collect()
        touch()
        runs[workload] = _gc_runs(collect)
    print("\n### Garbage-collector runs in one collection of 10,000 series\n")
    print("| collection | runs |\n|---|---:|")
    for workload, count in runs.items():
        print(f"| {workload} | {count} |")
    benchmark.extra_info.update(runs)
    benchmark.pedantic(lambda: None, rounds=1)
    assert max(runs[w] for w in runs if w.startswith("syncperf")) <= runs["sdk:collect"]
