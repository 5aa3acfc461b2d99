"""prometheus_client's multiprocess mode for syncperf's metrics (pre-fork workers).

With ``PROMETHEUS_MULTIPROC_DIR`` set, each worker process writes its cumulative syncperf
totals into its own files in that directory, in prometheus_client's format (its
``MultiProcessValue``), and a scrape of any worker reads every worker's files through
prometheus_client's ``MultiProcessCollector``: each scrape shows the whole group's totals.
The request path never writes: a daemon thread writes every ``INTERVAL`` seconds, the
scraped worker writes its own totals just before the files are read, and ``Runtime.flush``
(``force_flush()``, the ASGI lifespan shutdown, the exit hook) writes them too, so a worker
that exits right after its last request leaves all its counts behind.

Counters and histograms of a worker that exited stay in the sums (as for prometheus_client's
own metrics); up-down counters (``livesum``) and gauges (``livemostrecent``) of a dead worker
are dropped once ``prometheus_client.multiprocess.mark_process_dead(pid)`` ran for it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import Gauge, Histogram, Metric, Sum

from syncperf._metrics.prometheus import family_samples
from syncperf._metrics.reader import Reader

_logger = logging.getLogger("syncperf")
INTERVAL = 1.0
"""Seconds between two writes of a worker's totals (the staleness bound of other workers)."""
_writers: weakref.WeakSet[MultiprocessWriter] = weakref.WeakSet()
_value_class: Any = None


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

    Registered in the served registry, its ``collect`` writes (and yields nothing) just
    before prometheus_client's ``MultiProcessCollector`` reads every worker's files.
    """

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self._lock = threading.Lock()
        self._files: dict[tuple[Any, ...], Any] = {}
        self._stop = threading.Event()
        self._thread = self._start()
        self.added: Any = None
        """The ``MultiProcessCollector`` this writer registered (None: one was there)."""
        _writers.add(self)

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="syncperf-multiprocess", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self.write()

    def after_fork(self) -> None:
        """In a forked child: restart the thread (the values follow the new pid)."""
        if not self._stop.is_set():
            self._lock = threading.Lock()
            self._thread = self._start()

    def write(self) -> bool:
        """Write this process's current totals (never raises); False when writing failed."""
        try:
            with self._lock:
                data = self._reader.collect()
                for resource_metrics in data.resource_metrics:
                    for scope_metrics in resource_metrics.scope_metrics:
                        for metric in scope_metrics.metrics:
                            self._write(metric)
        except Exception:
            _logger.debug("syncperf: writing multiprocess metrics failed", exc_info=True)
            return False
        return True

    def _write(self, metric: Metric) -> None:
        from prometheus_client.utils import floatToGoString

        data = metric.data
        if isinstance(data, Histogram):
            kind, mode = "histogram", ""
        elif isinstance(data, Sum) and data.is_monotonic:
            kind, mode = "counter", ""
        else:
            kind = "gauge"
            mode = "livemostrecent" if isinstance(data, Gauge) else "livesum"
        name, doc, keys, points = family_samples(metric)
        now = time.time()
        for labels, point in points:
            if kind == "histogram":
                bounds = [*point.explicit_bounds, float("inf")]
                for bound, count in zip(bounds, point.bucket_counts, strict=True):
                    le = (*labels, floatToGoString(bound))  # type: ignore[no-untyped-call]
                    self._set(kind, name, "_bucket", (*keys, "le"), le, doc, mode, count, now)
                self._set(kind, name, "_sum", keys, labels, doc, mode, point.sum, now)
            else:
                suffix = "_total" if kind == "counter" else ""
                self._set(kind, name, suffix, keys, labels, doc, mode, point.value, now)

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
    ) -> None:
        key = (kind, name + suffix, keys, labels, mode)
        found = self._files.get(key)
        if found is None:
            found = self._files[key] = _values()(
                kind, name, name + suffix, keys, labels, doc, multiprocess_mode=mode
            )
        found.set(value, timestamp=now)

    def describe(self) -> list[Any]:
        """No up-front description."""
        return []

    def collect(self) -> Iterator[Any]:
        """Write this worker's totals now; the ``MultiProcessCollector`` yields them."""
        self.write()
        return iter(())

    def close(self) -> None:
        """Write a last time and stop."""
        self._stop.set()
        self.write()
        self._reader.close()
        _writers.discard(self)


def register(reader: Reader, registry: Any) -> MultiprocessWriter:
    """Start a writer for ``reader`` and make ``registry`` serve every worker's files."""
    from prometheus_client.multiprocess import MultiProcessCollector

    writer = MultiprocessWriter(reader)
    registry.register(writer)
    collectors = getattr(registry, "_collector_to_names", {})
    if not any(isinstance(c, MultiProcessCollector) for c in list(collectors)):
        writer.added = MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return writer


def unregister(registry: Any, writer: MultiprocessWriter) -> None:
    """Undo ``register``."""
    if writer.added is not None:
        registry.unregister(writer.added)


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
