"""The pytest side of ``syncperf check``: record each test, compare or update at the end.

Registered by the plugin (``_syncperf_pytest``) when a ``--syncperf-*`` option is given;
without one, nothing of syncperf is imported.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from syncperf._tools._files import shown
from syncperf._tools._record import CheckError, Record, Recorder
from syncperf._tools.check import Outcome, compare

_NOT_PASSED: dict[int, str] = {
    pytest.ExitCode.TESTS_FAILED: "a test failed",
    pytest.ExitCode.INTERRUPTED: "the run was interrupted",
    pytest.ExitCode.NO_TESTS_COLLECTED: "no test ran",
}


class CheckPlugin:
    """Records what each test's sync operations did; compares the run with the baseline."""

    def __init__(self, baseline: str | None, update: bool, results: str | None) -> None:
        if update and baseline is None:
            raise pytest.UsageError("--syncperf-update-baseline needs --syncperf-baseline=FILE")
        self.baseline_path = baseline
        self.update = update
        self.results_path = results
        self.baseline: Record | None = None
        if baseline is not None and not update:
            try:  # fail before the suite runs, not after
                self.baseline = Record.load(baseline, "baseline")
            except CheckError as error:
                raise pytest.UsageError(f"syncperf check: {error}") from None
        self.recorder = Recorder()
        self.lines: list[str] = []
        self.failed = False

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        """Record from the test's set-up to its tear-down."""
        self.recorder.start()
        try:
            return (yield)
        finally:
            self.recorder.stop(item.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write the results and the baseline, or compare; a regression fails the session."""
        record = self.recorder.close()
        try:
            if self.results_path is not None:
                record.write(self.results_path)
                self.lines.append(f"syncperf check: results written to {shown(self.results_path)}")
            if self.update and self.baseline_path is not None:
                self._update(session, record, self.baseline_path)
        except CheckError as error:
            self._fail(session, [f"syncperf check: {error}"])
            return
        if self.baseline is None or self.baseline_path is None:
            return
        outcome: Outcome = compare(self.baseline, record)
        if outcome.regressions:
            self._fail(session, outcome.report(self.baseline_path))
        else:
            self.lines.extend(outcome.report(self.baseline_path))

    def _update(self, session: pytest.Session, record: Record, path: str) -> None:
        """Write the baseline only from a run that passed: an interrupted or failing run
        did not reach, or did not finish, every operation the committed baseline lists."""
        status = session.exitstatus
        if status == pytest.ExitCode.OK:
            record.write(path)
            self.lines.append(f"syncperf check: baseline written to {shown(path)}")
            return
        why = _NOT_PASSED.get(int(status), f"pytest exit status {int(status)}")
        self.lines.append(
            f"syncperf check: {shown(path)} not written: {why} (the baseline is kept)"
        )

    def _fail(self, session: pytest.Session, lines: list[str]) -> None:
        self.failed = True
        self.lines.extend(lines)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Show the outcome."""
        if not self.lines:
            return
        terminalreporter.write_sep("=", "syncperf check", red=self.failed, bold=self.failed)
        for line in self.lines:
            terminalreporter.write_line(line)
