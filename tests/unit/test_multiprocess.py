"""prometheus_client's multiprocess mode: each worker's files hold every count it recorded."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

import syncperf
import syncperf.export
from syncperf import _process_exit, _runtime
from syncperf._metrics import multiprocess, outputs
from syncperf._metrics.prometheus import scrape
from tests._forked import in_a_worker, pulls

pytestmark = pytest.mark.usefixtures("multiprocess_dir")


def _group(directory: Path) -> str:
    """What a scrape of the whole group shows, read from the files alone."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry).decode()


def _one_pull() -> None:
    with syncperf.sync_operation("pull"):
        pass


def _open_across_configure(served: CollectorRegistry) -> None:
    """One pull, one pull open while ``configure()`` replaces the runtime, one pull after."""
    inside, go = threading.Event(), threading.Event()

    def request() -> None:
        with syncperf.sync_operation("pull"):
            inside.set()
            go.wait(5)

    syncperf.configure(prometheus=served)
    _one_pull()
    thread = threading.Thread(target=request)
    thread.start()
    assert inside.wait(5)
    syncperf.configure(prometheus=served, max_entities=50)  # e.g. a reload
    go.set()
    thread.join(5)
    _one_pull()


@pytest.mark.parametrize("then", ["scrape", "exit_flush", "wait"])
def test_an_operation_open_across_configure_is_counted_in_the_files(
    multiprocess_dir: Path, then: str
) -> None:
    def worker() -> tuple[float, int]:
        served = CollectorRegistry()
        _open_across_configure(served)
        seen = -1.0
        if then == "scrape":
            seen = pulls(generate_latest(served).decode())
        elif then == "exit_flush":
            _process_exit.flush_for_exit()
        else:  # the writers (every second; later on a loaded machine), no flush of ours
            deadline = time.monotonic() + 30
            while pulls(_group(multiprocess_dir)) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
        return seen, _writer_threads()

    seen, threads = in_a_worker(worker)  # type: ignore[misc]
    assert seen == (3 if then == "scrape" else -1)
    assert pulls(_group(multiprocess_dir)) == 3
    assert threads == 1  # the replaced runtime's writer stopped once its operation ended


def test_a_replaced_runtimes_last_write_leaves_the_current_runtimes_gauges_alone(
    multiprocess_dir: Path,
) -> None:
    """The replaced runtime's writer ends (its last open pull ended) while a pull is open in
    the current runtime: the scrape shows the current runtime's one active pull, not the
    replaced runtime's 0."""

    def hold(inside: threading.Event, go: threading.Event) -> None:
        with syncperf.sync_operation("pull"):
            inside.set()
            go.wait(5)

    def worker() -> list[list[str]]:
        served = CollectorRegistry()
        syncperf.configure(prometheus=served)
        events = [(threading.Event(), threading.Event()) for _ in range(2)]
        threads = [threading.Thread(target=hold, args=pair) for pair in events]
        threads[0].start()
        assert events[0][0].wait(5)
        syncperf.configure(prometheus=served, max_entities=50)  # e.g. a reload
        threads[1].start()  # open in the current runtime
        assert events[1][0].wait(5)
        events[0][1].set()  # the replaced runtime has no open operation now
        threads[0].join(5)
        seen = []
        for _ in range(2):
            text = generate_latest(served).decode()
            seen.append([x for x in text.splitlines() if x.startswith("sync_operations_active")])
        events[1][1].set()
        threads[1].join(5)
        return seen

    active = ['sync_operations_active{sync_operation="pull"} 1.0']
    assert in_a_worker(worker) == [active, active]


def _writer_threads() -> int:
    """Writer threads alive once those that are stopping have stopped."""
    deadline = time.monotonic() + 3
    while True:
        alive = [t for t in threading.enumerate() if t.name == "syncperf-multiprocess"]
        if len(alive) <= 1 or time.monotonic() > deadline:
            return len(alive)
        time.sleep(0.05)


