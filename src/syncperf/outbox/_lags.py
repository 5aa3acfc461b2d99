"""The lags of one relay batch, kept bounded however many messages its block reports.

A ``publish()`` block records its messages when it ends, as published or, if it raises, as
failed without their lags: until then they are the batch's own. The batch queues each lag in a
list; once ``LAG_FOLD_AT`` are queued, ``fold_lags`` moves them into a histogram of the batch's own
(one count per ``outbox.lag`` bucket, a sum, a minimum and a maximum), and the block's end adds
that to the series (``record_lags``) or drops it. A stream of any length holds at most
``LAG_FOLD_AT`` lags plus one fixed-size histogram.
"""

from __future__ import annotations

from syncperf._metrics.aggregates import HistogramSeries
from syncperf._metrics.batches import FOLD_AT

__all__ = ["LAG_FOLD_AT", "fold_lags", "record_lags"]

LAG_FOLD_AT = FOLD_AT
"""Lags a batch queues before folding them into its histogram."""


def fold_lags(
    lags: list[float], folded: HistogramSeries | None, bounds: tuple[float, ...]
) -> HistogramSeries:
    """Move ``lags`` into ``folded`` (made with ``bounds`` on the first fold); holds the
    batch's lock."""
    if folded is None:
        folded = HistogramSeries((), bounds)
    folded.record_all(lags)
    lags.clear()
    return folded


def record_lags(series: HistogramSeries, lags: list[float], folded: HistogramSeries | None) -> None:
    """Record the queued ``lags`` and the ``folded`` ones into ``series`` (holds the runtime's
    lock); ``folded`` has ``series``' bounds (the catalogue's, whatever the runtime)."""
    series.record_all(lags)
    if folded is None or not any(folded.counts):
        return
    counts = series.counts
    for index, n in enumerate(folded.counts):
        counts[index] += n
    series.sum += folded.sum
    if folded.min < series.min:
        series.min = folded.min
    if folded.max > series.max:
        series.max = folded.max
