"""The files of workers that are gone are folded into one archive per type at a scrape: the
directory and each scrape stay bounded under recycling servers, with every total unchanged."""

from __future__ import annotations

import fcntl
import glob
import itertools
import json
import logging
import math
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

import syncperf
from syncperf._metrics import multiprocess, multiprocess_compact
from syncperf._metrics.multiprocess_group import Collector
from tests._forked import in_a_worker, pulls

CUMULATIVE = ("counter", "histogram", "summary")


pytestmark = pytest.mark.usefixtures("multiprocess_dir")


_UNUSED_PIDS = itertools.count(2**22 + 1)


def _dead_pids(count: int) -> list[int]:
    """Pids no process has: past Linux's largest (``PID_MAX_LIMIT``, 2**22), so that none of
    the suite's later processes takes one. (Pids of processes that ran and exited came back
    as live processes' within the suite's run, ``pid_max`` being 32,768 in a container: a
    fold then left that "dead" worker's files alone.)"""
    return [next(_UNUSED_PIDS) for _ in range(count)]


def _totals(directory: Path, skip_pid: int | None = None) -> dict[tuple[Any, ...], float]:
    """Every counter, histogram and summary sample the files sum to (less ``skip_pid``'s)."""
    files = [
        f
        for f in glob.glob(os.path.join(directory, "*.db"))
        if skip_pid is None or not f.endswith(f"_{skip_pid}.db")
    ]
    merged = MultiProcessCollector.merge(files)  # type: ignore[no-untyped-call]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in merged
        if family.type in CUMULATIVE
        for s in family.samples
    }


def _same(after: dict[tuple[Any, ...], float], before: dict[tuple[Any, ...], float]) -> bool:
    """The same samples; counts (whole numbers) exactly, a ``_sum`` of durations to its last
    bits: the collector adds the files in the order the directory lists them, which changes as
    files come and go (two scrapes on an unchanged group may already differ there), and a
    fold adds the folded files before the live ones."""
    assert after.keys() == before.keys()
    for key, value in before.items():
        if value.is_integer():
            assert after[key] == value, key
        else:
            assert math.isclose(after[key], value, rel_tol=1e-12), key
    return True


def _cumulative_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.db") if p.name.startswith(CUMULATIVE))


def _worker(count: int) -> Callable[[], int]:
    def work() -> int:
        syncperf.configure(prometheus=CollectorRegistry())
        for _ in range(count):
            with syncperf.sync_operation("pull"):
                pass
        with pytest.raises(ValueError), syncperf.sync_operation("pull"):
            raise ValueError
        syncperf.force_flush()
        # the application's own counter, in the same files (prometheus_client's value class)
        jobs = multiprocess._values()("counter", "jobs", "jobs_total", (), (), "Jobs.")
        jobs.inc(count)
        return os.getpid()

    return work


ARCHIVES = {"counter_syncperf-archive.db", "histogram_syncperf-archive.db"}


def _left(directory: Path) -> set[str]:
    """The counter, histogram and summary files, less this process's own."""
    me = os.getpid()
    return {n for n in _cumulative_files(directory) if not n.endswith(f"_{me}.db")}


def test_a_scrape_folds_the_files_of_workers_that_are_gone_into_one_archive_per_type(
    multiprocess_dir: Path,
) -> None:
    [in_a_worker(_worker(n)) for n in (3, 5, 7)]
    assert len(_left(multiprocess_dir)) == 6  # a counter and a histogram file each
    before = _totals(multiprocess_dir)
    served = CollectorRegistry()
    syncperf.configure(prometheus=served)
    assert pulls(generate_latest(served).decode()) == 15
    assert _left(multiprocess_dir) == ARCHIVES
    assert _same(_totals(multiprocess_dir, skip_pid=os.getpid()), before)
    # a second round of recycled workers goes into the same archives
    [in_a_worker(_worker(n)) for n in (2, 4)]
    before = _totals(multiprocess_dir, skip_pid=os.getpid())
    assert pulls(generate_latest(served).decode()) == 21
    assert _left(multiprocess_dir) == ARCHIVES
    assert _same(_totals(multiprocess_dir, skip_pid=os.getpid()), before)
    assert sorted(p.name for p in multiprocess_dir.iterdir() if not p.name.endswith(".db")) == [
        multiprocess_compact.LOCK
    ]


