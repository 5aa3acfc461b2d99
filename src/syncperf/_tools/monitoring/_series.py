"""Prometheus series names of catalogued metrics, as rules, tests and the dashboard write them.

Every name goes through ``prom``, which checks it against ``syncperf._metrics.catalogue``, so an
expression can never name a metric (or a ``_bucket`` of a counter) that syncperf does not emit.
"""

from __future__ import annotations

import re
from decimal import Decimal

from syncperf._metrics.catalogue import BY_NAME, PROMETHEUS_SERIES
from syncperf._metrics.exposition import le_value


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
    ``increase()`` over an absent-then-1 series is empty. So all of a series' count is
    events in the window when the series is

    * new: no sample in the ``HISTORY`` before the window;
    * a restart's: absent at the window's start (a stopped process's series is marked
      stale) and, in the window, below its last value before it (a reset) -- the first
      events of a process that restarted on the same target (same labels) after a pause.
      A series absent at the start that did not drop (one failed scrape marks it stale
      too) is not new.

    The others are counted by ``increase()`` (which also reads a reset within the window).
    """
    s = series + selector
    new = f"{s} unless present_over_time({s}[{HISTORY}] offset {window})"
    reset = f"min_over_time({s}[{window}]) < last_over_time({s}[{HISTORY}] offset {window})"
    restarted = f"({s} unless {s} offset {window}) and ({reset})"
    return f"({new}) or ({restarted}) or increase({s}[{window}])"


def le_texts(bound: float) -> tuple[str, str, str]:
    """The texts of a bucket's ``le`` label for ``bound``, by the path the metrics took:

    * syncperf's endpoint: ``exposition.le_value`` (``86400.0``, ``1209600.0``);
    * the OTLP paths (Prometheus's OTLP receiver, the collector's ``prometheusremotewrite``
      exporter): Go's ``FormatFloat(bound, 'f', -1)`` (``86400``, ``1209600``);
    * a Prometheus 3 scrape, which rewrites every ``le`` as an OpenMetrics float (Go's
      shortest ``'g'``, ``.0`` added to a whole number: ``86400.0``, ``1.2096e+06``), as
      ``prometheus_client``'s ``floatToGoString`` writes it; client_golang exporters write
      it without the ``.0`` (then the ``'f'`` text).
    """
    shortest = Decimal(repr(float(bound))).normalize()
    _, digits, exponent = shortest.as_tuple()
    fixed = format(shortest, "f")
    power = len(digits) - 1 + int(exponent)
    if -4 <= power < 6:
        scraped = fixed if "." in fixed else fixed + ".0"
    else:
        mantissa = ".".join(filter(None, (str(digits[0]), "".join(map(str, digits[1:])))))
        scraped = f"{mantissa}e{'-' if power < 0 else '+'}{abs(power):02d}"
    return le_value(bound), fixed, scraped


def le_matcher(bound: float) -> str:
    """``le=~"..."`` matching the bucket ``bound`` whichever way its ``le`` was written
    (``le_texts``): an exact ``le="86400.0"`` finds nothing where it arrived as ``86400``."""
    texts = set(le_texts(bound))
    alternatives = [
        re.escape(text) + (r"(\.0)?" if text + ".0" in texts else "")
        for text in sorted(texts, key=lambda t: (len(t), t))
        if not (text.endswith(".0") and text[:-2] in texts)
    ]
    # A PromQL string: its backslashes are escaped.
    return 'le=~"' + "|".join(alternatives).replace("\\", "\\\\") + '"'
