"""examples/n_plus_one.py runs, and syncperf catches its N+1 and not its batched fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from syncperf.testing import Capture
from tests._examples import load_example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "n_plus_one.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("n_plus_one.py", "n_plus_one_example")


def test_the_one_by_one_push_is_reported_and_the_batched_one_is_not(
    example: ModuleType, syncperf_capture: Capture
) -> None:
    queries = example.run_demo("sqlite://", items=50)

    assert queries == {"one_by_one": 101, "batched": 3}  # each with its COMMIT
    (detections,) = syncperf_capture.points("sync.db.n_plus_one")
    assert detections.value == 2  # the per-item SELECT and the autoflushed per-item INSERT
    assert detections.attributes["db.collection.name"] == "example_todos"
    (per_push,) = syncperf_capture.points("sync.db.queries", {"sync.entity": "todo"})
    assert (per_push.count, per_push.sum, per_push.max, per_push.min) == (2, 104, 101, 3)
    one_by_one, batched = [s for s in syncperf_capture.spans() if s.name == "sync push"]
    assert len([e for e in one_by_one.events if e.name == "sync.db.n_plus_one"]) == 2
    assert [e for e in batched.events if e.name == "sync.db.n_plus_one"] == []


def test_the_example_runs_as_a_script() -> None:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "push one by one: 101 queries for 50 items" in done.stdout
    assert "push batched:    3 queries for 50 items" in done.stdout
    assert "N+1 queries in sync push (entity todo)" in done.stdout
    assert "sync.db.n_plus_one {db.collection.name=example_todos" in done.stdout
