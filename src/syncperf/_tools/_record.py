"""What a test run recorded per sync operation, as ``syncperf check`` compares it.

A ``Record`` holds, per (operation, entity): operations seen, the most queries one operation
ran (``sync.db.queries``, the histogram's max), N+1 detections per table
(``sync.db.n_plus_one``), query-plan findings per table and kind (``sync.db.plan.findings``)
and latency percentiles (``sync.operation.duration``, only those the sample size supports).
Each deterministic figure remembers the test that first recorded it. It is written as stable,
sorted JSON (the baseline file) and read back with every field checked, so a hand-edited or
hostile file is a one-line ``CheckError``.

``Recorder`` feeds a record from a pytest run: around each test it reads the delta of every
syncperf runtime that was current or was built during the test (``testing.capture()`` ones
included).
"""

from __future__ import annotations

import json
import math
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import AggregationTemporality, HistogramDataPoint, MetricsData

from syncperf import _gate, _runtime
from syncperf._metrics import catalogue
from syncperf._metrics.reader import Reader
from syncperf._tools._files import replace_file, shown
from syncperf._tools._stats import QUANTILES
from syncperf._tools.demo._stats import Snapshot, quantile

FORMAT = "syncperf-check/1"
NO_ENTITY = "-"
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_TEST_NAME = 4096
"""The longest ``first_seen`` a baseline holds (a longer pytest node id is cut)."""

DURATION = catalogue.SYNC_OPERATION_DURATION.name
QUERIES = catalogue.SYNC_DB_QUERIES.name
N_PLUS_ONE = catalogue.SYNC_DB_N_PLUS_ONE.name
PLAN_FINDINGS = "sync.db.plan.findings"
"""Query-plan findings (``syncperf.sqlalchemy`` with ``plans=True``), read by name: a run
without them simply has none."""


class CheckError(Exception):
    """A results or baseline file that cannot be used (its message is one line)."""


@dataclass
class Seen:
    """A deterministic figure and the test that first recorded it."""

    value: int
    first_seen: str


@dataclass
class Entry:
    """Everything recorded for one (operation, entity)."""

    operations: int = 0
    queries: Seen | None = None
    n_plus_one: dict[str, Seen] = field(default_factory=dict)
    plan_findings: dict[tuple[str, str], Seen] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)


def meaningful(q: float, count: int) -> bool:
    """A ``q`` quantile says more than the maximum only with at least 1 / (1 - q) samples."""
    return count * (1 - q) >= 1 - 1e-9


def latency_of(point: HistogramDataPoint | None) -> dict[str, float]:
    """The percentiles of ``point`` that its sample size supports."""
    if point is None:
        return {}
    return {
        name: float(f"{value:.2g}")  # two digits: timings vary, the baseline's diff should not
        for name, q in QUANTILES.items()
        if meaningful(q, point.count) and (value := quantile(q, point)) is not None
    }


