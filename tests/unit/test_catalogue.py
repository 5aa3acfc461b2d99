"""The one metric catalogue: what the code creates, what the docs list and what tooling names."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import syncperf
from syncperf._metrics.catalogue import BY_NAME, METRICS, PROMETHEUS_SERIES, MetricSpec
from syncperf._tools.monitoring import dashboard, rules
from syncperf._tools.monitoring._datadog import monitors
from syncperf._tools.monitoring._options import RuleOptions
from syncperf._tools.monitoring._series import prom
from syncperf.asgi import SyncPerfMiddleware, client_metrics_app
from syncperf.outbox import Outbox, OutboxStats
from syncperf.sqlalchemy import PlanOptions, instrument_engine
from syncperf.testing import Capture, capture
from tests._promql import metric_names, substitute

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"Histogram": "histogram", "Counter": "counter", "UpDownCounter": "updowncounter",
         "Gauge": "gauge"}  # fmt: skip
_ROW = re.compile(r"^\| `([a-z_.]+)` \| (\w+) \| `([^`]+)` \| (.+) \|$", re.M)
_KEY = re.compile(r"`([a-z_]+(?:\.[a-z_]+)+)`")
_ANY_SERIES = {"otel.metric.overflow", "syncperf.invalid_attributes"}
_QUIET = {
    "db.client.connection.timeouts",
    "outbox.probe.failures",
    "syncperf.dropped",
    "syncperf.export.failures",
    "syncperf.shed",
}
"""Created, but with nothing to export when nothing went wrong."""


# --- docs/metrics.md ----------------------------------------------------------------------


def _attribute_keys(cell: str, documented: dict[str, MetricSpec]) -> tuple[str, ...]:
    """The attribute keys of a table cell: backticked dotted names outside parentheses and
    before the explanation that follows a colon; ``as `name``` repeats an earlier row's."""
    while (shorter := re.sub(r"\([^()]*\)", "", cell)) != cell:
        cell = shorter
    cell = cell.split(": ", 1)[0].strip()
    same = re.fullmatch(r"as `([a-z_.]+)`", cell)
    if same:
        return documented[same.group(1)].attributes
    return tuple(_KEY.findall(cell))


def _documented() -> dict[str, MetricSpec]:
    documented: dict[str, MetricSpec] = {}
    for name, kind, unit, cell in _ROW.findall((ROOT / "docs/metrics.md").read_text()):
        assert name not in documented, f"{name} is documented twice"
        attributes = _attribute_keys(cell, documented)
        documented[name] = MetricSpec(name, KINDS[kind], unit, "", attributes)  # type: ignore[arg-type]
    return documented


def test_docs_list_every_catalogued_metric_in_order_with_its_kind_unit_and_attributes() -> None:
    documented = _documented()
    assert list(documented) == [m.name for m in METRICS]
    for metric in METRICS:
        doc = documented[metric.name]
        assert (doc.kind, doc.unit) == (metric.kind, metric.unit), metric.name
        assert set(doc.attributes) == set(metric.attributes), metric.name


def test_docs_give_every_histogram_its_bucket_boundaries() -> None:
    text = (ROOT / "docs/metrics.md").read_text().split("## Bucket boundaries", 1)[1]
    documented: dict[str, tuple[float, ...]] = {}
    for names, bounds in re.findall(r"^\| (`.+`) \| `([^`]+)`.* \|$", text, re.M):
        for name in re.findall(r"`([a-z_.]+)`", names):
            assert name not in documented, name
            documented[name] = tuple(float(b) for b in bounds.split(", "))
    histograms = {m.name: m.bounds for m in METRICS if m.kind == "histogram"}
    assert documented == {name: tuple(map(float, b)) for name, b in histograms.items()}


def test_other_pages_that_give_bucket_boundaries_give_the_catalogued_ones() -> None:
    """A page giving a histogram's boundaries lists them all: Boundaries of `m` (s): `a, ...`."""
    text = (ROOT / "docs/sqlalchemy.md").read_text()
    found = re.findall(r"Boundaries\s+of\s+`([a-z_.]+)`\s+\(s\):\s+`([^`]+)`", text)
    assert found, "docs/sqlalchemy.md gives no boundaries of db.client.operation.duration"
    for name, bounds in found:
        assert tuple(float(b) for b in re.split(r",\s+", bounds)) == BY_NAME[name].bounds, name


