"""Real sync clients from npm against the example servers: syncperf counts what they count.

``tests/integration/clients/drive.mjs`` runs Replicache, WatermelonDB, RxDB and PouchDB
(pinned in ``clients/package-lock.json``, installed by ``.ci/run`` with ``npm ci``) under
node against an example server on uvicorn, measured once by the decorator and once by the
ASGI middleware. Each client script creates, edits and deletes records on two devices,
makes two devices edit the same records (conflicts), loses one push response on purpose
(the server applied it; the client retries) and pulls; it prints its own counts from its
side of the wire and the client library's own figures. syncperf's must be equal. Replicache
and PouchDB resend as a matter of course (pending mutations, revisions offered back to
``_revs_diff``): those resends are on the spans, never idempotency hits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from syncperf.testing import Capture
from tests._examples import load_example
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

CLIENTS = Path(__file__).resolve().parent / "clients"
EXAMPLES = {
    "replicache": "replicache_server.py",
    "watermelondb": "watermelondb_server.py",
    "rxdb": "rxdb_server.py",
    "pouchdb": "couchdb_server.py",
}
RESENT = {
    "replicache": "sync.replicache.duplicate_mutations",
    "pouchdb": "sync.couchdb.revs_present",
}
"""Where a client whose protocol resends normally (no idempotency hit) has its resends."""


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the pinned clients installed."""
    found, npm = shutil.which("node"), shutil.which("npm")
    if found is None:
        pytest.skip("node is not installed")
    if not (CLIENTS / "node_modules").is_dir():
        if npm is None:
            pytest.skip("npm is not installed (cd tests/integration/clients; npm ci)")
        cache = CLIENTS.parents[2] / ".cache" / "npm"  # the workspace's npm cache, as .ci/run
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error", "--cache", str(cache)],
            cwd=CLIENTS,
            check=True,
        )
    return found


def serve(app: Any) -> Iterator[str]:
    """Run ``app`` on uvicorn on loopback; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def syncperf_counts(cap: Capture, resent: str | None = None) -> dict[str, int]:
    """syncperf's figures, named like the client script's; ``resent``: the span attribute
    holding the client's normal resends."""
    counts = dict.fromkeys(
        ("pushes", "pushed", "pushed_deleted", "duplicates", "conflicts", "pulls", "pulled",
         "pulled_deleted", "refused"),
        0,
    )  # fmt: skip
    for metric in cap.metrics():
        for point in metric.data.data_points:
            attrs = dict(point.attributes or {})
            operation = attrs.get("sync.operation")
            if metric.name == "sync.operation.duration" and operation in ("push", "pull"):
                counts[f"{operation}es" if operation == "push" else "pulls"] += point.count
                if attrs.get("sync.outcome") == "error":
                    counts["refused"] += point.count
            elif metric.name == "sync.items" and operation in ("push", "pull"):
                counts[f"{operation}ed"] += point.value
                if attrs.get("sync.change") == "deleted":
                    counts[f"{operation}ed_deleted"] += point.value
            elif metric.name == "sync.idempotency.hits":
                counts["duplicates"] += point.value
            elif metric.name == "sync.conflicts":
                counts["conflicts"] += point.value
    if resent is not None:
        counts["resent"] = sum(int((s.attributes or {}).get(resent, 0)) for s in cap.spans())
    return counts


@pytest.mark.parametrize("measured_by", ["decorator", "middleware"])
@pytest.mark.parametrize("client", sorted(EXAMPLES))
def test_syncperf_counts_what_the_real_client_counts(
    client: str, measured_by: str, node: str, syncperf_capture: Capture
) -> None:
    example = load_example(EXAMPLES[client], f"example_{client}_{measured_by}")
    app = example.create_app(measured_by=measured_by)
    for base in serve(app):
        done = subprocess.run(
            [node, "drive.mjs", client, base],
            cwd=CLIENTS,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
    client_counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert client_counts["lost"] == 1  # one response was lost and retried
    if client in RESENT:  # resent as the protocol always does: no idempotency hit
        assert client_counts["duplicates"] == 0
        assert client_counts["resent"] >= 1
    else:
        assert client_counts["duplicates"] >= 1
    if client == "replicache":  # a client of an unsupported schema: its pushes applied nothing
        assert client_counts["refused"] >= 2
    assert client_counts["conflicts"] >= 1
    assert client_counts["pushed_deleted"] >= 1
    del client_counts["lost"]
    client_counts.setdefault("refused", 0)  # requests answered with a protocol error
    for extra in ("revs_diffs", "checkpoints", "reported_pending"):  # see test_client_health
        client_counts.pop(extra, None)
    assert syncperf_counts(syncperf_capture, RESENT.get(client)) == client_counts
    assert syncperf_capture.total("syncperf.dropped") == 0
