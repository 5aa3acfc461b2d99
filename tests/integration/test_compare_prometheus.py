"""``syncperf compare`` against a real Prometheus holding known load.

The load is written as OpenMetrics and backfilled with ``promtool tsdb
create-blocks-from openmetrics`` before Prometheus starts, so the windows are deterministic:
three consecutive 30-minute windows of pushes scraped every 15 s. The first two carry the
same load (same distributions, different random draws: the noise compare must not call a
regression); in the third, a deploy made pushes about three times slower, tripled the error
rate and turned 5 queries per push into 35 (an N+1).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from syncperf import cli
from syncperf._metrics.catalogue import (
    DURATION_BOUNDS,
    LAG_BOUNDS,
    OUTBOX_LAG,
    QUERY_COUNT_BOUNDS,
    SYNC_DB_QUERIES,
    SYNC_OPERATION_DURATION,
)
from tests.integration.prometheus_server import running_prometheus
from tests.unit.test_compare import Received, _fake_prometheus, _send

pytestmark = pytest.mark.integration

DURATION = SYNC_OPERATION_DURATION.prometheus
QUERIES = SYNC_DB_QUERIES.prometheus
LAG = OUTBOX_LAG.prometheus
STEP = 15
WINDOW = 1800
OPS = {("push", "todo"): 4.0, ("pull", None): 2.0}  # operations per second


def _lognormal(rng: random.Random, median: float) -> float:
    return median * math.exp(rng.gauss(0.0, 0.6))


def _load(start: int, windows: list[bool], seed: int = 17) -> str:
    """OpenMetrics text: per window, True when the deploy's regression is in it."""
    rng = random.Random(seed)
    lines: dict[str, list[str]] = {"d": [], "q": [], "l": []}
    hist_d: dict[Any, list[int]] = {}
    sums_d: dict[Any, float] = {}
    hist_q: dict[Any, list[int]] = {}
    sums_q: dict[Any, float] = {}
    hist_l = [0] * (len(LAG_BOUNDS) + 1)
    sum_l = 0.0
    steps = len(windows) * WINDOW // STEP
    for step in range(steps + 1):
        ts = start + step * STEP
        # what a scrape at ts counts happened in the step before it
        slow = windows[min(max(step - 1, 0) * STEP // WINDOW, len(windows) - 1)]
        for (operation, entity), rate in OPS.items():
            for _ in range(_poisson(rng, rate * STEP) if step else 0):
                pushing = operation == "push"
                error = rng.random() < (0.03 if slow and pushing else 0.01)
                conflict = not error and pushing and rng.random() < 0.05
                outcome = "error" if error else "conflict" if conflict else "success"
                seconds = _lognormal(rng, 0.06 if slow and pushing else 0.02)
                key = (operation, entity, outcome)
                counts = hist_d.setdefault(key, [0] * (len(DURATION_BOUNDS) + 1))
                counts[_bucket(DURATION_BOUNDS, seconds)] += 1
                sums_d[key] = sums_d.get(key, 0.0) + seconds
                n = (35 if slow and pushing else 5) + rng.choice((-1, 0, 1))
                qcounts = hist_q.setdefault(
                    (operation, entity), [0] * (len(QUERY_COUNT_BOUNDS) + 1)
                )
                qcounts[_bucket(QUERY_COUNT_BOUNDS, n)] += 1
                sums_q[(operation, entity)] = sums_q.get((operation, entity), 0.0) + n
            for _ in range(_poisson(rng, 3.0 * STEP) if step else 0):
                seconds = _lognormal(rng, 0.5)
                hist_l[_bucket(LAG_BOUNDS, seconds)] += 1
                sum_l += seconds
        for key, counts in hist_d.items():
            operation, entity, outcome = key
            labels = _labels(operation, entity, sync_outcome=outcome)
            _histogram(
                lines["d"],
                DURATION,
                labels,
                DURATION_BOUNDS,
                counts,
                sums_d[key],
                ts,
            )
        for (operation, entity), counts in hist_q.items():
            labels = _labels(operation, entity)
            _histogram(
                lines["q"],
                QUERIES,
                labels,
                QUERY_COUNT_BOUNDS,
                counts,
                sums_q[(operation, entity)],
                ts,
            )
        _histogram(
            lines["l"],
            LAG,
            'outbox_name="changes"',
            LAG_BOUNDS,
            hist_l,
            sum_l,
            ts,
        )
    families = [
        (DURATION, lines["d"]),
        (QUERIES, lines["q"]),
        (LAG, lines["l"]),
    ]
    out = []
    for name, family in families:
        out.append(f"# TYPE {name} histogram")
        out.extend(sorted(family, key=_series_then_time))
    out.append("# EOF")
    return "\n".join(out) + "\n"


def _series_then_time(line: str) -> tuple[str, int]:
    series, _, rest = line.rpartition("} ")
    return series, int(rest.split()[1])


def _poisson(rng: random.Random, mean: float) -> int:
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


def _bucket(bounds: tuple[float, ...], value: float) -> int:
    return next((i for i, bound in enumerate(bounds) if value <= bound), len(bounds))


def _labels(operation: str, entity: str | None, **more: str) -> str:
    pairs = {"sync_operation": operation, **({"sync_entity": entity} if entity else {}), **more}
    return ",".join(f'{k}="{v}"' for k, v in pairs.items())


def _histogram(
    into: list[str],
    name: str,
    labels: str,
    bounds: tuple[float, ...],
    counts: list[int],
    total: float,
    ts: int,
) -> None:
    running = 0
    for bound, count in zip([*bounds, math.inf], counts, strict=True):
        running += count
        le = "+Inf" if bound == math.inf else repr(float(bound))
        into.append(f'{name}_bucket{{{labels},le="{le}"}} {running} {ts}')
    into.append(f"{name}_count{{{labels}}} {running} {ts}")
    into.append(f"{name}_sum{{{labels}}} {total:.6f} {ts}")


def _at(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    root = tmp_path_factory.mktemp("prometheus")
    start = (int(time.time()) - 4 * 3600) // 3600 * 3600
    source = root / "load.om"
    source.write_text(_load(start, [False, False, True]))
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(root / "data")],
        check=True,
        capture_output=True,
    )
    with running_prometheus(root, []) as url:
        yield url, start


def _compare(url: str, before: tuple[int, int], after: tuple[int, int], *more: str) -> int:
    return cli.main(
        [
            "compare",
            "--prometheus",
            url,
            "--before",
            f"{_at(before[0])}..{_at(before[1])}",
            "--after",
            f"{_at(after[0])}..{_at(after[1])}",
            *more,
        ]
    )


def _rows(out: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["subject"], r["metric"]): r for r in json.loads(out)["rows"]}


