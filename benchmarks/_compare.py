"""Side-by-side measurement: variants interleaved round-robin in one process, medians.

This machine is noisy (absolute times drift 10-15 % between processes), so benchmarks compare
variants measured in the same process, alternating between them every round, and report
ratios against a baseline measured the same way.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping

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
) -> dict[str, float]:
    """Median microseconds per call of each variant.

    Each round runs every variant ``loops`` times in turn (order rotated per round), so slow
    phases of the machine hit all variants alike.
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
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                fn = variants[name]
                start = _clock()
                for _ in range(loops):
                    fn()
                samples[name].append((_clock() - start) / loops / 1000)
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


def added(results: Mapping[str, float], baseline: str) -> dict[str, float]:
    """Each variant's cost above ``baseline`` (µs per call)."""
    base = results[baseline]
    return {name: value - base for name, value in results.items() if name != baseline}


def table(rows: list[tuple[str, float, float, float]], title: str) -> str:
    """A markdown table: what, syncperf µs, reference µs, ratio."""
    lines = [
        f"### {title}",
        "",
        "| case | syncperf µs | reference µs | ratio |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {case} | {ours:.1f} | {ref:.1f} | {ratio:.3f} |" for case, ours, ref, ratio in rows
    ]
    return "\n".join(lines)
