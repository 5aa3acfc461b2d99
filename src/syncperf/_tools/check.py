"""``syncperf check``: what a test run recorded against a committed baseline.

Deterministic figures gate: the most queries one operation ran, per (operation, entity); an
N+1 on a table the baseline does not list for that operation; a query-plan finding the
baseline does not list. Latency percentiles are reported, never gated (timings vary from one
machine to the next). The pytest plugin (``--syncperf-baseline``) and the command line
(``syncperf check RESULTS --baseline FILE``) share this comparison.

Exit status of the command: 0 no regression, 1 regression, 2 usage error (one line).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from syncperf._tools._record import CheckError, Entry, Record, labels
from syncperf.cli import Parser

__all__ = ["CheckError", "Outcome", "compare", "main"]


@dataclass
class Outcome:
    """Regressions (each one line a developer can act on) and notes (never failing)."""

    regressions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    latency: list[str] = field(default_factory=list)

    def report(self, baseline: str) -> list[str]:
        """The lines to show, headed by the verdict."""
        if self.regressions:
            head = [f"syncperf check: {len(self.regressions)} regression(s) against {baseline}"]
            body = [f"  {line}" for line in self.regressions]
        else:
            head, body = [f"syncperf check: no regression against {baseline}"], []
        notes = [f"  note: {line}" for line in self.notes]
        timing = [f"  timing (not gated): {line}" for line in self.latency]
        return head + body + notes + timing

    def as_json(self) -> dict[str, Any]:
        """The outcome for automation."""
        return {"regressions": self.regressions, "notes": self.notes, "latency": self.latency}


def compare(baseline: Record, run: Record) -> Outcome:
    """Compare ``run`` with ``baseline``, entry by entry."""
    outcome = Outcome()
    known = dict(labels(baseline))
    for key, label in labels(run):
        entry = run.entries[key]
        base = baseline.entries.get(key)
        if base is None:
            if entry.n_plus_one or entry.plan_findings:
                _compare(label, Entry(), entry, outcome)
            else:
                outcome.notes.append(f"{label}: not in the baseline (update it to track it)")
            continue
        _compare(label, base, entry, outcome)
    for key, label in known.items():
        if key not in run.entries:
            outcome.notes.append(f"{label}: in the baseline, not exercised by this run")
    return outcome


def _compare(label: str, base: Entry, run: Entry, outcome: Outcome) -> None:
    problems: list[str] = []
    tests: list[str] = []
    if run.queries is not None and base.queries is not None:
        before, after = base.queries.value, run.queries.value
        if after > before:
            problems.append(f"{before} -> {after} queries per operation")
            tests.append(run.queries.first_seen)
        elif after < before:
            outcome.notes.append(
                f"{label}: {before} -> {after} queries per operation (better: update the baseline)"
            )
    for table, seen in sorted(run.n_plus_one.items()):
        if table not in base.n_plus_one:
            problems.append(f"N+1 on {table}")
            tests.append(seen.first_seen)
    for table in sorted(set(base.n_plus_one) - set(run.n_plus_one)):
        outcome.notes.append(f"{label}: no N+1 on {table} any more (update the baseline)")
    for (table, kind), seen in sorted(run.plan_findings.items()):
        if (table, kind) not in base.plan_findings:
            problems.append(f"plan finding {kind} on {table}")
            tests.append(seen.first_seen)
    if problems:
        first = list(dict.fromkeys(t for t in tests if t))
        where = f"; first seen in {', '.join(first)}" if first else ""
        outcome.regressions.append(f"{label}: {'; '.join(problems)}{where}")
    shared = [name for name in run.latency if name in base.latency]
    if shared:
        changes = ", ".join(
            f"{name} {_ms(base.latency[name])} -> {_ms(run.latency[name])}" for name in shared
        )
        outcome.latency.append(f"{label}: {changes}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3g} ms"


def main(argv: Sequence[str] | None = None) -> int:
    """``syncperf check RESULTS --baseline FILE``."""
    parser = Parser(
        prog="syncperf check",
        description="Compare what a test run recorded (a file written by the pytest option "
        "--syncperf-results) with a committed baseline (--syncperf-update-baseline writes one). "
        "Exit status: 0 no regression, 1 regression, 2 usage error.",
    )
    parser.add_argument("results", help="the run's results file (JSON)")
    parser.add_argument("--baseline", required=True, help="the committed baseline file (JSON)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = parser.parse_args(argv)
    try:
        baseline = Record.load(args.baseline, "baseline")
        run = Record.load(args.results, "results")
    except CheckError as error:
        print(f"syncperf check: {error}", file=sys.stderr)
        return 2
    outcome = compare(baseline, run)
    if args.json:
        print(json.dumps(outcome.as_json(), indent=2, sort_keys=True))
    else:
        print("\n".join(outcome.report(args.baseline)))
    return 1 if outcome.regressions else 0
