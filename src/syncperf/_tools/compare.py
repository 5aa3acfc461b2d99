"""``syncperf compare``: two time windows in Prometheus (before and after a deploy).

Per operation and entity: throughput, p50/p95/p99 latency, error and conflict rates, queries
per sync; per outbox: lag percentiles. Each change comes with a one-sided two-proportion test
on counts Prometheus holds (see ``_stats``), Bonferroni-corrected over every test made, and a
minimum size, so noise between two windows of the same load is not called a regression.

Exit status: 0 no regression, 1 regression, 2 usage or connection error (one line).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

from opentelemetry.sdk.metrics.export import HistogramDataPoint

from syncperf._config import MAX_SECONDS
from syncperf._tools._stats import (
    QUANTILES,
    Shares,
    above,
    bucket_of,
    grew,
    quantile_interval,
    wilson,
)
from syncperf._tools._window import (
    NO_ENTITY,
    CompareError,
    Histogram,
    Key,
    Prometheus,
    Recorded,
    check_selector,
    parse_window,
)
from syncperf._tools.demo._stats import quantile
from syncperf.cli import Parser, positive


@dataclass
class Row:
    """One compared figure."""

    subject: str
    metric: str
    unit: str
    before: float | None
    after: float | None
    p_value: float | None = None
    verdict: str = "info"
    before_interval: tuple[float | None, float | None] | None = None
    """95 % interval of the before figure (percentiles and rates)."""
    after_interval: tuple[float | None, float | None] | None = None
    """``regression``, ``better``, ``unchanged``, ``too few to tell`` or ``info`` (not tested)."""

    @property
    def change(self) -> float | None:
        """Relative change, after / before - 1."""
        if self.before is None or self.after is None or self.before == 0:
            return None
        return self.after / self.before - 1.0


@dataclass(frozen=True)
class Thresholds:
    """What counts as a regression besides significance."""

    alpha: float = 0.01
    min_change: float = 0.10
    min_rate_change: float = 0.005


@dataclass
class _Tested:
    row: Row
    up: Shares
    down: Shares
    big_enough_up: bool
    big_enough_down: bool
    can_rise: bool = True
    """False when the before figure is already in the +Inf bucket: no test can see it rise."""


def compare(before: Recorded, after: Recorded, limits: Thresholds) -> list[Row]:
    """Every row, with verdicts (Bonferroni over the rows that could be tested)."""
    rows: list[Row] = []
    tested: list[_Tested] = []
    for key in sorted(set(before.outcomes) | set(after.outcomes)):
        rows.extend(_operation_rows(key, before, after, limits, tested))
    for name in sorted(set(before.outbox_lag) | set(after.outbox_lag)):
        for label, q in QUANTILES.items():
            row = Row(f"outbox {name}", f"{label} lag", "s", None, None)
            rows.append(row)
            _quantile(
                row, q, before.outbox_lag.get(name), after.outbox_lag.get(name), limits, tested
            )
    tests = sum(s.p_value is not None for t in tested for s in (t.up, t.down))
    cut = limits.alpha / max(tests, 1)
    for t in tested:
        t.row.verdict = _verdict(t, cut)
    return rows


def _verdict(t: _Tested, cut: float) -> str:
    up, down = t.up.p_value, t.down.p_value
    t.row.p_value = min((p for p in (up, down) if p is not None), default=None)
    if up is not None and up < cut and t.big_enough_up:
        t.row.p_value = up
        return "regression"
    if down is not None and down < cut and t.big_enough_down:
        t.row.p_value = down
        return "better"
    # it grew, by too few events to say it is not noise; or it lies above the highest bound
    if up is None and (not t.can_rise or (t.big_enough_up and t.up.after > t.up.before)):
        return "too few to tell"
    return "unchanged"


def _operation_rows(
    key: Key, before: Recorded, after: Recorded, limits: Thresholds, tested: list[_Tested]
) -> Iterator[Row]:
    operation, entity = key
    subject = operation if entity == NO_ENTITY else f"{operation} {entity}"
    outcomes = before.outcomes.get(key, {}), after.outcomes.get(key, {})
    totals = [sum(o.values()) for o in outcomes]
    yield Row(
        subject,
        "throughput",
        "/s",
        totals[0] / before.window.seconds,
        totals[1] / after.window.seconds,
    )
    durations = before.durations.get(key), after.durations.get(key)
    for label, q in QUANTILES.items():
        row = Row(subject, f"{label} latency", "s", None, None)
        _quantile(row, q, *durations, limits, tested)
        yield row
    for outcome in ("error", "conflict"):
        hits = [o.get(outcome, 0.0) for o in outcomes]
        if not any(hits) and outcome == "conflict":
            continue
        up = grew(hits[0], totals[0], hits[1], totals[1])
        down = grew(hits[1], totals[1], hits[0], totals[0])
        row = Row(subject, f"{outcome} rate", "%", up.before, up.after)
        row.before_interval = wilson(hits[0], totals[0])
        row.after_interval = wilson(hits[1], totals[1])
        change = up.after - up.before
        tested.append(
            _Tested(
                row, up, down, change >= limits.min_rate_change, -change >= limits.min_rate_change
            )
        )
        yield row
    queries = before.queries.get(key), after.queries.get(key)
    if any(queries):
        means = [
            window.query_sums.get(key, 0.0) / h.total if h and h.total else None
            for window, h in zip((before, after), queries, strict=True)
        ]
        yield Row(subject, "queries/sync (mean)", "", means[0], means[1])
        for label, q in list(QUANTILES.items())[:2]:
            row = Row(subject, f"queries/sync {label}", "", None, None)
            _quantile(row, q, *queries, limits, tested)
            yield row


def _quantile(
    row: Row,
    q: float,
    before: Histogram | None,
    after: Histogram | None,
    limits: Thresholds,
    tested: list[_Tested],
) -> None:
    """Fill ``row`` with the ``q`` quantiles and queue its exceedance tests."""
    row.before, row.before_interval = _estimate(q, before), _interval(q, before)
    row.after, row.after_interval = _estimate(q, after), _interval(q, after)
    if before is None or after is None or before.bounds != after.bounds:
        row.verdict = "too few to tell" if before is None or after is None else "buckets differ"
        return
    # "slower": the share above the before-window's q bucket grew; "faster": the share above
    # the after-window's q bucket shrank (not tested when that bucket is +Inf: nothing is above)
    up_at, down_at = bucket_of(q, before.counts), bucket_of(q, after.counts)
    if up_at is None or down_at is None:
        row.verdict = "too few to tell"
        return
    up, down = _exceeding(before, after, up_at), _exceeding(after, before, down_at)
    change = row.change
    tested.append(
        _Tested(
            row,
            up,
            down,
            change is None or change >= limits.min_change,
            change is not None and -change >= limits.min_change,
            up_at < len(before.bounds),
        )
    )


def _exceeding(base: Histogram, other: Histogram, at: int) -> Shares:
    """Did the share above bucket ``at`` grow from ``base`` to ``other``? Untested (p-value
    None) when ``at`` is the +Inf bucket: nothing lies above it."""
    hits = above(base.counts, at), above(other.counts, at)
    if at >= len(base.bounds):
        return Shares(hits[0], base.total, hits[1], other.total, None)
    return grew(hits[0], base.total, hits[1], other.total)


def _interval(q: float, histogram: Histogram | None) -> tuple[float | None, float | None] | None:
    if histogram is None or not histogram.total:
        return None
    low, high = quantile_interval(q, histogram.total)
    return _estimate(low, histogram), _estimate(high, histogram)


def _estimate(q: float, histogram: Histogram | None) -> float | None:
    """``histogram_quantile``'s estimate: linear within the bucket, the +Inf bucket at the
    highest finite bound."""
    if histogram is None or not histogram.total or not histogram.bounds:
        return None
    point = HistogramDataPoint(
        attributes={},
        start_time_unix_nano=0,
        time_unix_nano=0,
        count=int(histogram.total),
        sum=0.0,
        bucket_counts=[int(c) for c in histogram.counts],
        explicit_bounds=histogram.bounds,
        min=min(0.0, histogram.bounds[0]),
        max=histogram.bounds[-1],
    )
    return quantile(q, point)


def main(argv: Sequence[str] | None = None) -> int:
    """``syncperf compare --before START..END --after START..END``."""
    parser = Parser(
        prog="syncperf compare",
        description="Compare sync operations in two time windows read from Prometheus. "
        "Times: RFC 3339 (2026-12-01T10:00:00Z), now, or relative (-2h, now-30m). "
        "Exit status: 0 no regression, 1 regression, 2 usage or connection error.",
    )
    parser.add_argument("--before", required=True, metavar="START..END", help="the window before")
    parser.add_argument("--after", required=True, metavar="START..END", help="the window after")
    parser.add_argument(
        "--prometheus",
        default="http://localhost:9090",
        metavar="URL",
        help="Prometheus's base URL (default: %(default)s)",
    )
    parser.add_argument("--selector", help='label matchers added to every query: job="api"')
    parser.add_argument(
        "--alpha",
        type=_probability,
        default=0.01,
        help="chance of any false alarm in one run (default: %(default)s)",
    )
    parser.add_argument(
        "--min-change",
        type=positive(float),
        default=0.10,
        help="smallest relative percentile change (default: %(default)s)",
    )
    parser.add_argument(
        "--min-rate-change",
        type=positive(float),
        default=0.005,
        help="smallest error or conflict rate change (0.005 = 0.5 points)",
    )
    parser.add_argument(
        "--timeout",
        type=positive(float, most=MAX_SECONDS),
        default=30.0,
        metavar="SECONDS",
        help="per query, its whole answer read; at most a day (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(_windows_as_values(sys.argv[1:] if argv is None else argv))
    limits = Thresholds(args.alpha, args.min_change, args.min_rate_change)
    try:
        before = parse_window(args.before, "--before")
        after = parse_window(args.after, "--after")
        server = Prometheus(args.prometheus, check_selector(args.selector), args.timeout)
        rows = compare(server.recorded(before), server.recorded(after), limits)
        if args.json:
            text = json.dumps(_as_json(rows, before.describe(), after.describe(), limits))
            print(text)
        else:
            _table(rows, before.describe(), after.describe())
    except CompareError as error:
        print(f"syncperf compare: {error}", file=sys.stderr)
        return 2
    return 1 if any(row.verdict == "regression" for row in rows) else 0


def _windows_as_values(argv: Sequence[str]) -> list[str]:
    """``--before -2h..-1h`` as ``--before=-2h..-1h`` (argparse takes ``-2h..`` for an option)."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--before", "--after") and arg.startswith("-"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _probability(raw: str) -> float:
    value = positive(float)(raw)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be < 1, got {raw}")
    return value


def _as_json(rows: list[Row], before: str, after: str, limits: Thresholds) -> dict[str, object]:
    return {
        "before": before,
        "after": after,
        "thresholds": asdict(limits),
        "regression": any(row.verdict == "regression" for row in rows),
        "rows": [{**asdict(row), "change": row.change} for row in rows],
    }


def _show(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"
    if unit == "%":
        return f"{value * 100:.2f}%"
    if unit == "/s":
        return f"{value:.3g}/s"
    return f"{value:.3g}"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "<1e-15" if value < 1e-15 else f"{value:.1g}"


_STYLE = {"regression": "bold red", "better": "green", "unchanged": "", "info": "dim"}


def _table(rows: list[Row], before: str, after: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        from syncperf._tools._console import PipeConsole
    except ImportError:
        raise CompareError(
            "the table needs rich (pip install 'syncperf[ops]'); or use --json"
        ) from None
    table = Table(title=f"before {before}  vs  after {after}")
    for column in ("subject", "metric", "before", "after", "change", "p", "verdict"):
        table.add_column(column, justify="right" if column in ("change", "p") else "left")
    for row in rows:
        change = row.change
        table.add_row(
            Text(row.subject),  # label values are data, never rich markup
            row.metric,
            _show(row.before, row.unit),
            _show(row.after, row.unit),
            "-" if change is None else f"{change:+.0%}",
            _p(row.p_value),
            row.verdict,
            style=_STYLE.get(row.verdict, "yellow"),
        )
    PipeConsole(width=max(100, Console().width)).print(table)