def test_the_docs_parser_reads_values_and_explanations_as_no_attributes() -> None:
    documented = _documented()
    assert documented["outbox.rows"].attributes == ("outbox.name", "outbox.status")
    assert documented["syncperf.dropped"].attributes == ("syncperf.reason",)
    assert documented["http.server.response.body.size"].attributes == (
        BY_NAME["http.server.request.duration"].attributes
    )
    assert "db.response.status_code" in documented["db.client.operation.duration"].attributes


# --- rules, alerts, promtool tests, dashboard and Datadog monitors --------------------------


def _referenced_series(o: RuleOptions) -> tuple[set[str], set[str]]:
    """Prometheus series names every generated artefact selects, and the recording rules."""
    groups = rules.prometheus_rules(o)["groups"]
    records = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    exprs = [r["expr"] for g in groups for r in g["rules"]]
    exprs += [q for _, panels in dashboard.PANELS for p in panels for q, _ in p.queries]
    for test in yaml.safe_load(rules.render(o, "promtool-tests"))["tests"]:
        exprs += [s["series"] for s in test.get("input_series", ())]
        exprs += [t["expr"] for t in test.get("promql_expr_test", ())]
    names: set[str] = set()
    for expr in exprs:
        found = metric_names(substitute(expr))
        assert found, expr
        names |= found
    return names - records, records


def test_every_series_a_rule_test_or_panel_selects_is_a_catalogued_metric() -> None:
    o = RuleOptions()
    names, records = _referenced_series(o)
    assert len(names) >= 20 and records
    assert names <= PROMETHEUS_SERIES, names - PROMETHEUS_SERIES


def test_every_metric_a_datadog_monitor_queries_is_catalogued_with_its_tags() -> None:
    found = monitors(RuleOptions())
    assert found
    for monitor in found:
        query = monitor["query"]
        metrics = set(re.findall(r"(?:count|sum|max|p\d+):([a-z_.]+)\{", query))
        assert metrics and metrics <= set(BY_NAME), query
        tags = {t for by in re.findall(r"by \{([^}]*)\}", query) for t in by.split(",")}
        for metric in metrics:
            assert tags <= set(BY_NAME[metric].attributes), (metric, tags)
    assert json.loads(rules.render(RuleOptions(), "datadog")) == found


def test_prometheus_names_follow_the_otlp_translation() -> None:
    assert prom("sync.operation.duration", "_bucket") == "sync_operation_duration_seconds_bucket"
    assert prom("sync.conflicts") == "sync_conflicts_total"
    assert prom("sync.batch.size", "_bucket") == "sync_batch_size_bucket"
    assert prom("sync.operations.active") == "sync_operations_active"
    assert prom("outbox.oldest_age") == "outbox_oldest_age_seconds"
    assert prom("sync.db.n_plus_one") == "sync_db_n_plus_one_total"
    assert prom("syncperf.shed") == "syncperf_shed_total"
    assert prom("syncperf.overhead", "_bucket") == "syncperf_overhead_seconds_bucket"
    assert "http_server_request_body_size_bytes_bucket" in PROMETHEUS_SERIES


def test_prom_refuses_names_and_suffixes_that_do_not_exist() -> None:
    with pytest.raises(KeyError):
        prom("sync.nope")
    with pytest.raises(KeyError):
        prom("sync.conflicts", "_bucket")


