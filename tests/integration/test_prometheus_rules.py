"""The generated rules and dashboard, checked by Prometheus's own promtool."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from prometheus_client import CollectorRegistry, generate_latest

import syncperf
from syncperf._tools.monitoring import dashboard, rules
from syncperf._tools.monitoring._options import STALE_HOURS, RuleOptions
from syncperf._tools.monitoring._yaml import dump
from syncperf.sqlalchemy import instrument_engine
from syncperf.testing import capture
from tests._promql import substitute

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")


def _promtool(*args: str, cwd: Path) -> str:
    if PROMTOOL is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_committed_rules_pass_promtool_check_and_their_unit_tests() -> None:
    folder = ROOT / "ops/prometheus"
    assert "SUCCESS" in _promtool("check", "rules", "syncperf-rules.yml", cwd=folder)
    assert "SUCCESS" in _promtool("test", "rules", "syncperf-rules.test.yml", cwd=folder)


@pytest.mark.parametrize(
    "options",
    [
        RuleOptions(
            window="15s",
            baseline_window="1m",
            slow_query_window="1m",
            for_="2s",
            evaluation_interval="1s",
        ),
        RuleOptions(conflict_rate=0.6, error_rate=0.9, p95_seconds=0.3, n_plus_one=4, min_rate=2.0),
        RuleOptions(
            window="1m",
            for_="0s",
            volume_spike_factor=1.5,
            idempotency_spike_factor=10,
            outbox_age_seconds=30,
            slow_queries_per_hour=5,
        ),
        RuleOptions(
            for_="10m", slow_query_window="30m", plan_window="10m", stale_hours=336, stale_share=0.1
        ),
        RuleOptions(slow_query_window="1m"),  # a one-off burst stays in it past `for`
        RuleOptions(plan_window="1m"),
        RuleOptions(pending_changes=0.5),  # below the first bucket above 0
        RuleOptions(pending_changes=190, p95_seconds=4.9),  # just under a bucket bound
        RuleOptions(volume_spike_factor=1000, idempotency_spike_factor=1000),
        RuleOptions(window="1h", baseline_window="1h"),
        RuleOptions(idempotency_min_ratio=0.85, for_="1m"),
        # the edges the promtool tests take (also at a 1s step, but that takes 80 s)
        RuleOptions(
            conflict_rate=1e-6,
            error_rate=1e-6,
            client_error_rate=1e-6,
            outbox_age_seconds=1e-6,
            slow_queries_per_hour=0.01,
            volume_spike_factor=math.nextafter(1.0, 2.0),
            idempotency_spike_factor=math.nextafter(1.0, 2.0),
        ),
        RuleOptions(
            n_plus_one=1e6, volume_spike_factor=1e9, slow_queries_per_hour=1e12, min_rate=1e12
        ),
    ],
    ids=[
        "short-windows",
        "high-thresholds",
        "tight-spikes",
        "long-for",
        "short-slow-query-window",
        "short-plan-window",
        "pending-below-one",
        "thresholds-under-a-bound",
        "huge-spike-factors",
        "baseline-as-long-as-the-window",
        "high-idempotency-floor",
        "smallest-thresholds",
        "largest-thresholds",
    ],
)
def test_rules_with_other_thresholds_still_fire_above_and_stay_silent_below(
    tmp_path: Path, options: RuleOptions
) -> None:
    (tmp_path / "r.yml").write_text(rules.render(options))
    (tmp_path / "t.yml").write_text(rules.render(options, "promtool-tests", rule_file="r.yml"))
    _promtool("check", "rules", "r.yml", cwd=tmp_path)
    _promtool("test", "rules", "t.yml", cwd=tmp_path)


@pytest.mark.parametrize("hours", [STALE_HOURS[0], 24.0, STALE_HOURS[-1]])
def test_the_edge_stale_hours_values_get_promtool_tests_that_pass(
    tmp_path: Path, hours: float
) -> None:
    # The smallest, the default and the largest (~5 s of promtool each). 720 h is the top
    # finite bucket of sync.pull.staleness: the clients "older" than it are only in +Inf.
    options = RuleOptions(stale_hours=hours)
    (tmp_path / "r.yml").write_text(rules.render(options))
    (tmp_path / "t.yml").write_text(rules.render(options, "promtool-tests", rule_file="r.yml"))
    _promtool("test", "rules", "t.yml", cwd=tmp_path)


@pytest.mark.parametrize("window", ["plan_window", "slow_query_window"])
def test_the_longest_window_the_promtool_tests_take_passes(tmp_path: Path, window: str) -> None:
    # 1d: 2880 samples at the default 30s step (~40 s of promtool each; a 1d baseline
    # window takes ~60 s and passes too).
    options = RuleOptions(**{window: "1d"})  # type: ignore[arg-type]
    (tmp_path / "r.yml").write_text(rules.render(options))
    (tmp_path / "t.yml").write_text(rules.render(options, "promtool-tests", rule_file="r.yml"))
    _promtool("test", "rules", "t.yml", cwd=tmp_path)


def _expected(rule: dict[str, Any], **labels: str) -> dict[str, Any]:
    """An ``exp_alerts`` entry of ``rule`` for the label set ``labels``."""
    notes = {
        key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        for key, text in rule["annotations"].items()
    }
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": notes}


def test_event_alerts_see_a_series_first_events_and_restarts_not_old_or_gapped_ones(
    tmp_path: Path,
) -> None:
    # Counters as syncperf exposes them (no 0 sample before a series' first event), one
    # sample a minute, the default 5m window.
    doc = yaml.safe_load(rules.render(RuleOptions()))
    (rule,) = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == "SyncPerfShedding"]
    shed = "syncperf_shed_total"
    values = {
        ("first", "a"): "_x20 1x40",  # a one-off: the series appears at 1 at 20m
        ("restart", "a"): "3x20 _x2 1x40",  # the process restarted at 23m (a reset)
        # The process stopped at 8m (at 10m, marked stale as a target going down is) and its
        # successor's first event came at 20m: the old samples are before the window, the new
        # series is a reset that increase() over the window cannot see.
        ("late", "a"): "3x8 _x11 1x40",
        ("stale", "a"): "3x10 stale _x8 1x40",
        ("gap", "a"): "3x20 _x10 3x40",  # ten minutes unscraped, nothing new
        # One failed scrape (Prometheus marks every series of the target stale) at 19m, the
        # start of the window evaluated at 24m: the series is absent there, but is no new one.
        ("blip", "a"): "3x18 stale 3x41",
        ("old", "a"): "3x60",  # events long ago
        ("two", "a"): "2x60",  # one process had its events long ago,
        ("two", "b"): "_x20 1x40",  # another has its first at 20m: one alert for both
    }
    series = [
        {"series": f'{shed}{{syncperf_reason="{r}", instance="{i}"}}', "values": v}
        for (r, i), v in values.items()
    ]

    def at(minute: int, *reasons: str) -> dict[str, Any]:
        expected = [_expected(rule, syncperf_reason=r) for r in reasons]
        return {"eval_time": f"{minute}m", "alertname": rule["alert"], "exp_alerts": expected}

    checks = [at(20, "first", "late", "stale", "two")]
    checks += [at(24, "first", "restart", "late", "stale", "two")]
    checks += [at(29), at(33), at(36)]  # the window has passed; the gap never fired
    test = {"interval": "1m", "input_series": series, "alert_rule_test": checks}
    (tmp_path / "r.yml").write_text(rules.render(RuleOptions()))
    (tmp_path / "t.yml").write_text(dump({"rule_files": ["r.yml"], "tests": [test]}))
    _promtool("test", "rules", "t.yml", cwd=tmp_path)


def test_promtool_tests_fail_when_a_rule_is_wrong(tmp_path: Path) -> None:
    # Rules generated with a higher conflict threshold than the tests expect: the conflict
    # test's "above" series (20 %) no longer fires, and promtool must say so.
    (tmp_path / "r.yml").write_text(rules.render(RuleOptions(conflict_rate=0.3)))
    (tmp_path / "t.yml").write_text(
        rules.render(RuleOptions(), "promtool-tests", rule_file="r.yml")
    )
    if PROMTOOL is None:
        pytest.skip("promtool not installed")
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "t.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "SyncPushConflictRateHigh" in done.stdout + done.stderr


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    board = json.loads((ROOT / "ops/grafana/syncperf-dashboard.json").read_text())
    assert board == json.loads(dashboard.render())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    doc = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expr:{i}", "expr": substitute(e)}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    (tmp_path / "d.yml").write_text(dump(doc))
    assert f"SUCCESS: {len(exprs)} rules found" in _promtool(
        "check", "rules", "d.yml", cwd=tmp_path
    )


def _doc_queries() -> list[str]:
    """The PromQL queries of the docs' ``promql`` blocks: one a line, or a paragraph whose
    further lines are indented or start with an operator."""
    queries: list[str] = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for block in re.findall(r"```promql\n(.*?)```", doc.read_text(), re.S):
            joined = False
            for line in block.splitlines():
                continues = line[:1].isspace() or line.strip()[:1] in ("/", "-", "+", "*")
                if line.strip() and queries and (continues or joined):
                    queries[-1] += "\n" + line
                elif line.strip():
                    queries.append(line)
                joined = line.strip() in ("/", "-", "+", "*")
    return [q.replace("<entity>", "todo") for q in queries]


def test_every_promql_query_in_the_docs_parses(tmp_path: Path) -> None:
    queries = _doc_queries()
    assert len(queries) > 40
    records = [{"record": f"docs:query:{i}", "expr": q} for i, q in enumerate(queries)]
    (tmp_path / "q.yml").write_text(dump({"groups": [{"name": "docs", "rules": records}]}))
    assert f"SUCCESS: {len(queries)} rules found" in _promtool(
        "check", "rules", "q.yml", cwd=tmp_path
    )


SEMCONV_COUNT = (
    'db_client_connection_count non-histogram and non-summary metrics should not have "_count"'
    " suffix"
)
"""promtool's one lint of syncperf's exposition: the semantic conventions' own name."""


