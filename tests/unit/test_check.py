"""``syncperf check``: a test run's queries, N+1 and plan findings against a baseline."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy.dialects.sqlite
import sqlalchemy.orm
from hypothesis import given
from hypothesis import strategies as st

import syncperf.sqlalchemy
from syncperf import _runtime, cli
from syncperf._metrics.aggregates import freeze
from syncperf._tools._record import CheckError, Entry, Record, Recorder, Seen
from syncperf.testing import capture

pytest_plugins = ["pytester"]
QUIET = ("-p", "no:asyncio", "-p", "no:hypothesispytest", "-p", "no:benchmark", "-p", "no:cov")
"""Plugins the inner runs do not need (pytester runs them in this process)."""
PRELOADED = (sqlalchemy.dialects.sqlite, sqlalchemy.orm, syncperf.sqlalchemy)
"""Imported here, so the inner runs (whose new imports pytester unloads) share them."""

SUITE = """
import pytest
import syncperf
from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from syncperf.sqlalchemy import instrument_engine

BATCHED = {batched}


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "records"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))


engine = None


@pytest.fixture(scope="module", autouse=True)
def _engine():  # made when a test here runs: a run stopped before leaves nothing open
    global engine
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    handle = instrument_engine(engine)
    yield
    handle.uninstrument()  # this process runs other tests after this suite
    engine.dispose()


def push(ids):
    with Session(engine) as session, syncperf.sync_operation("push", entity="todo"):
        if BATCHED:
            session.scalars(select(Row).where(Row.id.in_(ids))).all()
        else:
            for id_ in ids:
                session.get(Row, id_)


def pull():
    with Session(engine) as session, syncperf.sync_operation("pull"):
        session.scalars(select(Row)).all()


def test_pull():
    pull()


def test_push_one():
    push([1])


def test_push_many():
    push(list(range(30)))
