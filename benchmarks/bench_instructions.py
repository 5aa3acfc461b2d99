"""The benchmarks' ratios counted in CPU instructions instead of time (valgrind).

Time on a shared 2-vCPU VM drifts 10-30 % between runs, enough to hide whether a ratio is
0.22 or 0.28. The number of instructions a variant executes per call does not drift: each
workload (``benchmarks/_workloads.py``, built exactly as in the timed benchmarks) runs under
``valgrind --tool=callgrind`` once: ``N`` warm-up calls with the instrumentation off, then ``M``
calls counted (callgrind collects only inside them), and the count over ``M`` is its per-call
count. Instructions are
not time: code that misses caches or branch predictions more often costs more time per
instruction, which is why docs/performance.md reports both. Skipped when valgrind is not
installed. Run::

    pytest benchmarks/bench_instructions.py -p no:cacheprovider -o python_files='bench_*.py' -s
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest

from benchmarks._workloads import READY
from syncperf._accel import speedups

ROOT = Path(__file__).resolve().parent.parent
CORE_TARGETS = {"metrics": 0.10, "sampled": 0.15, "recording": 0.50}
pytestmark = pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")


def _collected(workload: str, warm: int, calls: int) -> list[int]:
    """Instructions executed inside the measured calls of one workload run; of each of a
    pair (``suite/A+B``), measured one after the other in one process.

    Valgrind starts with its instrumentation off (start-up, imports and warm-up run at close
    to native speed) and the workload waits after its warm-up until ``callgrind_control``
    has switched it on; ``--toggle-collect`` then counts the measured calls only. Between
    the two of a pair the workload waits again while ``callgrind_control --dump`` writes the
    first one's count out.
    """
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryFile("w+") as log:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}/callgrind.out",
            "--instr-atstart=no",
            "--collect-atstart=no",
            "--toggle-collect=starmap_next",  # the measured calls only (``_workloads.main``)
            sys.executable,
            "-m",
            "benchmarks._workloads",
            workload,
            str(warm),
            str(calls),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0", "SYNCPERF_BENCH_HANDSHAKE": "1"}
        with subprocess.Popen(
            command, cwd=ROOT, env=env, text=True, stdin=PIPE, stdout=PIPE, stderr=log
        ) as child:
            assert child.stdin is not None and child.stdout is not None
            try:
                switch = "--instr=on"
                for line in child.stdout:
                    if line.strip() == READY:
                        control = ["callgrind_control", switch, str(child.pid)]
                        subprocess.run(control, check=True, capture_output=True, timeout=60)
                        switch = "--dump"  # the next one measured: the first's count out
                        child.stdin.write("go\n")
                        child.stdin.flush()
                child.communicate(timeout=1800)
            except BaseException:
                child.kill()  # a workload left waiting for the switch would wait for ever
                raise
            log.seek(0)
            err = log.read()
        assert child.returncode == 0, err[-2000:]
        found = re.search(r"Collected : (\d+)", err)
        assert found, err[-2000:]
        dumped = [_totals(path) for path in sorted(Path(out).glob("callgrind.out.*"))]
    return [*dumped, int(found.group(1)) - sum(dumped)]


def _totals(path: Path) -> int:
    found = re.search(r"^(?:summary|totals): (\d+)", path.read_text(), re.MULTILINE)
    assert found, path
    return int(found.group(1))


def per_call(workloads: list[str], warm: int, total: int) -> dict[str, float]:
    """Instructions per call of each workload: one valgrind run each (two at a time) that
    counts calls ``warm`` to ``total`` only. A pair (``suite/A+B``) gives ``suite/A`` and
    ``suite/B``, measured in one process: the same memory layout, whose differences between
    processes (hash seeds, paths) move a count by more than a small difference between two."""
    calls = total - warm
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = pool.map(lambda w: _collected(w, warm, calls), workloads)
        found: dict[str, float] = {}
        for workload, numbers in zip(workloads, counts, strict=True):
            suite, _, names = workload.partition("/")
            for name, n in zip(names.split("+"), numbers, strict=True):
                found[f"{suite}/{name}"] = n / calls
        return found


def _row(case: str, ours: float, ref: float, base: float) -> tuple[str, float, float, float]:
    return case, ours - base, ref - base, (ours - base) / (ref - base)


def _print(title: str, rows: list[tuple[str, float, float, float]]) -> None:
    print(f"\n### {title}\n")
    print("| case | syncperf instructions | reference instructions | ratio |")
    print("|---|---:|---:|---:|")
    for case, ours, ref, ratio in rows:
        print(f"| {case} | {ours:,.0f} | {ref:,.0f} | {ratio:.3f} |")


def test_core_instructions(benchmark: Any) -> None:
    cases = ("metrics", "sampled", "recording")
    names = [f"core/{c}:{who}" for c in cases for who in ("syncperf", "naive")]
    counts = per_call(["core/metrics:handler", *names], 200, 1200)
    base = counts["core/metrics:handler"]
    rows = [_row(c, counts[f"core/{c}:syncperf"], counts[f"core/{c}:naive"], base) for c in cases]
    _print("Core: instructions added per operation, syncperf vs naive OTel", rows)
    benchmark.extra_info.update({row[0]: round(row[3], 3) for row in rows})
    benchmark.pedantic(lambda: None, rounds=1)
    for case, _, _, ratio in rows:  # deterministic, but machines differ: a loose bound
        assert ratio <= 1.5 * CORE_TARGETS[case]


@pytest.mark.parametrize(
    ("suite", "case", "calls", "target"),
    [
        ("asgi", "ASGI sync route vs FastAPIInstrumentor", (300, 1300), 0.25),
        (
            "asgi10",
            "ASGI sync route, 10 % traced, vs prometheus-fastapi-instrumentator",
            (300, 1300),
            0.5,
        ),
        ("sql", "SQLAlchemy traced query (sampled parent), all threads", (200, 1200), 0.25),
    ],
)
def test_integration_instructions(
    benchmark: Any, suite: str, case: str, calls: tuple[int, int], target: float
) -> None:
    reference = "instrumentator" if suite == "asgi10" else "contrib"
    plain, contrib, ours = (f"{suite}/{name}" for name in ("plain", reference, "syncperf"))
    counts = per_call([plain, contrib, ours], *calls)
    rows = [_row(case, counts[ours], counts[contrib], counts[plain])]
    _print(f"{case}: instructions added per call", rows)
    benchmark.extra_info["ratio"] = round(rows[0][3], 3)
    benchmark.pedantic(lambda: None, rounds=1)
    assert rows[0][3] <= 1.5 * target


PUSH_VARIANTS = {
    "floor": "floor: a closure wrapper and two `perf_counter()` calls",
    "prometheus": "prometheus_client, children pre-bound per entity",
    "extractors": "syncperf, decorator with entity / batch-size / conflicts extractors "
    "and two `record_items`",
    "recorder": "syncperf, decorator and recorder calls",
    "fast": "syncperf, static entity, no recording at all (the decorator's fast path)",
    "prometheus_labels": "prometheus_client, `.labels()` per call",
}
PUSH_TARGETS = {"extractors": ("prometheus", 0.5), "fast": ("floor", 3.0)}
"""Issue 18's targets (docs/performance.md), both reached on the compiled path."""
PUSH_GUARDS = (
    {"extractors": ("prometheus", 0.6), "fast": ("floor", 4.0)}  # today's levels plus layout
    if speedups is not None
    else {"extractors": ("prometheus", 1.5), "fast": ("floor", 20.0)}  # the pure-Python path
)
SQL_TARGETS = {"query": 8000, "pool": 10000}
SQL_GUARDS = {"query": 10000, "pool": 12000}
"""The targets plus what code layout alone moves these counts (docs/performance.md). Each
pair is measured in one process: measured in two, the pool's count followed the hash seed
and the checkout's path (2,900 to 17,500 for the same code), in one it stays within 3 %."""


