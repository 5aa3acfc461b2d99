"""Real servers for integration tests, started on loopback and stopped afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.otlp_receiver import OtlpReceiver

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(
    app_dir: Path, endpoint: str, service: str, shutdown_timeout: float
) -> dict[str, str]:
    """The environment of a server process exporting over gRPC to ``endpoint`` only when it
    stops (hour-long export intervals), importing ``app_dir`` and this checkout's syncperf."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SYNCPERF_"))}
    src = Path(__file__).resolve().parents[2] / "src"
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(app_dir), str(src)]),
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
            "OTEL_BSP_SCHEDULE_DELAY": "3600000",
            "OTEL_SERVICE_NAME": service,
            "SYNCPERF_SHUTDOWN_TIMEOUT": str(shutdown_timeout),
        }
    )
    return env


def _pg_tool(name: str) -> str | None:
    for directory in PG_BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    return shutil.which(name)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields ``user@host:port/db`` parts.

    The value is ``postgresql://postgres@127.0.0.1:PORT/postgres`` (no driver prefix).
    Uses ``SYNCPERF_TEST_POSTGRES`` as is when set.
    """
    if url := os.environ.get("SYNCPERF_TEST_POSTGRES"):
        yield url
        return
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    root = Path(tempfile.mkdtemp(prefix="syncperf-pg-"))
    data = root / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        [
            *run_as,
            initdb,
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    options = (
        f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200 "
        "-c max_prepared_transactions=10"  # two-phase commit
    )
    subprocess.run(
        [*run_as, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A real OTLP receiver (gRPC and HTTP) on 127.0.0.1 for one test."""
    with OtlpReceiver() as running:
        yield running
