"""``syncperf compare`` when a percentile lies in the +Inf bucket of a window."""

from __future__ import annotations

import pytest

from syncperf._tools._window import Histogram, Recorded, Window
from syncperf._tools.compare import Row, Thresholds, compare

KEY = ("push", "todo")
BOUNDS = [0.1, 1.0, 30.0, 60.0]


def _histogram(above_60: int, in_30_60: int, total: int = 2000) -> Histogram:
    """``total`` observations: ``in_30_60`` in (30, 60], ``above_60`` above 60, the rest
    in (0.1, 1]."""
    rest = total - above_60 - in_30_60
    return Histogram(list(BOUNDS), [0.0, float(rest), 0.0, float(in_30_60), float(above_60)])


def _windows(before: Histogram, after: Histogram, what: str) -> tuple[Recorded, Recorded]:
    windows = []
    for window, histogram in ((Window(0.0, 3600.0), before), (Window(3600.0, 7200.0), after)):
        recorded = Recorded(window)
        recorded.outcomes[KEY] = {"success": histogram.total}
        if what == "latency":
            recorded.durations[KEY] = histogram
        elif what == "queries/sync":
            recorded.durations[KEY] = _histogram(0, 0)
            recorded.queries[KEY] = histogram
            recorded.query_sums[KEY] = histogram.total
        else:
            recorded.outbox_lag["orders"] = histogram
        windows.append(recorded)
    return windows[0], windows[1]


def _row(rows: list[Row], what: str, label: str) -> Row:
    metric = {"latency": f"{label} latency", "queries/sync": f"queries/sync {label}"}.get(
        what, f"{label} lag"
    )
    (row,) = [r for r in rows if r.metric == metric]
    return row


@pytest.mark.parametrize("what", ["latency", "queries/sync", "lag"])
def test_a_percentile_moving_into_the_inf_bucket_is_a_regression(what: str) -> None:
    # before: 30 of 2,000 in (30, 60], none above; after: 40 of 2,000 above 60
    before, after = _windows(_histogram(0, 30), _histogram(40, 0), what)
    label = "p99" if what != "queries/sync" else "p95"
    if label == "p95":  # queries/sync reports p50 and p95: move the p95 instead
        before, after = _windows(_histogram(0, 150), _histogram(200, 0), what)
    row = _row(compare(before, after, Thresholds()), what, label)
    assert row.verdict == "regression"
    assert row.p_value is not None and row.p_value < 1e-6


@pytest.mark.parametrize("what", ["latency", "queries/sync", "lag"])
def test_a_percentile_leaving_the_inf_bucket_is_better(what: str) -> None:
    before, after = _windows(_histogram(200, 0), _histogram(0, 150), what)
    label = "p95"
    if what != "queries/sync":
        before, after = _windows(_histogram(40, 0), _histogram(0, 30), what)
        label = "p99"
    row = _row(compare(before, after, Thresholds()), what, label)
    assert row.verdict == "better"


@pytest.mark.parametrize("what", ["latency", "lag"])
def test_a_percentile_in_the_inf_bucket_of_both_windows_is_too_few_to_tell(what: str) -> None:
    before, after = _windows(_histogram(40, 0), _histogram(45, 0), what)
    row = _row(compare(before, after, Thresholds()), what, "p99")
    assert row.verdict == "too few to tell"
    assert row.p_value is None


def test_the_cli_exits_1_when_a_p99_moves_into_the_inf_bucket(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncperf import cli
    from syncperf._tools import _window

    before, after = _windows(_histogram(0, 30), _histogram(40, 0), "latency")
    windows = iter([before, after])
    monkeypatch.setattr(_window.Prometheus, "recorded", lambda self, window: next(windows))
    argv = ["compare", "--before", "-2h..-1h", "--after", "-1h..now", "--json"]
    assert cli.main(argv) == 1
    assert '"regression": true' in capsys.readouterr().out
