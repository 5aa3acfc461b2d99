"""What clients tell, through real servers: staleness from a real client's checkpoint, the
Sync-Client header and the client metrics batch endpoint on uvicorn."""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import pytest
from fastapi import FastAPI

from syncperf.asgi import client_metrics_app
from syncperf.testing import Capture
from tests._examples import load_example
from tests.integration.test_real_clients import CLIENTS, node, serve  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("measured_by", ["decorator", "middleware"])
def test_the_real_watermelondb_clients_staleness_and_header_are_recorded(
    measured_by: str,
    node: str,  # noqa: F811 (the fixture imported above)
    syncperf_capture: Capture,
) -> None:
    example = load_example("watermelondb_server.py", f"example_health_{measured_by}")
    for base in serve(example.create_app(measured_by=measured_by)):
        done = subprocess.run(
            [node, "drive.mjs", "watermelondb", base],
            cwd=CLIENTS,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
    client = json.loads(done.stdout.strip().splitlines()[-1])
    checkpoints = client["checkpoints"]
    assert len(checkpoints) >= 4  # every pull after the first carries lastPulledAt

    # The server saw each checkpoint between the client's before and after: now - checkpoint
    # lies between (before - checkpoint) and (after - checkpoint), on one machine's clock.
    (point,) = syncperf_capture.points("sync.pull.staleness")
    assert dict(point.attributes) == {"sync.operation": "pull"}
    assert point.count == len(checkpoints)
    low = sum(c["before"] - c["last_pulled_at"] for c in checkpoints) / 1000
    high = sum(c["after"] - c["last_pulled_at"] for c in checkpoints) / 1000
    assert low - 0.002 * len(checkpoints) <= point.sum <= high + 0.002 * len(checkpoints)

    # Every push sent `Sync-Client: pending=<records in the push>, app="0.28.0"`.
    (pending,) = syncperf_capture.points("sync.client.pending_changes")
    assert dict(pending.attributes) == {
        "sync.operation": "push",
        "sync.client.app_version": "0.28.0",
    }
    assert pending.count == client["pushes"]
    assert pending.sum == client["reported_pending"]
    assert syncperf_capture.total("syncperf.dropped") == 0


BATCH = {
    "batch": "b-1",
    "app": "2.3.1",
    "records": [
        {"operation": "push", "entity": "todo", "duration": 1.5, "outcome": "error", "retries": 3},
        {"operation": "push", "entity": "todo", "duration": 0.25, "outcome": "success"},
        {"operation": "pull", "pending": 40, "last-sync-age": 7200, "db-size": 1048576},
    ],
}


def test_the_batch_endpoint_answers_and_records_through_uvicorn(
    syncperf_capture: Capture,
) -> None:
    app = FastAPI()
    app.mount("/client-metrics", client_metrics_app(rate=0.01, burst=2, max_body_bytes=4096))
    for base in serve(app):
        url = base + "/client-metrics/"
        with httpx.Client() as http:
            first = http.post(url, json=BATCH, headers={"sync-client-id": "device-a"})
            again = http.post(url, json=BATCH, headers={"sync-client-id": "device-a"})
            too_big = http.post(url, content=b"x" * 5000, headers={"sync-client-id": "device-b"})
            bad = http.post(url, content=b"{", headers={"sync-client-id": "device-b"})
            limited = http.post(url, json=BATCH, headers={"sync-client-id": "device-a"})
            wrong_method = http.get(url)
    assert (first.status_code, first.json()) == (202, {"accepted": 3, "rejected": 0})
    assert (again.status_code, again.json()["duplicate"]) == (202, True)
    assert (too_big.status_code, bad.status_code, wrong_method.status_code) == (413, 400, 405)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0

    cap = syncperf_capture
    todo = {"sync.operation": "push", "sync.entity": "todo", "sync.client.app_version": "2.3.1"}
    durations = {
        p.attributes["sync.outcome"]: (p.count, p.sum)
        for p in cap.points("sync.client.operation.duration", todo)
    }
    assert durations == {"error": (1, 1.5), "success": (1, 0.25)}
    assert [(p.count, p.sum) for p in cap.points("sync.client.retries", todo)] == [(1, 3)]
    pull = {"sync.operation": "pull", "sync.client.app_version": "2.3.1"}
    for name, value in [
        ("sync.client.pending_changes", 40),
        ("sync.client.last_sync_age", 7200),
        ("sync.client.db_size", 1048576),
    ]:
        assert [(p.count, p.sum) for p in cap.points(name, pull)] == [(1, value)], name
    results = {
        p.attributes["sync.client.batch.result"]: p.value for p in cap.points("sync.client.batches")
    }
    assert results == {
        "accepted": 1,
        "duplicate": 1,
        "too_large": 1,
        "invalid": 1,
        "rate_limited": 1,
    }