def test_recycled_workers_files_are_folded_between_scrapes_too(multiprocess_dir: Path) -> None:
    """Once a second on the writer's thread: folds keep up with recycles however rarely the
    group is scraped (a fold per scrape takes a bounded share of the files)."""
    [in_a_worker(_worker(n)) for n in (3, 5)]
    before = _totals(multiprocess_dir)
    served = CollectorRegistry()
    syncperf.configure(prometheus=served)  # no scrape from here
    deadline = time.monotonic() + 30
    while _left(multiprocess_dir) != ARCHIVES and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _left(multiprocess_dir) == ARCHIVES
    assert _same(_totals(multiprocess_dir, skip_pid=os.getpid()), before)


def test_a_multiprocess_collector_the_application_registered_folds_nothing(
    multiprocess_dir: Path,
) -> None:
    """It takes no lock: a file removed between its listing and its read would fail it."""
    [in_a_worker(_worker(n)) for n in (3, 5)]
    files = _left(multiprocess_dir)
    served = CollectorRegistry()
    MultiProcessCollector(served)  # type: ignore[no-untyped-call]
    syncperf.configure(prometheus=served)
    assert pulls(generate_latest(served).decode()) == 8
    assert _left(multiprocess_dir) == files


def test_without_posix_file_locks_nothing_is_folded_and_the_scrape_reads_every_file(
    multiprocess_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows has no ``fcntl``: no lock, so no fold (a read could miss a folded file)."""
    monkeypatch.setattr(multiprocess_compact, "fcntl", None)
    [in_a_worker(_worker(n)) for n in (3, 5)]
    files = _left(multiprocess_dir)
    served = CollectorRegistry()
    syncperf.configure(prometheus=served)
    assert pulls(generate_latest(served).decode()) == 8
    assert _left(multiprocess_dir) == files


def _write(path: Path, values: dict[str, float]) -> None:
    """A file as a worker leaves it, complete once it has its name."""
    temp = str(path) + ".part"
    found = MmapedDict(temp)  # type: ignore[no-untyped-call]
    for key, value in values.items():
        found.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
    found.close()  # type: ignore[no-untyped-call]
    os.replace(temp, path)


def _key(kind: str, series: int) -> str:
    name = f"{kind}_metric"
    sample = name + ("_total" if kind == "counter" else "_sum")
    return mmap_key(name, sample, ["series"], [str(series)], "help")


def _compact(directory: Path) -> None:
    multiprocess_compact.compact(str(directory), multiprocess._values())


PIDS = _dead_pids(6)
VALUES = st.integers(-(2**30), 2**30).map(lambda n: n / 1024)
"""Floats whose sums are exact in any order: the collector adds the files in the order the
directory lists them, which a fold cannot follow, so with arbitrary floats the last bit of a
histogram's ``_sum`` may differ (as it may between two listings already)."""
FILES = st.dictionaries(
    st.tuples(st.sampled_from(CUMULATIVE), st.integers(0, 5)), VALUES, max_size=8
)


def _plant(directory: Path, name: str, values: dict[tuple[str, int], float]) -> None:
    """``values`` into the file of each type named ``{type}_{name}.db``."""
    for kind in CUMULATIVE:
        mine = {_key(k, s): v for (k, s), v in values.items() if k == kind}
        _write(directory / f"{kind}_{name}.db", mine)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dead=st.lists(FILES, min_size=1, max_size=6), archive=st.none() | FILES)
def test_folding_keeps_every_total_exactly(
    dead: list[dict[tuple[str, int], float]], archive: dict[tuple[str, int], float] | None
) -> None:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        for pid, values in zip(PIDS, dead, strict=False):
            _plant(directory, str(pid), values)
        if archive is not None:
            _plant(directory, "syncperf-archive", archive)
        before = _totals(directory)
        _compact(directory)
        assert _totals(directory) == before
        assert set(_cumulative_files(directory)) == {
            multiprocess_compact.ARCHIVE.format(kind) for kind in CUMULATIVE
        }
        assert sorted(os.listdir(directory)) == sorted(
            [multiprocess_compact.LOCK, *_cumulative_files(directory)]
        )