def test_a_worker_forked_while_an_operation_is_open_across_configure_drops_the_old_writer(
    multiprocess_dir: Path,
) -> None:
    # The open operation runs in the parent (which writes it); in the child it never ends.
    def worker() -> list[int]:
        inside, go = threading.Event(), threading.Event()

        def request() -> None:
            with syncperf.sync_operation("pull"):
                inside.set()
                go.wait(5)

        served = CollectorRegistry()
        syncperf.configure(prometheus=served)
        thread = threading.Thread(target=request)
        thread.start()
        assert inside.wait(5)
        syncperf.configure(prometheus=served, max_entities=50)
        child = in_a_worker(_writer_threads)
        go.set()
        thread.join(5)
        return [child, _writer_threads()]  # type: ignore[list-item]

    assert in_a_worker(worker) == [1, 1]


def _values_kept() -> int:
    """How many value objects prometheus_client's multiprocess value class keeps (it appends
    every one it makes to a list it never shrinks, to reset them after a fork)."""
    value_class = multiprocess._values()
    init = value_class.__init__
    cells = dict(zip(init.__code__.co_freevars, init.__closure__ or (), strict=True))
    return len(cells["values"].cell_contents)


def test_repeated_configure_keeps_a_bounded_number_of_multiprocess_values(
    multiprocess_dir: Path,
) -> None:
    def worker() -> list[int]:
        served = CollectorRegistry()
        kept = []
        for round in range(12):
            syncperf.configure(prometheus=served, max_entities=50 + round)
            _one_pull()
            generate_latest(served)  # writes the files
            kept.append(_values_kept())
        return kept

    kept = in_a_worker(worker)
    assert kept[-1] == kept[1]  # once every series was written: one value per series


@pytest.mark.parametrize("scraped_by", ["prometheus_client", "syncperf"])
def test_a_multiprocess_collector_the_application_registered_reads_the_files_once_written(
    multiprocess_dir: Path, scraped_by: str
) -> None:
    def worker() -> list[float]:
        served = CollectorRegistry()
        MultiProcessCollector(served)  # type: ignore[no-untyped-call]  # the application's own
        syncperf.configure(prometheus=served)
        seen = []
        for _ in range(2):  # across a new configuration as well
            _one_pull()
            if scraped_by == "syncperf":
                _, _, body = scrape(served, None, None, {})
                seen.append(pulls(body.decode()))
            else:
                seen.append(pulls(generate_latest(served).decode()))
            syncperf.configure(prometheus=served, max_entities=50)
        return seen

    assert in_a_worker(worker) == [1, 2]  # not the files as the writer left them a second ago


def test_a_process_forked_while_the_files_are_written_can_write_its_own(
    multiprocess_dir: Path,
) -> None:
    """A fork while a writer thread is inside prometheus_client's value lock (which it never
    resets at fork) must not leave the child's writes blocked forever."""

    def worker() -> int:
        syncperf.configure(prometheus=CollectorRegistry(), max_entities=200)
        for i in range(200):  # a worker with a realistic number of series: long writes
            with syncperf.sync_operation("pull", entity=f"e{i}"):
                pass
        rt = _runtime.current()
        stop = threading.Event()

        def scrapes() -> None:  # e.g. scrapes of this worker, besides the 1 s writer
            while not stop.is_set():
                rt.feeds.write_files()

        threading.Thread(target=scrapes, daemon=True).start()
        hung = 0
        for _ in range(40):
            pid = os.fork()
            if pid == 0:  # e.g. a multiprocessing.Process the worker starts
                written = threading.Thread(target=_runtime.current().feeds.write_files)
                written.start()
                written.join(3)
                os._exit(1 if written.is_alive() else 0)
            _, status = os.waitpid(pid, 0)
            hung += os.waitstatus_to_exitcode(status) == 1
        stop.set()
        return hung

    # 40 forks of a process the size of a late full test run take up to a minute on two
    # busy cores: the deadline is for a hang, each child's own 3 s join judges the writes
    assert in_a_worker(worker, timeout=240) == 0