"""


@pytest.fixture(autouse=True)
def _own_runtime() -> Iterator[None]:
    """The suites run in this process (pytester inline): their runtime is not the outer one."""
    previous = _runtime.replace(None)
    yield
    inner = _runtime.replace(previous)
    if inner is not None:
        inner.shutdown()


def _suite(pytester: pytest.Pytester, *, batched: bool) -> None:
    pytester.makepyfile(test_sync=SUITE.format(batched=batched))


def _baseline(pytester: pytest.Pytester) -> Path:
    _suite(pytester, batched=True)
    result = pytester.runpytest(
        *QUIET, "--syncperf-baseline=baseline.json", "--syncperf-update-baseline"
    )
    result.assert_outcomes(passed=3)
    return pytester.path / "baseline.json"


def test_update_writes_a_sorted_baseline_of_queries_per_operation(
    pytester: pytest.Pytester,
) -> None:
    path = _baseline(pytester)
    data = json.loads(path.read_text())
    push = data["operations"]["push"]["todo"]
    assert push["operations"] == 2
    assert push["queries_per_operation"] == {
        "first_seen": "test_sync.py::test_push_one",
        "value": 1,
    }
    assert "n_plus_one" not in push
    assert data["operations"]["pull"]["-"]["queries_per_operation"]["value"] == 1
    assert path.read_text() == json.dumps(data, indent=2, sort_keys=True) + "\n"


def test_an_unchanged_run_passes(pytester: pytest.Pytester) -> None:
    _baseline(pytester)
    result = pytester.runpytest(*QUIET, "--syncperf-baseline=baseline.json")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["syncperf check: no regression against baseline.json"])


def test_an_injected_n_plus_one_fails_the_run_with_an_actionable_message(
    pytester: pytest.Pytester,
) -> None:
    _baseline(pytester)
    _suite(pytester, batched=False)
    result = pytester.runpytest(*QUIET, "--syncperf-baseline=baseline.json")
    result.assert_outcomes(passed=3)  # every test passed; the check fails the run
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*syncperf check*",
            "syncperf check: 1 regression(s) against baseline.json",
            "  push todo: 1 -> 30 queries per operation; N+1 on records; "
            "first seen in test_sync.py::test_push_many",
        ]
    )


def test_results_file_and_the_command_line_give_the_same_verdict(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = _baseline(pytester)
    _suite(pytester, batched=False)
    pytester.runpytest(*QUIET, "--syncperf-results=results.json").assert_outcomes(passed=3)
    results = str(pytester.path / "results.json")
    assert cli.main(["check", results, "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert "push todo: 1 -> 30 queries per operation; N+1 on records" in out
    assert cli.main(["check", str(baseline), "--baseline", str(baseline), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["regressions"] == []


def test_a_missing_baseline_stops_the_run_before_it_starts(pytester: pytest.Pytester) -> None:
    _suite(pytester, batched=True)
    result = pytester.runpytest(*QUIET, "--syncperf-baseline=missing.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.strip()]
    assert errors == [
        "ERROR: syncperf check: cannot read baseline missing.json: No such file or directory"
    ]


def _record() -> Record:
    record = Record()
    entry = record.entry(("push", "todo"))
    entry.operations = 3
    entry.queries = Seen(5, "t.py::test_push")
    return record


def _check(tmp_path: Path, baseline: Record, run: Record) -> tuple[Path, Path]:
    base, results = tmp_path / "baseline.json", tmp_path / "results.json"
    baseline.write(base)
    run.write(results)
    return base, results


def test_a_new_plan_finding_is_a_regression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _record()
    run.entries[("push", "todo")].plan_findings[("records", "seq_scan")] = Seen(2, "t.py::test_a")
    base, results = _check(tmp_path, _record(), run)
    assert cli.main(["check", str(results), "--baseline", str(base)]) == 1
    assert "push todo: plan finding seq_scan on records; first seen in t.py::test_a" in (
        capsys.readouterr().out
    )


def test_fewer_queries_and_a_fixed_n_plus_one_pass_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = _record()
    baseline.entries[("push", "todo")].n_plus_one["records"] = Seen(1, "t.py::test_push")
    run = _record()
    run.entries[("push", "todo")].queries = Seen(2, "t.py::test_push")
    base, results = _check(tmp_path, baseline, run)
    assert cli.main(["check", str(results), "--baseline", str(base)]) == 0
    out = capsys.readouterr().out
    assert "5 -> 2 queries per operation (better: update the baseline)" in out
    assert "no N+1 on records any more" in out


def test_latency_is_reported_and_never_gates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline, run = _record(), _record()
    baseline.entries[("push", "todo")].latency = {"p50": 0.001}
    run.entries[("push", "todo")].latency = {"p50": 0.9}
    base, results = _check(tmp_path, baseline, run)
    assert cli.main(["check", str(results), "--baseline", str(base)]) == 0
    assert "timing (not gated): push todo: p50 1 ms -> 900 ms" in capsys.readouterr().out


def test_a_baseline_round_trips_unchanged(tmp_path: Path) -> None:
    record = _record()
    entry = record.entry(("pull", "-"))
    entry.n_plus_one["records"] = Seen(4, "t.py::b")
    entry.plan_findings[("records", "sort")] = Seen(1, "t.py::c")
    entry.latency = {"p50": 0.25}
    record.write(tmp_path / "b.json")
    assert Record.load(tmp_path / "b.json").to_json() == record.to_json()
    assert isinstance(Record.load(tmp_path / "b.json").entries[("pull", "-")], Entry)


@pytest.mark.parametrize(
    ("stop", "status", "why"),
    [
        ("raise KeyboardInterrupt", pytest.ExitCode.INTERRUPTED, "the run was interrupted"),
        ("assert False", pytest.ExitCode.TESTS_FAILED, "a test failed"),
    ],
)
def test_update_keeps_the_baseline_when_the_run_does_not_pass(
    pytester: pytest.Pytester, stop: str, status: pytest.ExitCode, why: str
) -> None:
    path = _baseline(pytester)
    before = path.read_bytes()
    pytester.makepyfile(test_a_stop=f"def test_stop():\n    {stop}\n")  # runs first
    args = ("-x", "--syncperf-baseline=baseline.json", "--syncperf-update-baseline")
    result = pytester.runpytest(*QUIET, *args, no_reraise_ctrlc=True)
    assert result.ret == status
    assert path.read_bytes() == before
    result.stdout.fnmatch_lines([f"syncperf check: baseline.json not written: {why}*"])
    result.stdout.no_fnmatch_line("*baseline written*")


def test_a_baseline_the_plugin_writes_for_a_very_long_test_id_reads_back(
    pytester: pytest.Pytester,
) -> None:
    suite = SUITE.format(batched=True) + (
        '\n@pytest.mark.parametrize("n", [3], ids=["case-" + "x" * 5000])\n'
        "def test_long(n):\n"
        '    with Session(engine) as session, syncperf.sync_operation("push", entity="todo"):\n'
        "        for _ in range(n):\n"
        "            session.scalars(select(Row)).all()\n"
    )
    pytester.makepyfile(test_sync=suite)
    update = ("--syncperf-baseline=baseline.json", "--syncperf-update-baseline")
    pytester.runpytest(*QUIET, *update).assert_outcomes(passed=4)
    first_seen = Record.load(pytester.path / "baseline.json").entries[("push", "todo")].queries
    assert first_seen is not None and first_seen.first_seen.startswith("test_sync.py::test_long[")
    result = pytester.runpytest(*QUIET, "--syncperf-baseline=baseline.json")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()[:300]


@given(st.text(max_size=5000))
def test_every_test_name_the_writer_writes_the_reader_reads(name: str) -> None:
    record = _record()
    entry = record.entry(("push", "todo"))
    entry.queries = Seen(2, name)
    entry.n_plus_one["records"] = Seen(1, name)
    back = Record._parse(json.loads(record.to_json())).entries[("push", "todo")]
    assert back.queries is not None
    if name.isprintable() and len(name) <= 4096:
        assert back.queries.first_seen == name  # names the reader accepts are kept whole
    assert len(back.queries.first_seen) <= 4096


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        (
            {"queries_per_operation": {"value": 1, "first_seen": "\x1b"}},
            "queries_per_operation.first_seen",
        ),
        ({"n_plus_one": {"records": {"value": "1"}}}, "n_plus_one.'records'.value"),
        ({"latency_seconds": {"p50": -1}}, "latency_seconds.'p50'"),
    ],
)
def test_a_bad_field_is_named_by_its_place_in_the_file(
    fields: dict[str, object], where: str, tmp_path: Path
) -> None:
    base = tmp_path / "baseline.json"
    base.write_text(
        json.dumps({"format": "syncperf-check/1", "operations": {"push": {"todo": fields}}})
    )
    with pytest.raises(
        CheckError, match="operations.'push'.'todo'." + re.escape(where) + " is not"
    ):
        Record.load(base)


HOSTILE = {
    "not json": b"{nope",
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "nan": b'{"format": "syncperf-check/1", "operations": {"push": {"todo": {"operations": NaN}}}}',
    "not utf-8": b'{"format": "\xff"}',
    "a list": b"[]",
    "other format": b'{"format": "x", "operations": {}}',
    "negative count": (
        b'{"format": "syncperf-check/1", "operations": {"push": {"todo": {"operations": -1}}}}'
    ),
    "string count": b'{"format": "syncperf-check/1", "operations": {"push": {"todo": '
    b'{"queries_per_operation": {"value": "5", "first_seen": "x"}}}}}',
    "newline in a name": b'{"format": "syncperf-check/1", "operations": {"pu\\nsh": 1}}',
    "escape codes in a name": b'{"format": "syncperf-check/1", "operations": {"push": '
    b'{"\\u001b[31mtodo": {"operations": 1}}}}',
    "escape codes in a test": b'{"format": "syncperf-check/1", "operations": {"push": {"todo": '
    b'{"queries_per_operation": {"value": 5, "first_seen": "\\u001b[2J"}}}}}',
    "huge latency": b'{"format": "syncperf-check/1", "operations": {"push": {"todo": '
    b'{"latency_seconds": {"p50": 1' + b"0" * 400 + b"}}}}}",
    "huge int": b'{"format": "syncperf-check/1", "operations": {"push": {"todo": '
    b'{"operations": ' + b"9" * 5000 + b"}}}}",
}


@pytest.mark.parametrize("content", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_baseline_is_a_one_line_error(
    content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "baseline.json"
    base.write_bytes(content)
    results = tmp_path / "results.json"
    _record().write(results)
    assert cli.main(["check", str(results), "--baseline", str(base)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"syncperf check: baseline {base}")


def test_a_missing_results_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "baseline.json"
    _record().write(base)
    assert cli.main(["check", str(tmp_path / "none.json"), "--baseline", str(base)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("syncperf check: cannot read results") and err.count("\n") == 1


def test_operations_inside_the_capture_fixture_are_recorded(pytester: pytest.Pytester) -> None:
    suite = SUITE.format(batched=False).replace("():\n    push(", "(syncperf_capture):\n    push(")
    assert suite.count("syncperf_capture") == 2
    pytester.makepyfile(test_sync=suite)
    result = pytester.runpytest(*QUIET, "--syncperf-results=results.json")
    result.assert_outcomes(passed=3)
    push = Record.load(pytester.path / "results.json").entries[("push", "todo")]
    assert push.operations == 2
    assert push.queries == Seen(30, "test_sync.py::test_push_many")
    assert push.n_plus_one == {"records": Seen(1, "test_sync.py::test_push_many")}


def test_plan_findings_are_read_by_name_from_what_the_test_recorded() -> None:
    recorder = Recorder()
    recorder.start()
    with capture() as cap:
        findings = cap.runtime.registry.instrument(
            "sync.db.plan.findings", "counter", "{finding}", "Query plan findings."
        )
        attributes: dict[str, str | bool] = {
            "sync.operation": "pull",
            "sync.entity": "todo",
            "db.collection.name": "records",
            "sync.db.plan.finding": "seq_scan",
        }
        findings.sum(freeze(attributes)).add(2)
    recorder.stop("t.py::test_pull")
    record = recorder.close()
    assert record.entries[("pull", "todo")].plan_findings == {
        ("records", "seq_scan"): Seen(2, "t.py::test_pull")
    }


def test_without_its_options_the_check_is_not_even_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
        def test_plain(pytestconfig):
            assert pytestconfig.pluginmanager.get_plugin("syncperf-check") is None
        """
    )
    pytester.runpytest(*QUIET).assert_outcomes(passed=1)
    pytester.runpytest(*QUIET, "--syncperf-results=r.json").assert_outcomes(failed=1)


