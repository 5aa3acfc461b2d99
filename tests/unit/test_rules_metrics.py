"""The one catalogue of emitted metrics behind rules, monitors and the dashboard."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from syncperf import _runtime
from syncperf._config import Config
from syncperf._tools.monitoring._metrics import BY_NAME, METRICS, PROMETHEUS_SERIES, prom
from syncperf._tools.monitoring._promql import metric_names

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src/syncperf"
_INSTRUMENT = re.compile(r'\.instrument\(\s*"([\w.]+)",\s*"(\w+)",\s*"([^"]*)"')
_GAUGE = re.compile(r'\.gauge\(\s*"([\w.]+)",\s*"([^"]*)"')


def _registered_by_integrations() -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for path in SRC.rglob("*.py"):
        if "_engine" in path.parts or "_ops" in path.parts:
            continue
        text = path.read_text()
        for name, kind, unit in _INSTRUMENT.findall(text):
            found[name] = (kind, unit)
        for name, unit in _GAUGE.findall(text):
            found[name] = ("gauge", unit)
    try:
        from syncperf.sqlalchemy import _pool as _sql_pool

        for name, unit, _ in _sql_pool._OBSERVED:
            found[name] = ("updowncounter", unit)
    except ImportError:  # pragma: no cover - integration not present
        pass
    return found


def test_core_instruments_are_in_the_catalogue_with_their_kind_and_unit() -> None:
    rt = _runtime.Runtime(Config(enabled=True))
    try:
        for name, instrument in rt.registry.instruments.items():
            assert name in BY_NAME, name
            assert (BY_NAME[name].kind, BY_NAME[name].unit) == (instrument.kind, instrument.unit)
    finally:
        rt.shutdown()


def test_every_metric_an_integration_registers_is_in_the_catalogue() -> None:
    found = _registered_by_integrations()
    assert "sync.db.n_plus_one" in found  # the scan sees the integrations
    for name, (kind, unit) in found.items():
        assert name in BY_NAME, f"{name} is emitted but unknown to rules and dashboards"
        assert (BY_NAME[name].kind, BY_NAME[name].unit) == (kind, unit), name


def test_every_catalogued_metric_is_really_emitted_somewhere() -> None:
    rt = _runtime.Runtime(Config(enabled=True))
    try:
        emitted = set(rt.registry.instruments) | set(_registered_by_integrations())
    finally:
        rt.shutdown()
    assert {m.name for m in METRICS} <= emitted


def test_contract_table_metrics_are_catalogued() -> None:
    text = (ROOT / "docs/metrics.md").read_text()
    names = set(re.findall(r"^\| `([a-z_.]+)` \|", text, re.M))
    assert names, "no metric rows found"
    assert names <= set(BY_NAME), names - set(BY_NAME)


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
