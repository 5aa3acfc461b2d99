"""A reader's points (one per series) and their OpenTelemetry form (``Metric``)."""

from __future__ import annotations

from dataclasses import dataclass
from operator import add
from sys import getrefcount
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData

from syncperf._metrics.aggregates import Attributes, HistogramDelta, Instrument, Series

_INT64 = 2**63


@dataclass(slots=True)
class Point:
    """A reader's state of one series: since when, and what it holds."""

    start_ns: int
    value: float | HistogramDelta
    attributes: dict[str, str | bool]
    """The series' attributes as OTLP data points take them (built once, shared by every
    collection; exporters only read them)."""
    exported: Any = None
    """The data point the last collection handed out. Building a frozen SDK data point
    costs ~20,000 instructions, so the next collection rewrites this one in place when
    nothing but this point holds it any more (the exporter let go of the data: its
    reference count says so); while anything else holds it, it stays as it was and a new
    one is built."""


Points = dict[Attributes, Point]
"""One instrument's series in a reader: the point of each attribute set."""


def copy_value(value: float | HistogramDelta | None) -> float | HistogramDelta:
    """A reader's own copy of a drained value (the series reuses its object)."""
    if isinstance(value, HistogramDelta):
        return HistogramDelta(list(value.counts), value.count, value.sum, value.min, value.max)
    assert value is not None
    return value


def merge_histograms(points: Points, series: list[Series]) -> list[Series]:
    """Add drained histogram series into their points; return the series that have none
    yet. A point's count list is replaced, never changed: data points handed out earlier
    keep theirs."""
    new = []
    get = points.get
    for one in series:
        point = get(one.attributes)
        if point is None:
            new.append(one)
            continue
        # a histogram's point and drained series hold HistogramDelta (no ``cast``: a call)
        into: Any = point.value
        delta: Any = one.drained
        into.counts = list(map(add, into.counts, delta.counts))
        into.count += delta.count
        into.sum += delta.sum
        if delta.min < into.min:
            into.min = delta.min
        if delta.max > into.max:
            into.max = delta.max
    return new


def merge_sums(points: Points, series: list[Series]) -> list[Series]:
    """Add drained counter series into their points; return the series that have none yet."""
    new = []
    get = points.get
    for one in series:
        point = get(one.attributes)
        if point is None:
            new.append(one)
        else:
            total: Any = point.value  # a number, as ``one.drained`` is
            point.value = total + one.drained
    return new


def carry(into: Points, points: Points) -> None:
    """Add a replaced reader's counter or histogram ``points`` into ``into`` (the points of
    its successor's reader of the same output), each under the earlier start time."""
    for attributes, point in points.items():
        found = into.get(attributes)
        if found is None:
            into[attributes] = Point(point.start_ns, copy_value(point.value), point.attributes)
            continue
        found.start_ns = min(found.start_ns, point.start_ns)
        found.exported = None  # a data point handed out keeps its start time
        old: Any = point.value
        if isinstance(old, HistogramDelta):
            into_value: Any = found.value
            total = [*map(add, into_value.counts, old.counts)]
            low, high = min(into_value.min, old.min), max(into_value.max, old.max)
            found.value = HistogramDelta(
                total, into_value.count + old.count, into_value.sum + old.sum, low, high
            )
        else:
            found.value = found.value + old


def to_metric(
    instrument: Instrument,
    points: dict[Attributes, Point],
    now: int,
    temporality: AggregationTemporality,
) -> Metric:
    """One instrument's points as an OpenTelemetry ``Metric``."""
    if instrument.kind == "histogram":
        data: HistogramData | Sum | Gauge = HistogramData(
            data_points=_histogram_points(points, list(instrument.bounds), now),
            aggregation_temporality=temporality,
        )
    else:
        number_points = _number_points(points, now)
        if instrument.kind == "gauge":
            data = Gauge(data_points=number_points)
        else:
            data = Sum(
                data_points=number_points,
                aggregation_temporality=temporality,
                is_monotonic=instrument.monotonic,
            )
    return Metric(
        name=instrument.name,
        description=instrument.description,
        unit=instrument.unit,
        data=data,
    )


def _histogram_points(points: Points, bounds: list[float], now: int) -> list[Any]:
    out = []
    for point in points.values():
        delta: Any = point.value  # a histogram's point holds a HistogramDelta
        last = point.exported
        if last is not None and getrefcount(last) <= _ALONE:
            fields = vars(last)  # nothing else holds it: the next collection's, rewritten
            fields["time_unix_nano"] = now
            fields["count"] = delta.count
            fields["sum"] = delta.sum
            fields["bucket_counts"] = delta.counts  # replaced by merges, never changed
            fields["min"] = delta.min
            fields["max"] = delta.max
        else:
            last = point.exported = HistogramDataPoint(
                point.attributes,
                point.start_ns,
                now,
                delta.count,
                delta.sum,
                delta.counts,
                bounds,  # one list for every point of the collection: exporters only read it
                delta.min,
                delta.max,
                (),
            )
        out.append(last)
    return out


def _number_points(points: Points, now: int) -> list[Any]:
    out = []
    for point in points.values():
        value = _number(point.value)
        last = point.exported
        if last is not None and getrefcount(last) <= _ALONE:
            fields = vars(last)
            fields["time_unix_nano"] = now
            fields["value"] = value
        else:
            last = point.exported = NumberDataPoint(
                point.attributes, point.start_ns, now, value, ()
            )
        out.append(last)
    return out


def _alone() -> int:
    """What ``getrefcount`` says of a data point that only its ``Point`` holds, read as the
    loops above read it; -1 (never rewrite) where another holder would not show."""
    probe = Point(0, 0.0, {}, object())
    try:
        last = probe.exported
        alone = getrefcount(last)
        holders = [last]
        held = getrefcount(last)
    except Exception:  # no reference counts (not CPython)
        return -1
    return alone if held == alone + len(holders) else -1


_ALONE = _alone()


def _number(value: float | HistogramDelta) -> int | float:
    """A sum as OTLP encodes it: an int when it is one that fits int64, else a double."""
    assert not isinstance(value, HistogramDelta)
    if type(value) is int:
        return value if -_INT64 <= value < _INT64 else float(value)
    return int(value) if value.is_integer() and -_INT64 <= value < _INT64 else value
