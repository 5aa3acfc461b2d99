"""Readers: turn drained aggregates into OpenTelemetry ``MetricsData`` and ship them.

A ``Reader`` keeps its own view of every series at its own temporality, fed by
``Registry.collect``: a cumulative reader adds each drain to running totals (min and max
included); a delta reader emits what arrived since its previous collection and forgets it.
Up-down counters stay cumulative and gauges report their last observation, as in the SDK.
``PeriodicExporter`` hands a reader's ``MetricsData`` to any SDK ``MetricExporter`` (OTLP,
console, in-memory) from a daemon thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, cast

from opentelemetry.sdk.metrics import Counter, Histogram, ObservableGauge, UpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from syncperf._accel import speedups
from syncperf._gate import raised_at
from syncperf._metrics.aggregates import (
    REGISTRIES,
    Attributes,
    Instrument,
    Observed,
    Registry,
    Series,
)
from syncperf._metrics.bounded import Deadline
from syncperf._metrics.points import (
    Point,
    Points,
    carry,
    copy_value,
    merge_histograms,
    merge_sums,
    to_metric,
)
from syncperf._metrics.resources import child_instance_ids, with_own_instance_id

_logger = logging.getLogger("syncperf")

_SDK_TYPES = {
    "histogram": Histogram,
    "counter": Counter,
    "updowncounter": UpDownCounter,
    "gauge": ObservableGauge,
}

CUMULATIVE = AggregationTemporality.CUMULATIVE
DELTA = AggregationTemporality.DELTA


T = TypeVar("T")


_GONE = object()


def _weak(beside: object) -> Callable[[], object]:
    """``beside`` held weakly where it can be (a bridged provider must not outlive the
    application's hold on it): the call returns it, None for none, ``_GONE`` once gone."""
    try:
        ref = weakref.ref(beside)
    except TypeError:  # None, or an object without weak references
        return lambda: beside
    return lambda: _GONE if (found := ref()) is None else found


class Reader:
    """One consumer's view of a registry at one temporality per instrument kind.

    ``beside``: the SDK meter provider whose pipeline this reader feeds (or stands beside);
    series another instrumentation already records into that provider are skipped.
    """

    def __init__(
        self,
        registry: Registry,
        resource: Resource,
        scope: InstrumentationScope,
        temporality: dict[str, AggregationTemporality] | None = None,
        beside: object = None,
    ) -> None:
        self._registry = registry
        self._beside = _weak(beside)
        self._resource = resource
        self._scope = scope
        self._temporality = temporality or {}
        self._points: dict[str, dict[Attributes, Point]] = {}
        """Per instrument name, its series' points (the order series first appeared in)."""
        self._instruments: dict[str, Instrument] = {}
        self._observed: set[str] = set()
        """Instruments observed through callbacks: replaced, not merged, at each collection."""
        self.epoch = 0
        """Bumped when every point is forgotten (a fork): caches keyed by points start over."""
        self.skipped: frozenset[str] = frozenset()
        """Gauges this reader's last collection did not observe (``collect(probes=False)``):
        their points are those of an earlier one."""
        self._lock = threading.Lock()
        self._start_ns = self._last_collect_ns = time.time_ns()
        registry.add_reader(self)
        _readers.add(self)

    def temporality_of(self, instrument: Instrument) -> AggregationTemporality:
        """Delta only where asked and meaningful (never for up-down counters or gauges)."""
        if instrument.kind in ("updowncounter", "gauge"):
            return CUMULATIVE
        return self._temporality.get(instrument.kind, CUMULATIVE)

    def accept(
        self,
        drained: list[tuple[Instrument, list[Series]]],
        observed: list[Observed],
        skipped: frozenset[str] = frozenset(),
    ) -> bool:
        """Merge one drain into this reader's points (called by ``Registry.collect``); the
        gauges named in ``skipped`` were not observed this time and keep their points.
        False once the provider it stands beside is gone: nothing reads it any more."""
        beside = self._beside()
        if beside is _GONE:
            with self._lock:
                self._points = {}
            return False
        with self._lock:
            self._observe(observed, skipped, beside)
            for instrument, series in drained:
                if beside is not None and instrument.beside is beside:
                    continue
                name = instrument.name
                self._instruments[name] = instrument
                points = self._points.get(name)
                if points is None:
                    points = self._points[name] = {}
                since = self._last_collect_ns
                if self.temporality_of(instrument) is CUMULATIVE:
                    since = self._start_ns
                merge = merge_histograms if instrument.kind == "histogram" else merge_sums
                new = merge(points, series)
                for one in new:
                    start = max(one.created_ns, since)
                    value = copy_value(one.drained)
                    points[one.attributes] = Point(start, value, dict(one.attributes))
        return True

    def _observe(self, observed: list[Observed], skipped: frozenset[str], beside: object) -> None:
        # Observations replace the previous ones: an observed instrument (a gauge, the pool's
        # connection counts...) that was not observed this time (its callback failed or was
        # removed) is gone, not frozen at its last value. One whose probe was not run
        # (``skipped``) keeps its points.
        observed_before = self._observed
        before = {
            (name, attributes): point.start_ns
            for name in observed_before
            if name not in skipped
            for attributes, point in self._points.pop(name, {}).items()
        }
        for item in observed:
            instrument = item.instrument
            if beside is not None and instrument.beside is beside:
                continue
            name = instrument.name
            self._instruments[name] = instrument
            observed_before.add(name)
            start = before.get((name, item.attributes), item.at_ns)
            points = self._points.setdefault(name, {})
            value, same = item.value, points.get(item.attributes)
            if same is not None and instrument.kind == "updowncounter":  # two streams (beside)
                value += cast(float, same.value)  # of one count (e.g. requests): they add up
            points[item.attributes] = Point(start, value, dict(item.attributes))

    def carry(self, old: Reader) -> None:
        """Continue ``old``, a replaced runtime's reader of the same output (``configure()``):
        what its counters and histograms hold that was not handed out (all of it, cumulative;
        since its last collection, delta) is added to this reader's, and ``old`` closes."""
        old._registry.collect(probes=False)  # what the replaced runtime recorded until the swap
        old.close()
        with old._lock:
            taken = [
                (old._instruments[name], points)
                for name, points in old._points.items()
                if old._instruments[name].kind in ("counter", "histogram")
            ]
            old._points = {}
        with self._lock:
            for instrument, points in taken:
                mine = self._registry.instruments.get(instrument.name, instrument)
                if (mine.kind, mine.bounds) != (instrument.kind, instrument.bounds):
                    continue  # other buckets: a new series, from zero
                self._instruments.setdefault(instrument.name, mine)
                carry(self._points.setdefault(instrument.name, {}), points)
            self.epoch += 1  # new series: renderings keyed by points start over

    def close(self) -> None:
        """Stop receiving drains."""
        self._registry.remove_reader(self)
        _readers.discard(self)

    def after_fork(self, now: int, instance_ids: dict[str, str]) -> None:
        """In a forked child: forget the parent's data and start new streams at ``now``.

        A ``service.instance.id`` the SDK generated in the parent is replaced by the
        child's own (``instance_ids`` maps old to new), so each worker is its own stream.
        """
        self._lock = threading.Lock()
        self._points.clear()
        self.epoch += 1
        self._start_ns = self._last_collect_ns = now
        self._resource = with_own_instance_id(self._resource, instance_ids)

    def read(
        self, render: Callable[[list[tuple[Instrument, Points]], int], T], probes: bool = True
    ) -> T:
        """Drain the registry and return ``render(points by instrument, now)``; without
        ``probes``, gauges observed through costly probes are not observed (``skipped``).

        ``render`` runs under this reader's lock and must not keep the points it is given.
        """
        self.skipped = self._registry.collect(probes)
        now = time.time_ns()
        with self._lock:
            instruments = self._instruments
            found = [(instruments[name], self._points[name]) for name in sorted(self._points)]
            try:
                return render(found, now)
            finally:
                self._forget_deltas(now)

    def collect(self, probes: bool = True) -> MetricsData:
        """Drain the registry and return this reader's ``MetricsData`` as of now (see
        ``read`` for ``probes``)."""
        return self.read(self._metrics_data, probes)

    def _metrics_data(self, found: list[tuple[Instrument, Points]], now: int) -> MetricsData:
        metrics = [
            to_metric(instrument, points, now, self.temporality_of(instrument))
            for instrument, points in found
        ]
        return MetricsData(
            resource_metrics=[
                ResourceMetrics(
                    resource=self._resource,
                    scope_metrics=[ScopeMetrics(scope=self._scope, metrics=metrics, schema_url="")],
                    schema_url="",
                )
            ]
        )

    def _forget_deltas(self, now: int) -> None:
        self._last_collect_ns = now
        for name, instrument in self._instruments.items():
            if self.temporality_of(instrument) is DELTA:
                self._points.pop(name, None)


def exporter_temporality(exporter: MetricExporter) -> dict[str, AggregationTemporality]:
    """The exporter's preferred temporality per instrument kind (SDK default: cumulative).

    The SDK keeps the preference on the exporter (the OTLP exporter's constructor applies
    ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``); ``PeriodicExportingMetricReader``
    reads it the same way.
    """
    preferred = getattr(exporter, "_preferred_temporality", None) or {}
    return {kind: preferred.get(sdk_type, CUMULATIVE) for kind, sdk_type in _SDK_TYPES.items()}


class PeriodicExporter:
    """Exports a reader's data through ``exporter`` every ``interval`` seconds."""

    def __init__(
        self,
        registry: Registry,
        exporter: MetricExporter,
        resource: Resource,
        scope: InstrumentationScope,
        *,
        interval: float,
        timeout: float,
        on_failure: object = None,
    ) -> None:
        self.exporter = exporter
        self.reader = Reader(
            registry,
            resource,
            scope,
            exporter_temporality(exporter),
            beside=getattr(exporter, "beside", None),
        )
        self._interval = interval
        self._timeout_ms = timeout * 1000
        self._on_failure = on_failure
        self.hand_over: Callable[[], None] | None = None
        """Called when the last export failed (``configure()``: ``outputs.Feeds.carry``)."""
        self.after: threading.Event | None = None
        """A replaced exporter's ``settled``, which the first scheduled export waits for (at
        most one export timeout): what it hands over comes first."""
        self.settled = threading.Event()
        self.exported = False
        self._stop = threading.Event()
        self._thread = self._start_thread()
        _exporters.add(self)

    def _start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="syncperf-metric-export", daemon=True)
        thread.start()
        return thread

    def after_fork(self) -> None:
        """In a forked child: restart the export thread (threads do not survive ``fork``)."""
        if self._stop.is_set():
            return
        self._stop = threading.Event()
        self._thread = self._start_thread()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self.after is not None:
                self.after.wait(self._timeout_ms / 1000)
                self.after = None
            self.export_once()

    def export_once(self, timeout: float | None = None) -> bool:
        """Collect and export now (within ``timeout`` seconds when shorter than the export
        timeout); True when the exporter reported success."""
        timeout_ms = self._timeout_ms if timeout is None else min(self._timeout_ms, timeout * 1000)
        self.exported = True
        try:
            result = self.exporter.export(self.reader.collect(), timeout_millis=timeout_ms)
        except Exception as error:
            _logger.debug("syncperf metric export raised: %s", raised_at(error))
            result = MetricExportResult.FAILURE
        ok = result is MetricExportResult.SUCCESS
        if not ok and callable(self._on_failure):
            self._on_failure()
        return ok

    def shutdown(
        self, *, flush: bool = True, close: bool = True, timeout: float | None = None
    ) -> None:
        """Stop the thread, export a last time and (unless ``close`` is False, for an
        exporter that a new runtime reuses) shut the exporter down, each step given what is
        left of ``timeout`` seconds (default: the export timeout)."""
        left = Deadline(self._timeout_ms / 1000 if timeout is None else timeout).left
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=left())
        if flush and not self.export_once(timeout=left()) and self.hand_over is not None:
            self.hand_over()
        self.reader.close()
        self.settled.set()
        _exporters.discard(self)
        if not close:
            return
        try:
            self.exporter.shutdown(timeout_millis=left() * 1000)
        except Exception as error:
            _logger.debug("syncperf metric exporter shutdown raised: %s", raised_at(error))


