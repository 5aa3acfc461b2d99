"""``syncperf compare`` without a server: the test, the windows, the verdicts, the CLI errors."""

from __future__ import annotations

import bisect
import json
import math
import random
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncperf import cli
from syncperf._metrics.catalogue import DURATION_BOUNDS
from syncperf._tools._stats import above, bucket_of, grew, normal_sf, quantile_interval, wilson
from syncperf._tools._window import (
    CompareError,
    Histogram,
    Prometheus,
    Recorded,
    Window,
    check_selector,
    parse_window,
)
from syncperf._tools.compare import Thresholds, compare

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc).timestamp()


def test_the_two_proportion_test_matches_the_textbook_value() -> None:
    # 10/100 before, 20/100 after: pooled 0.15, z = 0.1 / sqrt(0.15 * 0.85 * 0.02) = 1.980
    shares = grew(10, 100, 20, 100)
    assert shares.p_value == pytest.approx(0.02385, abs=1e-4)
    assert normal_sf(1.959964) == pytest.approx(0.025, abs=1e-6)


def test_too_few_events_are_not_tested() -> None:
    assert grew(0, 1000, 3, 1000).p_value is None
    assert grew(1, 3, 2, 3).p_value is None


@given(
    st.lists(st.integers(0, 1000), min_size=2, max_size=20).filter(lambda c: sum(c) > 0),
    st.sampled_from([0.5, 0.95, 0.99]),
)
def test_at_most_one_minus_q_lies_above_the_quantiles_bucket(counts: list[int], q: float) -> None:
    index = bucket_of(q, counts)
    assert index is not None
    assert above(counts, index) <= (1 - q) * sum(counts) + 1e-9
    assert sum(counts[: index + 1]) >= q * sum(counts) - 1e-9


def _histogram(rng: random.Random, n: int, median: float) -> Histogram:
    counts = [0] * (len(DURATION_BOUNDS) + 1)
    for _ in range(n):
        counts[bisect.bisect_left(DURATION_BOUNDS, median * math.exp(rng.gauss(0.0, 0.6)))] += 1
    return Histogram(list(DURATION_BOUNDS), [float(c) for c in counts])


def _window(rng: random.Random, n: int, median: float, error_rate: float) -> Recorded:
    key = ("push", "todo")
    errors = sum(rng.random() < error_rate for _ in range(n))
    recorded = Recorded(Window(0.0, 1800.0))
    recorded.durations[key] = _histogram(rng, n, median)
    recorded.outcomes[key] = {"success": float(n - errors), "error": float(errors)}
    return recorded


def _regressions(before: Recorded, after: Recorded) -> list[str]:
    return [r.metric for r in compare(before, after, Thresholds()) if r.verdict == "regression"]


def test_windows_of_the_same_load_are_rarely_called_a_regression() -> None:
    rng = random.Random(1)
    flagged = sum(
        bool(_regressions(_window(rng, 2000, 0.02, 0.01), _window(rng, 2000, 0.02, 0.01)))
        for _ in range(200)
    )
    assert flagged <= 4  # alpha = 0.01 over all tests made: about 2 in 200 at most


def test_a_fifty_percent_slowdown_is_found_almost_always() -> None:
    rng = random.Random(2)
    found = sum(
        "p50 latency"
        in _regressions(_window(rng, 2000, 0.02, 0.01), _window(rng, 2000, 0.03, 0.01))
        for _ in range(100)
    )
    assert found >= 95


def test_a_small_significant_change_is_not_a_regression() -> None:
    before = Recorded(Window(0, 60))
    after = Recorded(Window(0, 60))
    before.outcomes[("push", "-")] = {"success": 1_000_000.0, "error": 10_000.0}
    after.outcomes[("push", "-")] = {"success": 1_000_000.0, "error": 11_000.0}
    (row,) = [r for r in compare(before, after, Thresholds()) if r.metric == "error rate"]
    assert row.p_value is not None and row.p_value < 1e-9  # real, but 0.1 points < 0.5
    assert row.verdict == "unchanged"


