"""``promtool test rules`` unit tests for the generated rules.

Each alert gets one test: synthetic series for one label set above its threshold (the alert
must fire, with exactly these labels and annotations) and one below it (it must stay
silent), derived from the same options as the rules, so the tests follow any threshold a
user chooses; counters and bucket labels are written as syncperf and each export path write
them (``_timeline``, ``_series.le_texts``). A further test checks the recording rules' values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from syncperf._metrics.catalogue import AGE_BOUNDS, DURATION_BOUNDS, PENDING_BOUNDS
from syncperf._tools.monitoring._alerts import Alert, alerts, names
from syncperf._tools.monitoring._counter_fixtures import (
    counter_alert,
    n_plus_one,
    plan_findings,
    slow_queries,
)
from syncperf._tools.monitoring._options import RuleOptions, format_duration, number, parse_duration
from syncperf._tools.monitoring._series import le_texts, prom
from syncperf._tools.monitoring._timeline import Builder, Fixture, Timeline, steady
from syncperf._tools.monitoring._timeline import series as _series
from syncperf.exceptions import ConfigError

COUNT = prom("sync.operation.duration", "_count")
BUCKET = prom("sync.operation.duration", "_bucket")


def _ops(
    t: Timeline,
    op: str,
    entity: str,
    rates: dict[str, float],
    segments: Callable[[float], list[tuple[int, float]]] | None = None,
    error_type: str = "TimeoutError",
) -> list[dict[str, str]]:
    """``_count`` series of sync.operation.duration per outcome at constant rates."""
    out = []
    for outcome, rate in rates.items():
        labels = {"sync_operation": op, "sync_entity": entity, "sync_outcome": outcome}
        if outcome == "error":
            labels["error_type"] = error_type
        segs = segments(rate) if segments else [(t.samples, rate)]
        out.append(_series(COUNT, labels, t.counter(segs)))
    return out


def _buckets(
    t: Timeline, op: str, entity: str, rate: float, shares: dict[float, float]
) -> list[dict[str, str]]:
    """``_bucket`` series: ``shares`` maps an upper bound to the share of operations in it."""
    out = []
    bounds = [*DURATION_BOUNDS, math.inf]
    for bound in bounds:
        cumulative = sum(s for b, s in shares.items() if b <= bound)
        le = "+Inf" if bound == math.inf else repr(float(bound))
        labels = {"sync_operation": op, "sync_entity": entity, "sync_outcome": "success", "le": le}
        out.append(_series(BUCKET, labels, t.counter([(t.samples, rate * cumulative)], True)))
    out.extend(_ops(t, op, entity, {"success": rate}))
    return out


def _above(threshold: float, ceiling: float = 1.0) -> float:
    return min(2 * threshold, (threshold + ceiling) / 2)


def tests_document(o: RuleOptions, rule_file: str) -> dict[str, Any]:
    """The promtool test file for the rules ``o`` produces."""
    window = o.seconds("window")
    # a tenth of the shortest window: every range in the rules holds ten samples or more
    shortest = min(o.seconds(w) for w in ("window", "slow_query_window", "plan_window"))
    step = max(1, int(shortest // 10))
    _check_windows(o, step)
    _check_thresholds(o)
    for_s = {a.name: parse_duration("for", a.for_) for a in alerts(o)}
    longest = (
        o.seconds("baseline_window")
        + o.seconds("slow_query_window")
        + o.seconds("plan_window")
        + 3 * window
        + 4 * max(for_s.values())
        + 20 * step
    )
    t = Timeline(step, math.ceil(longest / step) + 1)
    rate = max(1.0, 4 * o.min_rate)
    tests = []
    for alert in alerts(o):
        fixture = _FIXTURES[alert.name](o, t, rate, for_s[alert.name])
        tests.append(_alert_test(o, alert, fixture, t))
    tests.append(_recording_test(o, t))
    return {
        "rule_files": [rule_file],
        "evaluation_interval": format_duration(step),
        "tests": tests,
    }


MAX_WINDOW_STEPS = 2880
"""Samples of the longest window the tests take (1d at the default 30s step): promtool's
test engine loads at most 10000 samples a query and evaluates every rule at each step."""


def _check_windows(o: RuleOptions, step: int) -> None:
    for name in ("window", "baseline_window", "slow_query_window", "plan_window"):
        if o.seconds(name) > MAX_WINDOW_STEPS * step:
            limit = format_duration(MAX_WINDOW_STEPS * step)
            raise ConfigError(
                name,
                getattr(o, name),
                f"at most {limit} for the promtool tests ({MAX_WINDOW_STEPS} samples at their "
                f"{format_duration(step)} step, a tenth of the shortest window: promtool "
                "evaluates at most 10000 samples a query)",
            )


FIXTURE_RANGES: dict[str, tuple[float, float]] = {
    "conflict_rate": (1e-6, math.inf),
    "error_rate": (1e-6, math.inf),
    "client_error_rate": (1e-6, math.inf),
    "outbox_age_seconds": (1e-6, math.inf),
    "slow_queries_per_hour": (0.01, 1e12),
    "n_plus_one": (-math.inf, 1e6),
    "volume_spike_factor": (-math.inf, 1e9),
    "min_rate": (-math.inf, 1e12),
}
"""Thresholds the tests' input series can hold (the rules take any the options accept;
-inf: the options' own lower bound):
values are written to 9 decimals (a smaller threshold's counts round to 0) and must stay
finite, with their margin over the threshold (a larger one overflows to ``inf``/``nan``)."""


def _check_thresholds(o: RuleOptions) -> None:
    for name, (low, high) in FIXTURE_RANGES.items():
        value = getattr(o, name)
        if value < low or value > high:
            bounds = [f"at least {number(low)}"] if low > -math.inf else []
            bounds += [f"at most {number(high)}"] if high < math.inf else []
            raise ConfigError(
                name,
                value,
                f"{' and '.join(bounds)} for the promtool tests (their input series are "
                "written to 9 decimals and must stay finite; the rules take it)",
            )


def _alert_test(o: RuleOptions, alert: Alert, fixture: Fixture, t: Timeline) -> dict[str, Any]:
    eval_at = math.ceil(fixture.eval_seconds / t.step) * t.step
    expected = [
        {
            "exp_labels": {"severity": alert.severity, **labels},
            "exp_annotations": {
                "summary": _render(alert.summary, labels),
                "description": alert.description,
                "runbook_url": o.runbook(alert.name),
            },
        }
        for labels in fixture.firing
    ]
    return {
        "name": f"{alert.name} fires above its threshold and stays silent below it",
        "interval": format_duration(t.step),
        "input_series": fixture.series,
        "alert_rule_test": [
            {
                "eval_time": format_duration(eval_at),
                "alertname": alert.name,
                "exp_alerts": expected,
            },
        ],
    }


def _render(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)


# --- one fixture per alert ---------------------------------------------------------------


def _conflicts(o: RuleOptions, t: Timeline, rate: float, for_s: float) -> Fixture:
    hi, lo = _above(o.conflict_rate), o.conflict_rate / 2
    f = Fixture(eval_seconds=steady(o, for_s, t))
    f.series += _ops(t, "push", "todo", {"conflict": rate * hi, "success": rate * (1 - hi)})
    f.series += _ops(t, "push", "note", {"conflict": rate * lo, "success": rate * (1 - lo)})
    f.firing.append({"sync_operation": "push", "sync_entity": "todo"})
    return f


def _around(threshold: float, bounds: list[float]) -> tuple[float, float]:
    """Bucket bounds for a quantile test of ``threshold``: the last at or below it (0 when
    none) and the second above it (+Inf when none). A quantile inside the bucket ending
    there lies above the first bound over the threshold, wherever the threshold falls in
    its bucket (``histogram_quantile`` interpolates within a bucket)."""
    over = [b for b in bounds if b > threshold]
    return max((b for b in bounds if b <= threshold), default=0.0), (over[1:] or [math.inf])[0]


def _latency(o: RuleOptions, t: Timeline, rate: float, for_s: float) -> Fixture:
    bounds = [*DURATION_BOUNDS, math.inf]
    lower, slow = _around(o.p95_seconds, bounds)
    fast_bound = bounds[0]
    f = Fixture(eval_seconds=steady(o, for_s, t))
    # 10% of pulls of "todo" beyond the bucket over the threshold: p95 > T.
    f.series += _buckets(t, "pull", "todo", rate, {fast_bound: 0.9, slow: 0.1})
    # Every pull of "note" at or below the threshold: p95 <= T.
    f.series += _buckets(t, "pull", "note", rate, {lower or fast_bound: 1.0})
    f.firing.append({"sync_operation": "pull", "sync_entity": "todo"})
    return f


def _errors(o: RuleOptions, t: Timeline, rate: float, for_s: float) -> Fixture:
    hi, lo = _above(o.error_rate), o.error_rate / 2
    f = Fixture(eval_seconds=steady(o, for_s, t))
    f.series += _ops(t, "pull", "todo", {"error": rate * hi, "success": rate * (1 - hi)})
    f.series += _ops(t, "pull", "note", {"error": rate * lo, "success": rate * (1 - lo)})
    f.firing.append({"sync_operation": "pull", "sync_entity": "todo"})
    return f


def _spike_start(o: RuleOptions, t: Timeline, for_s: float) -> int:
    """Steps of baseline before the spike (the baseline window plus its offset)."""
    return t.steps(o.seconds("baseline_window") + o.seconds("window") + 2 * for_s) + 2


def _spike_eval(o: RuleOptions, t: Timeline, for_s: float, start: int) -> float:
    """When a spike fixture is evaluated: the spike fills the rate window a step short of
    ``window`` after its start and has held ``for`` since, while the baseline, which ends
    ``window`` + ``for`` before the evaluation, has not reached it yet: however large the
    factor, no spike leaks into the baseline it is compared with."""
    filled = max(1, int(o.seconds("window") // t.step) - 1) * t.step
    return start * t.step + filled + for_s


def _volume(o: RuleOptions, t: Timeline, rate: float, for_s: float) -> Fixture:
    start = _spike_start(o, t, for_s)
    spike = 4 * o.volume_spike_factor
    f = Fixture(eval_seconds=_spike_eval(o, t, for_s, start))
    f.series += _ops(
        t, "push", "todo", {"success": rate}, segments=lambda r: [(start, r), (0, r * spike)]
    )
    f.series += _ops(t, "push", "note", {"success": rate})
    f.firing.append({"sync_operation": "push", "sync_entity": "todo"})
    return f


def _idempotency(o: RuleOptions, t: Timeline, rate: float, for_s: float) -> Fixture:
    start = _spike_start(o, t, for_s)
    base = 0.3 / o.idempotency_spike_factor
    hits = prom("sync.idempotency.hits")
    f = Fixture(eval_seconds=_spike_eval(o, t, for_s, start))
    for entity, after in (("todo", 1.0), ("note", base)):  # every push a hit: any floor
        f.series += _ops(t, "push", entity, {"success": rate})
        labels = {"sync_operation": "push", "sync_entity": entity}
        f.series.append(_series(hits, labels, t.counter([(start, rate * base), (0, rate * after)])))
    f.firing.append({"sync_operation": "push", "sync_entity": "todo"})
    return f


def _outbox(o: RuleOptions, t: Timeline, rate: float, for_s: float) -> Fixture:
    metric = prom("outbox.oldest_age")
    f = Fixture(eval_seconds=for_s + 2 * t.step)
    f.series.append(_series(metric, {"outbox_name": "orders"}, t.gauge(2 * o.outbox_age_seconds)))
    f.series.append(_series(metric, {"outbox_name": "emails"}, t.gauge(o.outbox_age_seconds / 2)))
    f.firing.append({"outbox_name": "orders"})
    return f


def _histogram(
    t: Timeline,
    metric: str,
    labels: dict[str, str],
    bounds: tuple[float, ...],
    rate: float,
    shares: dict[float, float],
    path: int = 0,
) -> list[dict[str, str]]:
    """``_bucket`` and ``_count`` series of ``metric``: ``shares`` maps a bucket's upper
    bound to the share of observations in it; ``le`` as the ``path``-th of ``le_texts``
    writes it (0 syncperf's endpoint, 1 OTLP into Prometheus, 2 a Prometheus 3 scrape)."""
    out = []
    for bound in [*bounds, math.inf]:
        cumulative = sum(share for b, share in shares.items() if b <= bound)
        le = "+Inf" if bound == math.inf else le_texts(bound)[path]
        bucket = prom(metric, "_bucket")
        out.append(
            _series(bucket, {**labels, "le": le}, t.counter([(t.samples, rate * cumulative)], True))
        )
    out.append(_series(prom(metric, "_count"), labels, t.counter([(t.samples, rate)])))
    return out


def _stale(o: RuleOptions, t: Timeline, rate: float, for_s: float) -> Fixture:
    threshold = o.stale_hours * 3600
    # the next bucket up; past the top finite bound (720 h) only +Inf (and _count) hold them
    older = next((b for b in AGE_BOUNDS if b > threshold), math.inf)
    hi, lo = _above(o.stale_share), o.stale_share / 2
    f = Fixture(eval_seconds=steady(o, for_s, t))
    # The same histogram with its `le` as each path writes it: the rule must match them all.
    for entity, share, path in (("todo", hi, 0), ("note", lo, 0), ("task", hi, 1), ("list", hi, 2)):
        labels = {"sync_operation": "pull", "sync_entity": entity}
        shares = {60.0: 1 - share, older: share}
        f.series += _histogram(t, "sync.pull.staleness", labels, AGE_BOUNDS, rate, shares, path)
        if share == hi:
            f.firing.append(labels)
    return f


def _pending(o: RuleOptions, t: Timeline, rate: float, for_s: float) -> Fixture:
    bounds = tuple(float(b) for b in PENDING_BOUNDS)
    lower, above = _around(o.pending_changes, list(bounds))
    f = Fixture(eval_seconds=steady(o, for_s, t))
    # p95 of "todo" beyond the bucket over the threshold (above the top finite bound it is
    # that bound, still over it: --pending-changes is below it); of "note" at most `lower`.
    for entity, shares in (("todo", {lower: 0.8, above: 0.2}), ("note", {lower: 1.0})):
        labels = {"sync_operation": "push", "sync_entity": entity, "sync_client_app_version": "2.4"}
        f.series += _histogram(t, "sync.client.pending_changes", labels, bounds, rate, shares)
    f.firing.append({"sync_operation": "push", "sync_entity": "todo"})
    return f


def _client_failures(o: RuleOptions, t: Timeline, rate: float, for_s: float) -> Fixture:
    hi, lo = _above(o.client_error_rate), o.client_error_rate / 2
    metric = prom("sync.client.operation.duration", "_count")
    f = Fixture(eval_seconds=steady(o, for_s, t))
    for entity, share in (("todo", hi), ("note", lo)):
        for outcome, part in (("error", share), ("success", 1 - share)):
            labels = {"sync_operation": "push", "sync_entity": entity, "sync_outcome": outcome}
            f.series.append(_series(metric, labels, t.counter([(t.samples, rate * part)])))
    f.firing.append({"sync_operation": "push", "sync_entity": "todo"})
    return f


_FIXTURES: dict[str, Builder] = {
    "SyncPushConflictRateHigh": _conflicts,
    "SyncLatencyP95High": _latency,
    "SyncErrorRateHigh": _errors,
    "SyncVolumeSpike": _volume,
    "SyncIdempotencyHitSpike": _idempotency,
    "OutboxOldestMessageTooOld": _outbox,
    "OutboxProbeFailing": counter_alert("outbox.probe.failures", "outbox_name", "orders", "emails"),
    "SyncClientsFarBehind": _stale,
    "SyncClientPendingChangesHigh": _pending,
    "SyncClientFailureRateHigh": _client_failures,
    "SyncNPlusOneDetected": n_plus_one,
    "SyncQueryPlanFinding": plan_findings,
    "SyncSlowQueriesHigh": slow_queries,
    "SyncPerfShedding": counter_alert(
        "syncperf.shed", "syncperf_reason", "operation_budget", "span_queue_full"
    ),
    "SyncPerfExportFailing": counter_alert(
        "syncperf.export.failures", "syncperf_signal", "metrics", "traces"
    ),
}


def _recording_test(o: RuleOptions, t: Timeline) -> dict[str, Any]:
    """Recording rules: exact ratios (powers of two) and quantiles of one known bucket."""
    n = names(o)
    series = _ops(t, "push", "todo", {"conflict": 0.25, "success": 0.5, "error": 0.25})
    series += _buckets(t, "pull", "todo", 1.0, {2.0: 1.0})  # all pulls in (1 s, 2 s]
    eval_at = math.ceil((o.seconds("window") + 2 * t.step) / t.step) * t.step
    labels = 'sync_entity="todo", sync_operation="push"'
    pull = 'sync_entity="todo", sync_operation="pull"'

    def sample(record: str, lbl: str, value: float) -> dict[str, Any]:
        return {
            "expr": f"{record}{{{lbl}}}",
            "eval_time": format_duration(eval_at),
            "exp_samples": [{"labels": f"{record}{{{lbl}}}", "value": value}],
        }

    return {
        "name": "recording rules compute ratios and quantiles per operation and entity",
        "interval": format_duration(t.step),
        "input_series": series,
        "promql_expr_test": [
            sample(n.error_ratio, labels, 0.25),
            sample(n.conflict_ratio, labels, 0.25),
            sample(n.error_ratio, pull, 0.0),
            sample(n.quantiles["p50"], pull, 1.5),
            sample(n.quantiles["p99"], pull, 1.99),
        ],
    }


__all__ = ["Fixture", "Timeline", "number", "tests_document"]
