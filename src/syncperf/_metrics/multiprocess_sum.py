"""Exact sums across the files of multiprocess mode: what syncperf's collector serves for a
counter, histogram or summary series is the correctly rounded sum of every value the files
hold (``math.fsum``), whatever order the directory lists them in, and a fold
(``multiprocess_compact``) keeps the exact sum of the files it folds (``expansion``), so a
total never moves down by an ulp when files are folded or listed in another order (Prometheus
reads any decrease of a counter as a reset). Gauges keep prometheus_client's own modes.

A file that cannot be read whole (cut short, empty, a key that is not one) is left out of the
scrape and reported once by name; every other file is served.

Imported only in multiprocess mode: it needs ``prometheus_client``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

LAYERS = 40
"""The most doubles ``expansion`` returns: each is at most half an ulp of the one before
(53 binades lower at least), and doubles span 2,098 binades (2**-1074 to 2**1024), so no
exact sum of doubles needs more than 40. In practice one (counts, sums exact in any order)
to three (sums of durations between a microsecond and hours)."""


def exact(values: list[float]) -> float:
    """The correctly rounded sum of ``values`` (any order gives the same); with an infinity,
    a NaN or a sum beyond the largest double, their plain sum (inf or NaN)."""
    try:
        return math.fsum(values)
    except (OverflowError, ValueError):
        return sum(values, 0.0)


def _partials(values: list[float]) -> list[float]:
    """Shewchuk's non-overlapping partials of the exact sum of ``values`` (the ``msum``
    recipe ``math.fsum`` is built on): their exact sum is that of ``values``."""
    partials: list[float] = []
    for x in values:
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            high = x + y
            low = y - (high - x)
            if low:
                partials[i] = low
                i += 1
            x = high
        partials[i:] = [x]
    return partials


def expansion(values: list[float]) -> list[float]:
    """The exact sum of ``values`` as doubles whose exact sum it is: first the correctly
    rounded sum, then the correctly rounded rest, and so on (at most ``LAYERS``). A sum
    that is not finite is one plain value."""
    first = exact(values)
    found = [first]
    if not math.isfinite(first):
        return found
    rest = _partials([*values, -first])
    while any(rest) and len(found) < LAYERS:
        part = math.fsum(rest)
        found.append(part)
        rest = _partials([*rest, -part])
    return found


Report = Callable[[str, BaseException], None]


def merge(files: Iterable[str], accumulate: bool, report: Report) -> Iterable[Metric]:
    """``MultiProcessCollector.merge`` with every counter, histogram and summary sample the
    exact sum of its values across ``files`` (a histogram's buckets summed per bucket, then
    cumulatively from the lowest, when ``accumulate``), and without the files that cannot be
    read (``report`` is called with the name of each, and the error)."""
    metrics: dict[str, Metric] = {}
    keys: dict[str, tuple[Any, ...]] = {}
    summed: dict[str, dict[tuple[str, tuple[Any, ...]], list[float]]] = {}
    for path in files:
        parts = os.path.basename(path).split("_")
        entries = _entries(path, parts, report, keys)
        for (metric_name, name, labels_key, help_text), value, timestamp in entries:
            metric = metrics.get(metric_name)
            if metric is None:
                metric = metrics[metric_name] = Metric(metric_name, help_text, parts[0])
            if parts[0] == "gauge":
                metric._multiprocess_mode = parts[1]  # type: ignore[attr-defined]
                labels = (*labels_key, ("pid", parts[2][:-3]))
                metric.add_sample(name, labels, value, timestamp)  # type: ignore[arg-type]
            else:
                by_sample = summed.setdefault(metric_name, {})
                by_sample.setdefault((name, labels_key), []).append(value)
    gauges = {k: m for k, m in metrics.items() if m.type == "gauge"}
    MultiProcessCollector._accumulate_metrics(gauges, accumulate)  # type: ignore[no-untyped-call]
    for metric_name, metric in metrics.items():
        if metric.type != "gauge":
            metric.samples = _samples(metric, summed.get(metric_name, {}), accumulate)
    return metrics.values()


def _entries(
    path: str, parts: list[str], report: Report, keys: dict[str, tuple[Any, ...]]
) -> list[tuple[tuple[Any, ...], float, float]]:
    """The parsed entries of the file at ``path``; none when it cannot be read whole (reported
    once). A file gone since the listing raises ``FileNotFoundError`` (the collector reads
    again), but for a live gauge's, as prometheus_client (``mark_process_dead`` removes it).
    ``keys``: the keys parsed so far (most are in every file)."""
    try:
        found = []
        for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(path):  # type: ignore[no-untyped-call]
            parsed = keys.get(key)
            if parsed is None:
                metric_name, name, labels, help_text = json.loads(key)
                labels_key = tuple(sorted(labels.items()))
                parsed = keys[key] = (metric_name, name, labels_key, help_text)
            found.append((parsed, value, timestamp))
        return found
    except FileNotFoundError:
        if parts[0] == "gauge" and len(parts) > 1 and parts[1].startswith("live"):
            return []
        raise
    except Exception as error:
        report(os.path.basename(path), error)
        return []


def _samples(
    metric: Metric, summed: dict[tuple[str, tuple[Any, ...]], list[float]], accumulate: bool
) -> list[Sample]:
    """One metric's samples from its values by (sample name, labels), in prometheus_client's
    order (by labels, buckets after the other samples, then ``_count``)."""
    grouped: dict[tuple[Any, ...], dict[tuple[str, tuple[Any, ...]], float]] = {}
    buckets: dict[tuple[Any, ...], dict[float, list[float]]] = {}
    histogram = metric.type == "histogram"
    for (name, labels), values in summed.items():
        le = dict(labels).get("le") if histogram else None
        if le is not None:
            without_le = tuple(label for label in labels if label[0] != "le")
            buckets.setdefault(without_le, {}).setdefault(float(le), []).extend(values)
            grouped.setdefault(without_le, {})
        else:
            grouped.setdefault(labels, {})[(name, labels)] = exact(values)
    for labels, by_bound in buckets.items():
        below: list[float] = []
        for bound, values in sorted(by_bound.items()):
            text = floatToGoString(bound)  # type: ignore[no-untyped-call]
            key = (metric.name + "_bucket", (*labels, ("le", text)))
            below += values
            grouped[labels][key] = exact(below if accumulate else values)
        if accumulate:
            grouped[labels][(metric.name + "_count", labels)] = exact(below)
    return [
        Sample(name, dict(labels), value)
        for samples in grouped.values()
        for (name, labels), value in samples.items()
    ]
