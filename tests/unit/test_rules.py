"""`syncperf rules`: Prometheus rules, promtool tests and Datadog monitors as generated text."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.utils import floatToGoString

from syncperf import ConfigError
from syncperf._metrics.catalogue import BY_NAME, METRICS, PROMETHEUS_SERIES
from syncperf._tools.monitoring import rules
from syncperf._tools.monitoring._alerts import alerts
from syncperf._tools.monitoring._datadog import monitors
from syncperf._tools.monitoring._options import (
    STALE_HOURS,
    RuleOptions,
    format_duration,
    number,
    parse_duration,
)
from syncperf._tools.monitoring._series import le_matcher, le_texts
from syncperf._tools.monitoring._timeline import Timeline, notation
from syncperf._tools.monitoring._yaml import dump
from tests._promql import metric_names

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
REQUIRED_ALERTS = {
    "SyncPushConflictRateHigh",
    "SyncLatencyP95High",
    "SyncErrorRateHigh",
    "SyncVolumeSpike",
    "OutboxOldestMessageTooOld",
    "OutboxProbeFailing",
    "SyncNPlusOneDetected",
    "SyncSlowQueriesHigh",
    "SyncIdempotencyHitSpike",
    "SyncPerfShedding",
}


def _rule_file(**options: object) -> dict:
    return yaml.safe_load(rules.render(RuleOptions(**options)))  # type: ignore[arg-type]


def _alert_rules(doc: dict) -> dict[str, dict]:
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_committed_artifacts_are_what_the_generators_write_now() -> None:
    o = RuleOptions()
    assert (OPS / "prometheus/syncperf-rules.yml").read_text() == rules.render(o)
    assert (OPS / "prometheus/syncperf-rules.test.yml").read_text() == rules.render(
        o, "promtool-tests"
    )
    assert (OPS / "datadog/monitors.json").read_text() == rules.render(o, "datadog")


def test_output_is_deterministic() -> None:
    o = RuleOptions(conflict_rate=0.2)
    for fmt in rules.FORMATS:
        assert rules.render(o, fmt) == rules.render(RuleOptions(conflict_rate=0.2), fmt)


def test_every_required_alert_is_generated() -> None:
    assert set(_alert_rules(_rule_file())) >= REQUIRED_ALERTS


def test_recording_rules_cover_quantiles_error_and_conflict_rates() -> None:
    records = {r["record"] for g in _rule_file()["groups"] for r in g["rules"] if "record" in r}
    assert {
        "sync:operations:rate5m",
        "sync:error_ratio:rate5m",
        "sync:conflict_ratio:rate5m",
        "sync:duration_seconds:p50_5m",
        "sync:duration_seconds:p95_5m",
        "sync:duration_seconds:p99_5m",
    } <= records


def test_each_alert_has_severity_summary_with_its_labels_and_a_runbook_link() -> None:
    runbooks = (ROOT / "docs/runbooks.md").read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^## (\w+)\s*$", runbooks, re.M)}
    for alert in alerts(RuleOptions()):
        rule = _alert_rules(_rule_file())[alert.name]
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        for label in alert.labels:
            assert "{{ $labels." + label + " }}" in rule["annotations"]["summary"]
        url = rule["annotations"]["runbook_url"]
        assert url.endswith("#" + alert.name.lower())
        assert alert.name.lower() in anchors, f"docs/runbooks.md lacks ## {alert.name}"


def test_rules_name_only_metrics_syncperf_emits() -> None:
    doc = _rule_file()
    records = {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}
    for group in doc["groups"]:
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - PROMETHEUS_SERIES - records
            assert not unknown, (rule.get("alert") or rule.get("record"), unknown)


def test_thresholds_are_configurable() -> None:
    doc = _rule_file(
        conflict_rate=0.25,
        p95_seconds=2.0,
        error_rate=0.01,
        window="1m",
        for_="30s",
        evaluation_interval="15s",
    )
    by_name = _alert_rules(doc)
    assert "sync:conflict_ratio:rate1m > 0.25" in by_name["SyncPushConflictRateHigh"]["expr"]
    assert "sync:duration_seconds:p95_1m > 2" in by_name["SyncLatencyP95High"]["expr"]
    assert "> 0.01" in by_name["SyncErrorRateHigh"]["expr"]
    assert {r["for"] for r in by_name.values()} == {"30s"}
    assert {g["interval"] for g in doc["groups"]} == {"15s"}


def test_cli_takes_thresholds_and_writes_a_file(tmp_path: Path) -> None:
    out = tmp_path / "rules.yml"
    assert rules.main(["--conflict-rate", "0.3", "--for", "1m", "-o", str(out)]) == 0
    text = out.read_text()
    assert "sync:conflict_ratio:rate5m > 0.3" in text
    assert str(out) not in text


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("conflict_rate", 1.5),
        ("error_rate", 0),
        ("p95_seconds", -1),
        ("window", "5 minutes"),
        ("for_", "soon"),
        ("volume_spike_factor", 0.5),
        ("min_rate", float("nan")),
    ],
)
def test_bad_thresholds_raise_config_error_naming_the_option(option: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        RuleOptions(**{option: value})  # type: ignore[arg-type]
    assert option.rstrip("_") in str(info.value)


@pytest.mark.parametrize("value", [10000.0, 20000.0, 1e9])
def test_a_pending_changes_threshold_the_p95_cannot_exceed_is_a_config_error(
    value: float, capsys: pytest.CaptureFixture[str]
) -> None:
    """histogram_quantile() stops at the top finite bucket (10000): an alert on a p95 above
    that bound could never fire."""
    with pytest.raises(ConfigError, match=r"pending_changes.*below 10000"):
        RuleOptions(pending_changes=value)
    assert rules.main(["--pending-changes", repr(value)]) == 2
    assert "pending_changes" in capsys.readouterr().err
    RuleOptions(pending_changes=9999.0)


@pytest.mark.parametrize("hours", STALE_HOURS)
def test_every_accepted_stale_hours_value_gets_promtool_tests(
    hours: float, capsys: pytest.CaptureFixture[str]
) -> None:
    """720 h is the top finite bucket: the far-behind pulls of its test are in +Inf."""
    assert rules.main(["--stale-hours", number(hours), "--format", "promtool-tests"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    (test,) = [t for t in doc["tests"] if "SyncClientsFarBehind" in t["name"]]
    assert any('le="+Inf"' in s["series"] for s in test["input_series"])


@pytest.mark.parametrize(
    "argv",
    [
        ["--plan-window", "1y"],
        ["--baseline-window", "1w"],
        ["--slow-query-window", "24h30s"],
        ["--window", "1m", "--plan-window", "4h48m6s"],
    ],
)
def test_promtool_tests_refuse_a_window_promtool_cannot_evaluate(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """promtool's test engine loads at most 10000 samples a query (and evaluates every rule
    at each step): a window over 2880 steps of the tests' sampling is a one-line error."""
    assert rules.main([*argv, "-o", "/dev/null"]) == 0  # the rules themselves are fine
    assert rules.main([*argv, "--format", "promtool-tests"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert argv[-2].lstrip("-").replace("-", "_") in captured.err
    assert "promtool" in captured.err


@pytest.mark.parametrize(
    "argv",
    [["--plan-window", "1d"], ["--window", "1m", "--plan-window", "4h48m"]],
)
def test_promtool_tests_take_windows_up_to_2880_steps(argv: list[str]) -> None:
    assert rules.main([*argv, "--format", "promtool-tests", "-o", "/dev/null"]) == 0


PROMTOOL_RANGES = [
    # (option, a value the rules take but promtool tests cannot, the edge they take)
    ("conflict-rate", "1e-300", "1e-06"),
    ("error-rate", "1e-300", "1e-06"),
    ("client-error-rate", "9.99e-07", "1e-06"),
    ("outbox-age-seconds", "1e-12", "1e-06"),
    ("slow-queries-per-hour", "1e-320", "0.01"),
    ("slow-queries-per-hour", "1.0000001e12", "1e12"),
    ("n-plus-one", "1e308", "1e6"),
    ("volume-spike-factor", "1e308", "1e9"),
    ("min-rate", "1e13", "1e12"),
]


@pytest.mark.parametrize(("option", "outside", "edge"), PROMTOOL_RANGES)
def test_promtool_tests_refuse_a_threshold_their_series_cannot_hold(
    option: str, outside: str, edge: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Input series are written to 9 decimals and must stay finite (no ``inf``/``nan``):
    a threshold the fixtures cannot represent is a one-line error, not a test that fails
    or that promtool cannot parse."""
    argv = [f"--{option}", outside]
    assert rules.main([*argv, "-o", "/dev/null"]) == 0  # the rules themselves are fine
    assert rules.main([*argv, "--format", "promtool-tests"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert option.replace("-", "_") in captured.err
    assert "for the promtool tests" in captured.err
    assert rules.main([f"--{option}", edge, "--format", "promtool-tests", "-o", "/dev/null"]) == 0


# (option, lowest accepted or None, whether it is accepted, highest or None, accepted)
NUMERIC_BOUNDS = [
    ("conflict-rate", 0.0, False, 1.0, False),
    ("error-rate", 0.0, False, 1.0, False),
    ("client-error-rate", 0.0, False, 1.0, False),
    ("idempotency-min-ratio", 0.0, False, 0.9, False),
    ("p95-seconds", 0.001, True, 30.0, False),
    ("volume-spike-factor", 1.0, False, None, False),  # 1x: any rise over the baseline
    ("idempotency-spike-factor", 1.0, False, None, False),
    ("outbox-age-seconds", 0.0, False, None, False),
    ("slow-queries-per-hour", 0.0, False, None, False),
    ("pending-changes", 0.0, False, 10000.0, False),
    ("min-rate", 0.0, True, None, False),
    ("n-plus-one", 0.0, True, None, False),
]


def _outside(bound: float, up: bool, included: bool) -> float:
    """The value just outside ``bound`` (above it for an upper one)."""
    if not included:
        return bound
    return math.nextafter(bound, math.inf if up else -math.inf)


@pytest.mark.parametrize(("option", "low", "low_in", "high", "high_in"), NUMERIC_BOUNDS)
@pytest.mark.parametrize("up", [False, True])
def test_a_numeric_option_just_outside_a_bound_states_the_range_it_takes(
    option: str,
    low: float,
    low_in: bool,
    high: float | None,
    high_in: bool,
    up: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bound, included = (high, high_in) if up else (low, low_in)
    if bound is None:
        return
    value = _outside(bound, up, included)
    assert rules.main([f"--{option}={value!r}", "-o", "/dev/null"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    # The stated range: "above L" / "at least L" / "between L and H (exclusive)", "below H".
    stated_low = re.search(r"(at least|above|between) (\S+)", err)
    assert stated_low is not None, err
    word, text = stated_low.groups()
    assert float(text) == low
    assert (word == "at least") == low_in, err
    stated_high = re.search(r"(below|and) ([0-9.e+]+)", err)
    assert (stated_high is not None) == (high is not None), err
    if stated_high is not None and high is not None:
        assert float(stated_high.group(2)) == high
    # The stated range admits the value just inside each bound.
    inside = low if low_in else math.nextafter(low, math.inf)
    assert rules.main([f"--{option}={inside!r}", "-o", "/dev/null"]) == 0


@pytest.mark.parametrize(("window", "baseline"), [("1h", "30m"), ("10m", "9m59s")])
def test_a_baseline_window_shorter_than_the_window_is_a_config_error(
    window: str, baseline: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A spike is the window's rate against the baseline's: a shorter baseline is noisier
    than what it judges."""
    with pytest.raises(ConfigError, match=r"baseline_window.*at least the window \("):
        RuleOptions(window=window, baseline_window=baseline)
    assert rules.main(["--window", window, "--baseline-window", baseline]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "baseline_window" in err
    RuleOptions(window=window, baseline_window=window)


def test_cli_reports_a_bad_threshold_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert rules.main(["--conflict-rate", "2"]) == 2
    assert "conflict_rate" in capsys.readouterr().err


@pytest.mark.parametrize(
    "value",
    [
        "5m5m",
        "1s1m",
        "1ms1s",
        "1m1h",
        "",
        "5",
        "0",
        "1h 5m",
        "5M",
        "-5m",
        "1.5h",
        "\u0665m",
        "5m\n",
        "9" * 5000 + "s",
        "366d",
        "2y",
        "999999999999999w",
    ],
)
@pytest.mark.parametrize("option", ["window", "baseline_window", "for_", "evaluation_interval"])
def test_a_duration_prometheus_rejects_or_too_long_is_a_config_error(
    option: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        RuleOptions(**{option: value})  # type: ignore[arg-type]
    assert option.rstrip("_") in str(info.value)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1y", 31536000), ("1w2d3h4m5s6ms", 788645.006), ("90m", 5400), ("500ms", 0.5)],
)
def test_durations_in_prometheus_grammar_parse(value: str, seconds: float) -> None:
    assert parse_duration("for", value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "argv",
    [
        ["--window", "5m5m"],
        ["--for", "1s1m"],
        ["--window", "1ms1s"],
        ["--window", "9" * 5000 + "s"],
    ],
)
def test_cli_rejects_a_duration_promtool_would_reject(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert rules.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert argv[0].lstrip("-") in captured.err


BAD_RUNBOOK_URLS = [
    "https://x\n# injected: yes",
    "https://x\r",
    "https://x\udcff",
    "https://x\x1b[2J",
    "https://x y",
    "https://x\u2028y",
    "https://" + "a" * 3000,
    "javascript:alert(1)",
    "ftp://wiki.example.com",
    "https://",
    "https://x:99999",
    "",
]


@pytest.mark.parametrize("url", BAD_RUNBOOK_URLS)
def test_a_runbook_url_that_is_not_a_printable_http_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        RuleOptions(runbook_url=url)
    assert "runbook_url" in str(info.value)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("url", ["https://x\n# injected: yes", "https://x\udcff"])
@pytest.mark.parametrize("to_file", [False, True])
def test_cli_rejects_a_runbook_url_that_would_break_the_rule_file(
    url: str, to_file: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rules.yml"
    argv = ["--runbook-url", url, *(["-o", str(out)] if to_file else [])]
    assert rules.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert "runbook_url" in captured.err


def test_a_runbook_url_with_a_path_query_and_non_ascii_letters_is_kept() -> None:
    url = "https://wiki.example.com/Sync-Läufe?space=ops"
    doc = yaml.safe_load(rules.render(RuleOptions(runbook_url=url)))
    assert doc["groups"][1]["rules"][0]["annotations"]["runbook_url"].startswith(url + "#")


def test_durations_round_trip() -> None:
    assert parse_duration("w", "1h30m") == 5400
    assert format_duration(5400) == "1h30m"
    assert format_duration(0) == "0s"


def test_yaml_emitter_output_reads_back_identically() -> None:
    value = {
        "a": [{"b": "x: y", "c": "multi\nline", "d": 1.5, "e": True, "f": None}, "yes", "10m", ""],
        "g": {},
        "h": [],
        "i": '{{ $labels.x }} "q"',
    }
    assert yaml.safe_load(dump(value)) == value


def test_datadog_monitors_mirror_every_alert_with_otel_names_and_runbooks() -> None:
    o = RuleOptions()
    found = monitors(o)
    assert [m["tags"][1] for m in found] == [f"alert:{a.name}" for a in alerts(o)]
    for monitor, alert in zip(found, alerts(o), strict=True):
        assert monitor["type"] == "query alert"
        assert o.runbook(alert.name) in monitor["message"]
        metrics = set(re.findall(r"(?:count|sum|max|p\d+):([a-z_.]+)\{", monitor["query"]))
        assert metrics, monitor["query"]
        assert metrics <= set(BY_NAME), metrics
        tags = set(re.findall(r"by \{([^}]*)\}", monitor["query"])[0].split(","))
        for metric in metrics:
            assert tags <= set(BY_NAME[metric].attributes), (metric, tags)
    assert json.loads(rules.render(o, "datadog")) == found


def test_datadog_threshold_matches_the_query() -> None:
    for monitor in monitors(RuleOptions(conflict_rate=0.2, slow_queries_per_hour=50)):
        critical = monitor["options"]["thresholds"]["critical"]
        assert monitor["query"].endswith(f"> {critical:g}".replace("e+", "e"))


def test_datadog_rejects_sub_minute_windows() -> None:
    with pytest.raises(ConfigError):
        rules.render(RuleOptions(window="30s"), "datadog")


def _monitor(o: RuleOptions, alert: str) -> dict:
    (found,) = [m for m in monitors(o) if f"alert:{alert}" in m["tags"]]
    return found


def test_datadog_slow_queries_count_events_over_the_window() -> None:
    # Summing per-second rates over an hour would inflate the count ~60x: count instead.
    query = _monitor(RuleOptions(), "SyncSlowQueriesHigh")["query"]
    assert query.startswith("sum(last_1h):sum:sync.db.slow_queries{*} by ")
    assert query.endswith(".as_count() > 100")
    assert "as_rate" not in query
    assert "3600" not in query
    half_hour = _monitor(
        RuleOptions(slow_query_window="30m", slow_queries_per_hour=50), "SyncSlowQueriesHigh"
    )
    assert half_hour["query"].startswith("sum(last_30m):")
    assert half_hour["query"].endswith(".as_count() > 25")
    assert half_hour["options"]["thresholds"]["critical"] == 25


def test_datadog_idempotency_spike_watches_the_share_of_pushes_like_the_prometheus_rule() -> None:
    query = _monitor(RuleOptions(), "SyncIdempotencyHitSpike")["query"]
    numerator, denominator = query.split(" / ")
    assert numerator.startswith("pct_change(sum(last_5m),last_1h):sum:sync.idempotency.hits")
    assert "{sync.operation:push}" in numerator
    assert numerator.endswith(".as_count()")
    assert denominator.startswith("count:sync.operation.duration{sync.operation:push}")
    by = " by {sync.operation,sync.entity}.as_count()"
    assert by in numerator
    assert by in denominator
    assert denominator.endswith(" > 200")


def test_datadog_doc_names_the_guards_the_monitors_lack() -> None:
    text = (ROOT / "docs/datadog.md").read_text()
    assert "as_rate() * 3600" not in text
    for needed in ("--min-rate", "--idempotency-min-ratio", "composite monitor"):
        assert needed in text, needed
    for alert in alerts(RuleOptions()):
        assert f"`{alert.name}`" in text, f"docs/datadog.md lacks {alert.name}"


def test_outbox_probe_failures_have_an_alert_and_a_monitor() -> None:
    rule = _alert_rules(_rule_file())["OutboxProbeFailing"]
    assert "outbox_probe_failures_total" in rule["expr"]
    assert "by (outbox_name)" in rule["expr"]
    assert rule["labels"]["severity"] == "warning"
    monitor = _monitor(RuleOptions(), "OutboxProbeFailing")
    assert monitor["query"] == (
        "sum(last_5m):sum:outbox.probe.failures{*} by {outbox.name}.as_count() > 0"
    )


def test_alerts_on_counted_events_also_count_a_series_first_events() -> None:
    # increase() alone misses them (the series appears at its count, no 0 before it): every
    # increase() of an alert goes with the check for a series that is new in its window.
    for rule in _alert_rules(_rule_file()).values():
        expr = rule["expr"]
        assert expr.count("increase(") == expr.count("present_over_time("), rule["alert"]
        assert expr.count("increase(") == expr.count("last_over_time("), rule["alert"]
        assert "rate(sync_db_slow_queries" not in expr
    expr = _alert_rules(_rule_file(plan_window="45m"))["SyncQueryPlanFinding"]["expr"]
    x = "sync_db_plan_findings_total"
    new = f"{x} unless present_over_time({x}[1h] offset 45m)"
    # a restarted process's series: absent at the window's start, back below its last value
    restarted = (
        f"({x} unless {x} offset 45m) and "
        f"(min_over_time({x}[45m]) < last_over_time({x}[1h] offset 45m))"
    )
    assert f"({new}) or ({restarted}) or increase({x}[45m])" in expr


def test_slow_query_threshold_is_scaled_to_its_window_as_the_datadog_monitor_does() -> None:
    o = RuleOptions(slow_query_window="30m", slow_queries_per_hour=50)
    expr = _alert_rules(yaml.safe_load(rules.render(o)))["SyncSlowQueriesHigh"]["expr"]
    assert expr.endswith(") > 25")
    assert _monitor(o, "SyncSlowQueriesHigh")["query"].endswith(" > 25")


def test_promtool_counters_are_absent_until_their_first_event() -> None:
    t = Timeline(step=60, samples=5)
    assert t.counter([(5, 1 / 60)]) == "_x1 1+1x3"
    assert t.counter([(2, 1 / 60), (0, 2 / 60)]) == "_x1 1+2x3"  # 0 1 3 5 7
    assert t.counter([(5, 0.0)]) == "_x5"
    assert t.event(120, 3) == "_x2 3+0x2"
    # A histogram's buckets appear with its first observation, at 0 when none fell in them.
    assert t.counter([(5, 0.0)], bucket=True) == "_x1 0+0x3"
    assert notation([0, 0, 2, 2, 3, 4]) == "_x2 2+0x1 3+1x1"


def _regex(matcher: str) -> re.Pattern[str]:
    """The regular expression of a PromQL ``le=~"..."`` matcher (its string unescaped)."""
    assert matcher.startswith('le=~"') and matcher.endswith('"')
    return re.compile(matcher[5:-1].replace("\\\\", "\\"))


def test_a_bucket_bound_matches_as_each_path_writes_its_le() -> None:
    # syncperf's endpoint, the OTLP paths (collector / Prometheus's OTLP receiver), a
    # Prometheus 3 scrape: "86400.0", "86400", and Go's exponent form from 1e6 up.
    assert le_texts(86400) == ("86400.0", "86400", "86400.0")
    assert le_texts(1209600) == ("1209600.0", "1209600", "1.2096e+06")
    assert le_texts(0.2) == ("0.2", "0.2", "0.2")
    assert le_texts(1e-05) == ("1e-05", "0.00001", "1e-05")
    assert le_matcher(86400) == 'le=~"86400(\\\\.0)?"'
    for hours in (1, 24, 336, 720):
        regex = _regex(le_matcher(hours * 3600.0))
        for text in le_texts(hours * 3600.0):
            assert regex.fullmatch(text), (hours, text)
    assert not _regex(le_matcher(86400)).fullmatch("864000")


@given(st.floats(min_value=0.0, allow_nan=False, allow_infinity=False))
def test_every_le_text_is_the_bound_and_only_its_texts_match(bound: float) -> None:
    regex = _regex(le_matcher(bound))
    for text in le_texts(bound):
        assert float(text) == bound
        assert regex.fullmatch(text)
    assert not regex.fullmatch(le_texts(bound)[1] + "1")
    assert not regex.fullmatch("+Inf")


def test_the_multiprocess_le_text_of_every_catalogue_bound_is_matched_too() -> None:
    # prometheus_client's floatToGoString ("1.2096e+06"), which the multiprocess files have
    # written: the matchers find those series as well.
    for spec in METRICS:
        for bound in spec.bounds or ():
            assert floatToGoString(bound) in le_texts(bound), (spec.name, bound)


_EXACT_LE = re.compile(r"""\ble\s*!?=\s*\\?["'`][0-9.]""")
"""A ``le="86400.0"`` (or ``le!=``) matcher of a bound: finds nothing on another path."""


@pytest.mark.parametrize("hours", [24.0, 1.0, 336.0, 720.0])
def test_no_rule_matches_a_bucket_bound_as_one_string(hours: float) -> None:
    text = rules.render(RuleOptions(stale_hours=hours))
    assert not _EXACT_LE.search(text)
    rule = _alert_rules(yaml.safe_load(text))["SyncClientsFarBehind"]
    assert le_matcher(hours * 3600) in rule["expr"]


def test_no_artefact_or_doc_query_matches_a_bucket_bound_as_one_string() -> None:
    lines = [
        f"{f}: {line.strip()}"
        for f in sorted(OPS.rglob("*.*"))
        for line in f.read_text().splitlines()
        if "series:" not in line  # a promtool input series is written as one path writes it
    ]
    for doc in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        for block in re.findall(r"```promql\n(.*?)```", doc.read_text(), re.S):
            lines += [f"{doc}: {line}" for line in block.splitlines()]
    assert len(lines) > 100
    assert [line for line in lines if _EXACT_LE.search(line)] == []
