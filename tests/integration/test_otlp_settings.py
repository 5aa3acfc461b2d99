"""``setup_otlp``'s exporter settings against real OTLP receivers: headers, the environment
it is given, the export timeout and the size of one request.

Each service runs in its own interpreter (global OpenTelemetry providers are per process)
and exports to a real OTLP/gRPC receiver (``otlp_receiver.py``) or one that never answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.integration.otlp_receiver import OtlpReceiver, SilentListener

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

SECRET = "tok-Pl4nted-9fQx27"
"""An authorization token given to ``setup_otlp(headers=...)``."""


def _run(
    code: str, env: dict[str, str], args: Sequence[str] = (), timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


HEADERS_SERVICE = """
    import json, logging, os, sys
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    import syncperf, syncperf.export
    token = os.environ.pop("PLANTED")  # not on the command line
    handle = syncperf.export.setup_otlp(
        protocol=sys.argv[1], headers={"Authorization": "Bearer " + token},
        export_interval=3600, shutdown_timeout=3,
    )
    with syncperf.sync_operation("push", entity="todo"):
        pass
    print(json.dumps({"flushed": syncperf.force_flush()}), flush=True)
    handle.shutdown()
"""


@pytest.mark.parametrize(
    "variable",
    [
        "x-api-key=env-key",
        # entries gRPC cannot send (not ASCII once decoded, not a metadata key, a -bin key
        # with text) failed every export, the good headers with them: they are dropped
        "k=%C3%A9,x!y=1,x-api-key=env-key,x-bin=1,t=a%09b",
    ],
)
def test_grpc_headers_given_in_code_are_sent_merged_over_the_environments(variable: str) -> None:
    with OtlpReceiver() as receiver:
        env = receiver.environment(OTEL_EXPORTER_OTLP_HEADERS=variable, PLANTED=SECRET)
        done = _run(HEADERS_SERVICE, env, args=["grpc"])
        received = list(receiver.metadata)
        requests = list(receiver.metric_requests) + list(receiver.trace_requests)
    assert json.loads(done.stdout.splitlines()[-1]) == {"flushed": True}, done.stderr[-3000:]
    assert receiver.metric_requests and receiver.trace_requests
    for metadata in received:
        assert metadata.get("authorization") == f"Bearer {SECRET}"
        assert metadata.get("x-api-key") == "env-key"
    # The header value is sent as metadata only: never in an exported payload or a log line.
    for request in requests:
        assert SECRET.encode() not in request.SerializeToString()
    assert SECRET not in done.stdout + done.stderr


ENVIRON_SERVICE = """
    import json, os, sys
    import syncperf, syncperf.export
    given = json.loads(sys.argv[1])
    assert not any(name.startswith("OTEL_") for name in os.environ)
    handle = syncperf.export.setup_otlp(environ=given, shutdown_timeout=3)
    with syncperf.sync_operation("push", entity="todo"):
        pass
    print(json.dumps({"flushed": syncperf.force_flush()}), flush=True)
    handle.shutdown()
"""


def test_an_environ_given_to_setup_otlp_decides_where_and_as_whom_it_exports() -> None:
    with OtlpReceiver() as receiver:
        env = {k: v for k, v in receiver.environment().items() if not k.startswith("OTEL_")}
        given = {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": "x-team=sync",
            "OTEL_SERVICE_NAME": "from-environ",
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
        }
        done = _run(ENVIRON_SERVICE, env, args=[json.dumps(given)])
        assert json.loads(done.stdout.splitlines()[-1]) == {"flushed": True}, done.stderr[-3000:]
        assert receiver.metric_requests and receiver.trace_requests
        resources = {r.get("service.name") for r, _, _ in receiver.metrics()}
        resources |= {r.get("service.name") for r, _ in receiver.spans()}
        duration = receiver.latest("sync.operation.duration")
        metadata = list(receiver.metadata)
    assert resources == {"from-environ"}
    assert duration.histogram.aggregation_temporality == 1  # delta
    assert all(m.get("x-team") == "sync" for m in metadata)


STALLED_SERVICE = """
    import json, time
    import syncperf, syncperf.export
    from syncperf import _runtime
    handle = syncperf.export.setup_otlp()
    with syncperf.sync_operation("push", entity="todo"):
        pass
    (periodic,) = _runtime.current().exporters
    started = time.monotonic()
    ok = periodic.export_once()
    print(json.dumps({"ok": ok, "took": time.monotonic() - started}), flush=True)
    import os
    os._exit(0)  # the stalled collector is not waited for at exit
"""


@pytest.mark.parametrize(
    ("protocol", "collector"),
    [("grpc", "silent"), ("grpc", "hanging"), ("http/protobuf", "silent")],
)
def test_one_export_to_a_stalled_collector_takes_at_most_the_export_timeout(
    protocol: str, collector: str
) -> None:
    hanging = OtlpReceiver().start()
    silent = SilentListener()
    hanging.hang()
    try:
        env = hanging.environment(
            OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
            OTEL_EXPORTER_OTLP_ENDPOINT=(hanging if collector == "hanging" else silent).endpoint,
            OTEL_METRIC_EXPORT_TIMEOUT="1000",  # export_timeout=1 s; the OTLP timeout: 10 s
            OTEL_METRIC_EXPORT_INTERVAL="3600000",
            OTEL_TRACES_EXPORTER="none",
        )
        done = _run(STALLED_SERVICE, env)
    finally:
        hanging.answer()
        hanging.stop()
        silent.close()
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["ok"] is False
    assert report["took"] < 3.0, report  # 1 s and retries' slack; 10 s before


LARGE_SERVICE = """
    import json
    import syncperf, syncperf.export
    from syncperf import _runtime
    handle = syncperf.export.setup_otlp(max_series=20000, export_interval=3600)
    rt = _runtime.current()
    with syncperf.sync_operation("push", entity="todo"):
        pass
    duration = rt.registry.instruments["sync.operation.duration"]
    for i in range(11999):  # 12,000 series of ~500 bytes: one request would be ~6 MiB
        attributes = (("sync.entity", f"entity-{i:05d}-" + "x" * 60),
                      ("sync.operation", "push"), ("sync.outcome", "success"))
        with rt.lock:
            duration.histogram(attributes).record(0.01)
    print(json.dumps({"flushed": syncperf.force_flush()}), flush=True)
    handle.shutdown()
"""


def test_an_export_larger_than_a_collectors_4_mib_limit_arrives_in_several_requests() -> None:
    with OtlpReceiver() as receiver:  # grpc's default receive limit: 4 MiB
        env = receiver.environment(OTEL_TRACES_EXPORTER="none")
        done = _run(LARGE_SERVICE, env, timeout=120)
        requests = list(receiver.metric_requests)
    assert json.loads(done.stdout.splitlines()[-1]) == {"flushed": True}, done.stderr[-3000:]
    assert len(requests) > 1
    assert max(r.ByteSize() for r in requests) < 4 * 2**20
    entities = {
        kv.value.string_value
        for request in requests
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "sync.operation.duration"
        for point in metric.histogram.data_points
        for kv in point.attributes
        if kv.key == "sync.entity"
    }
    assert len(entities) == 12000  # every series, each once