def _read(directory: Path) -> dict[tuple[Any, ...], float]:
    """What syncperf's collector reads (under the lock, less what a cut fold folded)."""
    collector = Collector(None, path=str(directory))  # type: ignore[no-untyped-call]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        if family.type in CUMULATIVE
        for s in family.samples
    }


class Crash(BaseException):
    """The process dies here (nothing after it runs, not even ``except Exception``)."""


STEPS = ["temp written", "journal written", "archive replaced", "a file removed", "files removed"]


def _die_at(step: str, monkeypatch: pytest.MonkeyPatch, die: Callable[[], None]) -> None:
    """Have the next fold call ``die`` at ``step``, before the call that finishes it."""
    replace, remove = os.replace, os.remove

    def write_journal(*args: Any) -> None:
        die()

    def replacing(source: Any, target: Any) -> None:
        is_journal = str(target).endswith(multiprocess_compact.JOURNAL)
        if (step, is_journal) in {("journal written", True), ("archive replaced", False)}:
            die()
        replace(source, target)

    def removing(path: Any) -> None:
        is_journal = str(path).endswith(multiprocess_compact.JOURNAL)
        is_dead = multiprocess_compact._DEAD_FILE.fullmatch(os.path.basename(path)) is not None
        if (step, is_journal, is_dead) in {
            ("a file removed", False, True),
            ("files removed", True, False),
        }:
            die()
        remove(path)

    if step == "temp written":
        monkeypatch.setattr(multiprocess_compact, "_write_journal", write_journal)
    monkeypatch.setattr(os, "replace", replacing)
    monkeypatch.setattr(os, "remove", removing)


def _plant_group(directory: Path) -> None:
    """Three dead workers' files and an archive, in every type."""
    values = {("counter", 0): 3.0, ("histogram", 1): 0.375, ("summary", 2): 2.5}
    _plant(directory, "syncperf-archive", {key: 10 * value for key, value in values.items()})
    for pid, scale in zip(PIDS, (1, 2, 4), strict=False):
        _plant(directory, str(pid), {key: scale * value for key, value in values.items()})
    _plant(directory, str(PIDS[3]), {("counter", 5): 1.0})


@pytest.mark.parametrize("death", ["raised", "sigkill"])
@pytest.mark.parametrize("step", STEPS)
def test_a_fold_cut_at_any_step_loses_and_doubles_nothing(
    multiprocess_dir: Path, monkeypatch: pytest.MonkeyPatch, step: str, death: str
) -> None:
    _plant_group(multiprocess_dir)
    before = _totals(multiprocess_dir)
    if death == "raised":

        def crash() -> None:
            raise Crash

        _die_at(step, monkeypatch, crash)
        with pytest.raises(Crash):
            _compact(multiprocess_dir)
        monkeypatch.undo()
    else:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child is killed before it returns
            try:
                _die_at(step, monkeypatch, lambda: os.kill(os.getpid(), signal.SIGKILL))
                _compact(multiprocess_dir)
            finally:
                os._exit(3)  # never reached the step
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert _read(multiprocess_dir) == before  # a reader, before anything recovered
    _compact(multiprocess_dir)  # recovers, then folds what is left
    assert _totals(multiprocess_dir) == before
    assert set(_cumulative_files(multiprocess_dir)) == {
        multiprocess_compact.ARCHIVE.format(kind) for kind in CUMULATIVE
    }
    assert sorted(os.listdir(multiprocess_dir)) == sorted(
        [multiprocess_compact.LOCK, *_cumulative_files(multiprocess_dir)]
    )


SECRET = "SECRET-token-5f2a"


