"""Graceful shutdown exports what was recorded, within ``shutdown_timeout``.

Real servers in their own processes (uvicorn, with and without ``--workers 2``; gunicorn with
two uvicorn workers) serve an app
set up with ``setup_otlp()``; metric and span exports are scheduled an hour away, so only
the shutdown can export. After 200 sync operations the server gets SIGTERM, as an
orchestrator sends it: every operation must reach the loopback OTLP receiver, and a
collector that accepts and never answers (or answers after 12 s) must not hold the exit
past the bound.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import free_port, server_env
from tests.integration.otlp_receiver import OtlpReceiver, SilentListener, attributes

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = 200
SHUTDOWN_TIMEOUT = 2.0
EXIT_BOUND = SHUTDOWN_TIMEOUT + 6.0
"""Seconds from SIGTERM to exit: the flush bound plus the servers' own stop (generous on a
loaded machine, and far below the 10 s a silent collector held the exit before)."""

APP = textwrap.dedent(
    """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from syncperf.asgi import SyncPerfMiddleware
    from syncperf.export import setup_otlp

    setup_otlp()


    async def push(request):
        return JSONResponse({"ok": True})


    app = Starlette(routes=[Route("/sync/push", push, methods=["POST"])])
    app.add_middleware(SyncPerfMiddleware, routes={"/sync/push": "push"})
    """
)

SERVERS = {
    "uvicorn": ["-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--lifespan", "on"],
    "uvicorn-workers": [
        "-m",
        "uvicorn",
        "app:app",
        "--host",
        "127.0.0.1",
        "--lifespan",
        "on",
        "--workers",
        "2",
    ],
    "gunicorn": [
        "-m",
        "gunicorn",
        "app:app",
        "--workers",
        "2",
        "--worker-class",
        "uvicorn.workers.UvicornWorker",
    ],
}


def _command(server: str, port: int) -> list[str]:
    args = [sys.executable, *SERVERS[server]]
    if server.startswith("uvicorn"):
        return [*args, "--port", str(port)]
    return [*args, "--bind", f"127.0.0.1:{port}"]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def _start(server: str, app_dir: Path, endpoint: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = server_env(app_dir, endpoint, "shutdown-test", SHUTDOWN_TIMEOUT)
    process = subprocess.Popen(
        _command(server, port),
        cwd=app_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, process.communicate()[0].decode()
        try:
            httpx.get(url + "/", timeout=1)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"{server} did not start"
            time.sleep(0.1)
    return process, url


def _serve_then_stop(server: str, app_dir: Path, endpoint: str) -> float:
    """200 sync operations, SIGTERM; returns the seconds the server took to exit."""
    process, url = _start(server, app_dir, endpoint)
    try:
        with httpx.Client(base_url=url) as client:
            for _ in range(OPERATIONS):
                assert client.post("/sync/push", json={}).status_code == 200
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{server} did not exit within 40 s of SIGTERM")
        return time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0].decode()
        assert "Traceback" not in output, output


def _exported_operations(receiver: OtlpReceiver) -> int:
    """Push operations in the latest duration histogram of each worker, summed."""
    latest: dict[str, int] = {}
    for resource, _, metric in receiver.metrics():
        if metric.name == "sync.operation.duration":
            for point in metric.histogram.data_points:
                if attributes(point.attributes).get("sync.operation") == "push":
                    latest[resource["service.instance.id"]] = point.count
    return sum(latest.values())


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_sigterm_exports_every_operation_recorded_before_it(server: str, app_dir: Path) -> None:
    with OtlpReceiver() as receiver:
        seconds = _serve_then_stop(server, app_dir, receiver.endpoint)
        spans = [span for _, span in receiver.spans() if span.name == "sync push"]
        assert len(spans) == OPERATIONS
        assert _exported_operations(receiver) == OPERATIONS
    assert seconds < EXIT_BOUND


@pytest.fixture
def silent() -> Iterator[str]:
    """A collector that accepts TCP connections and never answers."""
    listener = SilentListener()
    yield listener.endpoint
    listener.close()


@pytest.fixture
def slow() -> Iterator[str]:
    """A collector that answers each export 12 s late."""
    with OtlpReceiver() as receiver:
        receiver.hang()
        timer = threading.Timer(12.0, receiver.answer)
        timer.start()
        yield receiver.endpoint
        timer.cancel()


@pytest.mark.parametrize("collector", ["silent", "slow"])
@pytest.mark.parametrize("server", sorted(SERVERS))
def test_an_unresponsive_collector_cannot_hold_the_exit_past_the_bound(
    server: str, collector: str, app_dir: Path, request: pytest.FixtureRequest
) -> None:
    endpoint = request.getfixturevalue(collector)
    seconds = _serve_then_stop(server, app_dir, endpoint)
    assert seconds < EXIT_BOUND


HOOK_THEN_EXIT = textwrap.dedent(
    """
    import json, sys, time
    import syncperf
    from syncperf.export import setup_otlp

    setup_otlp()
    for _ in range(20):
        with syncperf.sync_operation("push", entity="todo"):
            pass
    started = time.time()
    ok = syncperf.force_flush()  # gunicorn's worker_exit recipe; then the exit hook flushes
    print(json.dumps({"started": started, "ok": ok}), flush=True)
    """
)


def test_a_flush_hook_then_the_exit_flush_wait_one_bound_in_all(
    silent: str, tmp_path: Path
) -> None:
    """``force_flush()`` in a shutdown hook (gunicorn's ``worker_exit``), then syncperf's own
    exit flush: with a collector that accepts and never answers, the process stops within
    about one ``shutdown_timeout``, not one per flush."""
    bound = 1.0
    script = tmp_path / "hook.py"
    script.write_text(HOOK_THEN_EXIT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SYNCPERF_"))}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": silent,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
            "OTEL_BSP_SCHEDULE_DELAY": "3600000",
            "SYNCPERF_SHUTDOWN_TIMEOUT": str(bound),
        }
    )
    done = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    ended = time.time()
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"] is False  # the hook's flush ran out of time
    assert ended - report["started"] < bound + 0.7  # one bound in all, not two
