"""Deployments on real processes: how services are really started and scraped.

Each test runs ``tests/integration/deploy_app.py`` in its own server process (uvicorn,
``uvicorn --workers 2``, gunicorn with uvicorn workers, or under ``opentelemetry-instrument``)
against the loopback OTLP receiver and a real Prometheus scrape, and checks that every
configured output has every syncperf metric, exactly once, with the exact counts.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import free_port
from tests.integration.otlp_receiver import OtlpReceiver, attributes
from tests.integration.prometheus_server import query, running_prometheus

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
APP = "tests.integration.deploy_app:app"
PUSHES = 24


@contextlib.contextmanager
def serving(command: list[str], port: int, log: Path, **env: str) -> Iterator[httpx.Client]:
    """Run a server process on ``port`` until it answers; yields a client for it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SYNCPERF_"))}
    clean.pop("PROMETHEUS_MULTIPROC_DIR", None)
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), clean.get("PYTHONPATH")]))
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**clean, "PYTHONPATH": path, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers are stopped with it
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 40
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(base + "/debug/outputs", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server never answered:\n" + log.read_text()
            time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=10) as client:
            yield client
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def push_all(base: str, count: int = PUSHES, resend_dropped: bool = False) -> set[int]:
    """``count`` pushes, each on a new connection; returns the worker pids that served them.

    ``resend_dropped``: send again a push whose connection was closed before any response, as
    a sync client does. A worker that stops (``--max-requests``) closes the connections it
    accepted and has not read a request from yet: that push never reached the handler. The
    close is a FIN (``RemoteProtocolError``) or, when the request's bytes sit unread in the
    socket, a reset (``ReadError``). Had the handler run, the counts would be one too many.
    """
    pids = set()
    for _ in range(count):
        for attempt in range(3):
            try:
                response = httpx.post(
                    base + "/sync/todo/push", json={"changes": [1, 2, 3]}, timeout=10
                )
                break
            except (httpx.RemoteProtocolError, httpx.ReadError):
                if not resend_dropped or attempt == 2:
                    raise
        assert response.status_code == 200
        pids.add(response.json()["pid"])
    return pids


def scrape_total(url: str, family: str, **labels: str) -> float:
    """Sum of the samples of ``family`` whose labels include ``labels`` on one scrape."""
    text = httpx.get(url, timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{family}(\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(2) or "") for k, v in labels.items()):
            total += float(match.group(3))
    return total


def otlp_total(
    receiver: OtlpReceiver, name: str, scope: Callable[[str], bool], **labels: Any
) -> int:
    """Latest cumulative count of histogram ``name`` from scopes matching ``scope``."""
    latest: dict[tuple[str, tuple[Any, ...]], int] = {}
    for _, scope_name, metric in receiver.metrics():
        if metric.name != name or not scope(scope_name):
            continue
        for point in metric.histogram.data_points:
            attrs = attributes(point.attributes)
            if all(attrs.get(k) == v for k, v in labels.items()):
                latest[(scope_name, tuple(sorted(attrs.items())))] = point.count
    return sum(latest.values())


def eventually(check: Callable[[], Any], expected: Any, timeout: float = 20.0) -> Any:
    """Poll ``check()`` until it returns ``expected``; returns the last value."""
    deadline = time.monotonic() + timeout
    while (value := check()) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def _otlp_env(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_LOGS_EXPORTER": "none",
    }


SYNCPERF = lambda scope: scope == "syncperf"  # noqa: E731


