"""The totals a scrape serves in multiprocess mode are the correctly rounded exact sums of what
the workers wrote: whatever order the directory lists the files in, however the files of
workers that are gone were folded, so a counter or a histogram's ``_sum`` never goes down
between two scrapes (Prometheus would read a counter reset). A file that cannot be read is
left out of the scrape, which serves every other file."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

import syncperf
from syncperf._metrics import multiprocess, multiprocess_compact
from syncperf._metrics.multiprocess_group import Collector
from tests._forked import in_a_worker
from tests.unit.test_multiprocess_compact import _dead_pids

Series = tuple[str, int, str]
"""A file key: (type, series number, ``le`` or "" for a counter/summary/``_sum``)."""


pytestmark = pytest.mark.usefixtures("multiprocess_dir")


def _key(series: Series) -> str:
    kind, number, le = series
    name = f"{kind}_metric"
    if le:
        return mmap_key(name, name + "_bucket", ["series", "le"], [str(number), le], "help")
    sample = name + ("_total" if kind == "counter" else "_sum")
    return mmap_key(name, sample, ["series"], [str(number)], "help")


def _write(path: Path, values: dict[Series, float]) -> None:
    temp = str(path) + ".part"
    found = MmapedDict(temp)  # type: ignore[no-untyped-call]
    for series, value in values.items():
        found.write_value(_key(series), value, 0.0)  # type: ignore[no-untyped-call]
    found.close()  # type: ignore[no-untyped-call]
    os.replace(temp, path)


def _plant(directory: Path, name: str, values: dict[Series, float]) -> None:
    for kind in ("counter", "histogram", "summary"):
        _write(directory / f"{kind}_{name}.db", {s: v for s, v in values.items() if s[0] == kind})


def _expected(written: list[dict[Series, float]]) -> dict[tuple[Any, ...], float]:
    """``math.fsum`` of every value written, per served sample (buckets cumulative)."""
    values: dict[Series, list[float]] = {}
    for file in written:
        for series, value in file.items():
            values.setdefault(series, []).append(value)
    found: dict[tuple[Any, ...], float] = {}
    for (kind, number, le), each in values.items():
        if not le:
            sample = f"{kind}_metric" + ("_total" if kind == "counter" else "_sum")
            found[(sample, (("series", str(number)),))] = math.fsum(each)
    histograms = {number for kind, number, le in values if le}
    for number in histograms:
        below: list[float] = []
        for le in BUCKETS:
            if ("histogram", number, le) not in values:
                continue
            below += values[("histogram", number, le)]
            labels = (("le", le), ("series", str(number)))
            found[("histogram_metric_bucket", labels)] = math.fsum(below)
        found[("histogram_metric_count", (("series", str(number)),))] = math.fsum(below)
    return found


def _read(directory: Path) -> dict[tuple[Any, ...], float]:
    collector = Collector(None, path=str(directory))  # type: ignore[no-untyped-call]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


@contextlib.contextmanager
def _shuffled_listing(shuffle: random.Random) -> Iterator[None]:
    """The directory lists its files in an order of ``shuffle``'s."""
    listing = multiprocess_compact.glob.glob

    def shuffled(pattern: str) -> list[str]:
        found = listing(pattern)
        shuffle.shuffle(found)
        return found

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(multiprocess_compact.glob, "glob", shuffled)
        yield


def _fold(directory: Path, batch: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(multiprocess_compact, "BATCH", batch)
        multiprocess_compact.compact(str(directory), multiprocess._values())


BUCKETS = ["0.5", "1.0", "+Inf"]
PIDS = _dead_pids(8)
ANY = st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False)
"""Any finite float, huge to subnormal (a few such sums stay finite)."""
DURATION = st.floats(0, 1e4, allow_nan=False) | st.floats(0, 1e-3, allow_nan=False)
SERIES = st.one_of(
    st.tuples(st.sampled_from(["counter", "summary", "histogram"]), st.integers(0, 2), st.just("")),
    st.tuples(st.just("histogram"), st.integers(0, 2), st.sampled_from(BUCKETS)),
)


def _files(values: st.SearchStrategy[float]) -> st.SearchStrategy[dict[Series, float]]:
    return st.dictionaries(SERIES, values, max_size=8)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dead=st.lists(_files(ANY | DURATION), min_size=2, max_size=8),
    live=_files(ANY | DURATION),
    batches=st.lists(st.integers(1, 4), max_size=4),
    shuffle=st.randoms(use_true_random=False),
)
def test_a_scrape_serves_the_exact_sums_in_any_listing_order_and_fold_grouping(
    dead: list[dict[Series, float]],
    live: dict[Series, float],
    batches: list[int],
    shuffle: random.Random,
) -> None:
    with tempfile.TemporaryDirectory() as name, _shuffled_listing(shuffle):
        directory = Path(name)
        for pid, values in zip(PIDS, dead, strict=False):
            _plant(directory, str(pid), values)
        _plant(directory, str(os.getpid()), live)  # a live worker: never folded
        expected = _expected([*dead, live])
        assert _read(directory) == expected
        for batch in batches:
            _fold(directory, batch)
            assert _read(directory) == expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(_files(DURATION), _files(DURATION), st.integers(0, 4)), min_size=1, max_size=6
    ),
    shuffle=st.randoms(use_true_random=False),
)
def test_scrapes_with_folds_in_between_never_go_down(
    steps: list[tuple[dict[Series, float], dict[Series, float], int]], shuffle: random.Random
) -> None:
    """Each step: a worker exits (its file stays), the live worker counts on (its cumulative
    values grow), maybe a fold; every served total is the exact sum, never below the last."""
    with tempfile.TemporaryDirectory() as name, _shuffled_listing(shuffle):
        directory = Path(name)
        written: list[dict[Series, float]] = []
        live: dict[Series, float] = {}
        seen: dict[tuple[Any, ...], float] = {}
        for (exited, counted, batch), pid in zip(steps, PIDS, strict=False):
            _plant(directory, str(pid), exited)
            written.append(exited)
            for series, value in counted.items():
                live[series] = live.get(series, 0.0) + value
            _plant(directory, str(os.getpid()), live)
            if batch:
                _fold(directory, batch)
            served = _read(directory)
            assert served == _expected([*written, live])
            assert all(served[key] >= value for key, value in seen.items())
            seen = served


