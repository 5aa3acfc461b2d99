"""Forked workers (gunicorn's pre-fork model): export keeps working in the child, correctly.

A service sets up OTLP export, records operations, then forks (as gunicorn does with
``--preload``). The child records its own operations and never flushes by hand: its
periodic export thread must be running again, its counts must not include the parent's,
and it must report as its own ``service.instance.id``. The child stays alive until the test
saw what it expects from it (or gave up): no fixed time for a loaded machine to miss.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
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
        # the periodic exporter (not us) must export: wait for the test's go-ahead
        deadline = time.monotonic() + 120
        while not os.path.exists(sys.argv[1]):
            if time.monotonic() > deadline:
                os._exit(3)
            time.sleep(0.05)
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
        release = tmp_path / "release"  # the worker ends once this exists
        process = subprocess.Popen(
            [sys.executable, str(script), str(release)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # both streams in (or a minute gone, or the service ended): then the worker may go
            deadline = time.monotonic() + 60
            while (
                sorted(_counts(receiver).values()) != [3, 5]
                and process.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            release.touch()
            stdout, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, stderr[-3000:]
        report: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        assert report["status"] == 0
        assert receiver.wait_for(lambda: len(receiver.metric_requests) >= 2)
        counts = _counts(receiver)
    # Two streams: the parent's 5 operations and the worker's own 3 (not 8).
    assert sorted(counts.values()) == [3, 5], counts
    assert len(counts) == 2


PROCESSES = textwrap.dedent(
    """
    import json, multiprocessing, os, sys
    import syncperf
    from syncperf.export import setup_otlp

    setup_otlp()  # module level: spawn and forkserver children run it too

    @syncperf.instrument_sync("push", entity="todo")
    def push():
        return 1

    def job():
        for _ in range(7):
            push()

    if __name__ == "__main__":
        multiprocessing.set_start_method(sys.argv[1])
        for _ in range(2):
            push()
        child = multiprocessing.Process(target=job)
        child.start()
        child.join()
        print(json.dumps({"exitcode": child.exitcode}), flush=True)
    """
)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_multiprocessing_child_exports_what_it_recorded_when_it_ends(
    tmp_path: Path, method: str
) -> None:
    """multiprocessing ends a fork or forkserver child with ``os._exit``: no exit hook runs
    there, only multiprocessing's finalizers. With exports an hour apart, only the child's own
    flush at its end can export its 7 pushes (and their spans)."""
    script = tmp_path / "processes.py"
    script.write_text(PROCESSES)
    with OtlpReceiver() as receiver:
        env = receiver.environment(
            OTEL_METRIC_EXPORT_INTERVAL="3600000",
            OTEL_BSP_SCHEDULE_DELAY="3600000",
            OTEL_SERVICE_NAME="processes",
        )
        done = subprocess.run(
            [sys.executable, str(script), method],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {"exitcode": 0}
        deadline = time.monotonic() + 10
        while sorted(_counts(receiver).values()) != [2, 7] and time.monotonic() < deadline:
            time.sleep(0.1)  # the exports are in before the process ends: not long
        assert sorted(_counts(receiver).values()) == [2, 7]  # the parent's 2, the child's 7
        spans = [span for _, span in receiver.spans() if span.name == "sync push"]
        assert len(spans) == 9


RESETUP = textwrap.dedent(
    """
    import json, os, sys
    import syncperf
    from syncperf.export import setup_otlp
    from opentelemetry.sdk import resources

    setup_otlp()  # gunicorn --preload: the app sets up at import, in the master

    @syncperf.instrument_sync("push", entity="todo")
    def push():
        return 1

    for _ in range(2):
        push()
    children = []
    for n in (3, 5):
        pid = os.fork()
        if pid == 0:  # a worker: gunicorn's post_fork hook sets up again
            setup_otlp()
            for _ in range(n):
                push()
            ok = syncperf.force_flush()
            line = json.dumps({"n": n, "id": resources._service_instance_id, "ok": ok})
            os.write(1, (line + "\\n").encode())  # one write: the two workers' lines never mix
            os._exit(0)
        children.append(pid)
    statuses = [os.waitpid(pid, 0)[1] for pid in children]
    syncperf.force_flush()
    print(json.dumps({"parent": resources._service_instance_id, "statuses": statuses}), flush=True)
    """
)


@pytest.mark.parametrize("traces", ["otlp", "none"])
def test_workers_set_up_again_after_the_fork_export_their_own_streams(
    tmp_path: Path, traces: str
) -> None:
    """gunicorn ``--preload`` with ``setup_otlp()`` at import and again in ``post_fork``: each
    worker's metrics (and spans) carry its own ``service.instance.id``, not the master's, so
    the collector sees one stream per worker, each with its own count (with spans off too:
    no tracer provider's resource to take it from)."""
    script = tmp_path / "resetup.py"
    script.write_text(RESETUP)
    with OtlpReceiver() as receiver:
        env = receiver.environment(
            OTEL_METRIC_EXPORT_INTERVAL="3600000",
            OTEL_BSP_SCHEDULE_DELAY="3600000",
            OTEL_SERVICE_NAME="resetup",
            OTEL_TRACES_EXPORTER=traces,
        )
        done = subprocess.run(
            [sys.executable, str(script)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
        parent = lines[-1]
        assert parent["statuses"] == [0, 0]
        workers = {line["n"]: line["id"] for line in lines[:-1]}
        assert all(line["ok"] for line in lines[:-1])
        expected = {parent["parent"]: 2, workers[3]: 3, workers[5]: 5}
        assert len(expected) == 3  # three processes, three ids
        deadline = time.monotonic() + 10
        while _counts(receiver) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _counts(receiver) == expected
        span_ids: dict[str, int] = {}
        for resource, span in receiver.spans():
            if span.name == "sync push":
                key = resource["service.instance.id"]
                span_ids[key] = span_ids.get(key, 0) + 1
        assert span_ids == (expected if traces == "otlp" else {})
