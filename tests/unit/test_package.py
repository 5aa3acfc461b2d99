"""The package: light import, typed, public names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import syncperf


def test_import_syncperf_loads_no_framework_or_driver() -> None:
    code = (
        "import sys, syncperf\n"
        "heavy = {'starlette', 'fastapi', 'sqlalchemy', 'prometheus_client', 'grpc', 'pytest'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_integration_submodules_are_reachable_as_attributes() -> None:
    assert syncperf.asgi.SyncPerfMiddleware is not None
    assert syncperf.sqlalchemy.instrument_engine is not None
    assert syncperf.outbox.Outbox is not None
    assert syncperf.adapters is not None


def test_public_names_are_sorted_and_exist() -> None:
    assert syncperf.__all__ == sorted(syncperf.__all__)
    for name in syncperf.__all__:
        assert hasattr(syncperf, name)


def test_the_package_is_typed() -> None:
    assert (Path(syncperf.__file__).parent / "py.typed").exists()


def test_errors_form_a_hierarchy() -> None:
    assert issubclass(syncperf.ConfigError, syncperf.SyncPerfError)
    assert issubclass(syncperf.ConfigError, ValueError)
    assert issubclass(syncperf.MeasurementError, syncperf.SyncPerfError)


def test_the_cli_lists_its_commands(capsys) -> None:  # type: ignore[no-untyped-def]
    from syncperf.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "rules", "dashboard", "bench", "check", "compare"):
        assert command in out
    assert main(["nonsense"]) == 2
