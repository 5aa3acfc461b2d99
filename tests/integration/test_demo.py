"""``syncperf demo`` end to end: syncperf's numbers equal the traffic the simulator drove."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

SYNCPERF = Path(sys.executable).with_name("syncperf")
ENTITIES = ("todo", "list", "comment")


_NONE = dict.fromkeys(
    ("count", "conflicts", "conflicted", "items_created", "items_updated", "idempotency_hits"), 0
)
"""What the summary would say of a pair it does not list (no operation of it ended)."""


def _by_pair(summary: dict[str, Any]) -> defaultdict[tuple[str, str], dict[str, Any]]:
    """Operations by (operation, entity); a pair that never ended counts nothing (a run
    stopped early may not have reached every pair: the traffic must say 0 too)."""
    pairs = defaultdict(lambda: _NONE)
    pairs.update(((o["operation"], o["entity"]), o) for o in summary["operations"])
    return pairs


def assert_numbers_match_traffic(summary: dict[str, Any], *, exercised: bool = True) -> None:
    """Compare the simulator's counts with syncperf's, independently of the demo's checks.

    ``exercised``: the run was long enough that every kind of traffic happened.
    """
    driven = summary["driven"]
    ops = _by_pair(summary)
    totals = summary["totals"]
    assert driven["transport_errors"] == 0
    server_errors = 0
    for entity in ENTITIES:
        push = driven["by_operation"][f"push {entity}"]
        pull = driven["by_operation"][f"pull {entity}"]
        assert ops[("push", entity)]["count"] == push["requests"]
        assert ops[("pull", entity)]["count"] == pull["requests"]
        assert ops[("push", entity)]["conflicts"] == push["conflicts"]
        assert ops[("push", entity)]["conflicted"] == push["conflicted"]
        assert ops[("push", entity)]["items_created"] == push["created"]
        assert ops[("push", entity)]["items_updated"] == push["updated"]
        assert ops[("push", entity)]["idempotency_hits"] == push["replayed"]
        server_errors += push["server_errors"] + pull["server_errors"]
    assert totals["conflicts"] == sum(
        driven["by_operation"][f"push {e}"]["conflicts"] for e in ENTITIES
    )
    assert totals["idempotency_hits"] == driven["idempotent_retries"]
    assert totals["errors"] == server_errors
    assert totals["n_plus_one"] == driven["by_operation"]["pull comment"]["n_plus_one"]
    if exercised:
        listed = {(o["operation"], o["entity"]) for o in summary["operations"]}
        assert {(op, e) for op in ("push", "pull") for e in ENTITIES} <= listed
        assert min(o["count"] for o in summary["operations"]) > 0
        assert totals["conflicts"] > 0
        assert totals["idempotency_hits"] > 0
        assert totals["n_plus_one"] > 0
        # the tombstones table lacks the index its pull query needs: its plan says so
        assert {(p["finding"], p["table"]) for p in summary["plans"]} == {
            ("seq_scan", "tombstones")
        }
        assert totals["plan_findings"] == sum(p["count"] for p in summary["plans"]) >= 1
    applied = sum(
        driven["by_operation"][f"push {e}"]["created"]
        + driven["by_operation"][f"push {e}"]["updated"]
        for e in ENTITIES
    )
    assert summary["outbox"]["enqueued"] == applied
    assert summary["outbox"]["published"] == summary["outbox"]["rows"].get("published", 0)
    clients = summary["clients"]  # what the clients reported (compared in the checks)
    assert set(clients["app_versions"]) <= {"2.4.1", "2.5.0"}
    if exercised:
        assert driven["client_records"] > 0  # each client posts every 4 rounds
        assert clients["staleness_p95"] is not None
    assert all(check["ok"] for check in summary["checks"]), summary["checks"]


def test_the_console_script_runs_the_demo_and_its_numbers_match_the_traffic(
    tmp_path: Path,
) -> None:
    out = tmp_path / "summary.json"
    result = subprocess.run(
        [str(SYNCPERF), "demo", "--duration", "5", "--no-tui", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "syncperf demo completed" in result.stdout
    assert "SyncPushConflictRateHigh" in result.stdout
    summary = json.loads(out.read_text())
    assert summary["run"]["database"] == "sqlite"
    assert not summary["run"]["interrupted"]
    assert_numbers_match_traffic(summary)
    fired = {a["alert"] for a in summary["alerts"] if a["fired"]}
    assert {"SyncNPlusOneDetected", "SyncPushConflictRateHigh", "SyncQueryPlanFinding"} <= fired
    assert "SyncPerfShedding" not in fired
    assert set(summary["overhead"]) >= {"asgi", "operation", "sqlalchemy", "outbox"}


def test_the_demo_runs_on_postgresql_in_process(
    postgres_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncperf._tools.demo import main

    out = tmp_path / "summary.json"
    argv = ["--duration", "4", "--clients", "12", "--no-tui", "--seed", "7"]
    status = main([*argv, "--database-url", postgres_dsn, "--json", str(out)])
    summary = json.loads(out.read_text())
    assert status == 0, summary["checks"]
    assert summary["run"]["database"] == "postgresql"
    assert_numbers_match_traffic(summary)
    assert "syncperf demo completed" in capsys.readouterr().out


def test_ctrl_c_stops_the_demo_cleanly_and_still_prints_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    process = subprocess.Popen(
        [str(SYNCPERF), "demo", "--duration", "120", "--no-tui", "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # the service is up once this is printed
        assert "syncperf demo: service on" in first
        while "[" not in process.stdout.readline():  # one progress line: clients are running
            pass
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "syncperf demo interrupted" in stdout
    assert "Traceback" not in stderr
    summary = json.loads(out.read_text())
    assert summary["run"]["interrupted"]
    assert summary["run"]["seconds"] < 60
    assert_numbers_match_traffic(summary, exercised=False)


def _demo_at_work(tmp_path: Path, *argv: str) -> subprocess.Popen[str]:
    """The demo in a process of its own (its temporary directory under ``tmp_path/tmp``),
    returned once its clients are running (its first progress line)."""
    (tmp_path / "tmp").mkdir()
    process = subprocess.Popen(
        [str(SYNCPERF), "demo", "--duration", "120", "--no-tui", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
    )
    assert process.stdout is not None
    first = process.stdout.readline()  # the service is up once this is printed
    assert "syncperf demo: service on" in first, first + process.communicate()[1]
    while "[" not in process.stdout.readline():  # one progress line: clients are running
        assert process.poll() is None, process.communicate()[1]
    return process


def _ended(process: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_second_ctrl_c_ends_the_demo_without_a_traceback(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    # enough clients that their requests queue on SQLite's one writer and take a while to end
    process = _demo_at_work(tmp_path, "--clients", "300", "--json", str(out))
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)  # not at once: two signals pending together are delivered as one
    process.send_signal(signal.SIGINT)  # requests still in flight: abandoned
    stdout, stderr = _ended(process)
    assert process.returncode == 130, stderr
    # (nor does the service log a push whose client went away while it read the body)
    assert "Traceback" not in stderr and "Exception in ASGI" not in stderr, stderr
    if out.exists():  # the second one landed while requests were in flight
        assert json.loads(out.read_text())["run"]["interrupted"]
        assert "syncperf demo interrupted" in stdout
    else:  # or after they had finished, while the summary was being made: it is abandoned
        assert stderr.endswith("syncperf demo: interrupted\n"), stderr
    assert list((tmp_path / "tmp").iterdir()) == []


def test_sigterm_stops_the_demo_like_ctrl_c_and_exits_143(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    process = _demo_at_work(tmp_path, "--json", str(out))
    process.send_signal(signal.SIGTERM)
    stdout, stderr = _ended(process)
    assert process.returncode == 143, stderr  # 128 + SIGTERM, as a shell shows it
    assert "syncperf demo interrupted" in stdout and "Traceback" not in stderr, stderr
    summary = json.loads(out.read_text())
    assert summary["run"]["interrupted"] and summary["run"]["signal"] == "SIGTERM"
    assert_numbers_match_traffic(summary, exercised=False)  # the requests in flight finished
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary SQLite directory is gone


def test_sigterm_while_the_demo_starts_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    process = subprocess.Popen(
        [str(SYNCPERF), "demo", "--duration", "120", "--no-tui"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
    )
    deadline = time.monotonic() + 60  # a loaded machine starts Python slowly
    while not list((tmp_path / "tmp").glob("syncperf-demo-*")):  # its database: setting up
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the demo never created its database"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _stdout, stderr = _ended(process)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr, stderr
    assert list((tmp_path / "tmp").iterdir()) == []
