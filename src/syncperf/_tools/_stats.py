"""The statistics behind ``syncperf compare``: one test, on counts Prometheus already has.

Every question compare asks is "did a share grow?": the error rate is the share of operations
that failed, the conflict rate the share that conflicted, and a percentile moved up exactly
when more operations than before exceed the old percentile. For a percentile ``q`` the
threshold is the bucket boundary at or above the before-window's ``q`` quantile, so both
shares are read from bucket counts without interpolation: at most ``1 - q`` of the
before-window lies above it, and if the after-window's ``q`` quantile is beyond it, more than
``1 - q`` of the after-window does. (A threshold from both windows together would be blind
when the windows do not overlap at all: 5 queries per push before, 35 after.)

The test is the one-sided two-proportion z-test (pooled variance, normal approximation), used
only where the approximation holds (at least ``MIN_EXPECTED`` expected events and non-events
in each window); with fewer, the answer is "too few to tell", never a regression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_EXPECTED = 5.0
Z95 = 1.959964
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
"""The percentiles syncperf check and compare report."""


@dataclass(frozen=True)
class Shares:
    """``hits`` out of ``total`` in each window, and the one-sided p-value that the after
    share is larger (None when the counts are too small for the test to hold)."""

    before_hits: float
    before_total: float
    after_hits: float
    after_total: float
    p_value: float | None

    @property
    def before(self) -> float:
        """The before-window's share."""
        return self.before_hits / self.before_total if self.before_total else 0.0

    @property
    def after(self) -> float:
        """The after-window's share."""
        return self.after_hits / self.after_total if self.after_total else 0.0


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def grew(before_hits: float, before_total: float, after_hits: float, after_total: float) -> Shares:
    """Two-proportion z-test that the after-window's share of hits is larger."""
    n1, n2 = before_total, after_total
    pooled = (before_hits + after_hits) / (n1 + n2) if n1 + n2 else 0.0
    expected = min(n * share for n in (n1, n2) for share in (pooled, 1.0 - pooled))
    p_value: float | None = None
    if n1 > 0 and n2 > 0 and expected >= MIN_EXPECTED:
        se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
        p_value = normal_sf((after_hits / n2 - before_hits / n1) / se)
    return Shares(before_hits, n1, after_hits, n2, p_value)


def above(counts: Sequence[float], index: int) -> float:
    """Observations in the buckets after bucket ``index`` (above its upper bound)."""
    return float(sum(counts[index + 1 :]))


def bucket_of(q: float, counts: Sequence[float]) -> int | None:
    """Index of the bucket holding the ``q`` quantile (None when there is no data)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank, cumulative = q * total, 0.0
    for index, count in enumerate(counts):
        cumulative += count
        if count and cumulative >= rank:
            return index
    return len(counts) - 1


def quantile_interval(q: float, n: float) -> tuple[float, float]:
    """Quantiles bounding a 95 % distribution-free interval of the ``q`` quantile from ``n``
    observations: the number of observations below the true quantile is Binomial(n, q), so
    the order statistics at ``n q -+ 1.96 sqrt(n q (1 - q))`` bracket it (normal
    approximation)."""
    half = Z95 * math.sqrt(q * (1.0 - q) / n) if n > 0 else 1.0
    return max(q - half, 0.0), min(q + half, 1.0)


def wilson(hits: float, n: float) -> tuple[float, float] | None:
    """The 95 % Wilson score interval of a share (None without observations)."""
    if n <= 0:
        return None
    # the textbook form multiplied through by n: no 1 / n**2 to overflow when n is tiny
    share, z2 = hits / n, Z95 * Z95
    centre = (hits + z2 / 2) / (n + z2)
    half = Z95 * math.sqrt(hits * (1 - share) + z2 / 4) / (n + z2)
    return max(centre - half, 0.0), min(centre + half, 1.0)