def test_update_without_a_baseline_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest(*QUIET, "--syncperf-update-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --syncperf-update-baseline needs --syncperf-baseline=FILE"]
    )


XDIST_LIKE = """
import pytest


def pytest_addoption(parser):
    # the options pytest-xdist adds (not installed here), with its dests and defaults
    group = parser.getgroup("xdist")
    group.addoption("--numprocesses", dest="numprocesses", type=int)
    group.addoption("--dist", dest="dist", default="no")
    group.addoption("--tx", dest="tx", action="append", default=[])
    group.addoption("--as-worker", action="store_true")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if config.getoption("as_worker"):
        config.workerinput = {"workerid": "gw0"}
"""


@pytest.mark.parametrize(
    "xdist",
    [
        ["--numprocesses=2"],
        ["--dist=load", "--tx=2*popen"],
        ["--dist=each"],
        ["--tx=popen"],
        ["--as-worker"],
    ],
)
def test_a_distributed_run_is_a_usage_error(pytester: pytest.Pytester, xdist: list[str]) -> None:
    pytester.makeconftest(XDIST_LIKE)
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest(*QUIET, "--syncperf-results=r.json", *xdist)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: syncperf check does not support pytest-xdist*"])
    assert not (pytester.path / "r.json").exists()


def test_xdist_options_left_at_their_defaults_are_not_refused(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(XDIST_LIKE)
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest(*QUIET, "--syncperf-results=r.json", "--numprocesses=0")
    result.assert_outcomes(passed=1)