# --- 1. set-ups compose ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "steps",
    [
        "otlp,prometheus",
        "prometheus,otlp",
        "otlp,prometheus,configure,otlp,prometheus",
        "configure,prometheus,prometheus,otlp,otlp,configure",
    ],
)
def test_every_order_and_repeat_of_the_setups_feeds_otlp_and_prometheus_once(
    steps: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    port, scrape_port = free_port(), free_port()
    command = [str(BIN / "python"), "-m", "uvicorn", APP, "--port", str(port)]
    env = {"DEPLOY_SETUP": steps, "DEPLOY_PROMETHEUS_PORT": str(scrape_port), **_otlp_env(receiver)}
    with serving(command, port, tmp_path / "server.log", **env) as client:
        assert client.get("/debug/outputs").json()["exporters"] == 1
        assert client.get("/debug/outputs").json()["prometheus"] == 1
        push_all(str(client.base_url))
        scrape = f"http://127.0.0.1:{scrape_port}/metrics"
        count = "sync_operation_duration_seconds_count"
        assert eventually(lambda: scrape_total(scrape, count, sync_operation="push"), PUSHES) == (
            PUSHES
        )
        pushes = {"sync.operation": "push"}
        assert (
            eventually(
                lambda: otlp_total(receiver, "sync.operation.duration", SYNCPERF, **pushes), PUSHES
            )
            == PUSHES
        )
        body = httpx.get(scrape, timeout=10).text
        assert body.count(f"# TYPE {count[:-6]} histogram") == 1  # one collector, not two


# --- 2. zero-code: opentelemetry-instrument ----------------------------------------------------


@pytest.fixture
def instrument_launcher() -> str:
    launcher = BIN / "opentelemetry-instrument"
    if not launcher.exists():
        pytest.skip("opentelemetry-instrument not installed (pip install -e '.[test]')")
    found = importlib.metadata.entry_points(group="opentelemetry_instrumentor", name="syncperf")
    if not found:
        pytest.skip("syncperf's entry points are not installed (pip install -e .)")
    return str(launcher)


def test_opentelemetry_instrument_exports_syncperf_metrics_with_no_syncperf_call(
    instrument_launcher: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    port, scrape_port = free_port(), free_port()
    command = [instrument_launcher, str(BIN / "python"), "-m", "uvicorn", APP, "--port", str(port)]
    env = {
        **_otlp_env(receiver),
        "DEPLOY_SETUP": "",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp,prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(scrape_port),
        "OTEL_SERVICE_NAME": "zero-code",
    }
    with serving(command, port, tmp_path / "server.log", **env) as client:
        assert client.get("/debug/outputs").json()["exporters"] == 0  # the app's pipeline only
        push_all(str(client.base_url))
        pushes = {"sync.operation": "push"}
        assert (
            eventually(
                lambda: otlp_total(receiver, "sync.operation.duration", SYNCPERF, **pushes), PUSHES
            )
            == PUSHES
        )
        scrape = f"http://127.0.0.1:{scrape_port}/metrics"
        count = "sync_operation_duration_seconds_count"
        assert eventually(lambda: scrape_total(scrape, count, sync_operation="push"), PUSHES) == (
            PUSHES
        )
        assert eventually(lambda: any(s.name == "sync push" for _, s in receiver.spans()), True)
    resources = {r.get("service.name") for r, scope, _ in receiver.metrics() if scope == "syncperf"}
    assert resources == {"zero-code"}  # the provider's resource
    # HTTP metrics: the contrib instrumentation's, once; syncperf does not repeat them there.
    http = {m.name for _, scope, m in receiver.metrics() if m.name.startswith("http.server")}
    assert http
    assert not [m for _, scope, m in receiver.metrics() if scope == "syncperf" and m.name in http]


def test_a_setup_otlp_left_in_the_code_joins_the_launchers_providers_whatever_their_exporters(
    instrument_launcher: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    # With the launcher's prometheus (and console) exporters and no otlp among them,
    # setup_otlp() accepted the names but neither joined nor exported: the metrics were lost.
    port, scrape_port = free_port(), free_port()
    command = [instrument_launcher, str(BIN / "python"), "-m", "uvicorn", APP, "--port", str(port)]
    env = {
        **_otlp_env(receiver),
        "DEPLOY_SETUP": "otlp",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "syncperf",  # only setup_otlp() may join
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(scrape_port),
    }
    log = tmp_path / "server.log"
    with serving(command, port, log, **env) as client:
        assert client.get("/debug/outputs").json()["exporters"] == 0  # no OTLP of its own
        push_all(str(client.base_url))
        scrape = f"http://127.0.0.1:{scrape_port}/metrics"
        count = "sync_operation_duration_seconds_count"
        assert eventually(lambda: scrape_total(scrape, count, sync_operation="push"), PUSHES) == (
            PUSHES
        )
        assert eventually(lambda: '"name": "sync push"' in log.read_text(), True)
    assert not [m for _, scope, m in receiver.metrics() if scope == "syncperf"]


# --- 5. pre-fork workers and Prometheus ---------------------------------------------------------


def _uvicorn_workers(port: int) -> list[str]:
    return [str(BIN / "python"), "-m", "uvicorn", APP, "--port", str(port), "--workers", "2"]


def _gunicorn(port: int) -> list[str]:
    return [
        str(BIN / "gunicorn"),
        "-w",
        "2",
        "-k",
        "uvicorn_worker.UvicornWorker",
        "-b",
        f"127.0.0.1:{port}",
        APP,
    ]


@pytest.mark.parametrize("server", [_uvicorn_workers, _gunicorn], ids=["uvicorn", "gunicorn"])
def test_every_scrape_of_any_worker_shows_the_whole_groups_totals(
    server: Callable[[int], list[str]], tmp_path: Path
) -> None:
    port = free_port()
    (tmp_path / "multiproc").mkdir()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc"),
        "DEPLOY_SETUP": "configure-prometheus",  # the documented in-app /metrics
        "DEPLOY_METRICS_ROUTE": "1",
    }
    with serving(server(port), port, tmp_path / "server.log", **env) as client:
        base = str(client.base_url)
        pids = push_all(base)
        sent = PUSHES
        while len(pids) < 2 and sent < 20 * PUSHES:  # both workers must have served pushes
            pids |= push_all(base, 4)
            sent += 4
        assert len(pids) == 2, "one worker took every connection"
        count = "sync_operation_duration_seconds_count"
        total = lambda: scrape_total(base + "/metrics/", count, sync_operation="push")  # noqa: E731
        # every worker writes its totals every second (later on a loaded machine)
        assert eventually(total, sent) == sent
        scrapes = [scrape_total(base + "/metrics/", count, sync_operation="push") for _ in range(8)]
        assert scrapes == [sent] * 8
        with running_prometheus(tmp_path, [f"127.0.0.1:{port}"], metrics_path="/metrics/") as prom:
            series = f'{count}{{sync_operation="push"}}'
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                samples = query(prom, f"count_over_time({series}[30s])")
                if samples and float(samples[0]["value"][1]) >= 6:
                    break
                time.sleep(0.5)
            assert [float(s["value"][1]) for s in query(prom, f"min_over_time({series}[30s])")] == [
                sent
            ]
            assert [float(s["value"][1]) for s in query(prom, f"max_over_time({series}[30s])")] == [
                sent
            ]


def test_setup_prometheus_in_each_worker_fails_loudly_rather_than_serving_one_worker(
    tmp_path: Path,
) -> None:
    """docs/export.md: not ``setup_prometheus()`` in each worker. One port, one process: the
    second worker's call raises ConfigError and gunicorn stops, rather than a group whose
    endpoint silently misses a worker."""
    port, scrape_port = free_port(), free_port()
    (tmp_path / "multiproc").mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SYNCPERF_"))}
    env = {
        **clean,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc"),
        "DEPLOY_SETUP": "prometheus",
        "DEPLOY_PROMETHEUS_PORT": str(scrape_port),
    }
    done = subprocess.run(
        _gunicorn(port), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert f"ConfigError: port={scrape_port} is not accepted" in done.stderr
    assert "Worker failed to boot" in done.stderr


def test_workers_recycled_by_max_requests_or_stopped_by_sigterm_keep_every_count(
    tmp_path: Path,
) -> None:
    """A worker flushes its files when it stops (lifespan shutdown, exit): none of the counts
    of its last second is lost, whether gunicorn recycles it or the server is stopped."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    port = free_port()
    directory = tmp_path / "multiproc"
    directory.mkdir()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "DEPLOY_SETUP": "configure-prometheus",
        "DEPLOY_METRICS_ROUTE": "1",
    }
    count = "sync_operation_duration_seconds_count"
    command = [*_gunicorn(port), "--max-requests", "10"]  # a worker restarts every 10 requests
    with serving(command, port, tmp_path / "server.log", **env) as client:
        base = str(client.base_url)
        push_all(base, 60, resend_dropped=True)  # several recycles, each right after a push
        # the workers alive now write their totals every second (later on a loaded machine)
        total = lambda: scrape_total(base + "/metrics/", count, sync_operation="push")  # noqa: E731
        assert eventually(total, 60) == 60
        # the recycled workers' files are folded into one archive per type at a scrape: after
        # one with no worker recycled since, the live workers' files and the archives are left
        left = lambda: _files_of_exited_workers(directory, base + "/metrics/")  # noqa: E731
        assert eventually(left, []) == []
        kept = sorted(p.name for p in directory.glob("*.db") if p.name.startswith(CUMULATIVE))
        archives = {"counter_syncperf-archive.db", "histogram_syncperf-archive.db"}
        assert "histogram_syncperf-archive.db" in kept, kept
        assert len(set(kept) - archives) <= 2 * 2, kept  # two live workers, two types at most
        assert eventually(total, 60) == 60
        push_all(base, 7, resend_dropped=True)  # then SIGTERM within the second
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    written = sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == count and sample.labels.get("sync_operation") == "push"
    )
    assert written == 67


CUMULATIVE = ("counter_", "histogram_", "summary_")


def _files_of_exited_workers(directory: Path, metrics: str) -> list[str]:
    """Scrape ``metrics``; then the counter, histogram and summary files of workers that are
    gone (a worker recycled after answering that scrape leaves its files to the next one)."""
    httpx.get(metrics, timeout=10).raise_for_status()
    left = []
    for path in directory.glob("*.db"):
        pid = path.stem.rpartition("_")[2]
        if path.name.startswith(CUMULATIVE) and pid.isdigit():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                left.append(path.name)
    return left


def _in_flight_pids(directory: Path, operation: str) -> list[int]:
    """Workers whose files say ``operation`` is in flight (``sync.operations.active`` > 0)."""
    from prometheus_client.mmap_dict import MmapedDict

    found = []
    for path in directory.glob("gauge_livesum_*.db"):
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            if value > 0 and "sync_operations_active" in key and f'"{operation}"' in key:
                found.append(int(path.stem.rsplit("_", 1)[1]))
    return found


def test_the_in_flight_gauges_of_a_worker_killed_by_sigkill_leave_the_group(
    tmp_path: Path,
) -> None:
    """uvicorn --workers restarts a killed worker and has no hook to call
    ``mark_process_dead``: the scrape-time write drops the files of workers that are gone."""
    port = free_port()
    directory = tmp_path / "multiproc"
    directory.mkdir()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "DEPLOY_SETUP": "configure-prometheus",
        "DEPLOY_METRICS_ROUTE": "1",
    }
    active = "sync_operations_active"
    with serving(_uvicorn_workers(port), port, tmp_path / "server.log", **env) as client:
        base = str(client.base_url)

        def slow_push() -> None:
            with contextlib.suppress(httpx.HTTPError):  # its worker is killed under it
                httpx.post(base + "/sync/todo/push?slow=60", json={}, timeout=90)

        threading.Thread(target=slow_push, daemon=True).start()
        in_flight = lambda: scrape_total(base + "/metrics/", active, sync_operation="push")  # noqa: E731
        assert eventually(in_flight, 1.0) == 1.0
        busy = eventually(lambda: len(_in_flight_pids(directory, "push")), 1)
        assert busy == 1
        (pid,) = _in_flight_pids(directory, "push")
        os.kill(pid, signal.SIGKILL)
        assert eventually(in_flight, 0.0) == 0.0
        assert not list(directory.glob(f"gauge_live*_{pid}.db"))
        assert scrape_total(base + "/metrics/", active, sync_operation="push") == 0.0


# --- 7. HTTP metrics in every output, once ------------------------------------------------------


def test_http_metrics_reach_prometheus_and_otlp_once_when_fastapi_telemetry_records_them(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    port, scrape_port = free_port(), free_port()
    command = [str(BIN / "python"), "-m", "uvicorn", APP, "--port", str(port)]
    env = {
        "DEPLOY_SETUP": "otlp,prometheus",  # a global meter provider: FastAPI's telemetry is on
        "DEPLOY_PROMETHEUS_PORT": str(scrape_port),
        **_otlp_env(receiver),
    }
    with serving(command, port, tmp_path / "server.log", **env) as client:
        push_all(str(client.base_url))
        scrape = f"http://127.0.0.1:{scrape_port}/metrics"
        family = "http_server_request_duration_seconds_count"
        route = {"http_route": "/sync/{entity}/push"}
        assert eventually(lambda: scrape_total(scrape, family, **route), PUSHES) == PUSHES
        everywhere = lambda scope: True  # noqa: E731
        http = {"http.route": "/sync/{entity}/push"}
        assert (
            eventually(
                lambda: otlp_total(receiver, "http.server.request.duration", everywhere, **http),
                PUSHES,
            )
            == PUSHES
        )
        exports = len(receiver.metric_requests)  # a few more exports (however slow): still once
        assert receiver.wait_for(lambda: len(receiver.metric_requests) >= exports + 3, 60)
        assert otlp_total(receiver, "http.server.request.duration", everywhere, **http) == PUSHES
        assert otlp_total(receiver, "http.server.request.duration", SYNCPERF, **http) == 0