# --- fork safety -------------------------------------------------------------------------

_readers: weakref.WeakSet[Reader] = weakref.WeakSet()
_exporters: weakref.WeakSet[PeriodicExporter] = weakref.WeakSet()


def _release(lock: Any) -> None:
    """Free a lock a thread of the parent held at ``fork`` (that thread is gone here): reset
    in place (``_at_fork_reinit``, as ``threading`` does), since a thread that had taken its
    semaphore but not yet marked it held (waiting for the GIL) left it taken and unmarked."""
    reinit = getattr(lock, "_at_fork_reinit", None)
    if reinit is not None:
        reinit()
    elif lock.locked():
        lock.release()


def after_fork_in_child() -> None:
    """Make syncperf's metrics correct and alive in a forked child.

    The child inherits the parent's aggregates, reader state and locks but none of its
    threads: locks held by a parent thread are freed, everything not yet exported (or still
    queued for the series) is dropped (the parent exports it), readers start new streams,
    and periodic exporters restart their threads.
    """
    now = time.time_ns()
    for registry in list(REGISTRIES):
        _release(registry._collect_lock)
        _release(registry._instrument_lock)
        _release(registry.lock)
        registry.pending.clear()  # the parent's queued operations: the parent folds them
        for instrument in list(registry.instruments.values()):
            for series in list(instrument.series.values()):
                series.drain()
    if speedups is not None:  # and the pairs of those the compiled path ended (their markers)
        speedups.forget_pending()
    readers = list(_readers)
    instance_ids = child_instance_ids() if readers else {}
    for reader in readers:
        reader.after_fork(now, instance_ids)
    for exporter in list(_exporters):
        exporter.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=after_fork_in_child)