class Record:
    """Per (operation, entity) figures of one run, or of a baseline file."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Entry] = {}
        self._durations: dict[tuple[str, str], list[tuple[dict[str, Any], Any]]] = {}

    def entry(self, key: tuple[str, str]) -> Entry:
        """The entry of ``key``, created empty on first use."""
        found = self.entries.get(key)
        if found is None:
            found = self.entries[key] = Entry()
        return found

    def add(self, data: MetricsData, test: str) -> None:
        """Merge the metrics one test recorded (a delta) into the record."""
        snap = Snapshot.of(data, 0.0)
        for attrs, point in snap.metrics.get(DURATION, ()):
            key = _key(attrs)
            self.entry(key).operations += int(point.count)
            self._durations.setdefault(key, []).append((attrs, point))
        for attrs, point in snap.metrics.get(QUERIES, ()):
            if point.count:
                entry = self.entry(_key(attrs))
                most = int(point.max)
                if entry.queries is None or most > entry.queries.value:
                    entry.queries = Seen(most, test)
        for attrs, point in snap.metrics.get(N_PLUS_ONE, ()):
            table = str(attrs.get("db.collection.name", NO_ENTITY))
            _count(self.entry(_key(attrs)).n_plus_one, table, point.value, test)
        for attrs, point in snap.metrics.get(PLAN_FINDINGS, ()):
            finding = (
                str(attrs.get("db.collection.name", NO_ENTITY)),
                str(attrs.get("sync.db.plan.finding", "unknown")),
            )
            _count(self.entry(_key(attrs)).plan_findings, finding, point.value, test)

    def finish(self) -> Record:
        """Compute the latency percentiles from every test's durations."""
        for key, points in self._durations.items():
            merged = Snapshot(0.0, {DURATION: points}).merged(DURATION)
            self.entry(key).latency = latency_of(merged)
        self._durations.clear()
        return self

    def to_json(self) -> str:
        """Stable, sorted, diff-friendly JSON (what the baseline file holds)."""
        operations: dict[str, dict[str, Any]] = {}
        for (operation, entity), entry in sorted(self.entries.items()):
            out: dict[str, Any] = {"operations": entry.operations}
            if entry.queries is not None:
                out["queries_per_operation"] = _seen(entry.queries)
            if entry.n_plus_one:
                out["n_plus_one"] = {t: _seen(s) for t, s in entry.n_plus_one.items()}
            if entry.plan_findings:
                findings: dict[str, dict[str, Any]] = {}
                for (table, kind), seen in entry.plan_findings.items():
                    findings.setdefault(table, {})[kind] = _seen(seen)
                out["plan_findings"] = findings
            if entry.latency:
                out["latency_seconds"] = entry.latency
            operations.setdefault(operation, {})[entity] = out
        return json.dumps({"format": FORMAT, "operations": operations}, indent=2, sort_keys=True)

    def write(self, path: str | Path) -> None:
        """Write ``to_json()`` to ``path`` (whole or not at all); raises ``CheckError`` when
        it cannot."""
        try:
            replace_file(path, self.to_json() + "\n")
        except BrokenPipeError:  # -o /dev/stdout | head: the reader stopped, not an error
            raise
        except OSError as exc:
            raise CheckError(f"cannot write {shown(path)}: {exc.strerror or exc}") from None

    @classmethod
    def load(cls, path: str | Path, role: str = "baseline") -> Record:
        """Read a file written by ``write``; anything else is a one-line ``CheckError``."""
        try:
            with open(path, "rb") as handle:
                raw = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise CheckError(f"cannot read {role} {shown(path)}: {exc.strerror or exc}") from None
        if len(raw) > MAX_FILE_BYTES:
            raise CheckError(f"{role} {shown(path)} is larger than {MAX_FILE_BYTES} bytes")
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckError(f"{role} {shown(path)} is not JSON ({reason})") from None
        try:
            return cls._parse(data)
        except _Invalid as exc:
            raise CheckError(f"{role} {shown(path)}: {exc}; rewrite it with {_UPDATE}") from None

    @classmethod
    def _parse(cls, data: object) -> Record:
        top = _mapping(data, "the file")
        if top.get("format") != FORMAT:
            raise _Invalid(f'"format" is not "{FORMAT}"')
        record = cls()
        for operation, entities, where in _named(top.get("operations", {}), "operations"):
            for entity, raw, at in _named(entities, where):
                fields = _mapping(raw, at)
                entry = record.entry((operation, entity))
                entry.operations = _int(fields.get("operations", 0), f"{at}.operations")
                if "queries_per_operation" in fields:
                    queries = fields["queries_per_operation"]
                    entry.queries = _parse_seen(queries, f"{at}.queries_per_operation")
                for table, seen, there in _named(fields.get("n_plus_one", {}), f"{at}.n_plus_one"):
                    entry.n_plus_one[table] = _parse_seen(seen, there)
                findings = fields.get("plan_findings", {})
                for table, kinds, there in _named(findings, f"{at}.plan_findings"):
                    for kind, seen, place in _named(kinds, there):
                        entry.plan_findings[(table, kind)] = _parse_seen(seen, place)
                latency = fields.get("latency_seconds", {})
                for name, value, there in _named(latency, f"{at}.latency_seconds"):
                    entry.latency[name] = _float(value, there)
        return record


_UPDATE = "--syncperf-update-baseline"


class _Invalid(ValueError):
    pass


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _named(value: object, where: str) -> Iterator[tuple[str, Any, str]]:
    """``(key, value, path)`` of an object whose keys must be names (printable, 1 to 128)."""
    for key, item in _mapping(value, where).items():
        at = f"{where}.{key[:40]!r}"
        if _gate.name(key) is None:
            raise _Invalid(f"{at} is not a name (1 to {_gate.MAX_NAME} printable characters)")
        yield key, item, at


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"{where} is not an object")
    return value


