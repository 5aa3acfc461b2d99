"""The CLI's standard streams: a closed stdout is exit status 141 (never 1, "regression"), an
error naming a path is one line whatever the path holds, and a stdout that cannot encode a
character is not a traceback."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from syncperf import cli

ROOT = Path(__file__).resolve().parents[2]
WINDOWS = ["--before", "-2h..-1h", "--after", "-1h..now"]
EMPTY_PROMETHEUS = """
import sys
from syncperf import cli
from syncperf._tools import _window
_window.Prometheus.recorded = lambda self, window: _window.Recorded(window)
sys.exit(cli.main(sys.argv[1:]))
"""


def _with_stdout_closed(argv: list[str], code: str | None = None) -> tuple[int, str]:
    """Run ``syncperf argv`` in a new process whose stdout's reader has gone."""
    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SYNCPERF_NO_EXTENSIONS": "1"}
    command = ["-c", code] if code else ["-m", "syncperf.cli"]
    try:
        done = subprocess.run(
            [sys.executable, *command, *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    return done.returncode, done.stderr


def test_a_closed_stdout_ends_the_compare_table_with_141_not_1() -> None:
    status, err = _with_stdout_closed(["compare", *WINDOWS], EMPTY_PROMETHEUS)
    assert (status, err) == (cli.BROKEN_PIPE, "")


def test_a_closed_stdout_ends_the_demo_with_141_not_1() -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    status, err = _with_stdout_closed(["demo", "--duration", "1", "--clients", "2", "--no-tui"])
    assert status == cli.BROKEN_PIPE, err
    assert "Traceback" not in err


def test_rules_to_dev_stdout_with_its_reader_gone_is_141_quietly() -> None:
    status, err = _with_stdout_closed(["rules", "-o", "/dev/stdout"])
    assert (status, err) == (cli.BROKEN_PIPE, "")


def _fails_with_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "results.json", "--baseline", "no\nsuch.json"],
        ["check", "results.json", "--baseline", "no\rsuch.json"],
        ["rules", "-o", "/nonexistent/a\nb"],
        ["rules", "--format", "datadog", "-o", "/nonexistent/a\x1bb"],
    ],
)
def test_an_error_naming_a_path_with_a_control_character_is_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fails_with_one_line(capsys, argv)
    assert "\\n" in err or "\\r" in err or "\\x1b" in err


def test_a_baseline_with_a_newline_in_its_name_is_one_line_when_written(tmp_path: Path) -> None:
    from syncperf._tools._record import CheckError, Record

    with pytest.raises(CheckError) as info:
        Record().write(tmp_path / "missing" / "a\nb.json")
    assert "\n" not in str(info.value) and "\\n" in str(info.value)


def test_an_error_naming_a_printable_path_shows_it_as_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = _fails_with_one_line(capsys, ["rules", "-o", "/nonexistent/dir/rules.yml"])
    assert "cannot write /nonexistent/dir/rules.yml:" in err


def _ascii_stdout(monkeypatch: pytest.MonkeyPatch) -> io.BytesIO:
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii"))
    return raw


def test_bench_prints_its_table_on_a_stdout_that_cannot_encode_micro(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncperf._tools import bench

    rows = [bench.Row("no tracer provider", 1.5, 10.0)]
    monkeypatch.setattr(bench, "measure", lambda loops, rounds: rows)
    raw = _ascii_stdout(monkeypatch)
    assert cli.main(["bench", "--loops", "1", "--rounds", "1"]) == 0
    sys.stdout.flush()
    out = raw.getvalue().decode("ascii")
    assert "added us/op" in out and "no tracer provider" in out
    assert capsys.readouterr().err == ""


def test_output_a_stdout_cannot_encode_is_one_line_and_exit_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _ascii_stdout(monkeypatch)
    err = _fails_with_one_line(capsys, ["rules", "--runbook-url", "https://wiki.example/r\u00e9"])
    assert "ascii" in err and "PYTHONIOENCODING" in err