def test_push_instructions(benchmark: Any) -> None:
    """Issue 18: one push of 50 items with 2 conflicts, metrics only, against references."""
    counts = per_call([f"push/{v}" for v in ("handler", *PUSH_VARIANTS)], 200, 1200)
    added = {v: counts[f"push/{v}"] - counts["push/handler"] for v in PUSH_VARIANTS}
    print("\n### Push of 50 items, 2 conflicts, metrics only: instructions added per push\n")
    print("| variant | added instructions | vs prometheus_client pre-bound | vs floor |")
    print("|---|---:|---:|---:|")
    for variant, label in PUSH_VARIANTS.items():
        ours = added[variant]
        prom, floor = ours / added["prometheus"], ours / added["floor"]
        print(f"| {label} | {ours:,.0f} | {prom:.2f}x | {floor:.1f}x |")
    benchmark.extra_info.update({v: round(n) for v, n in added.items()})
    benchmark.pedantic(lambda: None, rounds=1)
    for variant, (reference, guard) in PUSH_GUARDS.items():
        assert added[variant] / added[reference] <= guard


def test_sql_metrics_instructions(benchmark: Any) -> None:
    """Issue 18: a query under ``instrument_engine`` and the pool metrics of one session."""
    counts = per_call(["sqlm/plain+query", "sqlm/nopool+pool"], 200, 1200)
    added = {
        "query": counts["sqlm/query"] - counts["sqlm/plain"],
        "pool": counts["sqlm/pool"] - counts["sqlm/nopool"],
    }
    print("\n### SQLAlchemy, metrics only: instructions added\n")
    print("| case | added instructions | target |")
    print("|---|---:|---:|")
    print(f"| a query under `instrument_engine` | {added['query']:,.0f} | <= 8,000 |")
    print(f"| pool metrics of one session | {added['pool']:,.0f} | <= 10,000 |")
    benchmark.extra_info.update({k: round(v) for k, v in added.items()})
    benchmark.pedantic(lambda: None, rounds=1)
    for case, guard in SQL_GUARDS.items():
        assert added[case] <= guard


def test_sqlalchemy_plans_instructions(benchmark: Any) -> None:
    """Inside a sync operation, plans on vs off, both against contrib (docs/plans.md)."""
    names = [f"sqlop/{n}" for n in ("plain", "contrib", "syncperf", "plans")]
    counts = per_call(names, 300, 1300)
    plain, contrib = counts["sqlop/plain"], counts["sqlop/contrib"]
    rows = [
        _row(
            "SQLAlchemy query in a sync operation, plans off",
            counts["sqlop/syncperf"],
            contrib,
            plain,
        ),
        _row(
            "SQLAlchemy query in a sync operation, plans=True",
            counts["sqlop/plans"],
            contrib,
            plain,
        ),
    ]
    _print("SQLAlchemy inside a sync operation: instructions added per query", rows)
    benchmark.extra_info.update({row[0]: round(row[3], 3) for row in rows})
    benchmark.pedantic(lambda: None, rounds=1)
    for row in rows:
        assert row[3] <= 1.5 * 0.25
