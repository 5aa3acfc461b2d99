"""Load: the demo service under uvicorn on loopback, with and without syncperf (issue #8).

Two servers run side by side in subprocesses (same code, own SQLite files): one plain, one
instrumented (``SyncPerfMiddleware``, ``syncperf.sqlalchemy``, the outbox and its relay). The
benchmark process drives 1,000 concurrent simulated sync clients (pull, push 1-3 edits,
conflicts, idempotent retries, offline batches; no think time, no slow snapshot) through one
``httpx.AsyncClient`` limited to 100 connections, alternating between the servers in phases
(plain, syncperf, plain, syncperf) so machine noise and database growth hit both alike.
Latency is measured by the clients (queueing in the connection pool included). Then one push
of 10,000 items to each server, several times, median.

Run (``-s`` prints the tables; ``SYNCPERF_LOAD_SECONDS`` per phase, default 4;
``SYNCPERF_LOAD_CLIENTS``, default 1000)::

    pytest benchmarks/bench_load.py -p no:cacheprovider -o python_files='bench_*.py' -s
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from syncperf._tools.demo._clients import Behaviour, Tally, drive

SECONDS = float(os.environ.get("SYNCPERF_LOAD_SECONDS", "4"))
CLIENTS = int(os.environ.get("SYNCPERF_LOAD_CLIENTS", "1000"))
CONNECTIONS = 100
BIG_PUSH = 10_000
LOAD = Behaviour(think=(0.0, 0.0), snapshot=0.0, offline_seconds=(0.0, 0.0))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(plain: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    args = [sys.executable, "-m", "syncperf._tools.demo._serve", "--port", str(port)]
    process = subprocess.Popen([*args, "--plain"] if plain else args)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the demo service did not start")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    started = {name: _serve(plain=name == "plain") for name in ("plain", "syncperf")}
    try:
        yield {name: url for name, (_, url) in started.items()}
    finally:
        for process, _ in started.values():
            process.terminate()
            process.wait(30)


def _phase(url: str, tally: Tally) -> float:
    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(SECONDS, stop.set)
        await drive(url, CLIENTS, stop, behaviour=LOAD, tally=tally, max_connections=CONNECTIONS)

    start = time.monotonic()
    asyncio.run(run())
    return time.monotonic() - start


def _quantiles(latencies: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[94] * 1000, cuts[98] * 1000


def test_load_with_and_without_syncperf(servers: dict[str, str]) -> None:
    tallies = {name: Tally() for name in servers}
    elapsed = dict.fromkeys(servers, 0.0)
    for name in ("plain", "syncperf", "plain", "syncperf"):
        elapsed[name] += _phase(servers[name], tallies[name])
    rows = {}
    for name, tally in tallies.items():
        assert tally.transport_errors == 0
        latencies = [x for c in tally.counts.values() for x in c.latencies]
        requests = sum(c.requests for c in tally.counts.values())
        rows[name] = (requests / elapsed[name], *_quantiles(latencies), requests)
    plain, ours = rows["plain"], rows["syncperf"]
    lines = [
        f"### Load: {CLIENTS} concurrent sync clients, {CONNECTIONS} connections, "
        f"2 x {SECONDS:g} s per side",
        "",
        "| | requests/s | p50 ms | p95 ms | p99 ms | requests |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, (rps, p50, p95, p99, n) in rows.items():
        lines.append(f"| {name} | {rps:.0f} | {p50:.1f} | {p95:.1f} | {p99:.1f} | {n} |")
    ratios = [ours[i] / plain[i] for i in range(4)]
    lines.append("| syncperf / plain | " + " | ".join(f"{r:.3f}" for r in ratios) + " | |")
    print("\n" + "\n".join(lines))
    assert ours[0] >= 0.5 * plain[0]  # loose: the machine is shared and noisy
    assert ours[1] <= 2.0 * plain[1] + 5.0


def _big_push(url: str) -> float:
    prefix = uuid.uuid4().hex[:8]
    body = {
        "changes": [
            {"id": f"big-{prefix}-{i}", "base_version": 0, "title": f"item {i}"}
            for i in range(BIG_PUSH)
        ]
    }
    start = time.perf_counter()
    response = httpx.post(url + "/sync/todo/push", json=body, timeout=120)
    seconds = time.perf_counter() - start
    assert response.status_code == 200
    assert len(response.json()["applied"]) == BIG_PUSH
    return seconds


def test_one_push_of_ten_thousand_items(servers: dict[str, str]) -> None:
    times: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(3):
        for name, url in servers.items():
            times[name].append(_big_push(url))
    plain = statistics.median(times["plain"])
    ours = statistics.median(times["syncperf"])
    print(
        f"\n### One push of {BIG_PUSH:,} items (median of 3)\n\n"
        "| | seconds |\n|---|---:|\n"
        f"| plain | {plain:.3f} |\n| syncperf | {ours:.3f} |\n"
        f"| syncperf / plain | {ours / plain:.3f} |"
    )
    assert ours <= 2.0 * plain + 0.5
