"""Ctrl-C while the ``syncperf`` command starts (the package takes a few tenths of a second
to import) ends it as Ctrl-C later does: exit status 130, one line, no traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # read, not parsed: 3.10
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SYNCPERF_NO_EXTENSIONS": "1"}


def _console_script() -> str:
    """The script pip writes for the ``syncperf`` entry point of pyproject.toml."""
    entry = re.search(r'\[project\.scripts\]\n(?:#.*\n)*syncperf = "(.+):(.+)"', _PYPROJECT)
    assert entry is not None
    module, function = entry.groups()
    return (
        f"import sys\nfrom {module} import {function}\nif __name__ == '__main__':\n"
        f"    sys.exit({function}())\n"
    )


def _interrupted(argv: list[str], delay: float, ready: bool) -> tuple[int, str, str]:
    """Run ``argv``, SIGINT it ``delay`` seconds after it starts (``ready``: after it says it
    is running Python code, whose SIGINT handler is then in place) and return its status,
    stdout and stderr."""
    process = subprocess.Popen(
        argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        if ready:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out, err


@pytest.mark.parametrize("delay", [0.01, 0.03, 0.08])  # the import takes 0.3 s or more
def test_ctrl_c_while_the_console_script_imports_syncperf_is_quiet(delay: float) -> None:
    script = _console_script()  # compiled before "ready": what is left is the script's imports
    code = (
        f"import sys; code = compile({script!r}, 'syncperf', 'exec'); "
        "sys.argv = ['syncperf', '--version']; print('ready', flush=True); "
        "exec(code, {'__name__': '__main__'})"
    )
    status, out, err = _interrupted([sys.executable, "-c", code], delay, ready=True)
    assert "Traceback" not in err, err
    assert status == 130 and out == "", (status, out, err)  # before it printed a version
    assert err == "syncperf: interrupted\n", err


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.2])
def test_ctrl_c_at_any_time_during_python_m_start_up_is_quiet(delay: float) -> None:
    argv = [sys.executable, "-m", "_syncperf_cli", "rules", "--format", "datadog"]
    status, _, err = _interrupted(argv, delay, ready=False)
    assert "Traceback" not in err, err
    # before Python's own handler is in place SIGINT ends it (-2), after the output exit 0
    assert status in (130, -signal.SIGINT, 0), (status, err)
    assert err in ("", "syncperf: interrupted\n", "syncperf rules: interrupted\n"), err
