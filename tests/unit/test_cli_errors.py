"""Every CLI mistake is one line on stderr and exit status 2; packaging names what to install."""

from __future__ import annotations

import argparse
import builtins
import importlib
import importlib.abc
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncperf import cli
from syncperf._config import MAX_SECONDS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "syncperf"


def _fails_with_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code  # type: ignore[assignment]
    captured = capsys.readouterr()
    assert status == 2, captured
    err = captured.err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("command", ["rules", "dashboard"])
def test_an_output_file_in_a_missing_directory(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if command == "dashboard":
        pytest.importorskip("grafana_foundation_sdk")  # Python >= 3.11
    target = tmp_path / "missing" / "dir" / "file.yml"
    err = _fails_with_one_line(capsys, [command, "-o", str(target)])
    assert str(target) in err


URL = "http://admin:s3cret@127.0.0.1:1"


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "--before", "-2h..-1h", "--after", "-1h..now", URL],
        ["compare", "--before", "-2h..-1h", "--after", "-1h..now", "--alpha", URL],
        ["compare", "--before", "-2h..-1h", "--after", "-1h..now", "--timeout", URL],
        ["check", "results.json", "--baseline", "b.json", URL],
        ["rules", URL],
        ["rules", "--p95-seconds", URL],
        ["dashboard", URL],
        ["demo", URL],
        ["bench", "--loops", URL],
        [URL],
        ["compare", "--before", "-2h..-1h", "--after", "-1h..now", "https://ad/min:s3cret@h/x"],
        ["dashboard", "-o", "x", "postgresql+psycopg://demo:s3cret@db/demo", "-q"],
        ["rules", "http://admin:s3 cret@h", "http://h2/@x"],
    ],
)
def test_a_url_echoed_in_a_usage_error_loses_its_credentials(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fails_with_one_line(capsys, argv)
    assert "s3cret" not in err and "admin" not in err
    assert "***@" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "--before", "-2h..-1h", "--after", "-1h..now", "http://h:9090/?token=s3cret"],
        ["compare", "--before", "-2h..-1h", "--after", "-1h..now", "--timeout", "https://h?s3cret"],
        ["https://admin:pw@h/p?a=1&token=s3cret"],
    ],
)
def test_a_url_echoed_in_a_usage_error_loses_its_query_string(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fails_with_one_line(capsys, argv)
    assert "s3cret" not in err and "?***" in err


def test_a_closed_stdout_ends_compare_quietly_and_not_as_a_regression(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    from syncperf._tools import _window

    monkeypatch.setattr(_window.Prometheus, "query", lambda self, promql, at: [])
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    argv = ["compare", "--before", "-2h..-1h", "--after", "-1h..now", "--json"]
    status = cli.main(argv)
    assert status == cli.BROKEN_PIPE != 1
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("to_file", [False, True])
def test_an_argument_with_bytes_that_are_not_utf8_is_not_written(
    to_file: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tests.yml"
    argv = ["rules", "--format", "promtool-tests", "--rule-file", "rules\udcff.yml"]
    _fails_with_one_line(capsys, [*argv, *(["-o", str(out)] if to_file else [])])
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--loops", "0"],
        ["bench", "--rounds", "-1"],
        ["bench", "--loops", "many"],
        ["demo", "--duration", "0"],
        ["demo", "--bogus"],
        ["rules", "--format", "nope"],
    ],
)
def test_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails_with_one_line(capsys, argv)
    assert err.startswith(f"syncperf {argv[0]}: ")


@pytest.mark.parametrize(
    "endpoint",
    ["notaurl", "localhost", "ftp://collector:4317", "http://", "http://u:SECRETPW@host:x"],
)
def test_demo_rejects_an_otlp_endpoint_that_is_not_a_url(
    endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fails_with_one_line(capsys, ["demo", "--otlp", endpoint, "--duration", "1"])
    assert "--otlp" in err
    assert "SECRETPW" not in err  # the value is not echoed: it may carry credentials


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    token=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
    mark=st.sampled_from(["/otlp?api_key=", "?", "#", "/#k="]),
)
def test_demo_rejects_an_otlp_endpoint_with_a_query_without_quoting_it(
    token: str, mark: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    argv = ["demo", "--otlp", f"http://127.0.0.1:1{mark}SEKRTotq{token}"]
    err = _fails_with_one_line(capsys, [*argv, "--duration", "1", "--no-tui"])
    assert "--otlp" in err and "query" in err
    assert "SEKRTotq" not in err


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "nosuchdialect://host/db",
        "postgresql+psycopg://demo:s3cret@127.0.0.1:1/demo",  # nothing listens on port 1
        "postgresql+psycopg://demo@127.0.0.1:1/demo?password=s3cret",
        "postgresql+psycopg://demo@127.0.0.1:1/demo?password=s3cret&sslmode=s3cret-mode",
        "postgresql+psycopg://demo@127.0.0.1:1/demo?port=s3cret",
        "postgresql+psycopg://demo:p@s3cret@127.0.0.1:1/demo",  # '@' not escaped
        "postgresql+psycopg://demo:p@x/9s3cret@127.0.0.1:1/demo",  # '@', then '/'
        "postgresql+psycopg://demo:s3cret@@127.0.0.1:1/demo",
        "postgresql+psycopg://demo:s3cret@127.0.0.1:s3cret/demo",  # not a port
        "nosuchdialect://demo@host/db?password=s3cret",
    ],
)
def test_demo_with_a_bad_or_unreachable_database_url(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fails_with_one_line(capsys, ["demo", "--database-url", url, "--no-tui"])
    assert "--database-url" in err
    assert "s3cret" not in err
    if "?" in url:
        assert "password=***" in err or "port=***" in err  # the keys stay readable


@pytest.mark.parametrize("url", ["sqlite:///\udcff/x.db", "postgresql://u:s3cret\udcfe@h/db"])
def test_demo_rejects_a_database_url_that_is_not_utf8(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """What Python makes of an argument holding bytes that are not UTF-8 (lone surrogates)."""
    err = _fails_with_one_line(capsys, ["demo", "--database-url", url, "--no-tui"])
    assert "--database-url" in err and "UTF-8" in err and "s3cret" not in err
    err.encode("utf-8")


@pytest.mark.parametrize("where", ["missing/summary.json", "."])
def test_demo_checks_its_json_path_before_the_run(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / where
    argv = ["demo", "--duration", "1", "--clients", "2", "--no-tui", "--json", str(target)]
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    assert (status, out) == (2, ""), err[-500:]  # nothing ran: no progress line, no summary
    assert len(err.strip().splitlines()) == 1 and "--json" in err, err[-500:]
    assert sorted(tmp_path.iterdir()) == []


@given(st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(["nan", "-inf", "1e400"]))
def test_a_positive_number_option_takes_only_finite_numbers_up_to_its_cap(
    value: float | str,
) -> None:
    parse = cli.positive(float, most=MAX_SECONDS)
    try:
        parsed = parse(str(value))
    except argparse.ArgumentTypeError:
        return
    assert math.isfinite(parsed) and 0 < parsed <= MAX_SECONDS


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e300", str(MAX_SECONDS * 2)])
def test_demo_rejects_a_duration_that_would_never_end(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncperf._tools import demo

    with pytest.raises(SystemExit) as exit_:  # the parser alone: a demo that ran would not end
        demo.parser().parse_args(["--duration", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--duration" in err


def test_bench_help_cites_no_file_that_is_not_shipped(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    text = capsys.readouterr().out
    for path in re.findall(r"[\w./-]+\.(?:md|py)\b", text):
        assert (PACKAGE / path).exists() or path.startswith("http"), path


def test_the_wheel_metadata_has_project_urls() -> None:
    tomllib = pytest.importorskip("tomllib")  # 3.11
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert {"Homepage", "Documentation", "Repository", "Issues", "Changelog"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())


def test_the_readme_links_are_absolute() -> None:
    """The README is the PyPI page: a relative link is broken there."""
    links = re.findall(r"\]\(([^)]+)\)", (ROOT / "README.md").read_text())
    assert links
    relative = [link for link in links if not link.startswith(("https://", "#"))]
    assert relative == []


def test_the_docs_cite_only_source_files_that_exist() -> None:
    docs = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    cited = {p for doc in docs for p in re.findall(r"`syncperf/([\w/]+\.py)`", doc.read_text())}
    assert cited
    assert sorted(p for p in cited if not (PACKAGE / p).exists()) == []


def test_the_readme_says_the_dashboard_needs_the_ops_extra() -> None:
    text = " ".join((ROOT / "README.md").read_text().split())
    at = text.index("syncperf dashboard > ")
    assert "syncperf[ops]" in text[at : at + 400]


def _hide(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == package or name.startswith(package + "."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", fake_import)


class _NotInstalled(importlib.abc.MetaPathFinder):
    def __init__(self, package: str) -> None:
        self.package = package

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == self.package or name.startswith(self.package + "."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def _uninstall(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """``package`` as if not installed, for ``import`` statements and ``importlib`` alike."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NotInstalled(package), *sys.meta_path])


def test_syncperf_sqlalchemy_without_its_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _hide(monkeypatch, "sqlalchemy")
    monkeypatch.delitem(sys.modules, "syncperf.sqlalchemy", raising=False)
    monkeypatch.delitem(sys.modules, "syncperf.sqlalchemy._pool", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'syncperf\[sqlalchemy\]'"):
        importlib.import_module("syncperf.sqlalchemy")


def test_prometheus_asgi_app_without_its_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import syncperf
    from syncperf.export import prometheus_asgi_app

    _hide(monkeypatch, "prometheus_client")
    with pytest.raises(syncperf.ConfigError, match=r"pip install 'syncperf\[prometheus\]'"):
        prometheus_asgi_app()


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
        ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "deflate"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "Bearer s3cr3t"),
    ],
)
def test_demo_reports_an_invalid_otlp_variable_in_one_line(
    var: str, raw: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv(var, raw)
    argv = ["demo", "--otlp", "http://127.0.0.1:9", "--duration", "1", "--no-tui"]
    err = _fails_with_one_line(capsys, argv)
    assert var in err and raw not in err  # described, never quoted


def test_syncperf_without_a_command_is_one_line_and_exit_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = _fails_with_one_line(capsys, [])
    assert capsys.readouterr().out == ""  # the usage is for --help, not for the mistake
    assert err.startswith("syncperf: a command is required (demo, ") and "--help" in err
    assert cli.main(["--help"]) == 0  # --help still prints the commands, to stdout
    help_ = capsys.readouterr()
    assert "usage: syncperf" in help_.out and "demo" in help_.out and help_.err == ""


@pytest.mark.parametrize("value", ["1001", "99999999999999999999", "9" * 5000])
def test_demo_caps_its_clients(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The clients are built before the first request: an unbounded count would use up the
    memory before Ctrl-C or ``--duration`` could end the run."""
    from syncperf._tools import demo

    with pytest.raises(SystemExit) as exit_:  # the parser alone: nothing was started
        demo.parser().parse_args(["--clients", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--clients" in err, err
    assert demo.parser().parse_args(["--clients", str(demo.MAX_CLIENTS)]).clients == 1_000


@pytest.mark.parametrize(
    ("protocol", "hidden", "option", "extra"),
    [
        ("http/protobuf", "opentelemetry.exporter.otlp", "--otlp", "otlp"),
        ("grpc", "opentelemetry.exporter.otlp", "--otlp", "otlp"),
        ("grpc", "grpc", "--otlp", "otlp"),
        ("http/protobuf", "prometheus_client", "--prometheus-port", "prometheus"),
    ],
)
def test_demo_names_the_extra_an_option_needs(
    protocol: str,
    hidden: str,
    option: str,
    extra: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    for name in [m for m in sys.modules if m.startswith("opentelemetry.exporter.otlp")]:
        monkeypatch.delitem(sys.modules, name)  # not imported yet, as in a new process
    _uninstall(monkeypatch, hidden)
    value = "http://127.0.0.1:9" if option == "--otlp" else "0"
    err = _fails_with_one_line(capsys, ["demo", option, value, "--duration", "1", "--no-tui"])
    assert err.startswith(f"syncperf demo: {option} needs the {extra} extra ("), err
    assert f"pip install 'syncperf[{extra}]'" in err


@pytest.mark.parametrize(
    ("args", "status", "out", "err"),
    [
        (["--version"], 0, re.compile(r"\d+\.\d+\.\d+\S*\n"), re.compile("")),
        (["rules", "--format", "nope"], 2, re.compile(""), re.compile(r"syncperf rules: .*\n")),
    ],
)
def test_python_m_syncperf_is_the_syncperf_command(
    args: list[str], status: int, out: re.Pattern[str], err: re.Pattern[str]
) -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "syncperf", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == status, done.stderr
    assert out.fullmatch(done.stdout) and err.fullmatch(done.stderr), (done.stdout, done.stderr)
    assert done.stderr.count("\n") <= 1  # one line, never a traceback