def _int(value: object, where: str) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        raise _Invalid(f"{where} is not a count (an integer >= 0)")
    return value


def _float(value: object, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _Invalid(f"{where} is not a number >= 0")
    if value < 0 or value > 1e300 or not math.isfinite(value):
        raise _Invalid(f"{where} is not a number >= 0")
    return float(value)


def _parse_seen(value: object, where: str) -> Seen:
    fields = _mapping(value, where)
    test = fields.get("first_seen", "")
    if not isinstance(test, str) or len(test) > MAX_TEST_NAME or not test.isprintable():
        raise _Invalid(f"{where}.first_seen is not a test name")
    return Seen(_int(fields.get("value"), f"{where}.value"), test)


def _seen(seen: Seen) -> dict[str, Any]:
    return {"first_seen": _test_name(seen.first_seen), "value": seen.value}


def _test_name(nodeid: str) -> str:
    """``nodeid`` as the baseline file holds it (what ``_parse_seen`` accepts): control
    characters escaped, cut to ``MAX_TEST_NAME`` characters (ending in ``...``)."""
    if not nodeid.isprintable():
        nodeid = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in nodeid)
    if len(nodeid) > MAX_TEST_NAME:
        nodeid = nodeid[: MAX_TEST_NAME - 3] + "..."
    return nodeid


def _key(attrs: Mapping[str, Any]) -> tuple[str, str]:
    return str(attrs.get("sync.operation", NO_ENTITY)), str(attrs.get("sync.entity", NO_ENTITY))


def _count(into: dict[Any, Seen], key: Any, value: float, test: str) -> None:
    if value <= 0:
        return
    found = into.get(key)
    if found is None:
        into[key] = Seen(int(value), test)
    else:
        found.value += int(value)


class Recorder:
    """Reads, around each test, what every syncperf runtime recorded during it."""

    def __init__(self) -> None:
        self.record = Record()
        self._readers: list[Reader] = []
        self._lock = threading.Lock()
        self._active = False

    def _on_new_runtime(self, rt: _runtime.Runtime) -> None:
        with self._lock:
            if self._active:
                self._readers.append(_delta_reader(rt))

    def start(self) -> None:
        """Begin recording a test (call before its set-up)."""
        if self._on_new_runtime not in _runtime.RUNTIME_HOOKS:
            _runtime.RUNTIME_HOOKS.append(self._on_new_runtime)
        rt = _runtime.installed  # not current(): recording must not build a runtime
        with self._lock:
            self._active = True
            if rt is not None:
                reader = _delta_reader(rt)
                reader.collect()  # what was recorded before the test is not the test's
                self._readers.append(reader)

    def stop(self, test: str) -> None:
        """Finish recording ``test`` (call after its tear-down)."""
        _settle_plans()
        with self._lock:
            self._active = False
            readers, self._readers = self._readers, []
        for reader in readers:
            self.record.add(reader.collect(), test)
            reader.close()

    def close(self) -> Record:
        """Stop watching new runtimes; the record of the whole run."""
        if self._on_new_runtime in _runtime.RUNTIME_HOOKS:
            _runtime.RUNTIME_HOOKS.remove(self._on_new_runtime)
        return self.record.finish()


def _settle_plans(timeout: float = 10.0) -> None:
    """Wait for the query plans the test's statements queued: they are explained off the
    request thread, and a finding belongs to the test that ran the statement (only when
    ``syncperf.sqlalchemy`` is in use: importing it would import SQLAlchemy)."""
    if "syncperf.sqlalchemy" in sys.modules:
        from syncperf.sqlalchemy import wait_for_plans

        wait_for_plans(timeout)


def _delta_reader(rt: _runtime.Runtime) -> Reader:
    delta = AggregationTemporality.DELTA
    return Reader(rt.registry, rt.resource, rt.scope, {"histogram": delta, "counter": delta})


def labels(record: Record) -> Iterator[tuple[tuple[str, str], str]]:
    """``((operation, entity), "operation entity")`` for every entry, sorted."""
    for key in sorted(record.entries):
        operation, entity = key
        yield key, operation if entity == NO_ENTITY else f"{operation} {entity}"
