"""The ``syncperf`` command as a user runs it: a mistake is one line on stderr, exit 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--database-url", "postgresql://demo:s3cret@127.0.0.1:1/demo", "--no-tui"],
        ["demo", "--database-url", "postgresql://demo@127.0.0.1:1/demo?password=s3cret"],
        ["demo", "--database-url", "not a url", "--no-tui"],
        ["demo", "--otlp", "notaurl"],
        ["bench", "--loops", "0"],
        ["rules", "-o", "missing/dir/file.yml"],
        ["check", "results.json", "--baseline", "missing.json"],
        [
            "compare",
            "--before",
            "-2h..-1h",
            "--after",
            "-1h..now",
            "--timeout",
            "2",
            "--prometheus",
            "http://ops:s3cret@127.0.0.1:1",
        ],
    ],
)
def test_a_mistake_is_one_line_and_exit_status_2(argv: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "syncperf.cli", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"syncperf {argv[0]}: ")
    assert "s3cret" not in result.stderr + result.stdout


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """``syncperf rules | true``: exit status 141 (128 + SIGPIPE), no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "syncperf.cli", "rules", "--format", "promtool-tests"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()  # before the interpreter starts: its first write meets no reader
    _, err = process.communicate(timeout=120)
    assert (process.returncode, err) == (141, b"")


@pytest.mark.parametrize("argv", [["bench", "--loops", "100000000"], ["compare"]])
def test_ctrl_c_exits_130_without_a_traceback(argv: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        held: list[socket.socket] = []
        if argv[0] == "compare":
            argv = [*argv, "--before", "-2h..-1h", "--after", "-1h..now", "--timeout", "60"]
            argv += ["--prometheus", f"http://127.0.0.1:{silent.getsockname()[1]}"]
            silent.setblocking(False)
            running = lambda pid: _accepted(silent, held)  # noqa: E731  # its first query
        else:
            # its measurement started its threads (Linux: one /proc entry a thread)
            running = lambda pid: len(os.listdir(f"/proc/{pid}/task")) > 1  # noqa: E731
        try:
            _interrupt(argv, env, tmp_path, running)
        finally:
            for conn in held:
                conn.close()


def _accepted(server: socket.socket, held: list[socket.socket]) -> bool:
    """Whether a connection came in (kept open in ``held``, never answered)."""
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return False
    held.append(conn)
    return True


def _interrupt(
    argv: list[str], env: dict[str, str], tmp_path: Path, running: Callable[[int], bool]
) -> None:
    """Ctrl-C once ``running(pid)`` says the command is at work (imports done: an interrupt
    during the interpreter's start is Python's own traceback, not the command's)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "syncperf.cli", *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60  # a loaded machine starts Python slowly
        while not running(process.pid):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the command never got to work"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    # the last line says so; before it only what ran may be logged (the benchmark's sync
    # operation the interrupt ended: "sync push todo: error (KeyboardInterrupt)"), no traceback
    assert err.endswith(f"syncperf {argv[0]}: interrupted\n") and "Traceback" not in err, err
    assert all(line.startswith("sync ") for line in err.splitlines()[:-1]), err
