"""`syncperf dashboard`: a Grafana dashboard over metrics syncperf really emits."""

from __future__ import annotations

import builtins
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from syncperf._metrics.catalogue import PROMETHEUS_SERIES
from syncperf._tools.monitoring import dashboard
from tests._promql import metric_names, substitute

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "ops/grafana/syncperf-dashboard.json"


@pytest.fixture
def sdk() -> None:
    """Skip where grafana-foundation-sdk (Python >= 3.11) is not installed."""
    pytest.importorskip("grafana_foundation_sdk")


def _exprs(board: dict) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


@pytest.mark.usefixtures("sdk")
def test_committed_dashboard_is_what_the_generator_writes_now() -> None:
    assert COMMITTED.read_text() == dashboard.render()


@pytest.mark.usefixtures("sdk")
def test_render_is_deterministic() -> None:
    assert dashboard.render() == dashboard.render()


@pytest.mark.usefixtures("sdk")
def test_every_expression_names_only_metrics_syncperf_emits() -> None:
    exprs = _exprs(json.loads(dashboard.render()))
    assert len(exprs) >= 30
    for expr in exprs:
        names = metric_names(substitute(expr))
        assert names, expr
        assert names <= PROMETHEUS_SERIES, (expr, names - PROMETHEUS_SERIES)


@pytest.mark.usefixtures("sdk")
def test_counts_of_events_include_a_series_first_events() -> None:
    # A series appears at its count: increase() alone shows nothing for a one-off event.
    for expr in _exprs(json.loads(dashboard.render())):
        assert expr.count("increase(") == expr.count("present_over_time("), expr


@pytest.mark.usefixtures("sdk")
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


@pytest.mark.usefixtures("sdk")
def test_panels_use_the_datasource_variable_and_have_unique_ids() -> None:
    board = json.loads(dashboard.render())
    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["datasource", "entity"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.usefixtures("sdk")
def test_cli_writes_the_dashboard(tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    assert dashboard.main(["-o", str(out)]) == 0
    assert json.loads(out.read_text())["uid"] == "syncperf"


def _hide_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every ``grafana_foundation_sdk`` import fail, as when the extra is missing."""
    for name in list(sys.modules):
        if name == "grafana_foundation_sdk" or name.startswith("grafana_foundation_sdk."):
            monkeypatch.delitem(sys.modules, name)
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "grafana_foundation_sdk" or name.startswith("grafana_foundation_sdk."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_render_without_the_sdk_raises_runtime_error_with_an_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _hide_sdk(monkeypatch)
    with pytest.raises(RuntimeError, match=r"pip install 'syncperf\[ops\]'"):
        dashboard.render()


def test_the_packaged_dashboard_is_the_committed_one() -> None:
    # what ``syncperf dashboard`` writes where the SDK is missing (Python 3.10): installed
    # with the package, while ops/ is in neither the wheel nor the sdist
    packaged = resources.files("syncperf._tools.monitoring") / "syncperf-dashboard.json"
    assert packaged.read_text(encoding="utf-8") == COMMITTED.read_text(encoding="utf-8")


def test_the_packaged_dashboard_is_package_data() -> None:
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["syncperf"]
    packaged = Path(dashboard.__file__).with_name("syncperf-dashboard.json")
    relative = packaged.relative_to(Path(dashboard.__file__).parents[2])
    assert any(relative.match(pattern) for pattern in patterns), patterns


def test_cli_without_the_sdk_writes_the_packaged_dashboard_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _hide_sdk(monkeypatch)
    out = tmp_path / "d.json"
    assert dashboard.main(["-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == COMMITTED.read_text(encoding="utf-8")
    captured = capsys.readouterr()
    assert "grafana-foundation-sdk" in captured.err
    assert "shipped" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert dashboard.main([]) == 0  # to stdout, the same
    assert capsys.readouterr().out == COMMITTED.read_text(encoding="utf-8")


def test_cli_reports_an_import_error_from_inside_the_sdk(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> str:
        raise ImportError("cannot import name 'JSONEncoder'")

    monkeypatch.setattr(dashboard, "render", broken)
    assert dashboard.main([]) == 2
    err = capsys.readouterr().err
    assert "pip install" in err
    assert "JSONEncoder" in err
