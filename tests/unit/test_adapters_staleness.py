"""Adapters record how far behind the client is from the protocol's checkpoint, zero-code."""

from __future__ import annotations

import time
from typing import Any

import pytest

import syncperf
from syncperf.adapters import couchdb, replicache, rxdb, watermelondb
from syncperf.exceptions import ConfigError, MeasurementError
from syncperf.testing import Capture, capture


def staleness_sum(cap: Capture) -> tuple[int, float]:
    points = cap.points("sync.pull.staleness")
    return sum(p.count for p in points), sum(p.sum for p in points)


@pytest.mark.parametrize("key", ["last_pulled_at", "lastPulledAt"])
def test_watermelondb_pull_reads_last_pulled_at_in_milliseconds(
    key: str, syncperf_capture: Capture
) -> None:
    last = int((time.time() - 5400) * 1000)
    with syncperf.sync_operation("pull") as op:
        watermelondb.Pull().on_query(op, {key: str(last)})
    count, total = staleness_sum(syncperf_capture)
    assert count == 1
    assert total == pytest.approx(5400, abs=1)


@pytest.mark.parametrize("first", [None, "", "null", "undefined", 0, "0", "-5", -5])
def test_a_first_watermelondb_sync_has_no_checkpoint(first: Any, syncperf_capture: Capture) -> None:
    with syncperf.sync_operation("pull") as op:
        watermelondb.Pull().on_query(op, {"last_pulled_at": first})
    assert staleness_sum(syncperf_capture) == (0, 0)
    assert syncperf_capture.total("syncperf.dropped") == 0


@pytest.mark.parametrize("junk", ["12abc", "+5", "1e12", [1], 1.5e300])
def test_a_junk_checkpoint_is_an_unparseable_query(junk: Any) -> None:
    with capture(strict=False) as cap:
        with syncperf.sync_operation("pull") as op:
            watermelondb.Pull().on_query(op, {"last_pulled_at": junk})
        dropped = cap.total("syncperf.dropped", {"syncperf.reason": "unparseable_payload"})
        too_old = cap.total("syncperf.dropped", {"syncperf.reason": "checkpoint_in_future"})
        assert dropped + too_old == 1
        assert staleness_sum(cap) == (0, 0)
    with capture(), syncperf.sync_operation("pull") as op, pytest.raises(MeasurementError):
        watermelondb.Pull().on_query(op, {"last_pulled_at": "12abc"})


def test_rxdb_reads_the_checkpoint_time_only_when_told_where_it_is(
    syncperf_capture: Capture,
) -> None:
    at = str(int((time.time() - 90) * 1000))
    with syncperf.sync_operation("pull", entity="todo") as op:
        rxdb.Pull().on_query(op, {"updatedAt": at})
    assert staleness_sum(syncperf_capture) == (0, 0)
    for params in ({"updatedAt": at}, {"updated_at": int(at)}):
        with syncperf.sync_operation("pull", entity="todo") as op:
            rxdb.Pull(checkpoint_ms="updatedAt").on_query(op, params)
    count, total = staleness_sum(syncperf_capture)
    assert count == 2
    assert total == pytest.approx(180, abs=2)


def test_rxdb_checkpoint_option_is_checked() -> None:
    with pytest.raises(ConfigError, match="checkpoint_ms"):
        rxdb.Pull(checkpoint_ms="")


def test_replicache_maps_the_cookie_to_a_time_through_the_application(
    syncperf_capture: Capture,
) -> None:
    versions = {17: time.time() - 600}
    adapter = replicache.Pull(cookie_time=lambda cookie: versions.get(cookie))
    assert adapter.reads_request
    assert not replicache.Pull().reads_request
    for cookie in (17, None, 99):
        with syncperf.sync_operation("pull") as op:
            adapter.on_request(op, {"pullVersion": 1, "cookie": cookie, "clientGroupID": "g"})
    count, total = staleness_sum(syncperf_capture)
    assert count == 1
    assert total == pytest.approx(600, abs=1)


def test_couchdb_changes_maps_since_to_a_time_only_through_the_application(
    syncperf_capture: Capture,
) -> None:
    times = {"42-g1AAAA": time.time() - 3600}
    adapter = couchdb.Changes(since_time=times.get)
    assert adapter.query == ("since",)
    assert couchdb.Changes().query == ()
    for since in ("42-g1AAAA", "0", "now", None, "unknown"):
        with syncperf.sync_operation("pull") as op:
            adapter.on_query(op, {"since": since})
    count, total = staleness_sum(syncperf_capture)
    assert count == 1
    assert total == pytest.approx(3600, abs=1)
