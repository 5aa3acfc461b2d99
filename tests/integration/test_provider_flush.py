"""The tracer provider's own ``force_flush()`` exports syncperf's spans, in a real process.

A service set up with ``setup_otlp()`` records operations, then flushes the provider the way
tests, serverless handlers and other libraries' shutdown hooks do, and leaves with
``os._exit`` (no exit hook of anyone runs). Every span that ended before the flush must have
reached the loopback OTLP receiver.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = 300

SERVICE = textwrap.dedent(
    """
    import os, sys
    from opentelemetry import trace
    import syncperf
    from syncperf.export import setup_otlp

    setup_otlp()

    @syncperf.instrument_sync("push", entity="todo")
    def push():
        return 1

    for _ in range(int(sys.argv[1])):
        push()
    ok = trace.get_tracer_provider().force_flush(30_000)
    print(ok, flush=True)
    os._exit(0)
    """
)


def test_provider_force_flush_exports_every_syncperf_span(tmp_path: Path) -> None:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    with OtlpReceiver() as receiver:
        env = receiver.environment(
            OTEL_METRICS_EXPORTER="none",
            OTEL_BSP_SCHEDULE_DELAY="3600000",  # only the flush exports
            OTEL_BSP_MAX_QUEUE_SIZE=str(2 * OPERATIONS),  # no queue drops the spans
        )
        done = subprocess.run(
            [sys.executable, str(script), str(OPERATIONS)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip() == "True"
        spans = [span for _, span in receiver.spans() if span.name == "sync push"]
    assert len(spans) == OPERATIONS
