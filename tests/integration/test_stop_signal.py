"""SIGTERM exports what was recorded before it, even where no shutdown hook of the server runs.

Real uvicorn processes serve apps set up with ``setup_otlp()``; metric and span exports are
scheduled an hour away, so only the stop can export. Three stops the lifespan shutdown and the
exit hooks never see: a request still open when the grace period ends (the orchestrator's
SIGKILL comes before the server drained its connections), a ``SyncPerfMiddleware`` on a
mounted sub-application (the lifespan is not passed to mounts, and uvicorn re-raises SIGTERM
so the exit hooks do not run) and ``--lifespan off``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import free_port, server_env
from tests.integration.otlp_receiver import OtlpReceiver, attributes

pytestmark = pytest.mark.integration
OPERATIONS = 20
GRACE = 1.5
"""Seconds between SIGTERM and SIGKILL, the orchestrator's grace period (30 s in Kubernetes)."""

APP = textwrap.dedent(
    """
    import asyncio

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from syncperf.asgi import SyncPerfMiddleware
    from syncperf.export import setup_otlp

    setup_otlp()


    async def push(request):
        await asyncio.sleep(float(request.query_params.get("slow", "0")))
        return JSONResponse({"ok": True})


    async def ping(request):
        return JSONResponse({"ok": True})


    app = Starlette(routes=[Route("/sync/push", push, methods=["POST"]), Route("/", ping)])
    app.add_middleware(SyncPerfMiddleware, routes={"/sync/push": "push"})

    sync_api = Starlette(routes=[Route("/push", push, methods=["POST"])])
    sync_api.add_middleware(SyncPerfMiddleware, routes={"/push": "push"})
    mounted = Starlette(routes=[Route("/", ping), Mount("/sync", app=sync_api)])
    """
)


def _start(
    app_dir: Path, endpoint: str, *args: str, server: str = "uvicorn"
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = server_env(app_dir, endpoint, "stop-signal-test", 2)
    if server == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", *args, "--host", "127.0.0.1"]
        command += ["--port", str(port)]
    else:  # one uvicorn worker, SIGKILLed by the master when the graceful timeout ends
        command = [sys.executable, "-m", "gunicorn", *args, "--bind", f"127.0.0.1:{port}"]
        command += ["--worker-class", "uvicorn.workers.UvicornWorker"]
        command += ["--graceful-timeout", "1"]
    process = subprocess.Popen(
        command, cwd=app_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, process.communicate()[0].decode()
        try:
            httpx.get(url + "/", timeout=1)
            return process, url
        except httpx.TransportError:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.1)


def _push(url: str, path: str) -> None:
    with httpx.Client(base_url=url) as client:
        for _ in range(OPERATIONS):
            assert client.post(path, json={}).status_code == 200


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL when ``grace`` seconds passed; no traceback in the output."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
    output = process.communicate()[0].decode()
    assert "Traceback" not in output, output


def _exported(receiver: OtlpReceiver) -> tuple[int, int]:
    """(push operations in the latest duration histogram, ``sync push`` spans)."""
    count = 0
    for _, _, metric in receiver.metrics():
        if metric.name == "sync.operation.duration":
            for point in metric.histogram.data_points:
                if attributes(point.attributes).get("sync.operation") == "push":
                    count = point.count
    spans = [span for _, span in receiver.spans() if span.name == "sync push"]
    return count, len(spans)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_completed_requests_are_exported_when_an_open_request_outlives_the_grace_period(
    app_dir: Path, server: str
) -> None:
    with OtlpReceiver() as receiver:
        process, url = _start(app_dir, receiver.endpoint, "app:app", server=server)
        _push(url, "/sync/push")

        outcome: list[object] = []

        def long_poll() -> None:
            try:
                outcome.append(httpx.post(url + "/sync/push?slow=60", json={}, timeout=30))
            except httpx.HTTPError as error:  # cut by the SIGKILL
                outcome.append(error)

        open_request = threading.Thread(target=long_poll, daemon=True)
        open_request.start()
        time.sleep(0.5)
        _stop(process, grace=GRACE)  # uvicorn: the orchestrator's SIGKILL; gunicorn: its own
        open_request.join(5)
        assert outcome and isinstance(outcome[0], httpx.HTTPError)  # it held the stop
        time.sleep(0.3)
        assert _exported(receiver) == (OPERATIONS, OPERATIONS)


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (("app:mounted",), "/sync/push"),
        (("app:app", "--lifespan", "off"), "/sync/push"),
    ],
    ids=["mounted", "lifespan-off"],
)
def test_sigterm_exports_what_no_lifespan_shutdown_would(
    app_dir: Path, args: tuple[str, ...], path: str
) -> None:
    with OtlpReceiver() as receiver:
        process, url = _start(app_dir, receiver.endpoint, *args)
        _push(url, path)
        _stop(process)
        assert process.returncode == -signal.SIGTERM
        time.sleep(0.3)
        assert _exported(receiver) == (OPERATIONS, OPERATIONS)
