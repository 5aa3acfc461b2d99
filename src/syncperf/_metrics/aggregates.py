"""In-process aggregates: instruments, their pre-bound series, and the registry.

Series are updated under ``Registry.lock`` (the request path queues its values, which the
fold and ``batches`` record in groups), so every count is exact under threads. Collection
drains what accumulated since the previous drain and hands it to every reader, so the hot
path never knows who reads or at which temporality.
"""

from __future__ import annotations

import functools
import math
import threading
import time
import weakref
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Literal, Protocol

Attributes = tuple[tuple[str, str | bool], ...]
"""A frozen attribute set: sorted ``(key, value)`` pairs (hashable, cheap to compare)."""

Kind = Literal["histogram", "counter", "updowncounter", "gauge"]

OVERFLOW: Attributes = (("otel.metric.overflow", True),)
"""Where measurements go once an instrument reaches its series limit (OTel spec)."""

_INVALID: Attributes = (("syncperf.invalid_attributes", True),)
"""Where a measurement goes whose attributes could not be exported (never expected)."""


def _exportable(attributes: Attributes) -> bool:
    """Whether every key and string value is printable and at most 256 characters."""
    for key, value in attributes:
        if not (type(key) is str and 0 < len(key) <= 256 and key.isprintable()):
            return False
        if type(value) is str:
            if not (len(value) <= 256 and value.isprintable()):
                return False
        elif not isinstance(value, int):  # bool is an int
            return False
    return True


def freeze(attributes: dict[str, str | bool], checked: bool = False) -> Attributes:
    """The registry's hashable key of ``attributes`` (``checked``: ValueError unless exportable)."""
    key = tuple(sorted(attributes.items()))
    if checked and not _exportable(key):
        raise ValueError("an attribute that cannot be exported")
    return key


@functools.cache
def _zeros(length: int) -> tuple[int, ...]:
    """A tuple of ``length`` zeros (one per bucket count, shared by every series)."""
    return (0,) * length


