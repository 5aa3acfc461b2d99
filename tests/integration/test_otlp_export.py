"""Wire-level proof: an instrumented example service exports to a real OTLP/gRPC receiver.

The service runs in its own interpreter (global OpenTelemetry providers are per process),
configured only through ``OTEL_*`` variables and ``syncperf.export.setup_otlp()``. The
receiver implements the official collector services from ``opentelemetry-proto``.
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

from syncperf._runtime import BATCH_BOUNDS, DURATION_BOUNDS
from tests.integration.otlp_receiver import OtlpReceiver, SilentListener, attributes

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

SERVICE = textwrap.dedent(
    """
    import json, sys, time
    import syncperf
    from syncperf.export import setup_otlp

    handle = setup_otlp()
    from syncperf import _runtime
    reader = _runtime.current().reader()   # sees every failure counted from now on

    @syncperf.instrument_sync("push", entity="todo")
    def push(n, conflicts=0):
        op = syncperf.current_operation()
        op.set_batch_size(n)
        op.record_items(n, change="created")
        if conflicts:
            op.record_conflict(count=conflicts, resolution="server_wins")
        return n

    @syncperf.instrument_sync("pull")
    def pull(entity):
        syncperf.current_operation().set_entity(entity)
        syncperf.current_operation().set_batch_size(7)
        return []

    @syncperf.instrument_sync("pull", entity="note")
    def broken():
        raise KeyError("boom")

    timings = []
    for i in range(int(sys.argv[1])):
        started = time.perf_counter()
        push(3, conflicts=1 if i % 4 == 0 else 0)
        pull("todo")
        try:
            broken()
        except KeyError:
            pass
        timings.append((time.perf_counter() - started) / 3)
    timings.sort()
    report = {"p50_us": timings[len(timings) // 2] * 1e6,
              "p99_us": timings[int(len(timings) * 0.99)] * 1e6,
              "max_us": timings[-1] * 1e6}
    flush_started = time.perf_counter()
    syncperf.force_flush()
    if handle.tracer_provider is not None:
        handle.tracer_provider.force_flush(int(float(sys.argv[2]) * 1000))
    report["flush_s"] = time.perf_counter() - flush_started
    _runtime.current().flush()
    failures = {}
    for m in reader.collect().resource_metrics[0].scope_metrics[0].metrics:
        if m.name == "syncperf.export.failures":
            for p in m.data.data_points:
                failures[p.attributes["syncperf.signal"]] = p.value
    report["failures"] = failures
    print(json.dumps(report), flush=True)
    """
)


def _run_service(
    env: dict[str, str],
    tmp: Path,
    iterations: int = 200,
    flush_timeout: float = 5.0,
    timeout: float = 60,
) -> dict[str, Any]:
    script = tmp / "service.py"
    script.write_text(SERVICE)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SYNCPERF_"))}
    full.update(env)
    done = subprocess.run(
        [sys.executable, str(script), str(iterations), str(flush_timeout)],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _env(endpoint: str, **extra: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_SERVICE_NAME": "example-sync",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **extra,
    }


def _points(metric: Any) -> list[Any]:
    kind = metric.WhichOneof("data")
    return list(getattr(metric, kind).data_points)


def test_spans_and_metrics_arrive_with_contract_names_units_buckets_attributes_and_resource(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    report = _run_service(_env(receiver.endpoint), tmp_path, iterations=20)
    assert report["failures"] == {}
    assert receiver.wait_for(
        lambda: bool(receiver.metric_requests) and bool(receiver.trace_requests)
    )

    # Traces: one span per operation, the contract's names, kinds, attributes and resource.
    spans = receiver.spans()
    names = sorted({span.name for _, span in spans})
    assert names == ["sync pull", "sync push"]
    resource, push = next((r, s) for r, s in spans if s.name == "sync push")
    assert resource["service.name"] == "example-sync"
    assert resource["deployment.environment.name"] == "test"
    assert resource["telemetry.sdk.language"] == "python"
    assert push.kind == push.SPAN_KIND_INTERNAL
    span_attrs = attributes(push.attributes)
    assert span_attrs["sync.operation"] == "push"
    assert span_attrs["sync.entity"] == "todo"
    assert span_attrs["sync.batch.size"] == 3
    errors = [s for _, s in spans if attributes(s.attributes).get("sync.outcome") == "error"]
    assert len(errors) == 20
    assert errors[0].status.code == errors[0].status.STATUS_CODE_ERROR
    assert [e.name for e in errors[0].events] == ["exception"]

    # Metrics: names, units, explicit bucket boundaries, attributes, resource, scope.
    metrics = list(receiver.metrics())
    metric_resource, scope, _ = metrics[-1]
    assert metric_resource["service.name"] == "example-sync"
    assert scope == "syncperf"
    duration = receiver.latest("sync.operation.duration")
    assert duration.unit == "s"
    points = _points(duration)
    assert {tuple(p.explicit_bounds) for p in points} == {tuple(DURATION_BOUNDS)}
    by_attrs = {frozenset(attributes(p.attributes).items()): p for p in points}
    conflict = by_attrs[
        frozenset(
            {("sync.operation", "push"), ("sync.entity", "todo"), ("sync.outcome", "conflict")}
        )
    ]
    success = by_attrs[
        frozenset(
            {("sync.operation", "push"), ("sync.entity", "todo"), ("sync.outcome", "success")}
        )
    ]
    assert (conflict.count, success.count) == (5, 15)
    error = by_attrs[
        frozenset(
            {
                ("sync.operation", "pull"),
                ("sync.entity", "note"),
                ("sync.outcome", "error"),
                ("error.type", "KeyError"),
            }
        )
    ]
    assert error.count == 20
    batch = receiver.latest("sync.batch.size")
    assert batch.unit == "{item}"
    assert {tuple(p.explicit_bounds) for p in _points(batch)} == {
        tuple(float(b) for b in BATCH_BOUNDS)
    }
    conflicts = receiver.latest("sync.conflicts")
    assert conflicts.unit == "{conflict}"
    assert conflicts.sum.is_monotonic
    (point,) = _points(conflicts)
    assert attributes(point.attributes) == {
        "sync.entity": "todo",
        "sync.conflict.resolution": "server_wins",
    }
    assert point.as_int == 5
    items = receiver.latest("sync.items")
    assert {tuple(sorted(attributes(p.attributes).items())): p.as_int for p in _points(items)} == {
        (("sync.change", "created"), ("sync.entity", "todo"), ("sync.operation", "push")): 60
    }
    overhead = receiver.latest("syncperf.overhead")
    assert overhead.unit == "s"
    assert {attributes(p.attributes)["syncperf.component"] for p in _points(overhead)} == {
        "operation"
    }


def test_http_protobuf_protocol_is_honoured(tmp_path: Path) -> None:
    # No HTTP receiver here: pointing HTTP at the gRPC-only port must fail, which proves
    # the HTTP exporter (not gRPC) was chosen, and the failure is counted, not raised.
    with OtlpReceiver() as grpc_only:
        report = _run_service(
            _env(
                grpc_only.endpoint,
                OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                OTEL_EXPORTER_OTLP_TIMEOUT="2",
            ),
            tmp_path,
            iterations=5,
            flush_timeout=3,
        )
        assert grpc_only.metric_requests == []
    assert report["failures"].get("metrics", 0) >= 1


@pytest.mark.parametrize("collector", ["stopped", "silent", "hanging"])
def test_collector_down_or_hanging_leaves_request_latency_alone_and_counts_failures(
    tmp_path: Path, collector: str
) -> None:
    with OtlpReceiver() as healthy:
        baseline = _run_service(_env(healthy.endpoint), tmp_path, iterations=400)
    assert baseline["failures"] == {}
    if collector == "stopped":
        receiver = OtlpReceiver().start()
        endpoint = receiver.endpoint
        receiver.stop()
        cleanup: Any = None
    elif collector == "silent":
        cleanup = SilentListener()
        endpoint = cleanup.endpoint
    else:
        cleanup = OtlpReceiver().start()
        cleanup.hang()
        endpoint = cleanup.endpoint
    try:
        started = time.monotonic()
        report = _run_service(
            _env(
                endpoint,
                OTEL_EXPORTER_OTLP_TIMEOUT="1",
                OTEL_METRIC_EXPORT_TIMEOUT="1000",
                OTEL_BSP_EXPORT_TIMEOUT="1000",
            ),
            tmp_path,
            iterations=400,
            flush_timeout=2,
        )
        elapsed = time.monotonic() - started
    finally:
        if isinstance(cleanup, SilentListener):
            cleanup.close()
        elif cleanup is not None:
            cleanup.answer()
            cleanup.stop()
    # Request path: the median operation costs what it costs with a healthy collector
    # (exports run on their own threads); generous bound for a shared 2-core machine.
    assert report["p50_us"] < max(3 * baseline["p50_us"], baseline["p50_us"] + 200), (
        report,
        baseline,
    )
    # Failures are counted by signal, never raised; the process still ends promptly.
    assert report["failures"].get("metrics", 0) >= 1, report
    assert report["failures"].get("traces", 0) >= 1, report
    assert elapsed < 45
