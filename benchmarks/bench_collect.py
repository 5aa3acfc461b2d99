"""Collection at 10,000 series: CPU instructions per series and garbage-collector runs.

``SYNCPERF_COLLECT_SERIES`` changes the number (CI's smoke run: 1,000; the ratios per series
barely move, and counting the reference at 10,000 series takes callgrind ten minutes).

Each workload (``benchmarks/_collect.py``) touches every series once per round and then
collects: a Prometheus scrape (text format and OpenMetrics, as ``setup_prometheus`` serves
it), the old path (syncperf's collector through ``prometheus_client.generate_latest``), an
OTLP collection (``MetricsData``), and as references ``generate_latest`` of
prometheus_client's own histogram and the OpenTelemetry SDK reader's ``collect``. Counted
with valgrind like ``bench_instructions.py`` (a warm-up round, then one counted round; the
touch-only round is subtracted). Run::

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
TARGETS = {"text": 0.041, "openmetrics": 0.041, "otlp": 0.338}
"""Issue 18's 50,000 instructions per scraped histogram series and 20,000 per OTLP series, as
ratios to the references counted here at 10,000 series (prometheus_client 1,227,191, the SDK
reader 59,175; measured 2026-12-02: 41,427 / 41,558 / 16,313, i.e. 0.034 / 0.034 / 0.276)."""
CI_BOUNDS = {what: round(1.5 * target, 3) for what, target in TARGETS.items()}
"""What CI holds (1.5x the targets, as for the other instruction counts): deterministic, but
machines and the 1,000 series of CI's smoke run differ a little. A return to the scrape
before issue 18 (~0.45 of the reference) or to building every OTLP data point anew (~0.7)
fails; the scrape's previous version (~0.057) would pass."""


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

    print(f"\n### Collection: instructions per series ({SERIES:,} series, every one touched)\n")
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
    """One collection of every touched series wakes the collector no more than the SDK's."""
    runs = {}
    for workload in ("syncperf:text", "syncperf:openmetrics", "syncperf:otlp", "sdk:collect"):
        touch, collect = build(workload)
        touch()
        collect()
        touch()
        runs[workload] = _gc_runs(collect)
    print(f"\n### Garbage-collector runs in one collection of {SERIES:,} series\n")
    print("| collection | runs |\n|---|---:|")
    for workload, count in runs.items():
        print(f"| {workload} | {count} |")
    benchmark.extra_info.update(runs)
    benchmark.pedantic(lambda: None, rounds=1)
    assert max(runs[w] for w in runs if w.startswith("syncperf")) <= runs["sdk:collect"]