def test_promtool_lints_the_exposition_only_for_the_documented_semconv_name(
    tmp_path: Path,
) -> None:
    if PROMTOOL is None:
        pytest.skip("promtool not installed")
    registry = CollectorRegistry()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", pool_size=2)
    with capture(prometheus=registry):
        handle = instrument_engine(engine, pool_name="main")
        try:
            with syncperf.sync_operation("push", entity="todo") as op, engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
                op.set_batch_size(3)
                op.record_items(3, change="created")
                op.record_conflict(resolution="rejected")
                op.record_idempotency_hit()
            with pytest.raises(TimeoutError), syncperf.sync_operation("pull", entity="todo"):
                raise TimeoutError
            exposition = generate_latest(registry).decode()
        finally:
            handle.uninstrument()
            engine.dispose()
    assert "db_client_connection_count{" in exposition
    assert "sync_operation_duration_seconds_bucket{" in exposition
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stdout + done.stderr  # 3: lint problems, not errors
    assert (done.stdout + done.stderr).strip().splitlines() == [SEMCONV_COUNT]
    assert SEMCONV_COUNT in " ".join((ROOT / "docs/metrics.md").read_text().split())


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text(
        dump(
            {
                "groups": [
                    {"name": "g", "rules": [{"record": "x:y", "expr": "sum by (a (rate(x[5m]))"}]}
                ]
            }
        )
    )
    if PROMTOOL is None:
        pytest.skip("promtool not installed")
    done = subprocess.run(
        [PROMTOOL, "check", "rules", "bad.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
