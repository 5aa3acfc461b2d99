"""A ratio sampler configured the standard way decides on the trace id that is exported.

``OTEL_TRACES_SAMPLER=traceidratio``: every span the loopback OTLP receiver gets must carry a
trace id that the same sampler accepts, so services downstream that sample by the trace id
keep the same traces (consistent sampling).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from tests.integration.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

SERVICE = textwrap.dedent(
    """
    import os
    from opentelemetry import trace
    import syncperf
    from syncperf.export import setup_otlp

    setup_otlp()
    for _ in range(400):
        with syncperf.sync_operation("push"):
            pass
    trace.get_tracer_provider().force_flush(30_000)
    os._exit(0)
    """
)


def test_exported_trace_ids_are_the_ones_the_ratio_sampler_accepted(tmp_path: Path) -> None:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    with OtlpReceiver() as receiver:
        env = receiver.environment(
            OTEL_METRICS_EXPORTER="none",
            OTEL_TRACES_SAMPLER="traceidratio",
            OTEL_TRACES_SAMPLER_ARG="0.5",
        )
        done = subprocess.run(
            [sys.executable, str(script)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        spans = [span for _, span in receiver.spans() if span.name == "sync push"]
    assert 100 < len(spans) < 300  # about half of 400
    ratio = TraceIdRatioBased(0.5)
    rejected = [
        span.trace_id.hex()
        for span in spans
        if not ratio.should_sample(
            None, int.from_bytes(span.trace_id, "big"), "sync push"
        ).decision.is_sampled()
    ]
    assert rejected == []
