"""Reading one query plan: the async worker's connection, ``EXPLAIN`` on a DBAPI cursor, and the
findings the plan shows.

PostgreSQL: ``EXPLAIN (FORMAT JSON, VERBOSE)`` with the statement's parameters, the planner's
estimate of each sequentially scanned table and ``work_mem``; SQLite: ``EXPLAIN QUERY PLAN``
and ``max(rowid)`` of each scanned table. The findings and the summary carry node types, table
and index names and estimates, never a condition, a key or an output expression (PostgreSQL
quotes the parameters' values in them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AsyncConnection",
    "Finding",
    "postgresql_findings",
    "read_postgresql",
    "read_sqlite",
    "sqlite_findings",
]


@dataclass(frozen=True)
class Finding:
    """One thing a plan shows: ``kind`` (``seq_scan``, ``sort``, ``hash_join``,
    ``cost_jump``), the table it is about (or None), the planner's row estimate (the scanned
    table's, the sorted or hashed rows) and, for ``cost_jump``, the previous plan's cost."""

    kind: str
    table: str | None
    rows: float | None = None
    previous_cost: float | None = None

    def describe(self, cost: float | None) -> str:
        """``seq_scan on todo (~20000 rows)``, ``cost_jump on todo (cost 12 -> 398)``."""
        text = self.kind + (f" on {self.table}" if self.table else "")
        if self.previous_cost is not None:
            return text + f" (cost {self.previous_cost:.0f} -> {cost or 0:.0f})"
        return text + (f" (~{self.rows:.0f} rows)" if self.rows is not None else "")


class AsyncConnection:
    """The plan worker's own connection for an async engine.

    The application's pooled connections belong to its event loop; the worker has its own
    loop and a pool of its own, made by the engine's pool (``recreate()``: the same creator,
    connect arguments and connect events), holding the one connection it uses.
    """

    def __init__(self) -> None:
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: Any = None

    def read(self, engine: Any, read: Any, job: Any) -> Any:
        from sqlalchemy.util import greenlet_spawn

        if self._pid != os.getpid():  # first use, or a forked child: nothing to reuse
            self._pid = os.getpid()
            self._loop = asyncio.new_event_loop()
            pool = engine.pool
            self._pool = type(pool).recreate(pool)  # not the instance's (metrics) wrapper

        def on_connection() -> Any:
            pooled = self._pool.connect()
            try:
                return read(pooled, job)
            finally:
                pooled.close()

        loop: asyncio.AbstractEventLoop = self._loop  # type: ignore[assignment]
        return loop.run_until_complete(greenlet_spawn(on_connection))

    def close(self) -> None:
        if self._loop is not None and self._pid == os.getpid():
            from sqlalchemy.util import greenlet_spawn

            with contextlib.suppress(Exception):
                self._loop.run_until_complete(greenlet_spawn(self._pool.dispose))
            self._loop.close()
        self._loop = self._pool = None
        self._pid = 0


def read_postgresql(
    cursor: Any, job: Any, rows: int, timeout: float
) -> tuple[list[Finding], float | None, str]:
    """``job.statement``'s plan on PostgreSQL: findings, estimated total cost, summary.

    ``job.parameters`` are passed to the EXPLAIN and dropped (set to None) once it returned.
    """
    ms = max(1, int(timeout * 1000))
    cursor.execute(  # one round trip: both timeouts for this transaction only, work_mem
        f"SELECT set_config('statement_timeout', '{ms}', true), "
        f"set_config('lock_timeout', '{ms}', true), "
        "(SELECT setting FROM pg_catalog.pg_settings WHERE name = 'work_mem')"
    )
    work_mem = int(cursor.fetchone()[2]) * 1024
    explain = "EXPLAIN (FORMAT JSON, VERBOSE) " + job.statement
    if job.parameters is None:
        cursor.execute(explain)
    else:
        cursor.execute(explain, job.parameters)
    plan = _document(cursor.fetchone()[0])
    job.parameters = None
    tables: dict[str, float] = {}
    for node in _nodes(plan):
        name = node.get("Relation Name")
        if node.get("Node Type") == "Seq Scan" and isinstance(name, str) and name not in tables:
            # The planner's estimate of the whole table (analyzed or not), not of the
            # rows the statement's filter keeps.
            cursor.execute(
                "EXPLAIN (FORMAT JSON) SELECT 1 FROM "
                + _quote(str(node.get("Schema", "")))
                + "."
                + _quote(name)
            )
            tables[name] = float(_document(cursor.fetchone()[0]).get("Plan Rows", 0))
    findings = postgresql_findings(plan, tables, work_mem, rows)
    return findings, float(plan.get("Total Cost", 0.0)), _summary(plan)


def read_sqlite(cursor: Any, job: Any, rows: int) -> tuple[list[Finding], None, str]:
    """``job.statement``'s plan on SQLite (``EXPLAIN QUERY PLAN``): findings, no cost, summary.

    Table sizes are estimated with ``max(rowid)`` (SQLite's plans have none).
    """
    if job.parameters is None:
        cursor.execute("EXPLAIN QUERY PLAN " + job.statement)
    else:
        cursor.execute("EXPLAIN QUERY PLAN " + job.statement, job.parameters)
    details = [str(row[3]) for row in cursor.fetchall()]
    job.parameters = None
    tables = {}
    for name in _sqlite_scans(details):
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        table = name if cursor.fetchone() else job.collection
        if table is None:
            continue
        try:
            cursor.execute(f"SELECT max(rowid) FROM {_quote(table)}")
            size = float(cursor.fetchone()[0] or 0)
        except Exception:  # a WITHOUT ROWID table: no cheap estimate, report the scan
            size = math.inf
        tables[name] = (table, size)
    findings = sqlite_findings(details, tables, job.collection, rows)
    summary = "; ".join(details)  # SQLite shows parameters as ?, never their values
    return findings, None, summary


def postgresql_findings(
    plan: Mapping[str, Any], tables: Mapping[str, float], work_mem: int, rows: int
) -> list[Finding]:
    """Findings of one PostgreSQL ``EXPLAIN (FORMAT JSON)`` plan (its ``"Plan"`` node).

    Args:
        plan: The top plan node.
        tables: ``pg_class.reltuples`` of the sequentially scanned tables, where known.
        work_mem: Bytes a sort or hash may use before it spills to disk.
        rows: The row threshold of ``PlanOptions.rows``.
    """
    found: dict[tuple[str, str | None], Finding] = {}

    def add(kind: str, table: str | None, estimate: float) -> None:
        if (kind, table) not in found:
            found[kind, table] = Finding(kind, table, estimate)

    for node in _nodes(plan):
        kind = node.get("Node Type")
        estimate = float(node.get("Plan Rows", 0))
        size = estimate * float(node.get("Plan Width", 0))
        if kind == "Seq Scan":
            table = node.get("Relation Name")
            table_rows = tables.get(table, estimate) if isinstance(table, str) else estimate
            if table_rows >= rows:
                add("seq_scan", table, table_rows)
        elif kind == "Sort" and (estimate >= rows or size > work_mem):
            add("sort", _relation(node), estimate)
        elif kind == "Hash Join":
            for child in node.get("Plans", ()):
                hashed = float(child.get("Plan Rows", 0)) * float(child.get("Plan Width", 0))
                if child.get("Node Type") == "Hash" and hashed > work_mem:
                    add("hash_join", _relation(child), float(child.get("Plan Rows", 0)))
    return list(found.values())


_SQLITE_SCAN = re.compile(r"^SCAN (?!CONSTANT ROW)([^\s(][^\s]*)(?: AS \S+)?$")
_SQLITE_AUTO = re.compile(r"^SEARCH (\S+) USING AUTOMATIC (?:COVERING |PARTIAL )*INDEX")


def _sqlite_scans(details: list[str]) -> Iterator[str]:
    for detail in details:
        match = _SQLITE_SCAN.match(detail) or _SQLITE_AUTO.match(detail)
        if match:
            yield match.group(1)


def sqlite_findings(
    details: list[str],
    tables: Mapping[str, tuple[str, float]],
    collection: str | None,
    rows: int,
) -> list[Finding]:
    """Findings of one SQLite ``EXPLAIN QUERY PLAN`` (its ``detail`` column).

    ``SCAN <table>`` (and an automatic index, which SQLite builds by scanning) is a
    ``seq_scan``; ``USE TEMP B-TREE FOR ORDER BY`` over such a scan is a ``sort``.

    Args:
        details: The ``detail`` strings in plan order.
        tables: ``{name in the plan: (table, estimated rows)}`` of the scanned names.
        collection: The statement's main table.
        rows: The row threshold of ``PlanOptions.rows``.
    """
    found: list[Finding] = []
    largest: tuple[str, float] | None = None
    for name in _sqlite_scans(details):
        table, estimate = tables.get(name, (name, math.inf))
        if estimate >= rows:
            found.append(Finding("seq_scan", table, estimate))
            if largest is None or estimate > largest[1]:
                largest = (table, estimate)
    if largest is not None and any(d.startswith("USE TEMP B-TREE FOR ORDER BY") for d in details):
        found.append(Finding("sort", largest[0] or collection, largest[1]))
    return found


def _nodes(plan: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _relation(node: Mapping[str, Any]) -> str | None:
    for child in _nodes(node):
        name = child.get("Relation Name")
        if isinstance(name, str):
            return name
    return None


def _summary(plan: Mapping[str, Any]) -> str:
    """The plan as node types, tables, indexes and estimates; never a condition or key
    (they quote the statement's parameters)."""
    parts = []
    for node in _nodes(plan):
        text = str(node.get("Node Type", "?"))
        if "Index Name" in node:
            text += f" using {node['Index Name']}"
        if "Relation Name" in node:
            text += f" on {node['Relation Name']}"
        parts.append(f"{text} (rows={node.get('Plan Rows', 0)} cost={node.get('Total Cost', 0)})")
    return " <- ".join(parts)


def _document(value: Any) -> Mapping[str, Any]:
    """The top plan node of an ``EXPLAIN (FORMAT JSON)`` result (parsed or text)."""
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    plan: Mapping[str, Any] = value[0]["Plan"]
    return plan


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