def test_a_worker_with_the_pid_of_a_dead_one_adds_to_its_counts(
    multiprocess_dir: Path,
) -> None:
    """pid wrap-around (long-lived containers recycling workers): the dead worker's file,
    named by the same pid, holds counts the group must keep, as prometheus_client's own
    counters (``inc``) keep them."""
    from prometheus_client import values

    def worker(pulls: int) -> Callable[[], None]:
        def work() -> None:
            multiprocess._files.clear()  # both workers get pid 4242 (prometheus_client's hook)
            multiprocess._value_class = values.MultiProcessValue(lambda: 4242)  # type: ignore[no-untyped-call]
            served = CollectorRegistry()
            syncperf.configure(prometheus=served)
            for _ in range(pulls):
                _one_pull()
            syncperf.force_flush()
            syncperf.configure(prometheus=served, max_entities=50)  # a runtime of its own too
            _one_pull()
            syncperf.force_flush()

        return work

    in_a_worker(worker(10))  # dies
    in_a_worker(worker(3))  # the same pid
    assert [f.name for f in multiprocess_dir.glob("histogram_*")] == ["histogram_4242.db"]
    assert pulls(_group(multiprocess_dir)) == 15


def _left_running() -> dict[str, object]:
    """What a refused configuration may not leave behind: writer threads and writers."""
    names = [t.name for t in threading.enumerate()]
    return {
        "threads": names.count("syncperf-multiprocess"),
        "exporters": names.count("syncperf-metric-export"),
        "writers": len(multiprocess._writers),
    }


@pytest.mark.parametrize("app_metric", ["before", "none"])
def test_the_global_registry_is_refused_in_multiprocess_mode_leaving_nothing_running(
    multiprocess_dir: Path, app_metric: str
) -> None:
    """prometheus_client's global REGISTRY holds the application's own metrics: a
    MultiProcessCollector there repeats them (or raises DuplicateTimeseries)."""

    def worker() -> list[object]:
        from prometheus_client import REGISTRY, Counter

        if app_metric == "before":
            Counter("app_logins", "logins").inc(3)
        before = _left_running()
        collectors = list(REGISTRY._collector_to_names)
        found = []
        for value in (True, REGISTRY):
            with pytest.raises(syncperf.ConfigError) as raised:
                syncperf.configure(prometheus=value)
            found.append(raised.value.option)
        assert "CollectorRegistry()" in str(raised.value)
        with pytest.raises(syncperf.ConfigError) as raised:  # before the port is bound
            syncperf.export.setup_prometheus(port=0, registry=REGISTRY)
        found.append(raised.value.option)
        assert list(REGISTRY._collector_to_names) == collectors
        return [found, _left_running() == before, _runtime.installed is None]

    found = in_a_worker(worker)
    assert found == [["prometheus", "prometheus", "registry"], True, True]


def test_a_multiprocess_directory_that_does_not_exist_is_a_config_error(
    multiprocess_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = multiprocess_dir / "not-created-yet"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(missing))

    def worker() -> list[object]:
        before = _left_running()
        served = CollectorRegistry()
        with pytest.raises(syncperf.ConfigError) as raised:
            syncperf.configure(prometheus=served)
        assert str(missing) in str(raised.value) and "existing directory" in str(raised.value)
        options = [raised.value.option]
        for setup in (syncperf.export.setup_prometheus, syncperf.export.prometheus_asgi_app):
            with pytest.raises(syncperf.ConfigError) as raised:
                setup()
            options.append(raised.value.option)
        left = [_left_running() == before, served._collector_to_names, outputs.OUTPUTS.registries]
        return [options, *left]

    found = in_a_worker(worker)
    assert found == [["PROMETHEUS_MULTIPROC_DIR"] * 3, True, {}, []]


class _Refusing(CollectorRegistry):
    """Refuses the MultiProcessCollector, as a registry that describes its collectors on
    registration does when it already has a metric that is in the files."""

    def register(self, collector: Any) -> None:
        if isinstance(collector, MultiProcessCollector):
            raise ValueError("Duplicated timeseries in CollectorRegistry: {'app_logins_total'}")
        super().register(collector)


