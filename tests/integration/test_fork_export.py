"""Forked workers (gunicorn's pre-fork model): export keeps working in the child, correctly.

A service sets up OTLP export, records operations, then forks (as gunicorn does with
``--preload``). The child records its own operations and never flushes by hand: its
periodic export thread must be running again, its counts must not include the parent's,
and it must report as its own ``service.instance.id``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.integration.otlp_receiver import OtlpReceiver, attributes

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

SERVICE = textwrap.dedent(
    """
    import json, os, sys, time
    import syncperf
    from syncperf.export import setup_otlp

    setup_otlp()

    @syncperf.instrument_sync("push", entity="todo")
    def push():
        return 1

    for _ in range(5):
        push()
    pid = os.fork()
    if pid == 0:  # the worker
        for _ in range(3):
            push()
        time.sleep(float(sys.argv[1]))   # the periodic exporter (not us) must export
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    syncperf.force_flush()
    print(json.dumps({"child": pid, "status": status}), flush=True)
    """
)


def _counts(receiver: OtlpReceiver) -> dict[str, int]:
    """Latest cumulative count of push durations per service.instance.id."""
    found: dict[str, int] = {}
    for resource, _, metric in receiver.metrics():
        if metric.name != "sync.operation.duration":
            continue
        for point in metric.histogram.data_points:
            if attributes(point.attributes).get("sync.operation") == "push":
                found[resource["service.instance.id"]] = point.count
    return found


@pytest.mark.parametrize("protocol", ["grpc"])
def test_forked_worker_exports_its_own_counts_from_a_restarted_thread(
    tmp_path: Path, protocol: str
) -> None:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    with OtlpReceiver() as receiver:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SYNCPERF_"))}
        env.update(
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
                "OTEL_METRIC_EXPORT_INTERVAL": "200",
                "OTEL_TRACES_EXPORTER": "none",
                "OTEL_SERVICE_NAME": "forked",
            }
        )
        done = subprocess.run(
            [sys.executable, str(script), "2.0"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["status"] == 0
        assert receiver.wait_for(lambda: len(receiver.metric_requests) >= 2)
        counts = _counts(receiver)
    # Two streams: the parent's 5 operations and the worker's own 3 (not 8).
    assert sorted(counts.values()) == [3, 5], counts
    assert len(counts) == 2