def test_fewer_errors_are_better() -> None:
    before = Recorded(Window(0, 60))
    after = Recorded(Window(0, 60))
    before.outcomes[("push", "-")] = {"success": 900.0, "error": 100.0}
    after.outcomes[("push", "-")] = {"success": 990.0, "error": 10.0}
    (row,) = [r for r in compare(before, after, Thresholds()) if r.metric == "error rate"]
    assert row.verdict == "better"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("-2h..now", (NOW - 7200, NOW)),
        ("now-90m..-1h30m5s", (NOW - 5400, NOW - 5405)),
        ("2026-12-01T10:00:00Z..2026-12-01T11:00:00+00:00", (NOW - 7200, NOW - 3600)),
    ],
)
def test_windows_take_rfc3339_and_relative_times(raw: str, expected: tuple[float, float]) -> None:
    if expected[1] <= expected[0]:
        with pytest.raises(CompareError, match="not after the start"):
            parse_window(raw, "--before", NOW)
        return
    window = parse_window(raw, "--before", NOW)
    assert (window.start, window.end) == expected


@pytest.mark.parametrize(
    "raw", ["-2h", "yesterday..now", "2026-12-01T10:00:00..now", "-1x..now", "now..-1h"]
)
def test_a_bad_window_is_a_compare_error(raw: str) -> None:
    with pytest.raises(CompareError, match="--after"):
        parse_window(raw, "--after", NOW)


@pytest.mark.parametrize(
    "raw",
    [
        "-" + "9" * 400 + "w..now",
        "-" + "9" * 5000 + "w..now",
        "-999999999999w..now",
        "now..9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00..now",
        "1969-12-31T23:59:59Z..now",
    ],
)
def test_a_time_outside_the_years_1970_to_9999_is_a_compare_error(raw: str) -> None:
    with pytest.raises(CompareError, match="--before") as info:
        parse_window(raw, "--before", NOW)
    assert len(str(info.value)) < 300


@given(st.integers(0, 10**30), st.sampled_from("smhdw"), st.booleans())
def test_any_relative_time_is_a_window_or_a_compare_error(
    count: int, unit: str, at_the_end: bool
) -> None:
    time = f"-{count}{unit}"
    raw = f"{time}..now" if not at_the_end else f"1970-01-01T00:00:00Z..{time}"
    try:
        window = parse_window(raw, "--after", NOW)
    except CompareError as error:
        assert "--after" in str(error)
        return
    assert window.describe()


def test_a_selector_is_label_matchers() -> None:
    assert check_selector('{job="api"}') == 'job="api"'
    with pytest.raises(CompareError):
        check_selector("job) or vector(1")


@pytest.mark.parametrize(
    "argv",
    [
        ["compare"],
        ["compare", "--before", "-2h..-1h"],
        ["compare", "--before", "-2h..-1h", "--after", "-1h"],
        ["compare", "--before", "-2h..-1h", "--after", "-1h..now", "--alpha", "1.5"],
        ["compare", "--before", "-2h..-1h", "--after", "-1h..now", "--prometheus", "nope"],
        ["compare", "--before", "-2h..-1h", "--after", "-1h..now", "--selector", "}{"],
        # nothing listens on port 1
        [
            "compare",
            "--before",
            "-2h..-1h",
            "--after",
            "-1h..now",
            "--prometheus",
            "http://127.0.0.1:1",
            "--timeout",
            "2",
        ],
        ["check"],
        ["check", "results.json"],
    ],
)
def test_usage_and_connection_errors_are_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code  # type: ignore[assignment]
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert captured.err.startswith(f"syncperf {argv[0]}: ")


def test_label_values_are_shown_as_text_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    from syncperf._tools.compare import Row, _table

    _table([Row("push [bold]x[/bold]", "throughput", "/s", 1.0, 2.0)], "a", "b")
    assert "push [bold]x[/bold]" in capsys.readouterr().out


def test_the_table_without_rich_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from syncperf._tools.compare import _table

    monkeypatch.setitem(sys.modules, "rich.console", None)  # import fails
    with pytest.raises(CompareError, match=r"pip install 'syncperf\[ops\]'\); or use --json"):
        _table([], "a", "b")


@pytest.mark.parametrize(
    "url",
    [
        "nope",
        "http://",
        "http://[::1",
        "http://host:99999",
        "ftp://host:9090",
        "http://h:1/a b",
        "http://ops:s3cret@h:1/a\tb",
        "http://h:1/\x7f",
        "http://ops:s3cret@h:1/a\nb",
    ],
)
def test_a_bad_prometheus_url_is_a_compare_error(url: str) -> None:
    with pytest.raises(CompareError, match="--prometheus") as info:
        Prometheus(url)
    assert "s3cret" not in str(info.value)


def test_a_url_with_a_space_is_a_usage_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = _run(capsys, [*WINDOWS, "--prometheus", "http://ops:s3cret@h:1/a b"])
    assert (status, out) == (2, "")
    assert len(err.strip().splitlines()) == 1 and "--prometheus" in err
    assert "s3cret" not in err