def test_a_registry_that_cannot_take_the_multiprocess_collector_leaves_nothing_running(
    multiprocess_dir: Path,
) -> None:
    def worker() -> list[object]:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        served = _Refusing()
        syncperf.configure()
        before = _left_running()
        with pytest.raises(syncperf.ConfigError) as raised:  # its exporter started first
            syncperf.configure(prometheus=served, metric_exporters=[ConsoleMetricExporter()])
        return [raised.value.option, _left_running() == before, list(served._collector_to_names)]

    assert in_a_worker(worker) == ["prometheus", True, []]


ACTIVE = 'sync_operations_active{sync_operation="pull"}'


@pytest.mark.parametrize("named_by", ["pid", "custom_identifier"])
def test_a_scrape_drops_the_live_gauges_of_workers_that_are_gone(
    multiprocess_dir: Path, named_by: str
) -> None:
    def killed() -> int:  # ends (os._exit) with a pull in flight, as under SIGKILL
        syncperf.configure(prometheus=CollectorRegistry())
        _one_pull()
        operation = syncperf.sync_operation("pull")
        operation.__enter__()
        syncperf.force_flush()
        return os.getpid()

    def scraped() -> list[object]:
        from prometheus_client import values

        if named_by == "custom_identifier":  # names that are no pids: nothing is dropped
            multiprocess._value_class = values.MultiProcessValue(lambda: 4242)  # type: ignore[no-untyped-call]
        served = CollectorRegistry()
        syncperf.configure(prometheus=served)
        _one_pull()
        lines = generate_latest(served).decode().splitlines()
        return [line for line in lines if line.startswith(ACTIVE)]

    dead = in_a_worker(killed)
    assert ACTIVE + " 1.0" in _group(multiprocess_dir)
    if named_by == "pid":
        assert in_a_worker(scraped) == [ACTIVE + " 0.0"]
        assert not list(multiprocess_dir.glob(f"gauge_live*_{dead}.db"))
        assert pulls(_group(multiprocess_dir)) == 2  # its counts stay
    else:
        assert in_a_worker(scraped) == [ACTIVE + " 1.0"]
        assert list(multiprocess_dir.glob(f"gauge_livesum_{dead}.db"))


