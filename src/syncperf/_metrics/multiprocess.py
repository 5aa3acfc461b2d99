"""prometheus_client's multiprocess mode for syncperf's metrics (pre-fork workers).

With ``PROMETHEUS_MULTIPROC_DIR`` set, each worker process writes its cumulative syncperf
totals into its own files in that directory, in prometheus_client's format (its
``MultiProcessValue``), and a scrape of any worker reads every worker's files through
prometheus_client's ``MultiProcessCollector``: each scrape shows the whole group's totals.
The request path never writes: a daemon thread writes every ``INTERVAL`` seconds (running
no costly probe, ``Instrument.probe``: those run at the next two), the scraped worker writes
its own totals just before the files are read, and ``Runtime.flush``
(``force_flush()``, the ASGI lifespan shutdown, the exit hook) writes them too, so a worker
that exits right after its last request leaves all its counts behind.

Counters and histograms of a worker that exited stay in the sums (as for prometheus_client's
own metrics); up-down counters (``livesum``) and gauges (``livemostrecent``) of a dead worker
are dropped once ``prometheus_client.multiprocess.mark_process_dead(pid)`` ran for it, which
the scrape-time write does for every process that left such files and is gone
(``multiprocess_prune``). Their counter, histogram and summary files are folded then
into one archive per type, so a scrape reads the live workers' files and the archives,
however many workers were recycled (``multiprocess_compact``: under the directory's lock,
which syncperf's collector shares, and only with that collector reading the files).

``configure()`` replaces the runtime, whose new aggregates start from zero, while the worker's
files go on: a counter or histogram value written is the sum of what every runtime of this
process counted (``_Sums``), so it never goes back (which ``rate()`` would read as a reset).
A runtime has one writer, however many registries it feeds (``Feeds._serve_files``). The
``MultiProcessCollector`` syncperf registered passes to the next runtime serving the same
registry rather than being unregistered with the old runtime. Operations open across the
change end in the old runtime: its writer, retired, goes on writing (every ``INTERVAL``, before
scrapes and flushes of the process) until the last of them ended, so what they recorded is
in the files too.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import Gauge, Histogram, Metric, Sum

from syncperf._gate import raised_at
from syncperf._metrics.exposition import label_value, le_value
from syncperf._metrics.prometheus import label_name, prometheus_name
from syncperf._metrics.reader import Reader

_logger = logging.getLogger("syncperf")
INTERVAL = 1.0
"""Seconds between two writes of a worker's totals (the staleness bound of other workers)."""
_writers: weakref.WeakSet[MultiprocessWriter] = weakref.WeakSet()
_value_class: Any = None
_files: dict[tuple[Any, ...], Any] = {}
"""The value object of each file key, shared by every writer of the process: prometheus_client
keeps each value object it makes for good (to move it to the child's files after a fork), so
one per writer would grow its list by every series at each ``configure()``."""


class _Sums:
    """The counter and histogram totals this process's runtimes wrote, per file key and per
    runtime (its aggregates' registry); the files hold their sum."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        """Held from summing to writing the file, so two writers never write out of order."""
        self.totals: dict[tuple[Any, ...], dict[int | None, float]] = {}
        self.writers: dict[int, int] = {}

    def open(self, source: int) -> None:
        with self.lock:
            self.writers[source] = self.writers.get(source, 0) + 1

    def total(self, key: tuple[Any, ...], source: int, value: float, found: Any) -> float:
        """The sum to write once ``source``'s total for ``key`` is ``value`` (hold ``lock``);
        ``found``: the key's value object."""
        per_source = self.totals.get(key)
        if per_source is None:  # the key's first write in this process (since its fork)
            # The file, named by this pid, may hold the counts of a dead process that had the
            # same pid (wrap-around): they stay in the sums, as prometheus_client's ``inc``
            # keeps them, rather than being overwritten (read after a fork: the child's file).
            per_source = self.totals[key] = {None: float(found.get())}
        per_source[source] = value
        return sum(per_source.values())

    def close(self, source: int) -> None:
        """A writer of ``source`` closed; once the last has, its totals are final: they are
        folded into the ``None`` slot (and ``source``, an ``id``, may be reused)."""
        with self.lock:
            left = self.writers[source] = self.writers.get(source, 1) - 1
            if left > 0:
                return
            del self.writers[source]
            for per_source in self.totals.values():
                if source in per_source:
                    per_source[None] = per_source.get(None, 0.0) + per_source.pop(source)


_sums = _Sums()


def directory() -> str | None:
    """The multiprocess directory, when prometheus_client's multiprocess mode is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _values() -> Any:
    """prometheus_client's file-backed value class, one per process (it follows forks)."""
    global _value_class
    if _value_class is None:
        from prometheus_client import values

        found = values.ValueClass
        _value_class = found if getattr(found, "_multiprocess", False) else None
        if _value_class is None:
            _value_class = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return _value_class