def test_a_server_that_does_not_speak_http_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def garbage(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"NOT HTTP \x1b[2J AT ALL\r\n\r\n")
        handler.close_connection = True

    with _fake_prometheus(garbage) as (url, _):
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", url])
    assert (status, out) == (2, "")
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("syncperf compare: cannot query Prometheus at ") and "\x1b" not in err


def test_credentials_in_the_url_become_basic_auth_and_are_never_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = Prometheus("http://ops:s3cret@127.0.0.1:1/prom/")
    assert server.url == "http://127.0.0.1:1/prom"
    argv = ["compare", "--before", "-2h..-1h", "--after", "-1h..now", "--timeout", "2"]
    assert cli.main([*argv, "--prometheus", "http://ops:s3cret@127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "127.0.0.1:1" in err
    assert "s3cret" not in err
    assert "ops" not in err


def test_windows_that_do_not_overlap_are_told_apart() -> None:
    """5 queries per push before, 35 after: no operation of one window is like the other's."""
    bounds = [0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
    windows = []
    for bucket in (3, 6):  # (2, 5] then (20, 50]
        recorded = Recorded(Window(0.0, 600.0))
        counts = [0.0] * (len(bounds) + 1)
        counts[bucket] = 1000.0
        recorded.outcomes[("push", "todo")] = {"success": 1000.0}
        recorded.queries[("push", "todo")] = Histogram(bounds, counts)
        windows.append(recorded)
    rows = {r.metric: r for r in compare(*windows, Thresholds())}
    assert rows["queries/sync p50"].verdict == "regression"
    assert rows["queries/sync p95"].verdict == "regression"


def test_intervals_match_the_textbook_values() -> None:
    low, high = wilson(10, 100) or (0.0, 0.0)
    assert (low, high) == (pytest.approx(0.0552, abs=1e-4), pytest.approx(0.1744, abs=1e-4))
    assert quantile_interval(0.5, 100) == (
        pytest.approx(0.402, abs=1e-3),
        pytest.approx(0.598, abs=1e-3),
    )
    assert wilson(0, 0) is None


def test_a_percentile_row_carries_each_windows_interval() -> None:
    rng = random.Random(3)
    rows = compare(_window(rng, 2000, 0.02, 0.01), _window(rng, 2000, 0.03, 0.01), Thresholds())
    (p95,) = [r for r in rows if r.metric == "p95 latency"]
    assert p95.before_interval is not None and p95.after_interval is not None
    low, high = p95.before_interval
    assert low is not None and high is not None and p95.before is not None
    assert low <= p95.before <= high
    assert high < p95.after_interval[0]  # 50 % slower: the intervals do not overlap


Answer = Callable[[BaseHTTPRequestHandler], None]


class Received(BaseHTTPRequestHandler):
    """A request a fake Prometheus got (``body``: what was POSTed)."""

    body = b""

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _fake_prometheus(
    answer: Answer, tls: ssl.SSLContext | None = None
) -> Iterator[tuple[str, list[Received]]]:
    """A server on a free loopback port (HTTPS with ``tls``) calling ``answer`` per request;
    yields its URL and the requests it got."""
    seen: list[Received] = []

    class Handler(Received):
        def do_POST(self) -> None:
            self.body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append(self)
            answer(self)

        do_GET = do_POST

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        scheme = "http" if tls is None else "https"
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    handler.send_response(status)
    for name, value in {"Content-Length": str(len(body)), **headers}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def _json(payload: object) -> Answer:
    return lambda handler: _send(handler, 200, json.dumps(payload).encode())


EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}
WINDOWS = ["compare", "--before", "-2h..-1h", "--after", "-1h..now", "--json"]


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code  # type: ignore[assignment]
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("option", ["--alpha", "--min-change", "--min-rate-change", "--timeout"])
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e400"])
def test_a_number_option_that_is_not_finite_is_a_usage_error_naming_it(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*WINDOWS, "--prometheus", "http://127.0.0.1:1", "--timeout", "2", option, value]
    status, out, err = _run(capsys, argv)
    assert (status, out) == (2, "")
    assert len(err.strip().splitlines()) == 1, err
    assert option in err


@pytest.mark.parametrize("value", ["1e300", "86401"])
def test_a_timeout_longer_than_a_day_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _run(
        capsys, [*WINDOWS, "--prometheus", "http://127.0.0.1:1", "--timeout", value]
    )
    assert status == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "--timeout" in err


@pytest.mark.parametrize(
    "answer",
    [
        [],
        None,
        "success",
        {"status": "error", "error": ""},
        {"status": "error"},
        {"status": "error", "error": None},
        {"status": "error", "error": ["a"]},
        {"status": "error", "error": "\x1b[2J\nsecond line"},
        {},
        {"status": "success"},
        {"status": "success", "data": []},
        {"status": "success", "data": {"result": {}}},
    ],
)
def test_an_answer_that_is_not_prometheus_json_is_a_one_line_error(
    answer: object, capsys: pytest.CaptureFixture[str]
) -> None:
    with _fake_prometheus(_json(answer)) as (url, _):
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", url])
    assert (status, out) == (2, "")
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("syncperf compare: ") and "\x1b" not in err


class _Answers(Prometheus):
    """A Prometheus whose every query answers the same samples."""

    def __init__(self, samples: list[tuple[dict[str, str], str]]) -> None:
        super().__init__("http://127.0.0.1:1")
        self.samples = samples

    def query(self, promql: str, at: float) -> list[dict[str, object]]:
        return [{"metric": labels, "value": [at, value]} for labels, value in self.samples]


VALUES = st.sampled_from(["+Inf", "-Inf", "NaN", "0", "10", "1e308"]) | st.floats().map(repr)


@settings(deadline=None)  # timing under a loaded machine is not what this checks
@given(st.lists(st.tuples(st.sampled_from(["0.1", "1", "+Inf"]), VALUES), max_size=6))
def test_any_sample_values_give_rows_not_a_crash(samples: list[tuple[str, str]]) -> None:
    op = {"sync_operation": "push", "sync_entity": "todo", "sync_outcome": "success"}
    server = _Answers([({**op, "le": le}, value) for le, value in samples])
    before = server.recorded(Window(NOW - 7200, NOW - 3600))
    after = server.recorded(Window(NOW - 3600, NOW))
    for row in compare(before, after, Thresholds()):
        json.dumps(row.__dict__, allow_nan=False)  # finite numbers or None


def test_an_infinite_sample_is_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    op = {"sync_operation": "push", "sync_entity": "todo", "sync_outcome": "success"}
    samples = [{"metric": labels, "value": [0, "+Inf"]} for labels in (op, {**op, "le": "+Inf"})]
    answer = {"status": "success", "data": {"result": samples}}
    with _fake_prometheus(_json(answer)) as (url, _):
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", url])
    assert (status, err) == (0, "")
    assert json.loads(out)["rows"] == []


def test_one_bound_written_two_ways_adds_up() -> None:
    """A scrape writes ``le="2.0"``, an OTLP path ``le="2"`` (docs/metrics.md): ``sum by
    (le)`` keeps both texts, and both hold operations."""
    from syncperf._tools._window import _histograms

    op = {"sync_operation": "push", "sync_entity": "todo"}
    samples = [
        ({**op, "le": "2.0"}, 100.0),
        ({**op, "le": "2"}, 100.0),
        ({**op, "le": "+Inf"}, 150.0),
        ({**op, "le": "+Inf"}, 100.0),
    ]
    assert _histograms(samples)[("push", "todo")] == Histogram([2.0], [200.0, 50.0])


def test_half_the_fleet_over_otlp_is_not_a_regression() -> None:
    """The same 400 pushes in both windows; in the second, half the fleet sends them over
    OTLP (``le="2"``), half is scraped (``le="2.0"``)."""
    op = {"sync_operation": "push", "sync_entity": "todo"}
    cumulative = {0.2: 200.0, 0.5: 400.0, 2.0: 400.0}
    inf = ({**op, "le": "+Inf"}, "400")
    count = ({**op, "sync_outcome": "success"}, "400")
    before = _Answers([({**op, "le": repr(b)}, str(n)) for b, n in cumulative.items()])
    after = _Answers(
        [({**op, "le": repr(b)}, str(n / 2)) for b, n in cumulative.items()]
        + [({**op, "le": f"{b:g}"}, str(n / 2)) for b, n in cumulative.items()]
    )
    for server in (before, after):
        server.samples += [inf, count]
    first = before.recorded(Window(NOW - 7200, NOW - 3600))
    second = after.recorded(Window(NOW - 3600, NOW))
    assert second.durations == first.durations
    rows = compare(first, second, Thresholds())
    assert rows and [r.metric for r in rows if r.verdict == "regression"] == []
