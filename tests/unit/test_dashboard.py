"""`syncperf dashboard`: a Grafana dashboard over metrics syncperf really emits."""

from __future__ import annotations

import json
from pathlib import Path

from syncperf._ops import dashboard
from syncperf._ops._metrics import PROMETHEUS_SERIES
from syncperf._ops._promql import metric_names, substitute

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "ops/grafana/syncperf-dashboard.json"


def _exprs(board: dict) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_committed_dashboard_is_what_the_generator_writes_now() -> None:
    assert COMMITTED.read_text() == dashboard.render()


def test_render_is_deterministic() -> None:
    assert dashboard.render() == dashboard.render()


def test_every_expression_names_only_metrics_syncperf_emits() -> None:
    exprs = _exprs(json.loads(dashboard.render()))
    assert len(exprs) >= 30
    for expr in exprs:
        names = metric_names(substitute(expr))
        assert names, expr
        assert names <= PROMETHEUS_SERIES, (expr, names - PROMETHEUS_SERIES)


def test_panels_cover_the_issue_list() -> None:
    titles = " | ".join(p["title"].lower() for p in json.loads(dashboard.render())["panels"])
    for topic in (
        "pull / push rate",
        "p50 / p95 / p99",
        "errors by type",
        "conflict rate by entity",
        "batch size",
        "idempotency hits",
        "queries per operation",
        "n+1",
        "slow queries",
        "connection pool usage",
        "connection waits",
        "outbox depth",
        "outbox oldest age",
        "syncperf overhead",
    ):
        assert topic in titles, topic


def test_panels_use_the_datasource_variable_and_have_unique_ids() -> None:
    board = json.loads(dashboard.render())
    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["datasource", "entity"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_cli_writes_the_dashboard(tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    assert dashboard.main(["-o", str(out)]) == 0
    assert json.loads(out.read_text())["uid"] == "syncperf"
