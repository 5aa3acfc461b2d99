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