def test_metric_name_extraction_skips_functions_labels_and_keywords() -> None:
    expr = (
        'sum by (sync_operation, le) (rate(a_bucket{x="y", e=~"$v"}[5m] offset 10m))'
        " / on (a) group_left(b) b_total > 3 and c"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


# --- what a runtime with every integration really creates ----------------------------------


def _exercise(engine: sa.Engine, outbox: Outbox) -> None:
    """Run one of everything: a push with conflicts, queries (N+1, slow, failed), an HTTP
    sync request, an outbox enqueue and a publish."""

    def select(conn: sa.Connection) -> None:
        conn.execute(sa.text("SELECT 1")).all()

    with syncperf.sync_operation("push", entity="todo") as op, engine.connect() as conn:
        conn.execute(sa.text("SELECT id FROM todo WHERE v = :v"), {"v": "x"}).all()  # a plan
        op.set_batch_size(3)
        op.record_items(3, change="created")
        op.record_conflict(resolution="rejected")
        op.record_idempotency_hit()
        op.record_checkpoint(time.time() - 60)
        op.record_change_time(time.time() - 30)
        for _ in range(3):
            select(conn)
        outbox.enqueue()
    with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM missing")).all()
    with outbox.publish(count=1) as batch:
        batch.failed(RuntimeError("broker down"), attempt=1)
        batch.published(datetime.now(timezone.utc), attempt=2)

    async def endpoint(request: Any) -> JSONResponse:
        await request.body()  # a body the app reads has its size recorded
        return JSONResponse({"ok": True})

    app = SyncPerfMiddleware(
        Starlette(routes=[Route("/sync/push", endpoint, methods=["POST"])]),
        {"/sync/push": "push"},
    )

    async def request() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            health = {
                "Sync-Client": 'pending=2, retries=1, last-sync-age=60, db-size=4096, app="1.0"'
            }
            response = await client.post("/sync/push", json={"x": 1}, headers=health)
            assert response.status_code == 200
        batch = {
            "batch": "b",
            "records": [{"operation": "push", "duration": 0.1, "outcome": "success"}],
        }
        transport = httpx.ASGITransport(app=client_metrics_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.post("/", json=batch)).status_code == 202

    asyncio.run(request())


@pytest.fixture
def everything(tmp_path: Path) -> Iterator[Capture]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'all.db'}")  # plans need a file
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE todo (id INTEGER PRIMARY KEY, v TEXT)")
        conn.exec_driver_sql("INSERT INTO todo VALUES (1, 'a')")
    handle = instrument_engine(
        engine,
        n_plus_one_threshold=2,
        slow_query_threshold=1e-9,
        plans=PlanOptions(rows=1),  # the scan of a one-row table is a finding
    )
    outbox = Outbox("orders", stats=lambda: OutboxStats(2, 9.0, {"pending": 2}, 3))
    try:
        with capture(strict=False) as cap:
            _exercise(engine, outbox)
            assert handle.plans is not None and handle.plans.wait()
            yield cap
    finally:
        outbox.close()
        handle.uninstrument()
        engine.dispose()


def _kind(data: Any) -> str:
    if isinstance(data, Histogram):
        return "histogram"
    if isinstance(data, Gauge):
        return "gauge"
    assert isinstance(data, Sum)
    return "counter" if data.is_monotonic else "updowncounter"


def test_a_runtime_with_every_integration_creates_exactly_the_catalogued_instruments(
    everything: Capture,
) -> None:
    created = list(everything.runtime.registry.instruments.values())
    assert {i.name for i in created} == set(BY_NAME)
    for instrument in created:
        spec = BY_NAME[instrument.name]
        assert (instrument.kind, instrument.unit, instrument.description) == (
            spec.kind,
            spec.unit,
            spec.description,
        ), spec.name
        assert instrument.bounds == tuple(float(b) for b in spec.bounds), spec.name


def test_every_exported_point_has_its_catalogued_kind_unit_bounds_and_attribute_keys(
    everything: Capture,
) -> None:
    exported = {m.name: m for m in everything.metrics()}
    assert set(exported) == set(BY_NAME) - _QUIET
    for name, metric in exported.items():
        spec = BY_NAME[name]
        assert (_kind(metric.data), metric.unit) == (spec.kind, spec.unit), name
        for point in metric.data.data_points:
            assert set(point.attributes) <= {*spec.attributes, *_ANY_SERIES}, (name, point)
            if spec.kind == "histogram":
                assert tuple(point.explicit_bounds) == spec.bounds, name
