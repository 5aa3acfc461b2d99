"""Prometheus series names of catalogued metrics, as rules, tests and the dashboard write them.

Every name goes through ``prom``, which checks it against ``syncperf._metrics.catalogue``, so an
expression can never name a metric (or a ``_bucket`` of a counter) that syncperf does not emit.
"""

from __future__ import annotations

from syncperf._metrics.catalogue import BY_NAME, PROMETHEUS_SERIES


def prom(name: str, suffix: str = "") -> str:
    """The Prometheus name of the syncperf metric ``name`` plus ``suffix`` (checked).

    Raises:
        KeyError: ``name`` is not a metric syncperf emits, or the suffixed series does not
            exist (e.g. ``_bucket`` of a counter).
    """
    series = BY_NAME[name].prometheus + suffix
    if series not in PROMETHEUS_SERIES:
        raise KeyError(series)
    return series


HISTORY = "1h"
"""How far back before a window ``events`` looks for a series' earlier samples: a gap in
scraping (or a Prometheus restart) longer than this makes a series look new."""


def events(series: str, window: str, selector: str = "") -> str:
    """PromQL for the events each series of the counter ``series`` counted in ``window``.

    ``increase()`` alone misses the first events of a series: syncperf exposes a counter
    series only once it has counted something, so the series appears at its count (1 for
    a one-off event) with no 0 sample before it (and no ``_created`` series), and
    ``increase()`` over an absent-then-1 series is empty. A series with no sample in the
    ``HISTORY`` before the window is new: all of its count is events in the window. The
    others are counted by ``increase()`` (which also reads a restart's reset).
    """
    s = series + selector
    new = f"{s} unless present_over_time({s}[{HISTORY}] offset {window})"
    return f"({new}) or increase({s}[{window}])"
