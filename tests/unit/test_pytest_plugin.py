"""The pytest plugin costs nothing until used, and listing it by hand beside its entry point
(``-p``, ``pytest_plugins``) works.

The runs below install the ``pytest11`` entry point as ``pyproject.toml`` declares it (a
``dist-info`` in the run's directory, found first), whatever the environment's install says.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]
QUIET = ("-p", "no:asyncio", "-p", "no:hypothesispytest", "-p", "no:benchmark", "-p", "no:cov")
"""Plugins the runs do not need."""
MODULE = "_syncperf_pytest"

HEAVY = """
import os
import sys

os.environ["SYNCPERF_NO_EXTENSIONS"] = "1"  # read when syncperf is imported


def heavy():
    return sorted(m for m in sys.modules if m.partition(".")[0] in ("syncperf", "opentelemetry"))


AT_CONFTEST = heavy()


def pytest_collection_finish(session):
    print("heavy at conftest:", AT_CONFTEST)
    print("heavy after collection:", heavy())
    print("registered:", session.config.pluginmanager.get_plugin("syncperf") is not None)
"""

USES_IT = """
import syncperf


def test_capture(syncperf_capture):
    with syncperf.sync_operation("push", entity="todo"):
        pass
    assert syncperf_capture.total("sync.operation.duration") == 1


def test_not_compiled():
    from syncperf import _accel

    assert _accel.speedups is None  # SYNCPERF_NO_EXTENSIONS=1 from the conftest
"""


def _declared() -> dict[str, str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    entry_points: dict[str, str] = data["project"]["entry-points"]["pytest11"]
    return entry_points


@pytest.fixture
def entry_point(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``pytest11`` entry points of ``pyproject.toml``, installed in the run's directory
    (on the path first: a subprocess starts there, an inline run gets it prepended)."""
    info = pytester.path / "syncperf_entry_point-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: syncperf-entry-point\nVersion: 0\n"
    )
    lines = [f"{name} = {target}" for name, target in _declared().items()]
    (info / "entry_points.txt").write_text("[pytest11]\n" + "\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(pytester.path)


def test_the_entry_point_keeps_its_name_and_loads_a_module_outside_the_package() -> None:
    assert _declared() == {"syncperf": MODULE}  # -p no:syncperf keeps working


@pytest.mark.usefixtures("entry_point")
def test_loading_the_plugin_imports_nothing_of_syncperf(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HEAVY)
    pytester.makepyfile(test_it="def test_capture(syncperf_capture):\n    pass\n")
    result = pytester.runpytest_subprocess(*QUIET, "-p", "no:cacheprovider", "--co", "-s")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    result.stdout.fnmatch_lines(
        ["heavy at conftest: []", "heavy after collection: []", "registered: True"]
    )


@pytest.mark.usefixtures("entry_point")
def test_the_fixture_imports_syncperf_after_the_conftest(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HEAVY)
    pytester.makepyfile(test_it=USES_IT)
    result = pytester.runpytest_subprocess(*QUIET, "-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["heavy at conftest: []"])


LISTED = {
    "-p module": (["-p", MODULE], ""),
    "-p entry point": (["-p", "syncperf"], ""),
    "-p syncperf.testing": (["-p", "syncperf.testing"], ""),
    "pytest_plugins module": ([], f"pytest_plugins = [{MODULE!r}]\n"),
    "pytest_plugins syncperf.testing": ([], 'pytest_plugins = ["syncperf.testing"]\n'),
}


@pytest.mark.usefixtures("entry_point")
@pytest.mark.parametrize(("args", "conftest"), LISTED.values(), ids=LISTED.keys())
def test_the_plugin_can_also_be_listed_by_hand(
    pytester: pytest.Pytester, args: list[str], conftest: str
) -> None:
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_it=USES_IT.replace("def test_not_compiled", "def _not_compiled"))
    result = pytester.runpytest_subprocess(*QUIET, *args, "--syncperf-results=r.json")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    result.assert_outcomes(passed=1)
    assert (pytester.path / "r.json").exists()


@pytest.mark.usefixtures("entry_point")
def test_p_no_syncperf_disables_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_it=USES_IT)
    result = pytester.runpytest_subprocess(*QUIET, "-p", "no:syncperf", "--syncperf-results=r")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unrecognized arguments: --syncperf-results=r*"])


@pytest.mark.usefixtures("entry_point")
@pytest.mark.parametrize(
    ("args", "conftest"),
    [(["-p", "syncperf"], ""), ([], 'pytest_plugins = ["syncperf.testing"]\n')],
    ids=["-p syncperf", "pytest_plugins"],
)
def test_with_autoloading_off_it_is_loaded_as_documented(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], conftest: str
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_it=USES_IT.replace("def test_not_compiled", "def _not_compiled"))
    result = pytester.runpytest_subprocess(*args, "--syncperf-results=r.json")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    assert (pytester.path / "r.json").exists()


STRICT_WARNINGS = {
    "-W error": (["-W", "error"], ""),
    "filterwarnings = error": ([], "[pytest]\nfilterwarnings = error\n"),
}


@pytest.mark.usefixtures("entry_point")
@pytest.mark.parametrize("autoload", ["autoload on", "autoload off"])
@pytest.mark.parametrize(("args", "conftest"), LISTED.values(), ids=LISTED.keys())
@pytest.mark.parametrize(("warn_args", "ini"), STRICT_WARNINGS.values(), ids=STRICT_WARNINGS)
def test_listing_it_by_hand_warns_nothing(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    autoload: str,
    args: list[str],
    conftest: str,
    warn_args: list[str],
    ini: str,
) -> None:
    """A project that turns warnings into errors can list the plugin (no warning that a
    module was imported before pytest could rewrite its assertions)."""
    if autoload == "autoload off":
        monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    if ini:
        pytester.makeini(ini)
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_it=USES_IT.replace("def test_not_compiled", "def _not_compiled"))
    result = pytester.runpytest_subprocess(*QUIET, "-p", "no:cacheprovider", *warn_args, *args)
    output = result.stdout.str() + result.stderr.str()
    assert "Warning" not in output, output
    assert result.ret == pytest.ExitCode.OK, output
    result.assert_outcomes(passed=1)
