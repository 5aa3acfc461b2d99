"""Side-by-side measurement: variants interleaved round-robin in one process, medians.

This machine is noisy (absolute times drift 10-15 % between processes), so benchmarks compare
variants measured in the same process, alternating between them every round, and report
ratios against a baseline measured the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

from syncperf._tools.bench import interleaved

__all__ = ["added", "interleaved", "table"]


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