def test_a_file_that_cannot_be_read_is_left_and_reported_once(
    multiprocess_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Left as it is, with its counts; the fold goes on with the others and never raises into
    the scrape, and the collector leaves the file out of the scrape (reported once too)."""
    _plant(multiprocess_dir, str(PIDS[0]), {("counter", 0): 2.0})
    corrupt = multiprocess_dir / f"counter_{PIDS[1]}.db"  # says it holds 256 bytes
    corrupt.write_bytes(b"\x00\x01\x00\x00\x00\x00\x00\x00\xff\x00\x00\x00" + SECRET.encode())
    bad_key = multiprocess_dir / f"histogram_{PIDS[2]}.db"
    _write(bad_key, {"not json " + SECRET: 1.0})
    served = CollectorRegistry()
    syncperf.configure(prometheus=served)
    (serving,) = [c for c in served._collector_to_names if type(c).__name__ == "Serving"]
    with caplog.at_level(logging.DEBUG, logger="syncperf"):
        for pid in PIDS[3:5]:  # a scrape at each new dead worker: one report per file
            _plant(multiprocess_dir, str(pid), {("counter", 0): 1.0})
            assert list(serving.collect()) == []  # the writer's step of a scrape
            assert 'counter_metric_total{series="0"}' in generate_latest(served).decode()
    assert corrupt.exists() and bad_key.exists()
    archive = multiprocess_dir / multiprocess_compact.ARCHIVE.format("counter")
    folded = MmapedDict.read_all_values_from_file(str(archive))  # type: ignore[no-untyped-call]
    assert {key: value for key, value, _, _ in folded} == {_key("counter", 0): 4.0}
    archives = {multiprocess_compact.ARCHIVE.format(kind) for kind in CUMULATIVE}
    assert _left(multiprocess_dir) == archives | {corrupt.name, bad_key.name}
    reports = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert sorted(r.split(": ")[2].split(" ")[0] for r in reports) == sorted(
        [corrupt.name, bad_key.name]
    )
    assert not any(SECRET in r.getMessage() for r in caplog.records)


def _scrape_and_fold(directory: Path, until: float) -> int:
    """In a forked process: fold and read until ``until``; the totals read must each be one
    the planted files ever summed to (``2**m - 1``), never lower than the one before."""
    seen = 0.0
    key = ("counter_metric_total", (("series", "0"),))
    while time.monotonic() < until:
        _compact(directory)
        total = _read(directory).get(key, 0.0)
        if total < seen or not (total + 1).is_integer() or int(total + 1).bit_count() != 1:
            return 1
        seen = total
    return 0


def test_processes_scraping_and_folding_at_once_read_every_total_exactly(
    multiprocess_dir: Path,
) -> None:
    pids = _dead_pids(40)
    until = time.monotonic() + 4
    children = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - reported by its exit status
            code = 2
            try:
                code = _scrape_and_fold(multiprocess_dir, until)
            finally:
                os._exit(code)
        children.append(pid)
    for power, dead in enumerate(pids):  # a worker exits, with 2**power counted
        _write(multiprocess_dir / f"counter_{dead}.db", {_key("counter", 0): 2.0**power})
        time.sleep(0.05)
    statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    assert statuses == [0, 0, 0]
    assert _read(multiprocess_dir) == {("counter_metric_total", (("series", "0"),)): 2.0**40 - 1}
    _compact(multiprocess_dir)
    assert _cumulative_files(multiprocess_dir) == [multiprocess_compact.ARCHIVE.format("counter")]


def test_a_fold_takes_a_bounded_batch_and_the_next_scrapes_the_rest(
    multiprocess_dir: Path,
) -> None:
    """The lock is held for a bounded time, however many workers exited since the last fold."""
    pids = _dead_pids(multiprocess_compact.BATCH + 4)
    for power, pid in enumerate(pids):
        _write(multiprocess_dir / f"counter_{pid}.db", {_key("counter", 0): 2.0**power})
    before = _totals(multiprocess_dir)
    _compact(multiprocess_dir)
    assert len(_cumulative_files(multiprocess_dir)) == 4 + 1
    assert _read(multiprocess_dir) == before
    _compact(multiprocess_dir)
    assert _cumulative_files(multiprocess_dir) == [multiprocess_compact.ARCHIVE.format("counter")]
    assert _read(multiprocess_dir) == before


def test_a_fold_reads_a_bounded_number_of_values_past_its_first_file(
    multiprocess_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files of many series: the time a fold holds the lock follows the values it reads."""
    monkeypatch.setattr(multiprocess_compact, "ENTRIES", 250)
    for pid in PIDS[:3]:
        _write(
            multiprocess_dir / f"counter_{pid}.db", {_key("counter", n): 1.0 for n in range(200)}
        )
    before = _totals(multiprocess_dir)
    _compact(multiprocess_dir)  # 200 read, then 400: past 250
    assert len(_cumulative_files(multiprocess_dir)) == 1 + 1
    assert _read(multiprocess_dir) == before
    _compact(multiprocess_dir)
    assert _cumulative_files(multiprocess_dir) == [multiprocess_compact.ARCHIVE.format("counter")]
    assert _read(multiprocess_dir) == before


@pytest.mark.parametrize(
    "key",
    [
        json.dumps(["m", "m_total", {}]),  # three parts, as the collector cannot unpack
        json.dumps(["m", "m_total", {"a": 1}, "h"]),  # a label value that is no text
        json.dumps(["m", "m_total", ["a"], "h"]),
        json.dumps({"m": 1}),
    ],
)
def test_a_file_with_a_key_of_the_wrong_shape_is_never_folded(
    multiprocess_dir: Path, key: str
) -> None:
    """Folded, the key would sit in the archive for good, and fail every scrape from there."""
    bad = multiprocess_dir / f"counter_{PIDS[0]}.db"
    _write(bad, {key: 1.0})
    _plant(multiprocess_dir, str(PIDS[1]), {("counter", 0): 2.0})
    _compact(multiprocess_dir)
    assert bad.exists()
    archive = multiprocess_dir / multiprocess_compact.ARCHIVE.format("counter")
    folded = MmapedDict.read_all_values_from_file(str(archive))  # type: ignore[no-untyped-call]
    assert {k: v for k, v, _, _ in folded} == {_key("counter", 0): 2.0}


@pytest.mark.parametrize("pid", ["4294967296", "99999999999999999999", "0"])
def test_a_file_named_by_no_pid_a_process_can_have_is_left_and_never_fails_a_scrape(
    multiprocess_dir: Path, pid: str
) -> None:
    for name in (f"gauge_livesum_{pid}.db", f"counter_{pid}.db"):
        _write(multiprocess_dir / name, {mmap_key("m", "m", [], [], "h"): 1.0})
    _plant(multiprocess_dir, str(PIDS[0]), {("counter", 0): 2.0})
    served = CollectorRegistry()
    syncperf.configure(prometheus=served)
    generate_latest(served)  # a scrape: prunes the live gauges, folds, reads
    assert {f"gauge_livesum_{pid}.db", f"counter_{pid}.db"} <= set(os.listdir(multiprocess_dir))
    assert not (multiprocess_dir / f"counter_{PIDS[0]}.db").exists()  # the others fold on


def _fork_waiting(read: int, write: int) -> int:
    """Fork a child that waits until ``write`` closes; returns once the child runs (its
    after-fork hooks have run by then)."""
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(write)
        os.write(ready_write, b".")
        os.read(read, 1)
        os._exit(0)
    os.close(ready_write)
    os.read(ready_read, 1)
    os.close(ready_read)
    return child


@pytest.mark.parametrize("held", ["shared", "exclusive"])
def test_a_child_forked_while_the_lock_is_held_does_not_keep_it(
    multiprocess_dir: Path, held: str
) -> None:
    """A ``multiprocessing`` job forked by another thread mid-read or mid-fold: the lock is the
    read's or the fold's, not the child's for its whole life."""
    read, write = os.pipe()
    child = -1
    try:
        if held == "shared":
            with multiprocess_compact.shared(str(multiprocess_dir)) as locked:
                assert locked
                child = _fork_waiting(read, write)
        else:
            fd = multiprocess_compact._open_lock(str(multiprocess_dir))
            assert fd is not None
            fcntl.flock(fd, fcntl.LOCK_EX)  # as a fold holds it
            child = _fork_waiting(read, write)
            multiprocess_compact._close_lock(fd)
        _plant(multiprocess_dir, str(PIDS[0]), {("counter", 0): 2.0})
        _compact(multiprocess_dir)  # takes the lock alone, without waiting
        assert not (multiprocess_dir / f"counter_{PIDS[0]}.db").exists()
        started = time.monotonic()
        with multiprocess_compact.shared(str(multiprocess_dir)) as locked:
            assert locked and time.monotonic() - started < 1
    finally:
        os.close(read)
        os.close(write)
        if child > 0:
            os.waitpid(child, 0)
