"""examples/outbox_relay.py runs, and what it records is right (SQLite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from syncperf.testing import Capture
from tests._examples import load_example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "outbox_relay.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("outbox_relay.py", "outbox_relay_example")


def test_example_relay_publishes_every_committed_push_with_right_metrics_and_links(
    example: ModuleType, syncperf_capture: Capture, tmp_path: Path
) -> None:
    gauges: dict[str, Any] = {}

    def report() -> None:
        for name in ("outbox.depth", "outbox.oldest_age"):
            gauges[name] = [
                p.value for p in syncperf_capture.points(name, {"outbox.name": "todos"})
            ]

    result = example.run_demo(f"sqlite:///{tmp_path / 'outbox.db'}", pushes=5, report=report)

    # 5 pushes x 2 rows + the poison pill; the rejected push wrote (and counted) nothing
    assert result["statuses"] == {"published": 10, "dead": 1}
    assert result["delivered"] == 10
    cap = syncperf_capture
    event = {
        e: cap.total("outbox.messages", {"outbox.name": "todos", "outbox.event": e})
        for e in ("enqueued", "published", "failed", "retried", "dead_lettered")
    }
    # "flaky 0" fails once; the poison pill fails on attempts 1, 2 and 3, then is dead
    assert event == {"enqueued": 11, "published": 10, "failed": 4, "retried": 3, "dead_lettered": 1}
    assert {
        p.attributes["error.type"]
        for p in cap.points("outbox.messages", {"outbox.event": "failed"})
    } == {"outbox_relay_example.BrokerError"}
    assert cap.total("outbox.lag", {"outbox.name": "todos"}) == 10
    assert gauges == {"outbox.depth": [0], "outbox.oldest_age": [0]}

    spans = cap.spans()
    pushes = {s.context.span_id: s for s in spans if s.name == "sync push"}
    creates = {s.context.span_id: s for s in spans if s.name == "create todo.events"}
    sends = [s for s in spans if s.name == "send todo.events"]
    assert len(pushes) == 7 and len(creates) == 12  # the rejected push created one too
    assert all(c.parent is not None and c.parent.span_id in pushes for c in creates.values())
    linked = {link.context.span_id for send in sends for link in send.links}
    assert len(linked) == 11  # every committed message, none of the rolled-back one
    assert linked <= set(creates)
    assert sum(s.attributes["outbox.published"] for s in sends) == 10
    retries = [
        link for send in sends for link in send.links if link.attributes["outbox.attempt"] > 1
    ]
    assert len(retries) == 3


def test_example_runs_as_a_script() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--pushes", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "outbox rows by status: {'dead': 1, 'published': 6}" in done.stdout
    assert "outbox.depth {'outbox.name': 'todos'} 0" in done.stdout
    assert "'outbox.event': 'enqueued', 'outbox.name': 'todos'} 7" in done.stdout
