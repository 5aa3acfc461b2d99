"""Prometheus exposition text rendered straight from a reader's cumulative points.

The bytes are those ``SyncPerfCollector`` and ``prometheus_client``'s encoders produce (text
format 0.0.4 and OpenMetrics 1.0), without a metric-family object per scrape: each series'
label text is built once (when it first appears), each instrument's ``le`` values once, and
a scrape joins pre-built pieces with the numbers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from itertools import accumulate
from typing import Any, cast

from syncperf._metrics.aggregates import Attributes, HistogramDelta, Instrument
from syncperf._metrics.reader import Reader

SeriesText = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def le_value(bound: float) -> str:
    """A bucket's ``le`` label value (as the collector has always written it)."""
    return "+Inf" if bound == math.inf else repr(float(bound))


def label_value(value: object) -> str:
    """An attribute value as a label value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_INF = math.inf


@functools.cache
def _line_maker(buckets: int, head: bool, tail: bool) -> Callable[..., Callable[..., str]]:
    """A maker of a series renderer for a family of ``buckets`` buckets: one f-string
    (Python's cheapest way to put numbers into text) per series.

    Each bucket line is the text before its count (``k0``, ``k1``, ... given to the maker,
    from the family's ``le`` texts) and the count; the series' own label text goes in
    before the ``le`` label when ``head`` and after it when ``tail`` (otherwise the
    family's, the same for every series, is part of the maker's texts). The source comes
    from these three values alone; label and ``le`` texts are arguments, never code.
    """
    lines = []
    for i in range(buckets):
        before = ("{h}" if i == 0 else "{g}") if head else ""
        lines.append(f"{before}{{k{i}}}{'{t}' if tail else ''}{{n{i}}}")
    numbers = ", ".join(f"n{i}" for i in range(buckets))
    source = (
        f"def make({', '.join(f'k{i}' for i in range(buckets))}):\n"
        f"    def lines(h, g, t, c, s, counts, count, total):\n"
        f"        {numbers}, = accumulate(counts)\n"
        f'        return f"{"".join(lines)}.0\\n{{c}}{{count}}.0\\n{{s}}{{total}}\\n"\n'
        f"    return lines\n"
    )
    namespace: dict[str, Any] = {"accumulate": accumulate}
    exec(source, namespace)  # the source holds no data, only the three values
    return cast(Callable[..., Callable[..., str]], namespace["make"])


class _Family:
    """What one instrument's family renders from: headers, ``le`` values, series labels."""

    __slots__ = (
        "_label_name",
        "headers",
        "histogram",
        "keys",
        "les",
        "lines",
        "name",
        "names",
        "sample",
        "series",
    )

    def __init__(self, instrument: Instrument, name: str, label_name: Callable[[str], str]):
        counter = instrument.kind == "counter"
        self.histogram = instrument.kind == "histogram"
        if counter and name.endswith("_total"):  # as CounterMetricFamily does
            name = name[:-6]
        self.name = name
        self.sample = name + "_total" if counter else name
        kind = "histogram" if self.histogram else "counter" if counter else "gauge"
        doc = instrument.description or instrument.name
        text_doc = doc.replace("\\", r"\\").replace("\n", r"\n")
        self.headers = (
            f"# HELP {self.sample} {text_doc}\n# TYPE {self.sample} {kind}\n",
            f"# HELP {name} {_escape(doc)}\n# TYPE {name} {kind}\n",
        )
        self.les = tuple(le_value(b) for b in (*instrument.bounds, math.inf))
        self.keys: tuple[str, ...] = ()
        self.names: tuple[str, ...] = ()
        self.series: dict[Attributes, SeriesText] = {}
        self._label_name = label_name
        self.lines = self._lines()
        """A series' bucket, count and sum lines from its label pieces, its cumulative
        bucket counts (below a million), its count and its sum's text."""

    def _lines(self) -> Callable[..., str]:
        head = any(name < "le" for name in self.names)  # a label before ``le``
        tail = any(name > "le" for name in self.names)
        h, g, t, *_ = self.texts(()) if self.histogram else ("", "", "")
        texts = [
            f"{'' if head else h if i == 0 else g}{le}{'' if tail else t}"
            for i, le in enumerate(self.les)
        ]
        return _line_maker(len(texts), head, tail)(*texts)

    def refresh(self, points: dict[Attributes, Any]) -> None:
        """Use the label names of the series present now (their union, as the collector)."""
        keys = tuple(sorted({key for attributes in points for key, _ in attributes}))
        if keys != self.keys:
            self.keys = keys
            self.names = tuple(self._label_name(key) for key in keys)
            self.series.clear()
            self.lines = self._lines()
        elif len(self.series) > 2 * len(points) + 64:  # gauges whose series come and go
            self.series.clear()

    def bind(self, attributes: Attributes) -> SeriesText:
        """The pre-built pieces of one series' sample lines (kept)."""
        text = self.series[attributes] = self.texts(attributes)
        return text

    def texts(self, attributes: Attributes) -> SeriesText:
        """The pieces of one series' sample lines."""
        found = dict(attributes)
        values = [label_value(found.get(key, "")) for key in self.keys]
        labels = dict(zip(self.names, values, strict=True))
        plain = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        plain = "{" + plain + "}" if plain else ""
        if not self.histogram:
            text: SeriesText = (f"{self.sample}{plain} ",)
        else:
            labels["le"] = "\0"
            bucket = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            head, _, tail = bucket.partition("\0")
            bucket = f"{self.name}_bucket{{{head}"
            text = (
                bucket,
                f".0\n{bucket}",  # ends the line before: one piece less per line
                f"{tail}}} ",
                f"{self.name}_count{plain} ",
                f"{self.name}_sum{plain} ",
            )
        return text


class Exposition:
    """Renders one reader's metrics as Prometheus text or OpenMetrics."""

    def __init__(
        self, reader: Reader, name: Callable[[Instrument], str], label_name: Callable[[str], str]
    ) -> None:
        self._reader = reader
        self._name = name
        self._label_name = label_name
        self._families: dict[str, _Family] = {}
        self._seen: dict[str, tuple[int, int]] = {}
        """Per family, the reader's epoch and series count its label layout was made for."""

    def render(self, openmetrics: bool = False) -> str:
        """The exposition of every series as of now (without OpenMetrics' ``# EOF``)."""
        return self._reader.read(lambda found, now: self._render(found, openmetrics))

    def _render(self, found: list[tuple[Instrument, dict[Attributes, Any]]], om: bool) -> str:
        from prometheus_client.utils import floatToGoString

        go = cast(Callable[[object], str], floatToGoString)
        out: list[str] = []
        for instrument, points in found:
            family = self._family(instrument, points)
            out.append(family.headers[om])
            series, bind = family.series, family.bind
            if not family.histogram:
                for attributes, point in points.items():
                    (prefix,) = series.get(attributes) or bind(attributes)
                    out.append(f"{prefix}{go(point.value)}\n")
                continue
            lines, les = family.lines, family.les
            for attributes, point in points.items():
                h, g, t, c, s = series.get(attributes) or bind(attributes)
                delta: HistogramDelta = point.value
                total = delta.sum
                text = repr(total) if -_INF < total < 1e6 else go(total)  # as go writes it
                if delta.count < 1000000:  # "3.0", as floatToGoString writes 3
                    out.append(lines(h, g, t, c, s, delta.counts, delta.count, text))
                else:
                    running = accumulate(delta.counts)
                    out.extend([f"{h}{le}{t}{go(n)}\n" for le, n in zip(les, running, strict=True)])
                    out.append(f"{c}{go(delta.count)}\n{s}{text}\n")
        return "".join(out)

    def _family(self, instrument: Instrument, points: dict[Attributes, Any]) -> _Family:
        name = instrument.name
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _Family(
                instrument, self._name(instrument), self._label_name
            )
        seen = (self._reader.epoch, len(points))
        if instrument.callbacks or self._seen.get(name) != seen:  # observed: series come and go
            family.refresh(points)
            self._seen[name] = seen
        return family
