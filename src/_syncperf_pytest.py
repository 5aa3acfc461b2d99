"""syncperf's pytest plugin (entry point ``pytest11``, name ``syncperf``): the fixture
``syncperf_capture`` and the ``syncperf check`` options.

A top-level module, outside the ``syncperf`` package, so that loading it imports nothing of
syncperf (nor OpenTelemetry): every pytest run in an environment where syncperf is installed
loads it. syncperf is imported when a test requests the fixture or an option is given, after
the ``conftest.py`` files have run (``SYNCPERF_NO_EXTENSIONS`` set there is honoured).

It can also be listed by hand beside its entry point (``-p _syncperf_pytest``,
``pytest_plugins = ["syncperf.testing"]``): it is registered once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from syncperf.testing import Capture

NAMES = ("syncperf", __name__)
"""What pytest registers this module as: the entry point's name, or the module's own."""


@pytest.fixture
def syncperf_capture() -> Iterator[Capture]:
    """pytest fixture: ``syncperf.testing.capture()`` around the test."""
    from syncperf.testing import capture

    with capture() as cap:
        yield cap


def pytest_plugin_registered(plugin: object, manager: pytest.PytestPluginManager) -> None:
    """Registered under one of ``NAMES``, block the other: pytest would register this module
    again under it (``-p`` or ``pytest_plugins`` beside the entry point), and refuse to."""
    if plugin is not sys.modules[__name__]:
        return
    name = manager.get_name(plugin)
    for other in NAMES:
        if other != name and manager.get_plugin(other) is None and not manager.is_blocked(other):
            manager.set_blocked(other)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``syncperf check`` options: a baseline to compare with, to update, a results file."""
    group = parser.getgroup("syncperf")
    group.addoption(
        "--syncperf-baseline",
        metavar="FILE",
        help="fail the run when sync operations regress against this baseline "
        "(queries per operation, N+1, query-plan findings)",
    )
    group.addoption(
        "--syncperf-update-baseline",
        action="store_true",
        help="write what this run recorded to the --syncperf-baseline file instead "
        "(only when every test passed)",
    )
    group.addoption(
        "--syncperf-results",
        metavar="FILE",
        help="write what this run recorded to FILE (for 'syncperf check FILE --baseline')",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the check when one of its options is given (otherwise: nothing imported)."""
    baseline = config.getoption("syncperf_baseline", None)
    results = config.getoption("syncperf_results", None)
    update = bool(config.getoption("syncperf_update_baseline", False))
    if baseline is None and results is None and not update:
        return
    if _distributed(config):
        raise pytest.UsageError(
            "syncperf check does not support pytest-xdist (-n, --dist, --tx) yet"
        )
    from syncperf._tools._pytest import CheckPlugin

    config.pluginmanager.register(CheckPlugin(baseline, update, results), "syncperf-check")


def _distributed(config: pytest.Config) -> bool:
    """Whether pytest-xdist spreads this run over workers (each would record its share
    only): ``-n``, ``--dist`` or ``--tx`` on the controller, or this is a worker."""
    return bool(
        getattr(config.option, "numprocesses", None)
        or config.getoption("dist", "no") not in ("no", None)
        or config.getoption("tx", None)
        or hasattr(config, "workerinput")
    )