def _durations(registry: CollectorRegistry) -> dict[tuple[Any, ...], float]:
    exposition = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name.startswith("sync_operation_duration_seconds_")
    }


def _recorded(seed: int) -> object:
    syncperf.configure(prometheus=CollectorRegistry())
    chosen = random.Random(seed)
    for _ in range(30):
        with syncperf.sync_operation(chosen.choice(["pull", "push", "resolve", "ack"])):
            time.sleep(chosen.random() / 5000)
    syncperf.force_flush()
    return os.getpid()


def test_recycled_real_workers_never_make_a_sum_go_down(multiprocess_dir: Path) -> None:
    for seed in range(8):
        in_a_worker(lambda seed=seed: _recorded(seed))  # type: ignore[misc]
    served = CollectorRegistry()
    syncperf.configure(prometheus=served)
    files = [str(p) for p in multiprocess_dir.glob("histogram_*.db")]
    raw: dict[str, list[float]] = {}
    for file in files:
        for key, value, _, _ in MmapedDict.read_all_values_from_file(file):  # type: ignore[no-untyped-call]
            raw.setdefault(key, []).append(value)
    lock = os.open(multiprocess_dir / multiprocess_compact.LOCK, os.O_RDWR | os.O_CREAT)
    try:
        multiprocess_compact.fcntl.flock(lock, multiprocess_compact.fcntl.LOCK_SH)
        before = _durations(served)  # another reader holds the lock: no fold
    finally:
        os.close(lock)
    after = _durations(served)  # folds the 8 workers' files
    assert not [p for p in multiprocess_dir.glob("histogram_*.db") if "archive" not in p.name]
    for key, value in before.items():
        assert after[key] >= value, key
    sums = {k: math.fsum(v) for k, v in raw.items() if 'duration_seconds_sum"' in k}
    assert sorted(v for k, v in after.items() if k[0].endswith("_sum")) == sorted(sums.values())
    assert after == before


@pytest.mark.parametrize("cut", ["empty", "truncated"])
def test_a_file_that_cannot_be_read_is_left_out_of_the_scrape_and_reported_once(
    multiprocess_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    cut: str,
) -> None:
    """A worker killed between the open and the sizing of its file leaves it empty (or cut
    short): the scrape serves every other file, and names that one in one log line."""
    monkeypatch.setattr(multiprocess_compact, "_reported", set())
    (gone,) = _dead_pids(1)
    _plant(multiprocess_dir, str(gone), {("counter", 0, ""): 2.0})
    broken = multiprocess_dir / f"counter_{os.getpid()}.db"  # this worker's: never folded
    _write(broken, {("counter", 0, ""): 5.0, ("counter", 1, ""): 1.0})
    os.truncate(broken, 0 if cut == "empty" else 100)
    served = CollectorRegistry()
    syncperf.configure(prometheus=served)
    with caplog.at_level(logging.DEBUG, logger="syncperf"):
        for _ in range(3):
            exposition = generate_latest(served).decode()
            assert 'counter_metric_total{series="0"} 2.0' in exposition
    assert broken.exists()
    reports = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(reports) == 1 and broken.name in reports[0]


def test_an_applications_nan_gauges_are_served_as_prometheus_client_serves_them(
    multiprocess_dir: Path,
) -> None:
    """NaN is a value an application's gauge may hold (an undefined ratio); only syncperf's
    own gauges use it to mark a series no longer observed."""
    ratio = mmap_key("app_ratio", "app_ratio", [], [], "a ratio, NaN when undefined")
    for pid, value in ((1_000_001, math.nan), (1_000_002, 0.5)):
        found = MmapedDict(str(multiprocess_dir / f"gauge_all_{pid}.db"))  # type: ignore[no-untyped-call]
        found.write_value(ratio, value, 0.0)  # type: ignore[no-untyped-call]
        found.close()  # type: ignore[no-untyped-call]
    served = CollectorRegistry()
    syncperf.configure(prometheus=served)
    text = generate_latest(served).decode()
    assert 'app_ratio{pid="1000001"} NaN' in text
    assert 'app_ratio{pid="1000002"} 0.5' in text
