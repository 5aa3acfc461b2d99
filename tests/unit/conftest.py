"""Fixtures the unit tests of several modules share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)

from syncperf import _runtime
from syncperf._metrics import outputs
from syncperf.testing import Capture, capture


@pytest.fixture
def multiprocess_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Multiprocess mode in ``tmp_path``, no runtime, no set-up outputs; each test's workers
    are forked (a worker's files are named by its pid)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(outputs, "OUTPUTS", outputs.Outputs())
    flushes = list(outputs.FLUSHES)  # other tests' providers: each flush would collect
    outputs.FLUSHES.clear()
    previous = _runtime.replace(None)
    try:
        yield tmp_path
    finally:
        outputs.FLUSHES[:] = flushes
        rt = _runtime.replace(previous)
        if rt is not None:
            rt.shutdown()


class DropsAll(Sampler):
    """An application sampler (asked, not decided in front of the SDK) that drops all; the
    trace state it returns, the parent's, is the unsampled span's (as the SDK's)."""

    def should_sample(self, context: Any, *args: Any, **kwargs: Any) -> SamplingResult:
        state = trace.get_current_span(context).get_span_context().trace_state
        return SamplingResult(Decision.DROP, trace_state=state)

    def get_description(self) -> str:
        return "DropsAll"


@pytest.fixture(
    params=[ParentBased(ALWAYS_OFF), ALWAYS_OFF, DropsAll()],
    ids=["parent-based", "always-off", "asked"],
)
def dropping(request: pytest.FixtureRequest) -> Iterator[Capture]:
    """A capture whose sampler drops every span: standard, parent-based, or asked."""
    with capture(sampler=request.param) as cap:
        yield cap