def test_two_windows_of_the_same_load_are_not_a_regression(
    prometheus: tuple[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    url, start = prometheus
    status = _compare(url, (start, start + WINDOW), (start + WINDOW, start + 2 * WINDOW), "--json")
    rows = _rows(capsys.readouterr().out)
    assert status == 0
    assert {r["verdict"] for r in rows.values()} == {"unchanged", "info"}
    push = rows[("push todo", "throughput")]
    assert push["before"] == pytest.approx(4.0, rel=0.1)
    assert push["after"] == pytest.approx(4.0, rel=0.1)
    assert rows[("push todo", "p50 latency")]["verdict"] == "unchanged"
    assert rows[("push todo", "error rate")]["before"] == pytest.approx(0.01, abs=0.005)
    assert rows[("push todo", "queries/sync (mean)")]["after"] == pytest.approx(5.0, abs=0.1)


def test_the_deploy_window_is_told_apart_from_the_one_before(
    prometheus: tuple[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    url, start = prometheus
    before, after = (start + WINDOW, start + 2 * WINDOW), (start + 2 * WINDOW, start + 3 * WINDOW)
    status = _compare(url, before, after, "--json")
    rows = _rows(capsys.readouterr().out)
    assert status == 1
    regressions = {k for k, r in rows.items() if r["verdict"] == "regression"}
    assert {
        ("push todo", "p50 latency"),
        ("push todo", "p95 latency"),
        ("push todo", "error rate"),
        ("push todo", "queries/sync p50"),
    } <= regressions
    assert not {k for k in regressions if k[0] != "push todo"}  # pulls and the outbox did not move
    assert rows[("push todo", "p50 latency")]["change"] > 1.5
    assert rows[("push todo", "queries/sync (mean)")]["after"] == pytest.approx(35.0, abs=0.2)
    assert rows[("push todo", "error rate")]["after"] == pytest.approx(0.03, abs=0.01)


def test_the_table_names_the_regressions(
    prometheus: tuple[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    url, start = prometheus
    before, after = (start + WINDOW, start + 2 * WINDOW), (start + 2 * WINDOW, start + 3 * WINDOW)
    assert _compare(url, before, after) == 1
    out = capsys.readouterr().out
    assert "push todo" in out
    assert "regression" in out


def test_a_query_prometheus_rejects_is_a_one_line_error(
    prometheus: tuple[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    url, start = prometheus
    window = (start, start + WINDOW)
    assert _compare(url, window, window, "--selector", 'job=~"("') == 2
    err = capsys.readouterr().err
    assert err.startswith("syncperf compare: Prometheus rejected a query: ")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("code", [301, 308])
def test_a_prometheus_behind_a_redirecting_proxy_gives_the_same_answer(
    code: int, prometheus: tuple[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    url, start = prometheus
    before, after = (start + WINDOW, start + 2 * WINDOW), (start + 2 * WINDOW, start + 3 * WINDOW)
    assert _compare(url, before, after, "--json") == 1
    direct = _rows(capsys.readouterr().out)

    def proxy(handler: Received) -> None:  # /prom/... -> Prometheus's /..., the query kept
        _send(handler, code, b"", Location=url + handler.path.removeprefix("/prom"))

    with _fake_prometheus(proxy) as (proxy_url, seen):
        status = _compare(proxy_url + "/prom?org=1", before, after, "--json")
    assert status == 1
    assert _rows(capsys.readouterr().out) == direct
    assert seen and all(h.path == "/prom/api/v1/query?org=1" for h in seen)


# --- series born, and series ended, inside a window ------------------------------------------

BORN_AT = WINDOW + 600  # a new entity's first push, 10 minutes into the after-window
ENDED_AT = WINDOW + 300  # an old pod's series: its last scrape, 5 minutes into it
RESET_AT = WINDOW + 900


def _born_load(start: int) -> tuple[str, dict[str, tuple[int, int]]]:
    """OpenMetrics text of three push series over two windows, and what each window counted
    per subject (before, after): ``todo`` all along, ``note`` born in the after-window (its
    first scrape already counts 5 pushes, as a new series' first sample does), ``list`` on a
    pod whose last scrape is early in the after-window, ``pull todo`` reset in the
    after-window."""
    lines: list[str] = []
    counted = {subject: [0, 0] for subject in ("push todo", "push note", "push list", "pull todo")}
    totals = dict.fromkeys(counted, 0)
    for step in range(2 * WINDOW // STEP + 1):
        offset = step * STEP
        window = 0 if offset <= WINDOW else 1
        adds = {"push todo": 2, "push list": 1, "pull todo": 2} if step else {}
        if offset >= BORN_AT:
            adds["push note"] = 5 if offset == BORN_AT else 3
        if offset > ENDED_AT:
            del adds["push list"]
        if offset == RESET_AT:  # a process restarted under the same labels: from 0 again
            totals["pull todo"] = 0
        for subject, n in adds.items():
            totals[subject] += n
            counted[subject][window] += n
            operation, entity = subject.split()
            labels = _labels(operation, entity, sync_outcome="success")
            bounds = DURATION_BOUNDS
            counts = [totals[subject]] + [0] * len(bounds)
            _histogram(
                lines, DURATION, labels, bounds, counts, 0.01 * totals[subject], start + offset
            )
    text = "\n".join([f"# TYPE {DURATION} histogram", *sorted(lines, key=_series_then_time)])
    return text + "\n# EOF\n", {k: (v[0], v[1]) for k, v in counted.items()}


@pytest.fixture(scope="module")
def born(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Any]]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    root = tmp_path_factory.mktemp("prometheus-born")
    start = (int(time.time()) - 3 * 3600) // 3600 * 3600
    text, counted = _born_load(start)
    source = root / "load.om"
    source.write_text(text)
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(root / "data")],
        check=True,
        capture_output=True,
    )
    with running_prometheus(root, []) as url:
        yield url, start, counted


def test_a_series_born_or_ended_inside_a_window_counts_every_operation_it_recorded(
    born: tuple[str, int, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # increase() loses a new series' first sample (5 here: it has no 0 before it) and
    # extrapolates the rest; compare reports what the scrapes in the window counted, exactly
    url, start, counted = born
    before, after = (start, start + WINDOW), (start + WINDOW, start + 2 * WINDOW)
    _compare(url, before, after, "--json")
    rows = _rows(capsys.readouterr().out)
    for subject, (in_before, in_after) in counted.items():
        row = rows[(subject, "throughput")]
        if subject == "pull todo":  # reset: Prometheus's estimate (see _window.counted)
            assert row["before"] * WINDOW == pytest.approx(in_before, abs=1e-6)
            assert row["after"] * WINDOW == pytest.approx(in_after, rel=0.02)
            continue
        assert (row["before"] * WINDOW, row["after"] * WINDOW) == pytest.approx(
            (in_before, in_after), abs=1e-6
        ), subject
