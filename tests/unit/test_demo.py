"""The demo's statistics: percentiles from syncperf's buckets, alerts, arguments."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import time
import urllib.request
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint
from rich.console import Console

import syncperf
from syncperf import _runtime
from syncperf._tools.demo import main
from syncperf._tools.demo._run import Options, telemetry
from syncperf._tools.demo._stats import Snapshot, alert_report, operation_stats, quantile
from syncperf._tools.demo._view import Warnings
from syncperf.testing import Capture


def _point(bounds: list[float], counts: list[int], low: float, high: float) -> HistogramDataPoint:
    return HistogramDataPoint(
        attributes={},
        start_time_unix_nano=0,
        time_unix_nano=1,
        count=sum(counts),
        sum=0.0,
        bucket_counts=counts,
        explicit_bounds=bounds,
        min=low,
        max=high,
    )


def test_quantiles_interpolate_within_a_bucket_like_prometheus() -> None:
    point = _point([1.0, 2.0, 5.0], [0, 10, 0, 0], 1.0, 2.0)
    assert quantile(0.5, point) == pytest.approx(1.5)
    assert quantile(0.95, point) == pytest.approx(1.95)


def test_quantiles_are_clamped_to_the_recorded_min_and_max() -> None:
    point = _point([1.0, 2.0, 5.0], [4, 0, 0, 0], 0.3, 0.4)
    assert quantile(0.01, point) == pytest.approx(0.301)
    assert quantile(0.99, point) == pytest.approx(0.399)
    overflow = _point([1.0], [0, 2], 3.0, 7.0)
    assert quantile(0.99, overflow) == pytest.approx(3.0 + 4.0 * 0.99)


def test_an_empty_histogram_has_no_quantile() -> None:
    assert quantile(0.5, None) is None
    assert quantile(0.5, _point([1.0], [0, 0], 0.0, 0.0)) is None


def _push(conflicts: int) -> None:
    with syncperf.sync_operation("push", entity="todo") as op:
        op.set_batch_size(1)
        if conflicts:
            op.record_conflict(count=conflicts)


def test_operation_stats_count_outcomes_conflicts_and_rates(syncperf_capture: Capture) -> None:
    for conflicts in (0, 0, 2, 0, 1):
        _push(conflicts)
    snap = Snapshot.of(syncperf_capture.runtime.reader().collect(), 10.0)
    stats = operation_stats(snap, "push", "todo", seconds=5.0)
    assert stats["count"] == 5
    assert stats["conflicted"] == 2
    assert stats["conflicts"] == 3
    assert stats["conflict_rate"] == pytest.approx(0.4)
    assert stats["throughput"] == pytest.approx(1.0)
    assert stats["errors"] == 0


def test_the_conflict_alert_fires_above_ten_percent_and_not_below(
    syncperf_capture: Capture,
) -> None:
    reader = syncperf_capture.runtime.reader()
    for _ in range(19):
        _push(0)
    _push(1)  # 5 % of pushes conflicted
    quiet = {a["alert"]: a for a in alert_report(Snapshot.of(reader.collect(), 0.0), 10.0)}
    assert quiet["SyncPushConflictRateHigh"]["fired"] is False
    for _ in range(3):
        _push(1)  # 4 of 23 = 17 %
    loud = {a["alert"]: a for a in alert_report(Snapshot.of(reader.collect(), 0.0), 10.0)}
    assert loud["SyncPushConflictRateHigh"]["fired"] is True
    assert loud["SyncPushConflictRateHigh"]["details"] == ["push todo: conflict rate 17.4% > 10%"]
    assert loud["SyncErrorRateHigh"]["fired"] is False
    assert loud["SyncVolumeSpike"]["fired"] is None  # needs the hour before


def test_alerts_stay_silent_below_the_minimum_rate(syncperf_capture: Capture) -> None:
    _push(1)  # 100 % conflicts, but one push in 100 s is 0.01/s < min_rate 0.05/s
    snap = Snapshot.of(syncperf_capture.runtime.reader().collect(), 0.0)
    report = {a["alert"]: a for a in alert_report(snap, 100.0)}
    assert report["SyncPushConflictRateHigh"]["fired"] is False


@pytest.mark.parametrize(
    "argv", [["--duration", "0"], ["--clients", "-1"], ["--duration", "soon"], ["--bogus"]]
)
def test_bad_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2


def test_a_bad_prometheus_port_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--prometheus-port", "70000"]) == 2
    assert "--prometheus-port" in capsys.readouterr().err


def test_a_busy_prometheus_port_is_a_usage_error_and_changes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = _runtime.replace(None)
    _runtime.replace(before)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--prometheus-port", str(port), "--duration", "1", "--no-tui"]) == 2
    err = capsys.readouterr().err
    assert "--prometheus-port" in err
    assert str(port) in err
    assert "Traceback" not in err
    assert _runtime.replace(before) is before  # the runtime in place before is still current


def test_prometheus_port_0_prints_the_url_it_bound_and_cleans_up() -> None:
    out = io.StringIO()
    before = _runtime.replace(None)
    _runtime.replace(before)
    with telemetry(Options(prometheus_port=0), Console(file=out, width=200)) as rt:
        assert _runtime.replace(rt) is rt
        with syncperf.sync_operation("pull", entity="todo"):
            pass
        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", out.getvalue())
        assert match, out.getvalue()
        port = int(match.group(1))
        assert port != 0
        with urllib.request.urlopen(match.group(0), timeout=5) as response:
            assert "sync_operation_duration_seconds_count" in response.read().decode()
    assert _runtime.replace(before) is before
    with socket.socket() as again:  # nothing listens any more (TIME_WAIT from the scrape may)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()


def test_the_demo_reports_outbox_probe_failures() -> None:
    point = type("Point", (), {"value": 2.0})()
    snap = Snapshot(0.0, {"outbox.probe.failures": [({"outbox.name": "events"}, point)]})
    report = {a["alert"]: a for a in alert_report(snap, 10.0)}
    assert report["OutboxProbeFailing"]["fired"] is True
    assert report["OutboxProbeFailing"]["details"] == ["outbox events: 2 probe failures"]
    quiet = {a["alert"]: a for a in alert_report(Snapshot(0.0, {}), 10.0)}
    assert quiet["OutboxProbeFailing"]["fired"] is False


def test_the_client_alerts_are_evaluated_on_the_run(syncperf_capture: Capture) -> None:
    from syncperf._tools.demo._stats import Snapshot, alert_report

    now = time.time()
    for _ in range(10):
        with syncperf.sync_operation("pull", entity="todo") as op:
            op.record_checkpoint(now - 3 * 86400)  # every pull from a client days behind
        with syncperf.sync_operation("pull", entity="note") as op:
            op.record_checkpoint(now - 60)
    snap = Snapshot.of(syncperf_capture.runtime.reader().collect(), 0.0)
    report = {r["alert"]: r for r in alert_report(snap, seconds=10.0)}
    assert report["SyncClientsFarBehind"]["fired"] is True
    assert report["SyncClientsFarBehind"]["details"] == ["pull todo: 100% over 24 h behind"]
    assert report["SyncClientPendingChangesHigh"]["fired"] is False


def _simulate(drive: Any, monkeypatch: pytest.MonkeyPatch, capture: Capture) -> Any:
    """``_run._simulate`` with ``drive`` in place of the simulated clients."""
    from syncperf._tools.demo import _run

    monkeypatch.setattr(_run, "drive", drive)
    options = Options(duration=0.2, clients=1, tui=False, interval=0.05)
    console = Console(file=io.StringIO(), width=200)
    simulation = _run._simulate(
        options, "http://127.0.0.1:9", capture.runtime.reader(), console, False, Warnings()
    )
    return asyncio.run(asyncio.wait_for(simulation, 30))


def test_a_second_ctrl_c_abandons_the_requests_in_flight(
    monkeypatch: pytest.MonkeyPatch, syncperf_capture: Capture
) -> None:
    async def hung(base_url: str, clients: int, stop: asyncio.Event, **_: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await stop.wait()  # the first Ctrl-C: no new requests, one still in flight
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.Event().wait()  # never answered: only the second Ctrl-C ends it

    _tally, stopped_by = _simulate(hung, monkeypatch, syncperf_capture)
    assert stopped_by == "SIGINT"


def test_sigterm_stops_the_clients_like_ctrl_c(
    monkeypatch: pytest.MonkeyPatch, syncperf_capture: Capture
) -> None:
    async def clients(base_url: str, clients: int, stop: asyncio.Event, **_: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        await stop.wait()

    missed: list[int] = []  # a SIGTERM the simulation did not handle (not this process's end)
    before = signal.signal(signal.SIGTERM, lambda signum, frame: missed.append(signum))
    try:
        guard = signal.getsignal(signal.SIGTERM)
        _tally, stopped_by = _simulate(clients, monkeypatch, syncperf_capture)
        assert (stopped_by, missed) == ("SIGTERM", [])
        assert signal.getsignal(signal.SIGTERM) is guard  # put back as it was
    finally:
        signal.signal(signal.SIGTERM, before)


def test_requests_hung_past_the_end_are_abandoned(
    monkeypatch: pytest.MonkeyPatch, syncperf_capture: Capture
) -> None:
    from syncperf._tools.demo import _run

    async def hung(base_url: str, clients: int, stop: asyncio.Event, **_: Any) -> None:
        await asyncio.Event().wait()  # a request that never ends, whatever stop says

    monkeypatch.setattr(_run, "HUNG_GRACE", 0.2)  # a minute in a real run
    _tally, stopped_by = _simulate(hung, monkeypatch, syncperf_capture)
    assert stopped_by is None