class MultiprocessWriter:
    """Writes one runtime's cumulative totals into this process's multiprocess files.

    One per runtime, however many registries it feeds: the files are the process's, and a
    second writer (a reader of its own, which starts from zero) would write other totals
    into the same entries. Each served registry has a ``multiprocess_group.Serving`` whose
    ``collect`` has it write (``collect``) just before prometheus_client's
    ``MultiProcessCollector`` reads every worker's files. ``idle``: whether the runtime has
    no open operation (see ``close``).
    """

    def __init__(self, reader: Reader, idle: Callable[[], bool] = lambda: True) -> None:
        self._reader = reader
        self._idle = idle
        self.retired = False
        """Closed by its runtime; it writes until that runtime's open operations ended."""
        self._source = id(reader._registry)
        _sums.open(self._source)
        self._lock = threading.Lock()
        self._written: dict[tuple[Any, ...], Any] = {}
        """Per counter and histogram series, the state it was last written in: a write skips
        those that have not changed since (an idle worker writes nothing; at tens of
        thousands of series, a write of all of them takes seconds of the GIL)."""
        self._gauges: dict[str, set[tuple[Any, ...]]] = {}
        """The gauge entries the last write with gauges set, by metric (``_unobserved``)."""
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        """Started by ``start`` once the writer is registered."""
        self.between: Callable[[], None] | None = None
        """Run after each timed write (``multiprocess_group``: folding recycled workers'
        files off the scrape path, once a second)."""
        _writers.add(self)

    def start(self) -> None:
        """Start writing every ``INTERVAL`` seconds."""
        self._thread = threading.Thread(target=self._run, name="syncperf-multiprocess", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # No probe here: a costly one (the outbox's query) runs once per scrape and flush,
        # not every second in every worker; the in-process gauges stay a second fresh.
        while not self._stop.wait(INTERVAL):
            if self.retired:
                self.drain(probes=False)
            else:
                self.write(probes=False)
                if self.between is not None:
                    self.between()

    def after_fork(self) -> None:
        """In a forked child: restart the thread (the values follow the new pid). A retired
        writer stops: its open operations run in the parent, which writes them."""
        self._lock = threading.Lock()
        self._written.clear()  # the child's files hold none of them
        if self.retired:
            self.finish()
        elif self._thread is not None and not self._stop.is_set():
            self.start()

    def write(self, gauges: bool = True, probes: bool = True) -> bool:
        """Write this process's current totals (never raises); False when writing failed.
        Without ``probes``, gauges observed through costly probes are left in the files as
        the last write with probes left them."""
        try:
            with self._lock:
                if self._closed:  # its totals were final and folded (``_Sums.close``)
                    return True
                data = self._reader.collect(probes)
                skipped = self._reader.skipped
                written: dict[str, set[tuple[Any, ...]]] = {}
                for resource_metrics in data.resource_metrics:
                    for scope_metrics in resource_metrics.scope_metrics:
                        for metric in scope_metrics.metrics:
                            if metric.name not in skipped:
                                self._write(metric, written if gauges else None)
                if gauges:
                    self._unobserved(written, skipped)
        except Exception as error:
            _logger.debug("syncperf: writing multiprocess metrics failed: %s", raised_at(error))
            return False
        return True

    def _write(self, metric: Metric, gauges: dict[str, set[tuple[Any, ...]]] | None) -> None:
        """Write ``metric``'s points; gauges only when ``gauges`` collects their keys."""
        data = metric.data
        if isinstance(data, Histogram):
            kind, mode = "histogram", ""
        elif isinstance(data, Sum) and data.is_monotonic:
            kind, mode = "counter", ""
        elif gauges is None:
            return
        else:
            kind = "gauge"
            mode = "livemostrecent" if isinstance(data, Gauge) else "livesum"
        name = prometheus_name(metric.name, metric.unit)
        doc = metric.description or metric.name
        now = time.time()
        points: list[Any] = list(data.data_points)
        for point in points:
            # Each series under its own label names (not the family's union, which grows
            # with a new attribute): its file entry never changes, so every worker's and every
            # write's values add up (an empty label is no label to Prometheus).
            attrs = sorted((k, label_value(v)) for k, v in (point.attributes or {}).items())
            keys = tuple(label_name(k) for k, v in attrs if v != "")
            labels = tuple(v for _, v in attrs if v != "")
            if kind != "gauge":  # cumulative: an unchanged count is an unchanged series
                state = (point.count, point.sum) if kind == "histogram" else point.value
                series = (name, keys, labels)
                if self._written.get(series) == state:
                    continue
            if kind == "histogram":
                bounds = [*point.explicit_bounds, math.inf]
                for bound, count in zip(bounds, point.bucket_counts, strict=True):
                    le = (*labels, le_value(bound))
                    self._set(kind, name, "_bucket", (*keys, "le"), le, doc, mode, count, now)
                self._set(kind, name, "_sum", keys, labels, doc, mode, point.sum, now)
            else:
                suffix = "_total" if kind == "counter" else ""
                key = self._set(kind, name, suffix, keys, labels, doc, mode, point.value, now)
                if gauges is not None and kind == "gauge":
                    gauges.setdefault(metric.name, set()).add(key)
            if kind != "gauge":
                self._written[series] = state

    def _set(
        self,
        kind: str,
        name: str,
        suffix: str,
        keys: tuple[str, ...],
        labels: tuple[str, ...],
        doc: str,
        mode: str,
        value: float,
        now: float,
    ) -> tuple[Any, ...]:
        key = (kind, name + suffix, keys, labels, mode)
        with _sums.lock:
            found = _files.get(key)
            if found is None:
                found = _files[key] = _values()(
                    kind, name, name + suffix, keys, labels, doc, multiprocess_mode=mode
                )
            if kind != "gauge":  # cumulative: add what the replaced runtimes counted
                value = _sums.total(key, self._source, value, found)
            found.set(value, timestamp=now)
        return key

    def _unobserved(
        self,
        written: dict[str, set[tuple[Any, ...]]],
        skipped: frozenset[str] = frozenset(),
        held: frozenset[tuple[Any, ...]] = frozenset(),
    ) -> None:
        """Gauges written before and not in this collection (a probe failed, a pool closed):
        a ``livesum`` one adds nothing any more (0); a ``livemostrecent`` one is written as
        NaN, its newest value, which the collector ``register`` adds leaves out. Those whose
        probe was not run (``skipped``) stay as they were, and so do those another writer
        writes (``held``)."""
        for name in skipped & self._gauges.keys():
            written[name] = self._gauges[name]
        kept = held.union(*written.values())
        now = time.time()
        with _sums.lock:
            for keys in self._gauges.values():
                for key in keys - kept:
                    _files[key].set(0.0 if key[-1] == "livesum" else math.nan, timestamp=now)
        self._gauges = written

    def collect(self) -> None:
        """Before a scrape: write this worker's totals now, and drop the live gauges of
        workers that are gone; the ``MultiProcessCollector`` yields them."""
        from syncperf._metrics.multiprocess_prune import prune_dead

        self.write()
        drain()
        path = directory()
        if path is not None:
            prune_dead(path, _values())

    def close(self) -> None:
        """Retire: write now, and again (``drain``) until the runtime's open operations,
        which record into it when they end, have ended; then stop."""
        self.retired = True
        self.drain()

    def drain(self, probes: bool = True) -> bool:
        """A retired writer's write; once its runtime has no open operation, the last one,
        and it stops. Meanwhile the gauges are the current runtime's to write: the last write
        writes them only when no current writer does, else it drops those it wrote that the
        current writers do not."""
        idle = self._idle()  # before the write: an operation that ended by now is in it
        live = [w for w in list(_writers) if not w.retired] if idle else []
        written = self.write(gauges=idle and not live, probes=probes)
        if idle:
            if live:
                with self._lock:
                    self._unobserved({}, held=frozenset().union(*_gauge_keys(live)))
            self.finish()
        return written

    def finish(self) -> None:
        """Stop for good: its totals are final (``_Sums.close``)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._reader.close()
        _writers.discard(self)
        _sums.close(self._source)


def _gauge_keys(writers: list[MultiprocessWriter]) -> Iterator[set[tuple[Any, ...]]]:
    """The gauge entries ``writers`` wrote last."""
    for writer in writers:
        yield from list(writer._gauges.values())


def drain() -> bool:
    """Write the retired writers of this process that wait for open operations (scrapes and
    flushes call it: what those operations recorded is in the files they read); False when
    a write failed."""
    written = True
    for writer in list(_writers):
        if writer.retired:
            written = writer.drain() and written
    return written


def _before_fork() -> None:
    """Hold ``_sums.lock`` across a fork: syncperf calls prometheus_client's value objects only
    under it, so no writer thread is inside their lock (one per process, which prometheus_client
    never resets at fork) when the child is made, and the child's writes cannot block on it."""
    _sums.lock.acquire()


def _after_fork_in_parent() -> None:
    _sums.lock.release()


def _after_fork_in_child() -> None:
    _sums.lock = threading.Lock()
    _sums.totals.clear()  # the child's aggregates start from zero, in files of its own
    for writer in list(_writers):
        writer.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