def test_the_background_write_runs_no_probe_and_keeps_in_process_gauges_fresh(
    multiprocess_dir: Path,
) -> None:
    """docs/outbox.md: the stats probe (a database query, maybe a whole-table read) runs once
    per collection: a scrape, a flush; not in every worker's write every second. The
    in-process gauges (``sync.operations.active``) of every worker stay at most a second old."""
    from syncperf.outbox import Outbox

    def worker() -> list[object]:
        multiprocess.INTERVAL = 0.05
        calls: list[float] = []
        served = CollectorRegistry()
        syncperf.configure(prometheus=served)
        box = Outbox("orders", stats=lambda: calls.append(1) or (7, 42.0))
        operation = syncperf.sync_operation("pull")
        operation.__enter__()
        time.sleep(0.6)  # many background writes (fewer on a loaded machine: wait for one)
        deadline = time.monotonic() + 30
        while ACTIVE + " 1.0" not in _group(multiprocess_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        found = [len(calls), ACTIVE + " 1.0" in _group(multiprocess_dir)]
        body = generate_latest(served).decode()  # a scrape: one probe, its gauges written
        found += [len(calls), 'outbox_depth{outbox_name="orders"} 7.0' in body]
        time.sleep(0.3)  # the background writes keep the probe's last values as they were
        found += [len(calls), 'outbox_depth{outbox_name="orders"} 7.0' in _group(multiprocess_dir)]
        syncperf.force_flush()  # a flush: one probe
        found.append(len(calls))
        operation.__exit__(None, None, None)
        box.close()
        return found

    assert in_a_worker(worker) == [0, True, 1, True, 1, True, 2]


def test_a_registry_added_after_traffic_shares_the_runtimes_writer(
    multiprocess_dir: Path,
) -> None:
    """A second registry served later (``setup_prometheus``, ``prometheus_asgi_app``) reads the
    same files: both scrapes, and the other workers reading the files, see every count of
    this worker, never only those since the second registry came."""

    def worker() -> list[object]:
        multiprocess.INTERVAL = 0.05
        first = CollectorRegistry()
        syncperf.configure(prometheus=first)
        for _ in range(100):
            _one_pull()
        generate_latest(first)  # a scrape: the counts so far are in the first reader's totals
        endpoint = syncperf.export.setup_prometheus(port=0)
        second = endpoint.registry
        for _ in range(5):
            _one_pull()
        seen = [pulls(generate_latest(r).decode()) for r in (first, second, first, second)]
        # background writes only: 20 a second, fewer on a loaded machine
        deadline = time.monotonic() + 30
        while pulls(_group(multiprocess_dir)) < 105 and time.monotonic() < deadline:
            time.sleep(0.05)
        found = [seen, pulls(_group(multiprocess_dir)), _writer_threads()]
        endpoint.close()
        return found

    assert in_a_worker(worker) == [[105, 105, 105, 105], 105, 1]


def _counted_writes() -> list[str]:
    """The counter and histogram entries written into the files from now on (in a worker:
    prometheus_client's value class is patched for good)."""
    value_class = multiprocess._values()
    original, written = value_class.set, []

    def counted(self: Any, value: float, timestamp: float | None = None) -> None:
        if self._params[0] != "gauge":
            written.append(self._params[2])
        original(self, value, timestamp)

    value_class.set = counted
    return written


def _many_series(count: int) -> None:
    syncperf.configure(prometheus=CollectorRegistry(), max_entities=count)
    for i in range(count):
        with syncperf.sync_operation("pull", entity=f"e{i}"):
            pass
    # every series written once: a loaded machine takes longer than the default 5 s for
    # thousands, and the write it gave up waiting for went on into the writes counted next
    assert syncperf.force_flush(timeout=120)


def test_a_write_rewrites_only_the_series_that_changed(multiprocess_dir: Path) -> None:
    """An idle worker's background write (every second) writes nothing; one pull rewrites
    the pull's series (its buckets, sum), not every series of the worker."""

    def worker() -> list[int]:
        _many_series(300)
        written = _counted_writes()
        rt = _runtime.current()
        rt.feeds.write_files()
        idle = len(written)
        with syncperf.sync_operation("pull", entity="e7"):
            pass
        rt.feeds.write_files()
        return [idle, len(written) - idle]

    idle, one_pull = in_a_worker(worker)  # type: ignore[misc]
    assert idle == 0
    assert 0 < one_pull < 60  # its duration buckets and sum, and the overhead's


PULL_COUNTS = "sync_operation_duration_seconds_count{"


def test_the_exit_flush_at_high_cardinality_writes_only_the_last_requests(
    multiprocess_dir: Path,
) -> None:
    """A worker with thousands of series that exits right after its last requests: the exit
    flush writes what changed since the last write (fast), not every series again (which
    at tens of thousands of series outlasted the exit's time budget: the requests were lost)."""

    def worker() -> list[int]:
        _many_series(3000)
        written = _counted_writes()
        for _ in range(100):
            with syncperf.sync_operation("pull", entity="last"):
                pass
        _process_exit.flush_for_exit()
        return [len(written)]

    (written,) = in_a_worker(worker)  # type: ignore[misc]
    assert 0 < written < 60
    counts = [x for x in _group(multiprocess_dir).splitlines() if x.startswith(PULL_COUNTS)]
    assert sum(float(x.split()[-1]) for x in counts) == 3100


def test_name_filters_select_from_every_workers_files(multiprocess_dir: Path) -> None:
    # the body was empty: the multiprocess collector describes no names, so prometheus_client's
    # restricted registry never read it
    def worker() -> list[object]:
        served = CollectorRegistry()
        syncperf.configure(prometheus=served)
        _one_pull()
        first = scrape(served, None, None, {})[2].decode()
        _one_pull()  # the scraped worker's own files are written first
        names = {"name[]": ["sync_operation_duration_seconds_count"]}
        body = scrape(served, None, None, names)[2].decode()
        samples = [line for line in body.splitlines() if line[:1] != "#"]
        return [pulls(first), pulls(body), len(samples)]

    assert in_a_worker(worker) == [1, 2, 1]
