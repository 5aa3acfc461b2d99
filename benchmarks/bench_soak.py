"""Soak: resident memory and exported series stay flat under steady demo traffic (issue #8).

The instrumented demo service (uvicorn in a thread, SQLite file) and 40 simulated clients run
in this process for ``SYNCPERF_SOAK_SECONDS`` (default 60; a few minutes locally:
``SYNCPERF_SOAK_SECONDS=300``). Every ``STEP`` seconds the benchmark samples resident memory
(``VmRSS`` from ``/proc/self/status``) and the number of series a cumulative reader exports.
After the warm-up (the first third of the run) neither may grow beyond noise: memory by at
most 25 MB, series not at all beyond a handful (a late first error type, say).

Run::

    pytest benchmarks/bench_soak.py -p no:cacheprovider -o python_files='bench_*.py' -s
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import time
from pathlib import Path

from syncperf import _runtime
from syncperf._config import Config
from syncperf._tools.demo._clients import Behaviour, Tally, drive
from syncperf._tools.demo._run import UvicornThread
from syncperf._tools.demo._service import Service
from syncperf._tools.demo._stats import Snapshot

SECONDS = float(os.environ.get("SYNCPERF_SOAK_SECONDS", "60"))
STEP = max(SECONDS / 12, 2.0)
CLIENTS = 40
PLAIN = os.environ.get("SYNCPERF_SOAK_PLAIN") == "1"
"""``SYNCPERF_SOAK_PLAIN=1``: the same run without syncperf (memory reference)."""


def rss_mb() -> float:
    """Resident memory of this process in MB (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_memory_and_series_are_flat_after_warm_up() -> None:
    rt = _runtime.Runtime(Config.from_env())
    previous = _runtime.replace(rt)
    samples: list[tuple[float, float, int, int]] = []
    tally = Tally()
    try:
        with tempfile.TemporaryDirectory(prefix="syncperf-soak-") as tmp:
            service = Service(f"sqlite:///{Path(tmp) / 'soak.db'}", instrumented=not PLAIN)
            server = UvicornThread(service.app)
            url = server.start()
            service.start_relay()
            reader = rt.reader()

            async def soak() -> None:
                stop = asyncio.Event()
                task = asyncio.ensure_future(
                    drive(url, CLIENTS, stop, behaviour=Behaviour(snapshot=0.002), tally=tally)
                )
                start = time.monotonic()
                while time.monotonic() - start < SECONDS:
                    await asyncio.sleep(STEP)
                    gc.collect()
                    snap = Snapshot.of(await asyncio.to_thread(reader.collect), 0.0)
                    operations = sum(c.requests for c in tally.counts.values())
                    samples.append(
                        (time.monotonic() - start, rss_mb(), snap.series_count(), operations)
                    )
                stop.set()
                await task

            try:
                asyncio.run(soak())
            finally:
                server.stop()
                service.close()
                reader.close()
    finally:
        _runtime.replace(previous)
        rt.shutdown()
    lines = [
        f"### Soak{' (plain, no syncperf)' if PLAIN else ''}: {CLIENTS} clients, "
        f"{SECONDS:g} s, sampled every {STEP:g} s",
        "",
        "| t s | RSS MB | exported series | requests |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {t:.0f} | {rss:.1f} | {series} | {ops} |" for t, rss, series, ops in samples]
    print("\n" + "\n".join(lines))
    assert tally.transport_errors == 0
    warm = [s for s in samples if s[0] >= SECONDS / 3]
    assert len(warm) >= 3
    assert warm[-1][3] > warm[0][3]  # traffic kept flowing
    assert max(s[1] for s in warm) - warm[0][1] <= 25.0
    assert max(s[2] for s in warm) - warm[0][2] <= 5
    assert PLAIN or warm[0][2] > 0