class HistogramSeries:
    """Explicit-bucket histogram state for one attribute set."""

    __slots__ = (
        "attributes",
        "bounds",
        "counts",
        "created_ns",
        "drained",
        "max",
        "min",
        "sum",
        "zeros",
    )

    def __init__(self, attributes: Attributes, bounds: tuple[float, ...]) -> None:
        self.attributes = attributes
        self.bounds = bounds
        self.created_ns = time.time_ns()
        self.zeros = _zeros(len(bounds) + 1)
        self.counts = list(self.zeros)
        self.sum: float = 0  # an int while only ints come (exact), a float once drained
        self.min = _INF
        self.max = _NEG_INF
        self.drained: HistogramDelta | None = None
        """What the last ``drain`` took (reused by the next one: readers copy, never keep)."""

    def record(self, value: float) -> None:
        """Add one value; bucket i holds ``bounds[i-1] < value <= bounds[i]`` (OTel)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def record_all(self, values: list[float]) -> None:
        """``record`` each of ``values`` (a batch: the per-value loops run in C)."""
        if not values:
            return
        counts = self.counts
        for index, n in Counter(map(bisect_left, repeat(self.bounds), values)).items():
            counts[index] += n
        self.sum += sum(values)
        low, high = min(values), max(values)
        if low < self.min:
            self.min = low
        if high > self.max:
            self.max = high

    def drain(self) -> bool:
        """Move what accumulated since the previous drain into ``drained``; False when
        nothing did. The two count lists take turns, so a collection allocates nothing."""
        counts = self.counts
        count = sum(counts)  # not kept per record: one field update less on the hot path
        if not count:
            return False
        drained = self.drained
        if drained is None:
            self.counts = [0] * len(counts)
            self.drained = HistogramDelta(counts, count, float(self.sum), self.min, self.max)
        else:
            spare = drained.counts
            spare[:] = self.zeros
            self.counts = spare
            drained.counts, drained.count, drained.sum = counts, count, float(self.sum)
            drained.min, drained.max = self.min, self.max
        self.sum = 0
        self.min = _INF
        self.max = _NEG_INF
        return True


_INF = math.inf
_NEG_INF = -math.inf


class SumSeries:
    """Counter / up-down counter state for one attribute set."""

    __slots__ = ("attributes", "created_ns", "drained", "touched", "value")

    def __init__(self, attributes: Attributes) -> None:
        self.attributes = attributes
        self.created_ns = time.time_ns()
        self.value: float = 0
        self.touched = False
        self.drained: float = 0
        """What the last ``drain`` took."""

    def add(self, amount: float) -> None:
        """Add to the running value (callers validate sign for monotonic counters)."""
        self.value += amount
        self.touched = True

    def drain(self) -> bool:
        """Move the running value into ``drained``; False when nothing was added."""
        if not self.touched:
            return False
        self.drained, self.value, self.touched = self.value, 0, False
        return True


@dataclass(slots=True)
class HistogramDelta:
    """What one histogram series accumulated between two drains."""

    counts: list[int]
    count: int
    sum: float
    min: float
    max: float


Series = HistogramSeries | SumSeries
GaugeCallback = Callable[[], Iterable[tuple[dict[str, str | bool], float]]]


class Instrument:
    """One metric stream: name, kind, unit and its bounded set of series."""

    __slots__ = (
        "beside",
        "bounds",
        "callbacks",
        "description",
        "kind",
        "max_series",
        "monotonic",
        "name",
        "probe",
        "series",
        "unit",
    )

    def __init__(
        self,
        name: str,
        kind: Kind,
        unit: str,
        description: str,
        *,
        bounds: Sequence[float] = (),
        max_series: int = 2000,
        beside: object = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.unit = unit
        self.description = description
        self.bounds = tuple(float(b) for b in bounds)
        self.max_series = max_series
        self.monotonic = kind == "counter"
        self.series: dict[Attributes, Series] = {}
        self.callbacks: list[GaugeCallback] = []
        self.probe = False
        """Observed through a costly probe (a database query): ``Registry.collect`` runs its
        callbacks only when asked to (not in the background write of multiprocess files)."""
        self.beside = beside
        """An SDK meter provider that already records these series through another
        instrumentation: readers feeding that provider's pipeline skip this instrument."""

    def bind(self, attributes: Attributes) -> Series:
        """Return the series for ``attributes``, creating it within the series limit.

        Not on the per-call path: callers cache what this returns.
        """
        series = self.series.get(attributes)
        if series is None:
            if not _exportable(attributes):  # the entry gates let nothing like it through
                attributes = _INVALID
                series = self.series.get(attributes)
            if series is not None:
                return series
            if len(self.series) >= self.max_series - 1:  # the overflow series counts too
                attributes = OVERFLOW
                series = self.series.get(attributes)
            if series is None:
                series = (
                    HistogramSeries(attributes, self.bounds)
                    if self.kind == "histogram"
                    else SumSeries(attributes)
                )
                self.series[attributes] = series
        return series

    def histogram(self, attributes: Attributes) -> HistogramSeries:
        """`bind` for a histogram instrument, typed."""
        series = self.bind(attributes)
        assert isinstance(series, HistogramSeries)
        return series

    def sum(self, attributes: Attributes) -> SumSeries:
        """`bind` for a counter or up-down counter instrument, typed."""
        series = self.bind(attributes)
        assert isinstance(series, SumSeries)
        return series


@dataclass(slots=True)
class Observed:
    """A gauge's current value (replaces the previous collection's)."""

    instrument: Instrument
    attributes: Attributes
    value: float
    at_ns: int


