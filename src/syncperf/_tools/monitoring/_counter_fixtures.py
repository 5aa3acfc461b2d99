"""promtool fixtures of the alerts on counted events: N+1 detections, plan findings, slow
queries, outbox probe failures, shedding, export failures (``_promtool``).

Besides steady rates, each has a series' first events (it appears at its count: the case
``increase()`` alone cannot see) and events long before the window (which must not fire).
"""

from __future__ import annotations

import math

from syncperf._tools.monitoring._options import RuleOptions
from syncperf._tools.monitoring._series import prom
from syncperf._tools.monitoring._timeline import Builder, Fixture, Timeline, series, steady


def _first_events(f: Fixture, for_s: float, t: Timeline) -> float:
    """When a fixture's one-off burst of events comes: ``for`` (and a step) before the
    evaluation, so the alert fires if ``for`` is shorter than the window."""
    return f.eval_seconds - for_s - t.step


def _fires_once(f: Fixture, for_s: float, window: float, t: Timeline) -> bool:
    """Whether a one-off burst (``_first_events``) fires at the evaluation: its series counts
    as new until a whole ``window`` has passed since it appeared (then ``offset window``
    sees it), and the alert has to be active for ``for`` by then."""
    appeared = t.steps(_first_events(f, for_s, t)) * t.step
    evaluated = math.ceil(f.eval_seconds / t.step) * t.step
    return for_s <= evaluated - appeared < window


def n_plus_one(o: RuleOptions, t: Timeline, rate: float, for_s: float) -> Fixture:
    """SyncNPlusOneDetected: detections above ``--n-plus-one`` per window, however they come."""
    metric = prom("sync.db.n_plus_one")
    window = o.seconds("window")
    f = Fixture(eval_seconds=steady(o, for_s, t))
    base = {"sync_operation": "pull", "sync_entity": "todo"}
    for collection, per_window in (("tags", 3 * (o.n_plus_one + 1)), ("users", o.n_plus_one / 2)):
        labels = {**base, "db_collection_name": collection}
        f.series.append(series(metric, labels, t.counter([(t.samples, per_window / window)])))
    f.firing.append({**base, "db_collection_name": "tags"})
    # A first detection: the series appears at its count (no 0 before it).
    burst = math.floor(o.n_plus_one) + 1
    first = {**base, "db_collection_name": "orders"}
    f.series.append(series(metric, first, t.event(_first_events(f, for_s, t), burst)))
    # Detections long before the window: silent.
    old = {**base, "db_collection_name": "items"}
    f.series.append(series(metric, old, t.event(t.step, burst)))
    # One group, two series (two processes): a new one and an old one with a few more
    # detections: together above the threshold, each on its own not.
    split = {**base, "db_collection_name": "notes"}
    half = o.n_plus_one / 2 + 0.5
    f.series.append(
        series(metric, {**split, "instance": "a"}, t.counter([(t.samples, half / window)]))
    )
    at = _first_events(f, for_s, t)
    f.series.append(series(metric, {**split, "instance": "b"}, t.event(at, half)))
    if _fires_once(f, for_s, window, t):
        f.firing.append(first)
    if _fires_once(f, for_s, window, t) or half > o.n_plus_one:  # (a alone, with no threshold)
        f.firing.append(split)
    return f


def plan_findings(o: RuleOptions, t: Timeline, rate: float, for_s: float) -> Fixture:
    """SyncQueryPlanFinding: any finding within ``--plan-window``, a one-off one included."""
    metric = prom("sync.db.plan.findings")
    window = o.seconds("plan_window")
    f = Fixture(eval_seconds=window + for_s + 2 * t.step)
    base = {"sync_operation": "pull", "sync_entity": "todo"}
    every = {**base, "db_collection_name": "tombstones", "sync_db_plan_finding": "seq_scan"}
    once = {**base, "db_collection_name": "records", "sync_db_plan_finding": "cost_jump"}
    fixed = {**base, "db_collection_name": "records", "sync_db_plan_finding": "seq_scan"}
    f.series.append(series(metric, every, t.counter([(t.samples, 1 / 300)])))  # every plan
    # A one-off finding (a cost jump): the series appears at 1.
    f.series.append(series(metric, once, t.event(_first_events(f, for_s, t), 1)))
    f.series.append(series(metric, fixed, t.event(t.step, 1)))  # indexed long ago
    f.firing.append(every)
    if _fires_once(f, for_s, window, t):
        f.firing.append(once)
    return f


def slow_queries(o: RuleOptions, t: Timeline, rate: float, for_s: float) -> Fixture:
    """SyncSlowQueriesHigh: more than the hourly threshold, scaled to the window."""
    metric = prom("sync.db.slow_queries")
    window = o.seconds("slow_query_window")
    f = Fixture(eval_seconds=window + for_s + 2 * t.step)
    select = {"db_operation_name": "SELECT"}
    for table, per_hour in (
        ("todos", 2 * o.slow_queries_per_hour),
        ("notes", o.slow_queries_per_hour / 2),
    ):
        labels = {**select, "db_collection_name": table}
        f.series.append(series(metric, labels, t.counter([(t.samples, per_hour / 3600)])))
    f.firing.append({**select, "db_collection_name": "todos"})
    # A burst in a new series (a new process's cold cache): it appears at its count.
    burst = math.floor(o.slow_queries_per_hour * window / 3600) + 1
    new, old = {**select, "db_collection_name": "tags"}, {**select, "db_collection_name": "users"}
    f.series.append(series(metric, new, t.event(_first_events(f, for_s, t), burst)))
    f.series.append(series(metric, old, t.event(t.step, burst)))  # long before the window
    if _fires_once(f, for_s, window, t):
        f.firing.append(new)
    return f


def counter_alert(metric_name: str, label: str, firing: str, silent: str) -> Builder:
    """The fixture of an alert on any event of ``metric_name`` by ``label``."""

    def build(o: RuleOptions, t: Timeline, rate: float, for_s: float) -> Fixture:
        metric = prom(metric_name)
        window = o.seconds("window")
        f = Fixture(eval_seconds=steady(o, for_s, t))
        f.series.append(series(metric, {label: firing}, t.counter([(t.samples, 0.1)])))
        f.series.append(series(metric, {label: silent}, t.event(t.step, 1)))  # long ago
        f.firing.append({label: firing})
        # The first event of a series (it appears at 1): fires unless `for` outlasts it.
        first = {label: f"{firing}_once"}
        f.series.append(series(metric, first, t.event(_first_events(f, for_s, t), 1)))
        # A restarted process's first event: the old one's series (3) stopped at the
        # window's start, the new one appears at 1 (a reset no increase() sees).
        restarted = {label: f"{firing}_restarted"}
        values = t.restart(f.eval_seconds - window, _first_events(f, for_s, t), 3, 1)
        if values is not None:
            f.series.append(series(metric, restarted, values))
        if _fires_once(f, for_s, window, t):
            f.firing.append(first)
            if values is not None:
                f.firing.append(restarted)
        return f

    return build