class Registry:
    """All instruments of one syncperf runtime, one lock, and the readers fed from them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.instruments: dict[str | tuple[str, int], Instrument] = {}
        self._readers: list[_Sink] = []
        self._collect_lock = threading.Lock()
        self._instrument_lock = threading.Lock()
        self.pending: deque[Any] = deque()
        """Measurements the request path queued without the lock (``_fold``); a forked child
        discards them with the parent's series (``reader.after_fork_in_child``)."""
        self.folds: list[Callable[[], None]] = []
        """Called under ``lock`` before every drain: move ``pending`` into the series
        (``_fold.fold``)."""
        self.adopts: list[Callable[[], None]] = []
        """Called before ``lock`` is taken, at every collection: queue into ``pending`` what
        other registries hold for this one (``_fold.adopt``; they take this lock)."""
        self.on_gauge_error: Callable[[str, BaseException], None] = lambda name, error: None
        """Called when a gauge callback raises (the runtime counts and logs it)."""
        REGISTRIES.add(self)

    def instrument(
        self,
        name: str,
        kind: Kind,
        unit: str,
        description: str,
        *,
        bounds: Sequence[float] = (),
        max_series: int = 2000,
        beside: object = None,
    ) -> Instrument:
        """Create (or return the existing) instrument called ``name`` (thread-safe).

        With ``beside`` (a meter provider), a second stream of the same name is kept apart
        for the series that provider's pipeline already has (see ``Instrument.beside``);
        every other reader merges both streams into one metric.
        """
        key = name if beside is None else (name, id(beside))
        existing = self.instruments.get(key)
        if existing is not None:
            return existing
        with self._instrument_lock:
            return self.instruments.setdefault(
                key,
                Instrument(
                    name,
                    kind,
                    unit,
                    description,
                    bounds=bounds,
                    max_series=max_series,
                    beside=beside,
                ),
            )

    def gauge(self, name: str, unit: str, description: str, callback: GaugeCallback) -> Instrument:
        """Register an observed gauge; ``callback`` yields ``(attributes, value)`` pairs."""
        instrument = self.instrument(name, "gauge", unit, description)
        instrument.callbacks.append(callback)
        return instrument

    def remove_gauge_callback(self, name: str, callback: GaugeCallback) -> None:
        """Stop observing ``callback`` (its last values stay with the readers)."""
        instrument = self.instruments.get(name)
        if instrument is not None and callback in instrument.callbacks:
            instrument.callbacks.remove(callback)

    def add_reader(self, reader: _Sink) -> None:
        """Feed ``reader`` with every future drain."""
        with self._collect_lock:
            self._readers.append(reader)

    def remove_reader(self, reader: _Sink) -> None:
        """Stop feeding ``reader``."""
        with self._collect_lock:
            if reader in self._readers:
                self._readers.remove(reader)

    def collect(self, probes: bool = True) -> frozenset[str]:
        """Drain every series and hand the result to every reader; return the names of the
        gauges not observed because ``probes`` is False (their probes were not run: readers
        keep their previous observation).

        Readers get the drained series themselves (``series.drained``), grouped by
        instrument: no object per series, so a collection does not wake the garbage
        collector more often than the series count requires.
        """
        with self._collect_lock:
            drained: list[tuple[Instrument, list[Series]]] = []
            for adopt in self.adopts:
                adopt()
            with self.lock:
                for fold in self.folds:
                    fold()
                for instrument in list(self.instruments.values()):
                    if instrument.kind != "gauge":
                        active = [s for s in list(instrument.series.values()) if s.drain()]
                        if active:
                            drained.append((instrument, active))
            skipped = frozenset(
                i.name for i in list(self.instruments.values()) if i.probe and not probes
            )
            observed = self._observe_gauges(skipped)
            fed = [r for r in self._readers if r.accept(drained, observed, skipped) is not False]
            self._readers = fed  # one answering False is fed no more (its provider is gone)
        return skipped

    def _observe_gauges(self, skipped: frozenset[str]) -> list[Observed]:
        observed: list[Observed] = []
        now = time.time_ns()
        for instrument in list(self.instruments.values()):
            if instrument.name in skipped:
                continue
            for callback in list(instrument.callbacks):
                try:
                    points = [  # attributes no exporter can write: the gauge, not the scrape, fails
                        Observed(instrument, freeze(attrs, checked=True), _finite(value), now)
                        for attrs, value in callback()
                    ]
                except Exception as error:  # a failing probe drops its gauge this time
                    self.on_gauge_error(instrument.name, error)
                    continue
                observed.extend(points)
        return observed


def _finite(value: object) -> float:
    """A gauge value as a float; ``ValueError`` unless it is a finite real number."""
    if type(value) is float or type(value) is int or type(value) is bool:
        number = float(value)  # raises OverflowError for an int beyond a double
        if math.isfinite(number):
            return number
    raise ValueError("a gauge value must be a finite int or float")


REGISTRIES: weakref.WeakSet[Registry] = weakref.WeakSet()
"""Every live registry (a forked child resets them all, read or not)."""


class _Sink(Protocol):
    """What a registry reader implements (see ``_export.Reader``)."""

    def accept(
        self,
        drained: list[tuple[Instrument, list[Series]]],
        observed: list[Observed],
        skipped: frozenset[str] = frozenset(),
    ) -> object: ...
